"""Decode tiles (`fq_kernels.layout.tile_decode_weight`) and the CUDA kernel's use of them, on CPU.

The CUDA kernel itself runs only on a GPU (`test_kernels_gpu.py`); here its arithmetic is replayed
lane by lane: each lane's 16 weight bytes and 16 activation bytes per 64-k step, unpacked as the
kernel unpacks them, placed into `mma.m16n8k32` fragments by the PTX ISA's fragment tables, and
the accumulator fragments summed back as the kernel's epilogue indexes them. The replay must give
the exact integer GEMM of the reference, so a wrong byte order in the tiles, a wrong k permutation
or a wrong fragment index fails here before any GPU sees it.
"""

from __future__ import annotations

import pytest
import torch

from fq_core.quant.pack import pack_int4, unpack_int4
from fq_kernels import reference as ref
from fq_kernels.layout import (
    activation_format,
    fits_decode_tiles,
    packed_weight,
    tile_decode_weight,
    untile_decode_weight,
    weight_sums,
)
from fq_kernels.ops import w4a4_linear, w4a4_matmul_int
from fq_kernels.quant_linear import PrefillCopyWarning, QuantLinear
from fq_kernels.testing import assert_epilogue_close, epilogue_terms


def _weights(n: int, k: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-8, 8, (n, k), generator=g, dtype=torch.int8)


def test_tiles_round_trip_and_keep_the_size() -> None:
    packed = pack_int4(_weights(48, 192))
    tiles = tile_decode_weight(packed)
    assert tiles.shape == (3, 3, 512) and tiles.dtype == torch.uint8
    assert tiles.numel() == packed.numel()
    assert torch.equal(untile_decode_weight(tiles), packed)
    assert torch.equal(packed_weight(tiles), packed) and packed_weight(packed) is packed
    assert torch.equal(weight_sums(tiles), weight_sums(packed))


def test_tile_bytes_follow_the_documented_formula() -> None:
    """Byte 16 (4g + t) + c of tile (r, s): w[16r + g, 64s + 16t + c] low, w[16r + g + 8, ...] high."""
    w = _weights(32, 128, seed=1)
    tiles = tile_decode_weight(pack_int4(w))
    for r, s, g, t, c in [(0, 0, 0, 0, 0), (1, 1, 7, 3, 15), (1, 0, 2, 1, 9), (0, 1, 5, 2, 4)]:
        row, k = 16 * r + g, 64 * s + 16 * t + c
        want = (int(w[row, k]) & 0xF) | ((int(w[row + 8, k]) & 0xF) << 4)
        assert int(tiles[r, s, 16 * (4 * g + t) + c]) == want


def test_shapes_that_do_not_tile_are_refused() -> None:
    assert fits_decode_tiles(4096, 11008) and fits_decode_tiles(576, 1536)
    assert not fits_decode_tiles(40, 128) and not fits_decode_tiles(32, 96)
    with pytest.raises(ValueError, match="K % 64"):
        tile_decode_weight(pack_int4(_weights(40, 128)))


def _signed_bytes(word_bytes: torch.Tensor) -> torch.Tensor:
    return word_bytes.to(torch.int16).where(word_bytes < 128, word_bytes.to(torch.int16) - 256)


def _replay_kernel(tiles: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The integer result of decode_gemm.cu, replayed lane by lane (one warp, all steps)."""
    row_tiles, steps, _ = tiles.shape
    m = x.shape[0]
    out = torch.zeros(m, 16 * row_tiles, dtype=torch.int64)
    for r in range(row_tiles):
        for m0 in range(0, m, 16):
            for group in range(2):  # token groups: lanes' B fragments from tokens g and g + 8
                acc = torch.zeros(16, 8, dtype=torch.int64)  # the MMA's D, rows = weight rows
                for s in range(steps):
                    for half in range(2):  # the two k32 MMAs of a 64-k step
                        a_mat = torch.zeros(16, 32, dtype=torch.int64)
                        b_mat = torch.zeros(32, 8, dtype=torch.int64)
                        for lane in range(32):
                            g, t = lane >> 2, lane & 3
                            words = tiles[r, s, 16 * lane : 16 * lane + 16].view(4, 4).to(torch.int16)
                            p, q = words[2 * half], words[2 * half + 1]
                            lo = lambda b: _signed_bytes(((b << 4) & 0xF0).to(torch.uint8))  # noqa: E731
                            hi = lambda b: _signed_bytes((b & 0xF0).to(torch.uint8))  # noqa: E731
                            # PTX m16n8k32 .s8 A fragment: a0 (row g, k 4t..), a1 (row g+8, k 4t..),
                            # a2 (row g, k 16+4t..), a3 (row g+8, k 16+4t..)
                            a_mat[g, 4 * t : 4 * t + 4] = lo(p)
                            a_mat[g + 8, 4 * t : 4 * t + 4] = hi(p)
                            a_mat[g, 16 + 4 * t : 20 + 4 * t] = lo(q)
                            a_mat[g + 8, 16 + 4 * t : 20 + 4 * t] = hi(q)
                            token = min(m0 + 8 * group + g, m - 1)
                            seg = x[token, 64 * s + 16 * t : 64 * s + 16 * t + 16].view(4, 4)
                            # B fragment: b0 (k 4t.., column g), b1 (k 16+4t.., column g)
                            b_mat[4 * t : 4 * t + 4, g] = seg[2 * half].long()
                            b_mat[16 + 4 * t : 20 + 4 * t, g] = seg[2 * half + 1].long()
                        acc += a_mat @ b_mat
                # C fragment c of lane (g, t): row g + 8 (c >> 1), column 2t + (c & 1): the kernel's
                # partial[...][16 j + g + 8 (c >> 1)][8 h + 2t + (c & 1)]; every (row, column) once
                for lane in range(32):
                    g, t = lane >> 2, lane & 3
                    for c in range(4):
                        row, col = g + 8 * (c >> 1), 2 * t + (c & 1)
                        token = m0 + 8 * group + col
                        if token < m:
                            out[token, 16 * r + row] = acc[row, col] >> 4
    return out


@pytest.mark.parametrize(("m", "n", "k"), [(3, 32, 128), (11, 16, 192), (20, 16, 64)])
def test_kernel_replay_gives_the_exact_integer_gemm(m: int, n: int, k: int) -> None:
    w = _weights(n, k, seed=m)
    x = torch.randint(-128, 128, (m, k), generator=torch.Generator().manual_seed(k), dtype=torch.int8)
    tiles = tile_decode_weight(pack_int4(w))
    want = x.long() @ w.long().T
    assert torch.equal(_replay_kernel(tiles, x), want)


def test_op_with_tiles_equals_the_reference_on_packed_rows_on_cpu() -> None:
    """Off CUDA the op runs the Triton prompt GEMM on the tiles (interpreter) or the reference,
    which reads tiles like packed rows: the same integers, the same float32 epilogue."""
    g = torch.Generator().manual_seed(3)
    w = _weights(64, 256, seed=3)
    x = torch.randint(-8, 8, (5, 256), generator=g, dtype=torch.int8)
    sx, sw = torch.rand(5, generator=g) + 0.1, torch.rand(64, generator=g) * 0.01
    bias = torch.randn(64, generator=g)
    packed, tiles = pack_int4(w), tile_decode_weight(pack_int4(w))
    assert torch.equal(w4a4_matmul_int(x, tiles), ref.int_matmul_ref(x, packed))
    want = ref.w4a4_linear_ref(x, sx, packed, sw, bias, torch.float32)
    out = w4a4_linear(x, sx, tiles, sw, bias, torch.float32)
    assert_epilogue_close(out, want, epilogue_terms(x, sx, packed, sw, bias))
    with pytest.raises(ValueError, match="decode tiles take int8 activations"):
        w4a4_linear(pack_int4(x), sx, tiles, sw)
    assert activation_format(1, tiles) == "int8" and activation_format(16, tiles) == "int8"
    assert activation_format(16, packed) == "packed"


def test_quant_linear_decode_layouts_agree_on_cpu() -> None:
    g = torch.Generator().manual_seed(4)
    w = _weights(32, 128, seed=4)
    scale = torch.rand(32, generator=g) * 0.01 + 0.001
    right = torch.linalg.qr(torch.randn(16, 16, generator=g))[0]
    left = torch.linalg.qr(torch.randn(8, 8, generator=g))[0]
    tiled = QuantLinear(pack_int4(w), scale, left=left, right=right)
    rows = QuantLinear(pack_int4(w), scale, left=left, right=right, decode="packed")
    assert rows.qweight.dim() == 2
    assert tiled.qweight.shape == (2, 2, 512) and "decode=tiles" in repr(tiled), "tiles wherever they fit"
    assert torch.equal(tiled.packed_qweight(), pack_int4(w))
    x = torch.randn(3, 128, generator=g)
    assert torch.equal(tiled(x), rows(x))
    assert torch.equal(unpack_int4(tiled.prepare(decode="packed").qweight), w)
    with pytest.raises(ValueError, match="decode='packed'"):
        QuantLinear(pack_int4(_weights(40, 128)), torch.ones(40), decode="tiles")


def test_shapes_without_whole_tiles_keep_packed_rows_and_no_copy() -> None:
    """N % 16 != 0: the documented slower path (packed rows, the decode kernels at every token
    count), never a silent one-byte copy; a prompt gives the reference's result."""
    g = torch.Generator().manual_seed(8)
    w = _weights(40, 128, seed=8)
    layer = QuantLinear(pack_int4(w), torch.rand(40, generator=g) * 0.01 + 0.001)
    assert layer.qweight.shape == (40, 64) and layer.prefill_weight is None
    x = torch.randn(50, 128, generator=g)
    torch.testing.assert_close(layer(x), layer.reference_forward(x), rtol=1e-5, atol=1e-5)


def test_decode_path_takes_more_tokens_on_tiles() -> None:
    """Tiles serve up to TILES_MAX_TOKENS tokens, packed rows DECODE_MAX_TOKENS; an explicit
    decode_max_tokens wins."""
    from fq_kernels.quant_linear import DECODE_MAX_TOKENS, TILES_MAX_TOKENS

    packed = pack_int4(_weights(32, 128, seed=6))
    with pytest.warns(PrefillCopyWarning, match=r"int8 prefill copy adds 0\.0 MiB"):
        tiles = QuantLinear(packed, torch.ones(32), prefill="int8", decode="tiles")
        rows = QuantLinear(packed, torch.ones(32), prefill="int8", decode="packed")
        fixed = QuantLinear(packed, torch.ones(32), prefill="int8", decode="tiles", decode_max_tokens=4)
    assert tiles.uses_decode_path(TILES_MAX_TOKENS) and not tiles.uses_decode_path(TILES_MAX_TOKENS + 1)
    assert rows.uses_decode_path(DECODE_MAX_TOKENS) and not rows.uses_decode_path(DECODE_MAX_TOKENS + 1)
    assert fixed.uses_decode_path(4) and not fixed.uses_decode_path(5)
    x = torch.randn(TILES_MAX_TOKENS, 128)
    assert torch.equal(tiles(x), rows(x))  # 32 tokens: tiles' decode path, rows' prefill copy
