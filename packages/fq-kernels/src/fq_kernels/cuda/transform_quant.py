"""Launcher of `transform_quant.cu`: the online transform + per-token quantisation on CUDA.

Takes over from the Triton kernel (`fq_kernels.triton.transform_quant`) for 16-bit activations
with a transform and int8 / packed int4 output where it was measured faster: a few tokens of the
large down-projection tiles (`MIN_TOKENS` ... below). Its result follows the same definition in
the same dot precision (16-bit operands, float32 sums); the two differ only in the order of the
float32 sums (on every case measured they gave the same codes and scales).
One compiled variant per (tile, factors present, input dtype, output, quantiser, warps), cached for
the process.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from fq_kernels._runtime import sm_count
from fq_kernels.cuda import nvrtc
from fq_kernels.reference.activation import factor_sizes

MAX_SIDE = 128
"""Largest factor handled (the tile and both factors live in one block's shared memory)."""
MIN_TOKENS, MAX_TOKENS = 2, 64
MIN_ELEMENTS = 64 * 64 + 1
"""Where `ops.transform_quant` uses this kernel: 2..64 tokens of tiles larger than 64 x 64 (the down
projections' 86 x 128 and 112 x 128). Measured on the H200 (`benchmarks/transform_quant.py`,
docs/benchmarks/kernels.md run L): 1.08-1.15x the Triton kernel at 16 tokens there; the Triton
kernel was faster at one token, on 64 x 64 and heads tiles, and at 2048 tokens."""


@dataclass(frozen=True)
class Variant:
    n1: int
    n2: int
    has_left: bool
    has_right: bool
    f16: bool
    packed: bool
    asym: bool
    bits: int

    @property
    def padded(self) -> tuple[int, int]:
        return -(-self.n1 // 16) * 16, -(-self.n2 // 16) * 16

    @property
    def warps(self) -> int:
        b1, b2 = self.padded
        return 8 if b1 * b2 <= 8192 else 16  # at most 8 of Y's 16 x 8 tiles per thread's registers

    def smem_bytes(self) -> int:
        """Dynamic shared memory: the factors, the token and T (16-bit, rows padded by 8)."""
        b1, b2 = self.padded
        elems = b2 * (b2 + 8) if self.has_right else 0
        elems += b1 * (b1 + 8) if self.has_left else 0
        elems += b1 * (b2 + 8) * (2 if self.has_left and self.has_right else 1)
        return 2 * elems


SOURCE, KERNEL = "transform_quant.cu", "transform_quant_tokens"


def defines(v: Variant) -> dict[str, int]:
    """The compile-time parameters of one variant (`transform_quant.cu` lists them)."""
    b1, b2 = v.padded
    qmin, qmax = (0, 2**v.bits - 1) if v.asym else (-(2 ** (v.bits - 1)), 2 ** (v.bits - 1) - 1)
    return {
        "N1": v.n1,
        "N2": v.n2,
        "B1": b1,
        "B2": b2,
        "HAS_LEFT": int(v.has_left),
        "HAS_RIGHT": int(v.has_right),
        "IN_F16": int(v.f16),
        "PACKED": int(v.packed),
        "ASYM": int(v.asym),
        "QMIN": qmin,
        "QMAX": qmax,
        "WARPS": v.warps,
    }


@functools.cache
def _kernel(v: Variant, device: int):
    return nvrtc.compile_kernel(SOURCE, KERNEL, defines(v), v.smem_bytes(), device)


def available(device: torch.device | str) -> bool:
    """Whether the kernel runs on `device` (compiled once per device to find out)."""
    return nvrtc.usable(device, _compile_default)


def _compile_default(device: int) -> object:
    return _kernel(Variant(64, 64, True, True, False, False, False, 4), device)


def _aligned_float32(factor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The factor as contiguous float32 on `device`, 16-byte aligned (the kernel reads float4s)."""
    f = factor.to(device, torch.float32).contiguous()
    return f if f.data_ptr() % 16 == 0 else f.clone()


def supports(
    x2: torch.Tensor, left: torch.Tensor | None, right: torch.Tensor | None, out_format: str
) -> bool:
    """Whether this kernel computes transform_quant(x2, ...) (else the Triton kernel does)."""
    if x2.dtype not in (torch.bfloat16, torch.float16) or out_format not in ("int8", "packed"):
        return False
    if (left is None and right is None) or not MIN_TOKENS <= x2.shape[0] <= MAX_TOKENS:
        return False
    n1, n2 = factor_sizes(x2.shape[-1], left, right)
    fits = n2 % 8 == 0 and max(n1, n2) <= MAX_SIDE
    return fits and n1 * n2 >= MIN_ELEMENTS and available(x2.device)


def launch(
    x2: torch.Tensor,
    left: torch.Tensor | None,
    right: torch.Tensor | None,
    clip: torch.Tensor,
    bits: int,
    out_format: str,
    symmetric: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(values [M, K or K/2], scales [M], zero points [M] or None) of x2 [M, K] (see `supports`);
    clip float32 [2] on x2's device."""
    m, k = x2.shape
    n1, n2 = factor_sizes(k, left, right)
    if x2.stride(1) != 1 or x2.stride(0) % 8 or x2.data_ptr() % 16:  # rows copied in 16-byte pieces
        x2 = x2.clone(memory_format=torch.contiguous_format)
    left, right = (None if f is None else _aligned_float32(f, x2.device) for f in (left, right))
    packed = out_format == "packed"
    f16, asym = x2.dtype == torch.float16, not symmetric
    v = Variant(n1, n2, left is not None, right is not None, f16, packed, asym, bits)
    width = k // 2 if packed else k
    q = torch.empty((m, width), dtype=torch.uint8 if packed else torch.int8, device=x2.device)
    scale = torch.empty((m,), dtype=torch.float32, device=x2.device)
    zero = None if symmetric else torch.empty((m,), dtype=torch.float32, device=x2.device)
    if m == 0:
        return q, scale, zero
    kernel = _kernel(v, x2.device.index)
    per_sm = max(1, min(8, (200 * 1024) // v.smem_bytes()))
    grid = (min(m, sm_count(x2) * per_sm), 1, 1)
    args = [x2, left if left is not None else clip, right if right is not None else clip, clip, q, scale]
    args += [zero if zero is not None else scale, m, x2.stride(0)]
    kernel(grid=grid, block=(32 * v.warps, 1, 1), args=args, shared_mem=v.smem_bytes())
    return q, scale, zero
