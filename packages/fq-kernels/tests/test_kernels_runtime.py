"""`load_int4_model`: the real-int4 transformers model equals fq-core's fake-quant model of a checkpoint.

The expectation is fq-core's evaluation path (`load_quantized`, fake quantisation in float32), which
shares no code with the runtime's kernels. They compute the same integers, so logits agree to float
rounding, except where a transformed activation sits on a rounding boundary: the kernels' reference
transforms in float64, the fake-quant model in float32, so such a value may land one int4 step away.
Hence: nearly every logit equal to 1e-5, all within a small fraction of the logit range.

The ops run on their PyTorch references here, as on any CPU without TRITON_INTERPRET: what is under
test is the model around them (sites, fusions, cache plumbing). The Triton kernels have their own
interpreter tests, and the same model with the kernels is tested on CUDA (test_kernels_gpu: its
perplexity within 1% of fake quant). Interpreting every GEMM of every forward here took >10 minutes
of CI.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fq_core.adapters.hf_names import cache_kwarg, output_cache
from fq_core.checkpoint import CheckpointNotFoundError
from fq_core.data import pydoc_text, split_calibration_eval, tokenize
from fq_core.errors import ConfigError
from fq_core.flat import FlatConfig, load_quantized, quantize_, save_quantized
from fq_core.flat.sites import CacheSite
from fq_core.flat.testing import as_if_calibrated, kv4_specs
from fq_core.models import load_model
from fq_core.models.testing import FAMILIES, save_tiny_model_dir, tiny_model
from fq_core.quant import NO_QUANT, QuantSpec
from fq_core.quant import functional as QF
from fq_kernels.quant_linear import QuantLinear
from fq_kernels.runtime import Int4KVCache, Int4KVLayer, KVQuant, load_int4_model

pytestmark = pytest.mark.usefixtures("reference_ops")


def assert_logits_match(real: torch.Tensor, fake: torch.Tensor) -> None:
    diff = (real - fake).abs()
    assert (diff <= 1e-5).float().mean() >= 0.99, f"only {(diff <= 1e-5).float().mean():.3f} of logits equal"
    assert diff.max() <= 0.02 * fake.abs().max(), f"max difference {diff.max():.3g}"


IDS = torch.randint(0, 64, (3, 40), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    ("with_kv4", "asym"),
    [(False, False), (True, False), (True, True)],
    ids=["W4A4", "W4A4KV4", "W4A4asymKV4"],
)
@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_logits_equal_the_fake_quant_model(checkpoint, family: str, with_kv4: bool, asym: bool) -> None:
    path = checkpoint(family, with_kv4, asym)
    real, fake = load_int4_model(path), load_quantized(path)
    linears = [m for m in real.modules() if isinstance(m, QuantLinear)]
    assert linears and all(m.act_symmetric == (not asym) for m in linears)
    assert_logits_match(real(IDS).logits, fake(IDS).logits)


@torch.no_grad()
def test_every_linear_is_an_int4_kernel_and_no_float_weight_is_left(checkpoint) -> None:
    model = load_int4_model(checkpoint("llama", True))
    linears = [m for m in model.model.modules() if isinstance(m, torch.nn.Linear)]
    assert linears == []
    quant = [m for m in model.modules() if isinstance(m, QuantLinear)]
    assert len(quant) == 4 * len(model.model.layers)  # q|k|v, o, gate|up, down
    assert all(q.qweight.dtype == torch.uint8 and q.transform != "none" for q in quant)


def window_nll(model: torch.nn.Module, windows: torch.Tensor) -> float:
    logits = model(windows, use_cache=False).logits[:, :-1].float()
    return F.cross_entropy(logits.flatten(0, 1), windows[:, 1:].flatten()).item()


@pytest.mark.parametrize("kv", [{}, kv4_specs(12)], ids=["W4A4", "W4A4KV4"])
@torch.no_grad()
def test_perplexity_on_the_pydoc_tail_equals_the_fake_quant_models(tmp_path: Path, kv: dict) -> None:
    base, tokenizer = load_model(save_tiny_model_dir(tmp_path / "tiny"))
    save_quantized(as_if_calibrated(base, FlatConfig(**kv)), tmp_path / "ckpt")
    windows = split_calibration_eval(tokenize(tokenizer, pydoc_text()), 8, 64)[1].reshape(8, 64)
    real = math.exp(window_nll(load_int4_model(tmp_path / "ckpt"), windows))
    fake = math.exp(window_nll(load_quantized(tmp_path / "ckpt"), windows))
    assert real == pytest.approx(fake, rel=0.01)


@pytest.mark.parametrize("num_beams", [1, 3], ids=["greedy", "beam"])
@torch.no_grad()
def test_generate_gives_the_fake_quant_models_tokens_with_an_int4_cache(checkpoint, num_beams: int) -> None:
    path = checkpoint("llama", True)
    real, fake = load_int4_model(path), load_quantized(path)
    prompt = IDS[:1, :6]
    settings = {"max_new_tokens": 8, "do_sample": False, "num_beams": num_beams, "pad_token_id": 0}
    out = real.generate(prompt, return_dict_in_generate=True, **settings)
    assert out.sequences.tolist() == fake.generate(prompt, **settings).tolist()
    layer = output_cache(out).layers[0]
    assert isinstance(layer, Int4KVLayer) and layer.keys.dtype == torch.uint8
    assert layer.get_seq_length() == out.sequences.shape[1] - 1  # the last token is never fed back


@torch.no_grad()
def test_an_explicit_int4_cache_is_what_forward_fills_by_default(checkpoint) -> None:
    model = load_int4_model(checkpoint("qwen2", True))
    cache = Int4KVCache.for_model(model)
    explicit = model(IDS[:, :10], use_cache=True, **{cache_kwarg(): cache}).logits
    assert torch.equal(explicit, model(IDS[:, :10], use_cache=True).logits)
    step = model(IDS[:, 10:11], use_cache=True, **{cache_kwarg(): cache}).logits[:, -1]
    assert torch.allclose(step, model(IDS[:, :11]).logits[:, -1], atol=1e-5)


@torch.no_grad()
def test_a_cache_already_holding_float_tokens_is_refused(checkpoint) -> None:
    from transformers import DynamicCache

    model = load_int4_model(checkpoint("llama", True))
    cache = DynamicCache()
    cache.update(torch.zeros(1, 2, 3, 12), torch.zeros(1, 2, 3, 12), 0)
    with pytest.raises(ConfigError, match="Int4KVCache"):
        model(IDS[:1, :4], use_cache=True, **{cache_kwarg(): cache})


@torch.no_grad()
def test_kv_bits_16_keeps_a_full_precision_cache(checkpoint) -> None:
    path = checkpoint("llama", True)
    real = load_int4_model(path, kv_bits=16)
    fake = load_quantized(path)
    for attention in (layer.self_attn for layer in fake.model.layers):
        attention.k_cache = attention.v_cache = CacheSite(NO_QUANT, None, learnable_clip=False)
    out = real(IDS, use_cache=True)
    assert type(output_cache(out).layers[0]).__name__ == "DynamicLayer"
    assert_logits_match(out.logits, fake(IDS).logits)


def test_int4_layer_stores_what_fq_core_fake_quantises_and_supports_cache_operations() -> None:
    g = torch.Generator().manual_seed(0)
    clip = torch.tensor([0.9, 0.8])
    layer = Int4KVLayer(KVQuant(group_size=8, key_clip=clip, value_clip=torch.tensor([1.0, 0.7])))
    keys, values = torch.randn(2, 3, 7, 16, generator=g), torch.randn(2, 3, 7, 16, generator=g)
    layer.update(keys[:, :, :4], values[:, :, :4])
    got_k, got_v = layer.update(keys[:, :, 4:], values[:, :, 4:])
    spec = QuantSpec(4, False, "group", 8)
    assert torch.equal(got_k, QF.fake_quant(keys, spec, (clip[0:1], clip[1:2])))
    assert torch.equal(got_v, QF.fake_quant(values, spec, (torch.ones(1), torch.full((1,), 0.7))))
    assert layer.keys.shape == (2, 3, 7, 8) and layer.keys.dtype == torch.uint8
    assert layer.key_scales.shape == layer.key_zeros.shape == (2, 3, 7, 2)

    layer.crop(-2)
    layer.reorder_cache(torch.tensor([1, 0]))
    assert layer.get_seq_length() == 5
    k, _ = layer.update(keys[:, :, :0], values[:, :, :0])
    assert torch.equal(k, got_k[[1, 0], :, :5])
    layer.batch_select_indices(torch.tensor([1]))
    assert layer.update(keys[:1, :, :0], values[:1, :, :0])[0].shape == (1, 3, 5, 16)
    layer.reset()
    assert layer.get_seq_length() == 0


def test_checkpoints_the_kernels_cannot_run_are_refused_in_one_line(tmp_path: Path, checkpoint) -> None:
    w8a8 = FlatConfig(method="rtn", weight=QuantSpec(8, True, "channel"), act=QuantSpec(8, True, "token"))
    save_quantized(quantize_(tiny_model("llama"), w8a8), tmp_path / "w8a8")
    cases = [
        (tmp_path / "w8a8", {}, ConfigError, "W4A4"),
        (checkpoint("llama", False), {"kv_bits": 4}, ConfigError, "w4a4kv4"),
        (checkpoint("llama", False), {"kv_bits": 8}, ConfigError, "kv_bits"),
        (tmp_path / "missing", {}, CheckpointNotFoundError, "missing"),
    ]
    for path, options, error, words in cases:
        with pytest.raises(error, match=words) as caught:
            load_int4_model(path, **options)
        assert "\n" not in str(caught.value)


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)


def test_the_runtime_imports_transformers_only_when_used() -> None:
    result = run_python("import sys, fq_kernels.runtime; print('transformers' in sys.modules)")
    assert result.stdout.strip() == "False", result.stderr


def test_without_transformers_the_runtime_says_which_extra_to_install() -> None:
    code = (
        "import sys\n"
        "sys.modules['transformers'] = None\n"  # what `import transformers` sees when it is not installed
        "from fq_kernels import runtime\n"
        "try:\n"
        "    runtime.load_int4_model\n"
        "except runtime.MissingExtraError as error:\n"
        "    print(error)\n"
    )
    assert run_python(code).stdout.strip().endswith("pip install fq-kernels[hf]")
