"""compressed-tensors' "pack-quantized" int4 layout: eight weights per int32 along the input dim.

Value `j` of each group of eight sits in bits 4j..4j+3 as an offset-binary nibble (q + 8, so -8..7
becomes 0..15); a row whose length is not a multiple of eight is padded with q = 0, and `weight_shape`
says where it ends. (fq-core's own checkpoint packs two two's-complement nibbles per uint8 instead.)
"""

from __future__ import annotations

import torch

PER_WORD = 8
OFFSET = 8


def pack_int32(q: torch.Tensor) -> torch.Tensor:
    """int4 values q [rows, cols] (any integer dtype, -8..7) -> int32 [rows, ceil(cols / 8)]."""
    rows, cols = q.shape
    if q.numel() and not (int(q.min()) >= -OFFSET and int(q.max()) < OFFSET):
        raise ValueError("pack_int32 packs signed int4 values in [-8, 7]")
    padded = torch.nn.functional.pad(q.to(torch.int64) + OFFSET, (0, -cols % PER_WORD), value=OFFSET)
    shifts = torch.arange(PER_WORD, dtype=torch.int64) * 4
    words = (padded.reshape(rows, -1, PER_WORD) << shifts).sum(dim=-1)
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)  # same 32 bits, signed


def unpack_int32(packed: torch.Tensor, cols: int) -> torch.Tensor:
    """The inverse of `pack_int32`: int32 [rows, words] -> int8 [rows, cols]."""
    if packed.dtype != torch.int32:
        raise ValueError(f"pack-quantized weights are int32, got {packed.dtype}")
    shifts = torch.arange(PER_WORD, dtype=torch.int64) * 4
    nibbles = (packed.to(torch.int64).unsqueeze(-1) >> shifts) & 0xF
    return (nibbles.reshape(packed.shape[0], -1)[:, :cols] - OFFSET).to(torch.int8)
