"""The ops are real `torch.library` custom ops: registered, traceable (fake kernels), compilable."""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from torch._subclasses.fake_tensor import FakeTensorMode

from fq_core.quant.pack import pack_int4
from fq_kernels import ops
from fq_kernels.layout import weight_sums
from fq_kernels.testing import random_orthogonal

OPS = (
    "transform_quant",
    "transform_quant_asym",
    "w4a4_linear",
    "quant_kv",
    "dequant_kv",
    "kv_attention",
    "rope_map",
    "quant_kv_into",
)


@pytest.mark.parametrize("name", OPS)
def test_registered_under_fq_kernels(name: str) -> None:
    assert hasattr(torch.ops.fq_kernels, name)


def test_fake_kernels_give_shapes_and_dtypes() -> None:
    with FakeTensorMode():
        x = torch.empty(2, 5, 64, dtype=torch.bfloat16)
        q, s = ops.transform_quant(x, torch.empty(8, 8), torch.empty(8, 8), torch.empty(2), 4, "packed")
        assert (
            q.shape == (2, 5, 32)
            and q.dtype == torch.uint8
            and s.shape == (2, 5)
            and s.dtype == torch.float32
        )
        q8, _ = ops.transform_quant(x, None, None, torch.empty(2), 4, "fp8")
        assert q8.shape == (2, 5, 64) and q8.dtype == torch.float8_e4m3fn
        out = ops.w4a4_linear(
            q, s, torch.empty(48, 32, dtype=torch.uint8), torch.empty(48), None, torch.float16
        )
        assert out.shape == (2, 5, 48) and out.dtype == torch.float16
        qa, sa, za = ops.transform_quant_asym(x, None, None, torch.empty(2), 4, "int8")
        assert qa.shape == (2, 5, 64) and qa.dtype == torch.int8 and sa.shape == za.shape == (2, 5)
        assert za.dtype == torch.float32
        wsum = torch.empty(48)
        out = ops.w4a4_linear(
            qa, sa, torch.empty(48, 64, dtype=torch.int8), torch.empty(48), None, zx=za, wsum=wsum
        )
        assert out.shape == (2, 5, 48) and out.dtype == torch.bfloat16
        glu = ops.w4a4_linear(qa, sa, torch.empty(48, 64, dtype=torch.int8), torch.empty(48), swiglu=True)
        assert glu.shape == (2, 5, 24)
        kq, ks, kz = ops.quant_kv(torch.empty(3, 4, 256), 128, torch.empty(2))
        assert kq.shape == (3, 4, 128) and ks.shape == kz.shape == (3, 4, 2) and kz.dtype == torch.uint8
        assert ops.dequant_kv(kq, ks, kz, 128, torch.float32).shape == (3, 4, 256)
        cache = ops.quant_kv(torch.empty(2, 2, 9, 64), 64, torch.empty(2))
        q = torch.empty(2, 4, 64, dtype=torch.float16)
        out = ops.kv_attention(q, cache, cache, torch.empty(2, dtype=torch.int32), 64, 0.125)
        assert out.shape == (2, 4, 64) and out.dtype == torch.float16


def test_a_layer_compiles_with_fullgraph() -> None:
    g = torch.Generator().manual_seed(0)
    left, right = random_orthogonal(4, g), random_orthogonal(8, g)
    wq = pack_int4(torch.randint(-8, 8, (16, 32), generator=g, dtype=torch.int8))
    sw = torch.rand(16, generator=g)
    clip = torch.tensor([0.9, 0.9])

    def layer(x: torch.Tensor) -> torch.Tensor:
        xq, sx = ops.transform_quant(x, left, right, clip, 4, "int8")
        return ops.w4a4_linear(xq, sx, wq, sw, None, torch.float32).relu()

    x = torch.randn(3, 32, generator=g)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    assert torch.equal(compiled(x), layer(x))

    wsum = weight_sums(wq)

    def asym_layer(x: torch.Tensor) -> torch.Tensor:
        xq, sx, zx = ops.transform_quant_asym(x, left, right, clip, 4, "int8")
        return ops.w4a4_linear(xq, sx, wq, sw, None, torch.float32, zx, wsum).relu()

    compiled = torch.compile(asym_layer, fullgraph=True, backend="aot_eager")
    assert torch.equal(compiled(x), asym_layer(x))


def test_opcheck_w4a4_linear_swiglu() -> None:
    """Both kinds of weights: packed (activation after the decode kernel) and int8 (in the epilogue)."""
    from fq_kernels.layout import prefill_weight

    g = torch.Generator().manual_seed(3)
    wq = torch.randint(0, 256, (16, 16), dtype=torch.uint8, generator=g)
    xq, sx = torch.randint(-8, 8, (3, 32), dtype=torch.int8, generator=g), torch.rand(3, generator=g)
    for w in (wq, prefill_weight(wq, "int8")):
        args = (xq, sx, w, torch.rand(16, generator=g), None, torch.float32, None, None, True)
        torch.library.opcheck(torch.ops.fq_kernels.w4a4_linear, args)


def test_opcheck_quant_kv_into() -> None:
    """A mutating op: opcheck checks its declared mutations and its fake against the real one."""
    k = torch.randn(2, 3, 2, 32).transpose(1, 2)
    cache = (
        torch.zeros(3, 2, 8, 16, dtype=torch.uint8),
        torch.ones(3, 2, 8, 2),
        torch.zeros(3, 2, 8, 2, dtype=torch.uint8),
    )
    args = (k, torch.tensor([1.0, 0.9]), 16, *cache, torch.tensor([5, 1, 2]))
    torch.library.opcheck(torch.ops.fq_kernels.quant_kv_into, args)


def test_opcheck_rope_map() -> None:
    """A strided slice of a projection in, a contiguous token-major tensor out; batch-1 cos / sin."""
    x = torch.randn(2, 3, 4 * 16 + 5)[..., :64].view(2, 3, 4, 16)
    cos, sin = torch.rand(1, 3, 16), torch.rand(1, 3, 16)
    for head_map in (None, torch.randn(16, 16)):
        torch.library.opcheck(torch.ops.fq_kernels.rope_map, (x, cos, sin, head_map))
    with pytest.raises(ValueError, match="cos must be"):
        ops.rope_map(x, cos[:, :2], sin)


def test_opcheck_transform_quant_and_kv() -> None:
    x = torch.randn(4, 32)
    for op in (torch.ops.fq_kernels.transform_quant, torch.ops.fq_kernels.transform_quant_asym):
        torch.library.opcheck(op, (x, None, None, torch.tensor([1.0, 0.9]), 4, "int8"))
    torch.library.opcheck(torch.ops.fq_kernels.quant_kv, (x, torch.tensor([1.0, 1.0]), 16))
    # a head-major view: the fake outputs promise the real ones' (transposed) strides
    heads = torch.randn(2, 5, 3, 32).transpose(1, 2)
    torch.library.opcheck(torch.ops.fq_kernels.quant_kv, (heads, torch.tensor([1.0, 1.0]), 16))
    cache = torch.ops.fq_kernels.quant_kv(torch.randn(2, 2, 9, 32), torch.tensor([1.0, 1.0]), 16)
    lengths = torch.tensor([9, 3], dtype=torch.int32)
    torch.library.opcheck(
        torch.ops.fq_kernels.kv_attention, (torch.randn(2, 4, 32), *cache, *cache, lengths, 16, 0.2)
    )
