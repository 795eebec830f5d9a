"""QuantLinear: loads from the checkpoint schema, runs the kernels, equals fq-core's fake quantisation.

The end-to-end contract: for a checkpoint written by the schema, QuantLinear(x) equals the
fake-quantised linear that fq-core evaluates (activations transformed and fake-quantised with the
site's clip factors, weights dequantised from qweight * scale) up to float rounding, because the
integer GEMM computes the same sum exactly.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from fq_core.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from fq_core.checkpoint.testing import random_tensors, tiny_config, tiny_model
from fq_core.quant import functional as F
from fq_core.quant.pack import unpack_int4
from fq_core.quant.spec import QuantSpec
from fq_core.transforms.kronecker import apply_left, kron_apply
from fq_kernels.quant_linear import PrefillCopyWarning, QuantLinear, site_for

ACTS = {"sym": QuantSpec(4, True, "token"), "asym": QuantSpec(4, False, "token")}
"""The activation quantisers the kernels run: symmetric and asymmetric per token."""


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Checkpoint]:
    """One checkpoint per entry of ACTS, the same tensors otherwise."""
    made = {}
    for name, act in ACTS.items():
        cfg = tiny_config(model=tiny_model(qkv_bias=True), act=act)
        path = tmp_path_factory.mktemp("ckpt") / name
        save_checkpoint(path, cfg, random_tensors(cfg, seed=3))
        made[name] = load_checkpoint(path)
    return made


@pytest.fixture(scope="module")
def checkpoint(checkpoints) -> Checkpoint:
    return checkpoints["sym"]


def _fake_quant_linear(ckpt, names, site, x):
    """fq-core's evaluation path: transform, fake-quantise per token with the checkpoint's activation
    spec, F.linear with dequantised W."""
    t = ckpt.tensors
    y = x.double()
    if f"{site}.left" in t:
        y = kron_apply(y, t[f"{site}.left"].double(), t[f"{site}.right"].double())
    elif f"{site}.heads" in t:
        y = apply_left(y, t[f"{site}.heads"].double())
    clip = (t[f"{site}.clip_max"], t[f"{site}.clip_min"])
    xq = F.fake_quant(y.float(), ckpt.config.quant.act, clip)
    ws, bs = [], []
    for name in names:
        ws.append(unpack_int4(t[f"{name}.qweight"]).float() * t[f"{name}.scale"].float())
        bs.append(t.get(f"{name}.bias", torch.zeros(ws[-1].shape[0])).float())
    return torch.nn.functional.linear(xq.double(), torch.cat(ws).double(), torch.cat(bs).double())


@pytest.mark.parametrize(
    "names",
    [
        "layers.0.self_attn.q_proj",
        ("layers.1.self_attn.q_proj", "layers.1.self_attn.k_proj", "layers.1.self_attn.v_proj"),
        "layers.0.self_attn.o_proj",
        ("layers.1.mlp.gate_proj", "layers.1.mlp.up_proj"),
        "layers.0.mlp.down_proj",
    ],
)
@pytest.mark.parametrize("prefill", [None, "int8", "fp8"])
@pytest.mark.parametrize("act", ACTS)
def test_matches_fq_core_fake_quant(checkpoints, act, names, prefill) -> None:
    names = [names] if isinstance(names, str) else list(names)
    checkpoint = checkpoints[act]
    layer = QuantLinear.from_checkpoint(checkpoint, names, prefill=prefill, decode_max_tokens=3)
    assert layer.act_symmetric == (act == "sym") and f"act={act}" in repr(layer)
    site = site_for(names[0])
    g = torch.Generator().manual_seed(len(names))
    for tokens in (2, 7):  # decode path, then prefill path (when a prefill copy exists)
        x = torch.randn(tokens, layer.in_features, generator=g)
        y = layer(x)
        expected = _fake_quant_linear(checkpoint, names, site, x)
        assert y.shape == (tokens, layer.out_features) and y.dtype == torch.float32
        rel = ((y.double() - expected).norm() / expected.norm()).item()
        assert rel < 1e-4, rel  # transform order/precision may flip a rounding; otherwise float noise


def test_sites_and_transforms(checkpoint) -> None:
    assert site_for("layers.3.self_attn.v_proj") == "layers.3.attn_in"
    assert site_for("layers.0.mlp.down_proj") == "layers.0.down_in"
    assert QuantLinear.from_checkpoint(checkpoint, "layers.0.self_attn.o_proj").transform == "heads"
    assert QuantLinear.from_checkpoint(checkpoint, "layers.0.mlp.up_proj").transform == "kronecker"
    explicit = QuantLinear.from_checkpoint(checkpoint, "layers.0.mlp.up_proj", site="layers.0.mlp_in")
    assert torch.equal(explicit.left, checkpoint.tensors["layers.0.mlp_in.left"])
    plain = QuantLinear.from_checkpoint(checkpoint, "layers.0.mlp.up_proj", site=None)
    assert plain.transform == "none" and plain.clip.tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="site"):
        site_for("lm_head")
    with pytest.raises(ValueError, match="different sites"):
        QuantLinear.from_checkpoint(checkpoint, ["layers.0.self_attn.q_proj", "layers.0.mlp.up_proj"])


def test_fused_qkv_concatenates_outputs_and_biases(checkpoint) -> None:
    names = ["layers.0.self_attn.q_proj", "layers.0.self_attn.k_proj", "layers.0.self_attn.v_proj"]
    fused = QuantLinear.from_checkpoint(checkpoint, names, prefill=None)
    parts = [QuantLinear.from_checkpoint(checkpoint, n, prefill=None) for n in names]
    x = torch.randn(3, fused.in_features)
    assert torch.equal(fused(x), torch.cat([p(x) for p in parts], dim=-1))
    assert fused.bias is not None and fused.out_features == sum(p.out_features for p in parts)


@pytest.mark.parametrize("prefill", [None, "int8", "fp8"])
def test_swiglu_returns_the_gated_activation_of_gate_and_up(checkpoints, prefill) -> None:
    """layer(x, swiglu=True) over gate|up = silu(gate(x)) * up(x) of its plain output, in the decode
    path (activation after the GEMM) and the prefill path (in the GEMM's epilogue); Int4MLP uses it
    for prompts only and gives the same either way."""
    from fq_kernels.runtime.mlp import Int4MLP

    names = ["layers.1.mlp.gate_proj", "layers.1.mlp.up_proj"]
    layer = QuantLinear.from_checkpoint(checkpoints["asym"], names, prefill=prefill, decode_max_tokens=3)
    down = QuantLinear.from_checkpoint(checkpoints["asym"], "layers.1.mlp.down_proj", prefill=prefill)
    half = layer.out_features // 2
    plain = Int4MLP(torch.nn.SiLU(), layer, down)
    mlp = Int4MLP(torch.nn.SiLU(), layer, down, swiglu=True)
    g = torch.Generator().manual_seed(5)
    for tokens in (2, 7):
        x = torch.randn(tokens, layer.in_features, generator=g)
        y = layer(x)
        expected = torch.nn.functional.silu(y[:, :half]) * y[:, half:]
        # float32 out: the kernel's exp (the interpreter's numpy) and torch's may differ in the last bit
        close = {"rtol": 1e-6, "atol": 1e-12}
        torch.testing.assert_close(layer(x, swiglu=True), expected, **close)
        torch.testing.assert_close(layer.reference_forward(x, swiglu=True), expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(mlp.activated(x), expected, **close)
        torch.testing.assert_close(mlp(x), plain(x), rtol=1e-4, atol=1e-4)  # a last bit may flip a code


def _resident_bytes(layer: torch.nn.Module) -> int:
    return sum(t.nbytes for t in layer.buffers())


def test_resident_weights_of_a_7b_decoder_layer_are_half_a_byte_per_weight() -> None:
    """Every linear of a LLaMA-2-7B decoder layer as the int4 model holds it (q|k|v and gate|up
    fused, their transforms, asymmetric activations' row sums): packed weights, scales and epilogue
    terms stay within 0.53 bytes per weight, one layout for every token count. The opt-in one-byte
    prefill copy is the only way to more, and it says what it costs."""
    g = torch.Generator().manual_seed(0)

    def layer(k: int, n: int, heads: int | None = None) -> QuantLinear:
        packed = torch.randint(0, 256, (n, k // 2), generator=g, dtype=torch.uint8)
        if heads:  # o_proj: the heads transform only
            factors = {"left": torch.eye(heads)}
        else:
            n1 = 64 if k == 4096 else 86
            factors = {"left": torch.eye(n1), "right": torch.eye(k // n1)}
        return QuantLinear(packed, torch.rand(n, generator=g), act_symmetric=False, **factors)

    linears = [layer(4096, 3 * 4096), layer(4096, 4096, heads=32), layer(4096, 2 * 11008), layer(11008, 4096)]
    weights = sum(q.in_features * q.out_features for q in linears)
    resident = sum(_resident_bytes(q) for q in linears)
    assert weights == 4 * 4096 * 4096 + 3 * 4096 * 11008
    assert all(q.qweight.dim() == 3 and q.prefill_weight is None for q in linears)
    assert resident / weights <= 0.53, resident / weights
    assert resident / weights >= 0.5  # the packed weights themselves: nothing left out of the count
    with pytest.warns(PrefillCopyWarning, match=r"4096x4096: the int8 prefill copy adds 16\.0 MiB"):
        linears[1].prepare(prefill="int8")
    assert _resident_bytes(linears[1]) >= 1.5 * 4096 * 4096


def test_rtn_checkpoint_has_clip_but_no_transform(tmp_path) -> None:
    cfg = tiny_config(method="rtn")
    save_checkpoint(tmp_path / "rtn", cfg, random_tensors(cfg))
    layer = QuantLinear.from_checkpoint(tmp_path / "rtn", "layers.1.mlp.down_proj")
    assert layer.transform == "none" and layer.in_features == 32
    x = torch.randn(4, 32)
    assert torch.allclose(layer(x), layer.reference_forward(x), rtol=1e-5, atol=1e-6)


def test_refuses_unsupported_quantisation(tmp_path) -> None:
    cfg = tiny_config(weight=QuantSpec(bits=8, symmetric=True, granularity="channel"))
    save_checkpoint(tmp_path / "w8", cfg, random_tensors(cfg))
    with pytest.raises(ValueError, match="4-bit symmetric per-channel weights"):
        QuantLinear.from_checkpoint(tmp_path / "w8", "layers.0.self_attn.q_proj")


def test_bfloat16_input_gives_bfloat16_output(checkpoint) -> None:
    layer = QuantLinear.from_checkpoint(
        checkpoint, "layers.0.mlp.down_proj", prefill="int8", decode_max_tokens=1
    )
    x = torch.randn(5, layer.in_features).to(torch.bfloat16)
    y = layer(x)
    assert y.dtype == torch.bfloat16
    assert torch.allclose(y.float(), layer.reference_forward(x).float(), rtol=2e-2, atol=2e-2)
    assert "prefill=int8" in repr(layer)


def test_works_with_only_fq_core_base_and_fq_kernels() -> None:
    """A deployment has no transformers: loading and running QuantLinear must not import it."""
    code = (
        "import os, sys, tempfile\n"
        "os.environ.setdefault('TRITON_INTERPRET', '1')\n"
        "sys.modules['transformers'] = None\n"
        "import torch\n"
        "from fq_core.checkpoint import save_checkpoint\n"
        "from fq_core.checkpoint.testing import random_tensors, tiny_config\n"
        "from fq_kernels import QuantLinear\n"
        "d = tempfile.mkdtemp() + '/ck'\n"
        "cfg = tiny_config(); save_checkpoint(d, cfg, random_tensors(cfg))\n"
        "layer = QuantLinear.from_checkpoint(d, 'layers.0.self_attn.q_proj', prefill=None)\n"
        "print(tuple(layer(torch.randn(2, 16)).shape))\n"
        "print(sorted(m for m in ('transformers', 'datasets', 'lm_eval') if sys.modules.get(m)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split("\n")[:2] == ["(2, 16)", "[]"], result.stdout + result.stderr


def test_factors_are_held_row_major_so_no_call_copies_them() -> None:
    """QR's factors are column-major; the layer keeps them contiguous, so transform_quant never makes
    a copy of each per call (what the benchmark's column-major factors cost: kernels.md, run S)."""
    g = torch.Generator().manual_seed(0)
    left = torch.linalg.qr(torch.randn(4, 4, generator=g))[0]
    right = torch.linalg.qr(torch.randn(8, 8, generator=g))[0]
    assert not left.is_contiguous() and not right.is_contiguous()
    qweight = torch.randint(0, 256, (16, 16), generator=g, dtype=torch.uint8)
    layer = QuantLinear(qweight, torch.rand(16, generator=g), left=left, right=right, prefill=None)
    assert layer.left.is_contiguous() and layer.right.is_contiguous()
    assert torch.equal(layer.left, left) and torch.equal(layer.right, right)
