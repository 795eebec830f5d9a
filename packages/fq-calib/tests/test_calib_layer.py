"""One layer's calibration: it lowers the MSE, and freezing reproduces the trained fake-quant layer."""

import copy

import pytest
import torch

from fq_calib import preset
from fq_calib.layer_io import capture_inputs, map_layer
from fq_calib.train import calibrate_layer, collect_hessians
from fq_core.flat import freeze_layer, quantize_, set_fp
from fq_core.models import load_model

CPU = torch.device("cpu")


@pytest.fixture()
def first_layer(tiny_model_dir):
    model, _ = load_model(str(tiny_model_dir))
    recipe = preset("paper", nsamples=8, seqlen=24, epochs=6, batch_size=4)
    quantize_(model, recipe.flat)
    windows = torch.randint(1, 100, (8, 24), generator=torch.Generator().manual_seed(0))
    inputs, kwargs = capture_inputs(model, model.model.layers, windows, CPU, CPU)
    return model, recipe, inputs, kwargs


def test_calibration_lowers_the_layer_mse(first_layer):
    model, recipe, inputs, kwargs = first_layer
    stats, targets, _ = calibrate_layer(
        0, model.model.layers[0], inputs, kwargs, recipe, CPU, lambda layer: freeze_layer(layer, model)
    )
    assert stats.mse_final < 0.9 * stats.mse_init
    assert stats.epoch_losses[-1] < stats.epoch_losses[0]
    assert targets.shape == inputs.shape


def test_frozen_layer_reproduces_the_trained_fake_quant_layer(first_layer):
    model, recipe, inputs, kwargs = first_layer
    layer = model.model.layers[0]
    calibrate_layer(0, layer, inputs, kwargs, recipe, CPU, freeze=lambda layer: None)  # trained, not frozen
    trained = map_layer(layer, inputs, kwargs, CPU, 4, amp=False)
    frozen = copy.deepcopy(layer)
    freeze_layer(frozen, model)
    merged = map_layer(frozen, inputs, kwargs, CPU, 4, amp=False)
    # Merging runs in float64 and the online transforms become fixed matrices: the same function up
    # to float rounding, which can flip a rare value to its neighbouring quantisation level.
    close = (merged - trained).abs() <= 1e-5 * trained.abs().max()
    assert close.float().mean() > 0.99
    assert (merged - trained).norm() <= 1e-2 * trained.norm()
    assert frozen.self_attn.attn_in.transform.scale is None  # channel scales were folded away
    assert not torch.equal(frozen.input_layernorm.weight, layer.input_layernorm.weight)


def test_gptq_rounding_freezes_a_valid_layer_that_differs_from_rtn(first_layer):
    model, _, inputs, kwargs = first_layer
    layers = {}
    for rounding in ("rtn", "gptq"):
        layer = copy.deepcopy(model.model.layers[0])
        run = preset("paper", nsamples=8, seqlen=24, epochs=1, batch_size=4, weight_rounding=rounding)
        freeze = lambda trained: freeze_layer(trained, model)  # noqa: E731
        stats, _, _ = calibrate_layer(0, layer, inputs, kwargs, run, CPU, freeze)
        assert stats.mse_final < stats.mse_init
        layers[rounding] = layer
    rtn, gptq = layers["rtn"].mlp.down_proj, layers["gptq"].mlp.down_proj
    assert rtn.qweight.shape == gptq.qweight.shape and not torch.equal(rtn.qweight, gptq.qweight)


def test_hessians_are_float32_sums_even_under_bfloat16_autocast(first_layer):
    """On CUDA the layer runs under bfloat16 autocast; the Hessian sums must not (a bfloat16 x^T x
    is not positive definite and broke GPTQ on the GPU). CPU autocast shows the same rule."""
    model, _, inputs, kwargs = first_layer
    layer = model.model.layers[0]
    seen = {}
    down = layer.mlp.down_proj
    hook = down.register_forward_pre_hook(lambda m, args: seen.setdefault("x", []).append(args[0].float()))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        collect_hessians(layer, inputs, kwargs, CPU, 4, amp=False)
    hook.remove()
    x = torch.cat([a.reshape(-1, a.shape[-1]) for a in seen["x"]]).double()
    expected = x.T @ x / x.shape[0]
    assert down.hessian.dtype == torch.float32
    torch.testing.assert_close(
        down.hessian.double(), expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item()
    )
    assert torch.linalg.eigvalsh(down.hessian.double()).min() > -1e-6 * expected.abs().max()


def test_feed_quant_trains_on_quantised_inputs_against_fp_targets(first_layer):
    model, _, fp_inputs, kwargs = first_layer
    layer = model.model.layers[0]
    quant_inputs = fp_inputs + 0.05 * torch.randn(fp_inputs.shape, generator=torch.Generator().manual_seed(1))
    fp_layer = copy.deepcopy(layer)
    fp_layer.requires_grad_(False)
    set_fp(fp_layer, True)
    expected_targets = map_layer(fp_layer, fp_inputs, kwargs, CPU, 4, amp=False)

    run = preset("paper", nsamples=8, seqlen=24, epochs=2, batch_size=4, feed="quant")
    stats, targets, outputs = calibrate_layer(
        0,
        layer,
        quant_inputs,
        kwargs,
        run,
        CPU,
        lambda trained: freeze_layer(trained, model),
        fp_inputs=fp_inputs,
    )
    torch.testing.assert_close(targets, expected_targets)  # targets: the FP layer on the FP stream
    torch.testing.assert_close(outputs, map_layer(layer, quant_inputs, kwargs, CPU, 4, amp=False))
    assert stats.mse_final == pytest.approx((outputs[:4] - targets[:4]).pow(2).mean().item())


def test_presets_paper_is_the_reference_and_overrides_replace_quantisers():
    from fq_core.quant import QuantSpec

    paper = preset("paper")
    assert (paper.nsamples, paper.seqlen, paper.epochs, paper.batch_size) == (128, 2048, 15, 4)
    assert (paper.lr, paper.clip_lr_scale, paper.feed, paper.weight_rounding) == (5e-3, 10.0, "fp", "rtn")
    assert paper.flat.act == QuantSpec(4, True, "token") and paper.flat.lwc and paper.flat.lac
    best = preset("best")
    assert (best.nsamples, best.seqlen, best.epochs) == (128, 2048, 15)  # the paper's budget
    assert (best.batch_size, best.feed, best.weight_rounding) == (1, "quant", "gptq")
    assert best.flat.act == QuantSpec(4, False, "token") and best.flat.weight == paper.flat.weight
    assert preset("best", "w8a8").flat.act == QuantSpec(8, False, "token")
    assert not preset("best", "w4a16").flat.act.enabled
    assert preset("best", asym_act=False).flat.act.symmetric
    asym = preset("paper", "w4a4kv4", act=QuantSpec(4, symmetric=False, granularity="token"))
    assert not asym.flat.act.symmetric and asym.flat.key.bits == 4  # the rest of the preset stays


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_training_step_trains_the_layer_the_eager_step_trains(tiny_model_dir, monkeypatch):
    """The captured forward/backward replays the eager step's kernels on static buffers: the trained
    transforms, scales and clipping factors, and each epoch's loss, are the eager run's bit for bit."""
    import fq_calib.step
    import fq_calib.train

    cuda = torch.device("cuda")
    model, _ = load_model(str(tiny_model_dir))
    recipe = preset("best", nsamples=4, seqlen=24, epochs=2)
    quantize_(model, recipe.flat)
    model.to(cuda)
    windows = torch.randint(1, 100, (4, 24), generator=torch.Generator().manual_seed(0))
    inputs, kwargs = capture_inputs(model, model.model.layers, windows, cuda, cuda)
    captured = []

    class CountedGraphedStep(fq_calib.step.GraphedStep):
        def __init__(self, *args):
            super().__init__(*args)
            captured.append(self)

    monkeypatch.setattr(fq_calib.train, "GraphedStep", CountedGraphedStep)
    runs = {}
    for graphs in (False, True):
        monkeypatch.setattr(fq_calib.step, "CUDA_GRAPHS", graphs)
        layer = copy.deepcopy(model.model.layers[0])
        stats, _, _ = calibrate_layer(0, layer, inputs, kwargs, recipe, cuda, freeze=lambda trained: None)
        trained = {name: p.detach().clone() for name, p in layer.named_parameters() if p.requires_grad}
        runs[graphs] = stats.epoch_losses, trained
    assert len(captured) == 1  # the eager run captured nothing, the graphed one one step
    (eager_losses, eager), (graph_losses, graphed) = runs[False], runs[True]
    assert graph_losses == eager_losses
    assert eager.keys() == graphed.keys() and len(eager) > 0
    for name in eager:
        assert torch.equal(eager[name], graphed[name]), name
    assert all(p.grad is None for p in layer.parameters())  # the graph's gradients were released
