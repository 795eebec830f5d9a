"""The references themselves: they agree with fq-core's quantisers and with plain float64 algebra.

These are what the kernel tests compare against, so they are checked against independent math:
fq-core's fake quantisation (the calibration/eval path), the Kronecker identity, exact matmuls.
"""

from __future__ import annotations

import pytest
import torch

from fq_core.quant import functional as F
from fq_core.quant.pack import pack_int4, unpack_int4
from fq_core.quant.spec import QuantSpec
from fq_kernels import reference as ref


def test_token_quantiser_dequantises_to_fq_core_fake_quant() -> None:
    g = torch.Generator().manual_seed(0)
    y = torch.randn(50, 96, generator=g) * torch.rand(50, 1, generator=g) * 10
    y[7] = 0
    clip = torch.tensor([0.9, 0.7])
    q, s = ref.quantize_tokens(y, clip)
    spec = QuantSpec(bits=4, symmetric=True, granularity="token")
    fake = F.fake_quant(y, spec, (clip[0:1], clip[1:2]))
    assert torch.equal(q.float() * s[:, None], fake)
    assert q.min() >= -8 and q.max() <= 7 and s[7] == 1


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_token_quantiser_bits(bits: int) -> None:
    y = torch.randn(20, 64)
    q, s = ref.quantize_tokens(y, torch.tensor([1.0, 1.0]), bits)
    assert q.min() >= -(2 ** (bits - 1)) and q.max() <= 2 ** (bits - 1) - 1
    assert torch.allclose(s, y.abs().amax(1) / (2 ** (bits - 1) - 1))


def test_non_finite_tokens_get_nan_scale_and_zero_values() -> None:
    y = torch.randn(4, 32)
    y[1, 3] = float("nan")
    y[2, 0] = float("-inf")
    q, s = ref.quantize_tokens(y, torch.tensor([1.0, 1.0]))
    assert torch.isnan(s[1:3]).all() and not torch.isnan(s[[0, 3]]).any()
    assert (q[1:3] == 0).all()


def test_transforms_follow_the_kronecker_identity() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 24, generator=g)
    left, right = torch.randn(4, 4, generator=g), torch.randn(6, 6, generator=g)
    full = x.double() @ torch.kron(left, right).double()
    assert torch.allclose(ref.online_transform(x, left, right), full)
    assert torch.allclose(
        ref.online_transform(x, left, None), x.double() @ torch.kron(left, torch.eye(6)).double()
    )
    assert torch.allclose(
        ref.online_transform(x, None, right), x.double() @ torch.kron(torch.eye(4), right).double()
    )
    assert torch.equal(ref.online_transform(x, None, None), x.double())


def test_output_formats_hold_the_same_values() -> None:
    x = torch.randn(5, 32)
    (qp, sp), (q8, s8), (qf, sf) = (
        ref.transform_quant_ref(x, None, None, 1.0, 4, f) for f in ("packed", "int8", "fp8")
    )
    assert qp.dtype == torch.uint8 and qp.shape == (5, 16)
    assert torch.equal(unpack_int4(qp), q8) and torch.equal(qf.float(), q8.float())
    assert torch.equal(sp, s8) and torch.equal(s8, sf)
    with pytest.raises(ValueError, match="bits"):
        ref.format_values(q8, "packed", 5)


def test_clip_pair_forms() -> None:
    assert ref.clip_pair(0.5).tolist() == [0.5, 0.5]
    assert ref.clip_pair((0.9, 0.8)).tolist() == pytest.approx([0.9, 0.8])
    assert ref.clip_pair(torch.tensor([0.7])).tolist() == pytest.approx([0.7, 0.7])
    with pytest.raises(ValueError):
        ref.clip_pair(torch.ones(3))


def test_int_matmul_is_exact_for_every_layout() -> None:
    g = torch.Generator().manual_seed(2)
    xv = torch.randint(-8, 8, (7, 64), generator=g, dtype=torch.int8)
    wv = torch.randint(-8, 8, (9, 64), generator=g, dtype=torch.int8)
    exact = (xv.long() @ wv.long().T).int()
    for xq in (xv, pack_int4(xv), xv.to(torch.float8_e4m3fn)):
        wq = {torch.uint8: pack_int4(wv), torch.int8: wv, torch.float8_e4m3fn: wv.to(torch.float8_e4m3fn)}
        for w in wq.values():
            if w.dtype != torch.uint8 and xq.dtype not in (w.dtype,):
                continue
            assert torch.equal(ref.int_matmul_ref(xq, w), exact)


def test_linear_epilogue_order() -> None:
    xv = torch.randint(-8, 8, (3, 16), dtype=torch.int8)
    wv = torch.randint(-8, 8, (4, 16), dtype=torch.int8)
    sx, sw, b = torch.rand(3), torch.rand(4), torch.randn(4)
    out = ref.w4a4_linear_ref(xv, sx, pack_int4(wv), sw, b, torch.float32)
    expected = (xv.float() @ wv.float().T) * sx[:, None] * sw[None, :] + b
    assert torch.equal(out, expected)


def test_swiglu_is_silu_of_the_gate_half_times_the_up_half() -> None:
    """SwiGLU of a fused gate|up GEMM = silu(gate out) * up out, each rounded to the output dtype
    as the unfused layer does (hand-built from the plain reference)."""
    g = torch.Generator().manual_seed(2)
    xv = torch.randint(-8, 8, (3, 16), dtype=torch.int8, generator=g)
    wv = torch.randint(-8, 8, (6, 16), dtype=torch.int8, generator=g)
    sx, sw, b = torch.rand(3, generator=g), torch.rand(6, generator=g), torch.randn(6, generator=g)
    out = ref.w4a4_linear_ref(xv, sx, pack_int4(wv), sw, b, torch.bfloat16, swiglu=True)
    y = ref.w4a4_linear_ref(xv, sx, pack_int4(wv), sw, b, torch.bfloat16)
    silu = (y[:, :3].float() / (1 + torch.exp(-y[:, :3].float()))).to(torch.bfloat16)
    assert out.shape == (3, 3) and torch.equal(out, silu * y[:, 3:])


def test_kv_reference_matches_fq_core_asymmetric_quantiser() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 5, 64, generator=g) * 2 + 0.5
    x[0, 0, 0] = 0
    x[1, 1, 1, 8:16] = 3.0  # an all-positive group: its range is widened to include 0
    clip = torch.tensor([0.95, 0.9])
    q, s, z = ref.quant_kv_ref(x, 16, clip)
    assert q.shape == (2, 3, 5, 32) and s.shape == z.shape == (2, 3, 5, 4)
    spec = QuantSpec(bits=4, symmetric=False, granularity="group", group_size=16)
    fake = F.fake_quant(x, spec, (clip[0:1], clip[1:2]))
    assert torch.equal(ref.dequant_kv_ref(q, s, z, 16, torch.float32), fake)
    assert int(z.max()) <= 15 and int(unpack_int4(q, signed=False).max()) <= 15


def test_kv_non_finite_group() -> None:
    x = torch.randn(4, 32)
    x[2, 20] = float("inf")
    q, s, z = ref.quant_kv_ref(x, 16)
    assert torch.isnan(s[2, 1]) and not torch.isnan(s[2, 0]) and z[2, 1] == 0
    d = ref.dequant_kv_ref(q, s, z, 16, torch.float32)
    assert torch.isnan(d[2, 16:]).all() and not torch.isnan(d[2, :16]).any()


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "qwen3"])
def test_rope_map_reference_is_each_familys_rope_then_the_head_map(family: str) -> None:
    """The runtime replaces each family's `apply_rotary_pos_emb` + the key map with `rope_map`:
    the reference must be that, bit for bit (float32, the CPU path)."""
    import importlib

    from fq_core.transforms.kronecker import apply_right

    rope = importlib.import_module(f"transformers.models.{family}.modeling_{family}").apply_rotary_pos_emb
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(2, 5, 4, 16, generator=g), torch.randn(2, 5, 2, 16, generator=g)
    angles = torch.rand(2, 5, 8, generator=g) * 6
    cos, sin = torch.cat([angles.cos()] * 2, -1), torch.cat([angles.sin()] * 2, -1)
    head_map = torch.randn(16, 16, generator=g)
    q_hf, k_hf = rope(q.transpose(1, 2), k.transpose(1, 2), cos, sin)
    assert torch.equal(ref.rope_map_ref(q, cos, sin), q_hf.transpose(1, 2))
    assert torch.equal(ref.rope_map_ref(k, cos, sin, head_map), apply_right(k_hf.transpose(1, 2), head_map))
