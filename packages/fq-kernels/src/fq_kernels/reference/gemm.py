"""Reference of the W4A4 GEMM: exact integer accumulation, then the float epilogue.

`w4a4_linear_ref` defines `fq_kernels.w4a4_linear`:

    acc[m, n] = sum_k xq[m, k] * wq[n, k]                   (exact; integer)
    out[m, n] = ((float32(acc) * sx[m]) * sw[n] + bias[n])  (float32, in this order) -> out_dtype

Asymmetric activations (`transform_quant_asym`) arrive shifted, xq = q - 8 and zx = zero - 8, so
the GEMM main loop is the symmetric one and the epilogue subtracts the zero point's share:

    sum_k (q - zero)[m, k] * w[n, k] = acc[m, n] - zx[m] * wsum[n],   wsum[n] = sum_k w[n, k]

    out[m, n] = (((float32(acc) - zx[m] * wsum[n]) * sx[m]) * sw[n] + bias[n])

with wsum computed once per weight (`fq_kernels.layout.weight_sums`). Every term is an integer, and
the float32 subtraction is exact while all three are below 2^24: |acc| <= 64 K, |zx * wsum| <= 64 K
and the difference |sum (q - zero) w| <= 15 * 8 K for int4 (8 (2^b - 1) K for b-bit activations),
so up to K = ASYM_MAX_K = 2^17 with int4 activations (a fused multiply-add is exact too: it rounds
once, and the exact result is representable).

Operands may be stored as packed int4 (uint8, two values per byte, fq-core's nibble order), as
decode tiles (weights only, `fq_kernels.layout.tile_decode_weight`), int8, or float8 e4m3 holding
integers; all give the same values. The accumulator is computed in float64
here, which is exact for these magnitudes (|acc| <= 64 K < 2^53) and works on CUDA too (integer
matmuls do not). A kernel's integer accumulator must equal `int_matmul_ref` exactly; its float
output may differ from this by one rounding of the float32 epilogue (it may fuse the bias add into
a fused multiply-add) before the cast to `out_dtype`.

SwiGLU (`swiglu=True`): the weight rows are a gate projection's then an up projection's, N/2 each
(a fused gate|up linear), and the result is silu(gate) * up [..., N/2], rounded as the unfused
layer rounds it: gate and up to `out_dtype`, silu(gate) to `out_dtype`, then the product.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fq_core.quant.pack import unpack_int4
from fq_kernels.layout import decode_weight_shape, untile_decode_weight

ASYM_MAX_K = 2**17
"""Largest K for which the asymmetric epilogue stays exact with int4 activations (module docstring)."""


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
    """K of a weight operand [N, K/2] (packed uint8), [N/16, K/64, 512] (decode tiles) or [N, K]."""
    return decode_weight_shape(wq)[1]


def gemm_n(wq: torch.Tensor) -> int:
    """N (output channels) of a weight operand, in any of `gemm_k`'s layouts."""
    return decode_weight_shape(wq)[0]


def int_matmul_ref(xq: torch.Tensor, wq: torch.Tensor) -> torch.Tensor:
    """Exact integer accumulators [M, N] as int32 (|acc| <= 64 K fits for K < 2^25)."""
    k = gemm_k(wq)
    a = operand_values(xq, k)
    b = operand_values(untile_decode_weight(wq) if wq.dim() == 3 else wq, k)
    return (a @ b.T).to(torch.int32)


def w4a4_linear_ref(
    xq: torch.Tensor,
    sx: torch.Tensor,
    wq: torch.Tensor,
    sw: torch.Tensor,
    bias: torch.Tensor | None = None,
    out_dtype: torch.dtype = torch.bfloat16,
    zx: torch.Tensor | None = None,
    wsum: torch.Tensor | None = None,
    swiglu: bool = False,
) -> torch.Tensor:
    """out [..., N] = epilogue(exact acc); xq [..., K or K/2], sx [...], wq [N, K or K/2], sw [N];
    asymmetric activations add their shifted zero points zx [...] and the weights' wsum [N];
    swiglu: silu(gate) * up of the two halves of the rows, [..., N/2] (module docstring)."""
    lead = xq.shape[:-1]
    acc = int_matmul_ref(xq, wq).to(torch.float32)
    if zx is not None:
        if wsum is None:
            raise ValueError("asymmetric activations (zx) need the weights' row sums (wsum)")
        acc = acc - zx.reshape(-1, 1).to(torch.float32) * wsum.reshape(1, -1).to(torch.float32)
    out = acc * sx.reshape(-1, 1).to(torch.float32) * sw.reshape(1, -1).to(torch.float32)
    if bias is not None:
        out = out + bias.reshape(1, -1).to(torch.float32)
    out = out.to(out_dtype).reshape(*lead, gemm_n(wq))
    return swiglu_halves(out) if swiglu else out


def swiglu_halves(y: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up [..., N/2] of y [..., N] = gate | up, in y's dtype (silu rounds to it, then
    the product: what `act_fn(gate) * up` does on the unfused layer's output)."""
    gate, up = y.chunk(2, dim=-1)
    return F.silu(gate) * up
