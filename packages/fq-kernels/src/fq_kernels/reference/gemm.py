"""Reference of the W4A4 GEMM: exact integer accumulation, then the float epilogue.

`w4a4_linear_ref` defines `fq_kernels.w4a4_linear`:

    acc[m, n] = sum_k xq[m, k] * wq[n, k]                   (exact; integer)
    out[m, n] = ((float32(acc) * sx[m]) * sw[n] + bias[n])  (float32, in this order) -> out_dtype

Operands may be stored as packed int4 (uint8, two values per byte, fq-core's nibble order), int8,
or float8 e4m3 holding integers; all give the same values. The accumulator is computed in float64
here, which is exact for these magnitudes (|acc| <= 64 K < 2^53) and works on CUDA too (integer
matmuls do not). A kernel's integer accumulator must equal `int_matmul_ref` exactly; its float
output may differ from this by one rounding of the float32 epilogue (it may fuse the bias add into
a fused multiply-add) before the cast to `out_dtype`.
"""

from __future__ import annotations

import torch

from fq_core.quant.pack import unpack_int4


def operand_values(t: torch.Tensor, k: int) -> torch.Tensor:
    """The integer values [rows, k] of a GEMM operand, as float64 (exact)."""
    t2 = t.reshape(-1, t.shape[-1])
    if t2.dtype == torch.uint8:
        if t2.shape[-1] * 2 != k:
            raise ValueError(f"packed int4 operand has {t2.shape[-1]} bytes per row, expected K/2 = {k // 2}")
        return unpack_int4(t2, signed=True).to(torch.float64)
    if t2.shape[-1] != k:
        raise ValueError(f"operand has {t2.shape[-1]} values per row, expected K = {k}")
    if t2.dtype in (torch.int8, torch.float8_e4m3fn):
        return t2.to(torch.float64)
    raise ValueError(f"operand dtype {t2.dtype} is not packed int4 (uint8), int8 or float8_e4m3fn")


def gemm_k(wq: torch.Tensor) -> int:
    """K of a weight operand [N, K/2] (packed uint8) or [N, K] (int8 / fp8)."""
    return wq.shape[-1] * 2 if wq.dtype == torch.uint8 else wq.shape[-1]


def int_matmul_ref(xq: torch.Tensor, wq: torch.Tensor) -> torch.Tensor:
    """Exact integer accumulators [M, N] as int32 (|acc| <= 64 K fits for K < 2^25)."""
    k = gemm_k(wq)
    a = operand_values(xq, k)
    b = operand_values(wq, k)
    return (a @ b.T).to(torch.int32)


def w4a4_linear_ref(
    xq: torch.Tensor,
    sx: torch.Tensor,
    wq: torch.Tensor,
    sw: torch.Tensor,
    bias: torch.Tensor | None = None,
    out_dtype: torch.dtype = torch.bfloat16,
) -> torch.Tensor:
    """out [..., N] = epilogue(exact acc); xq [..., K or K/2], sx [...], wq [N, K or K/2], sw [N]."""
    lead = xq.shape[:-1]
    acc = int_matmul_ref(xq, wq).to(torch.float32)
    out = acc * sx.reshape(-1, 1).to(torch.float32) * sw.reshape(1, -1).to(torch.float32)
    if bias is not None:
        out = out + bias.reshape(1, -1).to(torch.float32)
    return out.to(out_dtype).reshape(*lead, wq.shape[0])
