"""Weight layouts: the checkpoint's packed int4 rows, and the unpacked prefill copies.

The checkpoint stores a linear as packed int4 `qweight` [N, K/2] (fq-core's nibble order) plus one
scale per output channel. The decode kernel reads that as it is. The prefill kernel wants the same
values one per byte, int8 or float8 e4m3, K-major ([N, K], K contiguous, which is what Hopper's
8-bit wgmma needs for its B operand), so a `QuantLinear` makes that copy once at load. A layer with
asymmetric activations also keeps each row's sum of weights (the zero points' share of the GEMM).
"""

from __future__ import annotations

import torch

from fq_core.quant.pack import pack_int4, unpack_int4

PREFILL_KINDS: tuple[str, ...] = ("int8", "fp8")


def prefill_weight(qweight: torch.Tensor, kind: str) -> torch.Tensor:
    """[N, K] int8 or float8_e4m3fn values of packed int4 weights [N, K/2] (exact)."""
    if qweight.dtype != torch.uint8:
        raise ValueError(f"expected packed int4 weights (uint8), got {qweight.dtype}")
    values = unpack_int4(qweight, signed=True)
    if kind == "int8":
        return values.contiguous()
    if kind == "fp8":
        return values.to(torch.float8_e4m3fn).contiguous()
    raise ValueError(f"prefill weight kind must be one of {', '.join(PREFILL_KINDS)}, got {kind!r}")


def weight_sums(qweight: torch.Tensor) -> torch.Tensor:
    """wsum [N] float32 of packed int4 weights [N, K/2]: sum_k w[n, k], exact (|wsum| <= 8 K < 2^24)."""
    if qweight.dtype != torch.uint8:
        raise ValueError(f"expected packed int4 weights (uint8), got {qweight.dtype}")
    return unpack_int4(qweight, signed=True).sum(dim=1, dtype=torch.int32).to(torch.float32)


def pack_weight(values: torch.Tensor) -> torch.Tensor:
    """Packed int4 [N, K/2] of integer weights [N, K] in [-8, 7] (fq-core's `pack_int4`)."""
    return pack_int4(values)


def activation_format(tokens: int, weight_dtype: torch.dtype) -> str:
    """What transform_quant writes for a GEMM on weights stored as `weight_dtype` at `tokens`: the
    prefill copy's own type (int8 or fp8); on packed weights (uint8) int8 values for one token (the
    dp4a GEMV reads them as words) and packed nibbles for a few (the tensor-core decode kernel's)."""
    if weight_dtype == torch.float8_e4m3fn:
        return "fp8"
    if weight_dtype == torch.int8:
        return "int8"
    return "int8" if tokens == 1 else "packed"
