"""Packing of 4-bit integers, two per byte: the one layout the checkpoint and the kernels share.

Layout: along the last dim, element 2i goes to the low nibble (bits 0-3) and element 2i+1 to the
high nibble (bits 4-7) of byte i. Signed values (-8..7) are stored as their 4-bit two's complement,
unsigned values (0..15) as they are. So a row of K int4 values becomes K/2 uint8 bytes, and
`packed[..., i] = (v[..., 2i] & 0xF) | (v[..., 2i+1] & 0xF) << 4`.
"""

from __future__ import annotations

import torch


def pack_int4(values: torch.Tensor) -> torch.Tensor:
    """Pack integer values in [-8, 7] or [0, 15] (any integer or float dtype) into uint8."""
    if values.shape[-1] % 2:
        raise ValueError(f"pack_int4 needs an even last dim, got {values.shape[-1]}")
    v = values.to(torch.int16)
    if v.numel() and (v.min() < -8 or v.max() > 15):
        raise ValueError("pack_int4 values must lie in [-8, 7] (signed) or [0, 15] (unsigned)")
    nibbles = (v & 0xF).to(torch.uint8)
    return nibbles[..., 0::2] | (nibbles[..., 1::2] << 4)


def unpack_int4(packed: torch.Tensor, signed: bool = True) -> torch.Tensor:
    """Inverse of `pack_int4`: int8 values in [-8, 7] (signed) or [0, 15] (unsigned)."""
    if packed.dtype != torch.uint8:
        raise ValueError(f"unpack_int4 expects uint8, got {packed.dtype}")
    low = (packed & 0xF).to(torch.int8)
    high = (packed >> 4).to(torch.int8)
    if signed:
        low = low - ((low & 0x8) << 1)
        high = high - ((high & 0x8) << 1)
    return torch.stack((low, high), dim=-1).reshape(*packed.shape[:-1], packed.shape[-1] * 2)
