"""Weight layouts: the checkpoint's packed int4 rows, the decode tiles, the unpacked prefill copies.

The checkpoint stores a linear as packed int4 `qweight` [N, K/2] (fq-core's nibble order) plus one
scale per output channel. The Triton decode kernel reads that as it is. The CUDA decode kernel
(`fq_kernels.cuda`) reads the same bytes rearranged into tiles [N/16, K/64, 512] in the order its
tensor-core instructions consume them (`tile_decode_weight`; the kernel source explains the
order): same size, one 128-bit load per lane per tile, no shuffles. The prefill kernel wants the
values one per byte, int8 or float8 e4m3, K-major ([N, K], K contiguous, which is what Hopper's
8-bit wgmma needs for its B operand), so a `QuantLinear` makes that copy once at load. A layer with
asymmetric activations also keeps each row's sum of weights (the zero points' share of the GEMM).
"""

from __future__ import annotations

import torch

from fq_core.quant.pack import pack_int4, unpack_int4

PREFILL_KINDS: tuple[str, ...] = ("int8", "fp8")


def packed_weight(qweight: torch.Tensor) -> torch.Tensor:
    """Packed int4 [N, K/2] of weights stored packed (as is) or as decode tiles (untiled)."""
    if qweight.dtype != torch.uint8:
        raise ValueError(f"expected packed int4 weights (uint8), got {qweight.dtype}")
    return untile_decode_weight(qweight) if qweight.dim() == 3 else qweight


def prefill_weight(qweight: torch.Tensor, kind: str) -> torch.Tensor:
    """[N, K] int8 or float8_e4m3fn values of packed int4 weights [N, K/2] or decode tiles (exact)."""
    values = unpack_int4(packed_weight(qweight), signed=True)
    if kind == "int8":
        return values.contiguous()
    if kind == "fp8":
        return values.to(torch.float8_e4m3fn).contiguous()
    raise ValueError(f"prefill weight kind must be one of {', '.join(PREFILL_KINDS)}, got {kind!r}")


def weight_sums(qweight: torch.Tensor) -> torch.Tensor:
    """wsum [N] float32 of packed int4 weights [N, K/2] or decode tiles: sum_k w[n, k], exact
    (|wsum| <= 8 K < 2^24)."""
    return unpack_int4(packed_weight(qweight), signed=True).sum(dim=1, dtype=torch.int32).to(torch.float32)


def pack_weight(values: torch.Tensor) -> torch.Tensor:
    """Packed int4 [N, K/2] of integer weights [N, K] in [-8, 7] (fq-core's `pack_int4`)."""
    return pack_int4(values)


TILE_ROWS, TILE_K = 16, 64
"""A decode tile: 16 output rows x 64 k (512 bytes, 16 per lane of a warp)."""


def fits_decode_tiles(n: int, k: int) -> bool:
    """Whether an [N, K] weight splits into whole decode tiles (every LLaMA / SmolLM linear does)."""
    return n % TILE_ROWS == 0 and k % TILE_K == 0 and n > 0 and k > 0


def tile_decode_weight(qweight: torch.Tensor) -> torch.Tensor:
    """Decode tiles uint8 [N/16, K/64, 512] of packed int4 weights [N, K/2] (the same values).

    Byte 16 * (4g + t) + c of tile (r, s) holds w[16r + g, 64s + 16t + c] in its low nibble and
    w[16r + g + 8, 64s + 16t + c] in its high one (g < 8, t < 4, c < 16): lane 4g + t's A fragments
    of `mma.m16n8k32` for rows g and g + 8 (fq_kernels/cuda/decode_gemm.cu).
    """
    if qweight.dtype != torch.uint8 or qweight.dim() != 2:
        got = f"{qweight.dtype} {tuple(qweight.shape)}"
        raise ValueError(f"expected packed int4 weights uint8 [N, K/2], got {got}")
    n, k = qweight.shape[0], qweight.shape[1] * 2
    if not fits_decode_tiles(n, k):
        raise ValueError(f"decode tiles need N % {TILE_ROWS} == 0 and K % {TILE_K} == 0, got N={n}, K={k}")
    nibbles = unpack_int4(qweight, signed=True).to(torch.int16) & 0xF
    v = nibbles.view(n // TILE_ROWS, 2, 8, k // TILE_K, 4, 16)  # [tile, row half, g, step, t, c]
    byte = v[:, 0] | (v[:, 1] << 4)  # [tile, g, step, t, c]
    return byte.permute(0, 2, 1, 3, 4).reshape(n // TILE_ROWS, k // TILE_K, 512).to(torch.uint8).contiguous()


def untile_decode_weight(tiles: torch.Tensor) -> torch.Tensor:
    """Packed int4 weights [N, K/2] of decode tiles [N/16, K/64, 512] (inverse of `tile_decode_weight`)."""
    if tiles.dtype != torch.uint8 or tiles.dim() != 3 or tiles.shape[-1] != 512:
        got = f"{tiles.dtype} {tuple(tiles.shape)}"
        raise ValueError(f"expected decode tiles uint8 [N/16, K/64, 512], got {got}")
    row_tiles, steps = tiles.shape[:2]
    b = tiles.view(row_tiles, steps, 8, 4, 16).permute(0, 2, 1, 3, 4).to(torch.int16)  # [tile, g, ...]
    nibbles = torch.stack((b & 0xF, b >> 4), dim=1)  # [tile, row half, g, step, t, c]
    values = nibbles.reshape(row_tiles * TILE_ROWS, steps * TILE_K)
    return pack_int4(values - ((values & 0x8) << 1))


def decode_weight_shape(wq: torch.Tensor) -> tuple[int, int]:
    """(N, K) of a weight operand: decode tiles [N/16, K/64, 512], packed [N, K/2] or [N, K]."""
    if wq.dim() == 3:
        return wq.shape[0] * TILE_ROWS, wq.shape[1] * TILE_K
    return wq.shape[0], wq.shape[1] * 2 if wq.dtype == torch.uint8 else wq.shape[1]


def activation_format(tokens: int, weight: torch.Tensor) -> str:
    """What transform_quant writes for a GEMM at `tokens` on `weight` (as stored): the prefill copy's
    own type (int8 or fp8); int8 values for decode tiles (16 bytes of a token per 128-bit load) and,
    on packed weights, for one token (the dp4a GEMV reads them as words), packed nibbles for a few
    (the Triton tensor-core decode kernel's)."""
    if weight.dtype == torch.float8_e4m3fn:
        return "fp8"
    if weight.dtype == torch.int8 or weight.dim() == 3:
        return "int8"
    return "int8" if tokens == 1 else "packed"
