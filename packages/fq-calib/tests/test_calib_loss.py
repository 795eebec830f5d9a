"""The layer objective: plain MSE (the reference) and the LM-head-weighted metric."""

import pytest
import torch

from fq_calib import preset
from fq_calib.loss import layer_loss, output_metric
from fq_core.errors import ConfigError
from fq_core.models import load_model


@pytest.fixture()
def model(tiny_model_dir):
    return load_model(str(tiny_model_dir))[0]


def _set_head(model, head: torch.Tensor, norm: torch.Tensor | None = None) -> int:
    """LM head rows = `head` (zero-padded to the vocabulary and hidden size); returns hidden size."""
    hidden = model.config.hidden_size
    weight = torch.zeros_like(model.get_output_embeddings().weight)
    weight[: head.shape[0], : head.shape[1]] = head
    with torch.no_grad():
        model.get_output_embeddings().weight.copy_(weight)
        model.model.norm.weight.copy_(torch.ones(hidden) if norm is None else norm)
    return hidden


def test_an_isotropic_head_gives_the_plain_mse(model):
    hidden = model.config.hidden_size
    q = torch.linalg.qr(torch.randn(hidden, hidden, generator=torch.Generator().manual_seed(0)))[0]
    _set_head(model, 3.0 * q)
    metric = output_metric(model)
    torch.testing.assert_close(metric @ metric.T, torch.eye(hidden), atol=1e-5, rtol=0)
    out, target = torch.randn(2, 5, hidden), torch.randn(2, 5, hidden)
    torch.testing.assert_close(layer_loss(out, target, metric), (out - target).pow(2).mean())
    assert layer_loss(out, target, None) == (out - target).pow(2).mean()


def test_errors_the_head_reads_cost_more(model):
    """A head reading only hidden dim 0: G = diag(4, 0, ...), scaled to mean eigenvalue 1 it is
    diag(H, 0, ...), so the blend is diag(0.5 + 0.5 H, 0.5, ..., 0.5)."""
    hidden = _set_head(model, torch.tensor([[2.0]]))
    metric = output_metric(model)
    blend = torch.full((hidden,), 0.5)
    blend[0] += 0.5 * hidden
    torch.testing.assert_close(metric @ metric.T, torch.diag(blend), atol=1e-5, rtol=0)
    along_head, across, zero = torch.zeros(1, hidden), torch.zeros(1, hidden), torch.zeros(1, hidden)
    along_head[0, 0], across[0, 1] = 1.0, 1.0
    assert layer_loss(along_head, zero, metric).item() == pytest.approx((0.5 + 0.5 * hidden) / hidden)
    assert layer_loss(across, zero, metric).item() == pytest.approx(0.5 / hidden)
    assert layer_loss(along_head, zero, None).item() == pytest.approx(1 / hidden)


def test_the_final_norm_scales_what_the_head_reads(model):
    """Norm weight 0 on dim 0 cancels the head's reading of it: only dim 1 gains weight."""
    hidden = model.config.hidden_size
    norm = torch.ones(hidden)
    norm[0] = 0.0
    _set_head(model, torch.tensor([[2.0, 1.0]]), norm)
    blend = torch.full((hidden,), 0.5)
    blend[1] += 0.5 * hidden
    metric = output_metric(model)
    torch.testing.assert_close(metric @ metric.T, torch.diag(blend), atol=1e-5, rtol=0)


def test_recipe_checks_the_loss_and_old_recipes_read_as_mse():
    assert preset("best").loss == "mse" and preset("paper", loss="lm-head").loss == "lm-head"
    with pytest.raises(ConfigError, match="loss must be 'mse' or 'lm-head'"):
        preset("paper", loss="kl")
    old = preset("paper").to_dict()
    del old["loss"]
    assert type(preset("paper")).from_dict(old).loss == "mse"
