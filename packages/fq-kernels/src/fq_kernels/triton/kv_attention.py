"""Decode attention straight from the int4 KV cache (flash-decoding: split over positions, then merge).

One query token per sequence. Dequantising the whole cache to float first would write and re-read
4x the cache's bytes every step, which at batch 16 and 2k context costs more than the layer's
weights; here each program reads its slice of packed keys and values once, dequantises them in
registers and keeps a running softmax, so the cache is read at its int4 size.

Grid of the first kernel: (batch x kv heads, splits). A program takes the `groups` query heads that
share one kv head (grouped-query attention; padded to 16 rows for the tensor-core dot) and the
positions [split * SPLIT_LEN, ...) below the sequence's length, read from `lengths` on the device so
that a captured CUDA graph replays for any length. It writes an unnormalised partial output, its
running max and its sum. The second kernel merges the splits of each query head.

Byte j of a cached row holds dimensions 2j (low nibble) and 2j + 1 (high nibble). Rather than
interleave them back (a register shuffle through shared memory on every block), the kernel keeps
even and odd dimensions apart: q·k = q_even·k_even + q_odd·k_odd, and p @ v is accumulated as its
even and odd columns, stored to their places at the end.

With one (scale, zero) per cached row (group = head_dim, the default) the dequantisation is folded
out of the per-element work, which is what bounds the kernel (it read the cache at ~1 TB/s while
dequantising every element in float32, docs/benchmarks/decode.md):
    q·k_s = scale_s·(q·c_s - zero_s·Σq)   and   Σ_s p_s·v_s = Σ_s (p_s·scale_s)·c_s - Σ_s p_s·scale_s·zero_s,
so the codes c enter the dots as small integers (exact in fp16) and each row costs two scalars.
The CUDA-core kernel goes one step further: it is bound by the instructions that turn codes into
floats, so it reads the codes as int32 words and takes each code as the float 0.5 + c/256, built
by one byte permute (`_word_codes`), folding the constant into the same two scalars.
Both kernels issue the loads of the next block of positions before the math of this one (a
software pipeline written out: Triton pipelines only loads that feed a dot directly). Two ways to
do the dots (`KVAttentionConfig.method`): "mma" uses tensor-core dots with the query
heads of a kv head as rows (padded to 16); "fma" (multi-head attention only: one query row) uses
CUDA-core multiply-adds into a [positions, D/2] accumulator reduced once at the end, and rescales
it only when the running max grows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from fq_kernels import tuning
from fq_kernels._runtime import interpreting, next_pow2, sm_count
from fq_kernels.reference.kv import QuantizedKV


@triton.jit
def _load_rows(codes_ptr, scale_ptr, zero_ptr, rows, s_mask, D: tl.constexpr, G: tl.constexpr):
    """Raw bytes [BLOCK_S, D/2] of cache `rows` with their scales and zero points (float32): per
    row [BLOCK_S] when a row is one group, else per element [BLOCK_S, D/2]. Masked rows read as 0."""
    half = tl.arange(0, D // 2)
    byte = tl.load(codes_ptr + rows[:, None] * (D // 2) + half[None, :], mask=s_mask[:, None], other=0)
    if D == G:
        scale = tl.load(scale_ptr + rows, mask=s_mask, other=0.0)
        zero = tl.load(zero_ptr + rows, mask=s_mask, other=0).to(tl.float32)
    else:
        group = rows[:, None] * (D // G) + (half // (G // 2))[None, :]
        scale = tl.load(scale_ptr + group, mask=s_mask[:, None], other=0.0)
        zero = tl.load(zero_ptr + group, mask=s_mask[:, None], other=0).to(tl.float32)
    return byte, scale, zero


@triton.jit
def _halves(byte):
    """The 4-bit codes of bytes [BLOCK_S, D/2] as (even dims, odd dims) float32 values 0..15.

    An integer below 2^23 OR'd into the mantissa of 2^23 is 2^23 + c exactly: one OR and one
    subtraction instead of an integer-to-float conversion, which runs at a quarter of the rate."""
    byte = byte.to(tl.int32)
    even = ((byte & 15) | 0x4B000000).to(tl.float32, bitcast=True) - 8388608.0
    odd = ((byte >> 4) | 0x4B000000).to(tl.float32, bitcast=True) - 8388608.0
    return even, odd


_WORD_CODES_PTX = tl.constexpr("""{
    .reg .b32 lo, hi, half;
    and.b32 lo, $8, 0x0F0F0F0F;
    shr.u32 hi, $8, 4;
    and.b32 hi, hi, 0x0F0F0F0F;
    mov.b32 half, 0x3F000000;
    prmt.b32 $0, lo, half, 0x7054;
    prmt.b32 $1, hi, half, 0x7054;
    prmt.b32 $2, lo, half, 0x7154;
    prmt.b32 $3, hi, half, 0x7154;
    prmt.b32 $4, lo, half, 0x7254;
    prmt.b32 $5, hi, half, 0x7254;
    prmt.b32 $6, lo, half, 0x7354;
    prmt.b32 $7, hi, half, 0x7354;
}""")
"""One int32 word of a cached row (4 bytes, 8 codes) to eight float32 values, in dimension order:
code c (a byte's low or high nibble) becomes bits 16-19 of 0x3F000000, i.e. 0.5 + c/256, by one
`prmt` that also supplies the exponent byte."""


@triton.jit
def _load_words(codes_ptr, scale_ptr, zero_ptr, rows, s_mask, D: tl.constexpr):
    """Cache `rows` as int32 words [BLOCK_S, D/8] (word w: dims 8w .. 8w + 7) with their per-row
    scales and zero points (float32). Masked rows read as 0."""
    w = tl.arange(0, D // 8)
    word = tl.load(codes_ptr + rows[:, None] * (D // 8) + w[None, :], mask=s_mask[:, None], other=0)
    scale = tl.load(scale_ptr + rows, mask=s_mask, other=0.0)
    zero = tl.load(zero_ptr + rows, mask=s_mask, other=0).to(tl.float32)
    return word, scale, zero


@triton.jit
def _word_codes(word, NATIVE: tl.constexpr):
    """The eight codes c of int32 words (dims 8w + j, j = 0..7) as float32 0.5 + c/256.

    Exact (c/256 needs four mantissa bits), and one `prmt` per value plus three logic operations per
    word, where an integer-to-float conversion (or an OR, a shift and a subtraction) per value and
    a repack of the loaded bytes cost the CUDA-core kernel ~2.5x the instructions (docs/benchmarks/
    decode.md). The callers fold the constant 0.5 into their row scalars."""
    if NATIVE:
        c0, c1, c2, c3, c4, c5, c6, c7 = tl.inline_asm_elementwise(
            _WORD_CODES_PTX,
            "=r,=r,=r,=r,=r,=r,=r,=r,r",
            [word],
            dtype=(tl.float32,) * 8,
            is_pure=True,
            pack=1,
        )
    else:  # the same values in plain arithmetic for the interpreter
        c0 = (word & 15).to(tl.float32) * 0.00390625 + 0.5
        c1 = ((word >> 4) & 15).to(tl.float32) * 0.00390625 + 0.5
        c2 = ((word >> 8) & 15).to(tl.float32) * 0.00390625 + 0.5
        c3 = ((word >> 12) & 15).to(tl.float32) * 0.00390625 + 0.5
        c4 = ((word >> 16) & 15).to(tl.float32) * 0.00390625 + 0.5
        c5 = ((word >> 20) & 15).to(tl.float32) * 0.00390625 + 0.5
        c6 = ((word >> 24) & 15).to(tl.float32) * 0.00390625 + 0.5
        c7 = ((word >> 28) & 15).to(tl.float32) * 0.00390625 + 0.5
    return c0, c1, c2, c3, c4, c5, c6, c7


@triton.jit
def _dot(a, b, IEEE: tl.constexpr):
    if IEEE:  # noqa: SIM108 (constexpr branches)
        out = tl.dot(a, b, input_precision="ieee")
    else:
        out = tl.dot(a, b)
    return out


@triton.jit
def _split_mma_kernel(
    q_ptr,
    kc_ptr,
    ks_ptr,
    kz_ptr,
    vc_ptr,
    vs_ptr,
    vz_ptr,
    len_ptr,
    part_ptr,
    stat_ptr,
    scaling,
    HKV,
    S,
    SPLIT_LEN,
    NUM_SPLITS,
    GROUPS: tl.constexpr,
    QG: tl.constexpr,
    D: tl.constexpr,
    G: tl.constexpr,
    BLOCK_S: tl.constexpr,
    IEEE: tl.constexpr,
):
    pid_bh = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1)
    b = pid_bh // HKV
    length = tl.load(len_ptr + b).to(tl.int32)
    start = split * SPLIT_LEN
    end = tl.minimum(start + SPLIT_LEN, length)
    FOLD: tl.constexpr = G == D  # one scale and zero per cached row: fold them out of the dots

    rows = tl.arange(0, QG)
    row_mask = rows < GROUPS
    half = tl.arange(0, D // 2)
    heads = pid_bh * GROUPS + rows  # query heads b * Hq + h for the kv head of this program
    q_rows = q_ptr + heads[:, None] * D + 2 * half[None, :]
    q_even = tl.load(q_rows, mask=row_mask[:, None], other=0.0)
    q_odd = tl.load(q_rows + 1, mask=row_mask[:, None], other=0.0)
    dtype = q_even.dtype
    q_even = (q_even.to(tl.float32) * scaling).to(dtype)
    q_odd = (q_odd.to(tl.float32) * scaling).to(dtype)
    q_sum = tl.sum(q_even.to(tl.float32), axis=1) + tl.sum(q_odd.to(tl.float32), axis=1)

    base = pid_bh * S  # the kv head's first cache row
    m = tl.full([QG], float("-inf"), tl.float32)
    total = tl.zeros([QG], tl.float32)
    zero_term = tl.zeros([QG], tl.float32)  # Σ_s p_s·scale_s·zero_s of the folded values
    acc_even = tl.zeros([QG, D // 2], tl.float32)
    acc_odd = tl.zeros([QG, D // 2], tl.float32)
    # Software pipeline by hand: the loads of block i + 1 are issued before block i's math.
    offs_s = start + tl.arange(0, BLOCK_S)
    kb, ks, kz = _load_rows(kc_ptr, ks_ptr, kz_ptr, base + offs_s, offs_s < end, D, G)
    vb, vs, vz = _load_rows(vc_ptr, vs_ptr, vz_ptr, base + offs_s, offs_s < end, D, G)
    for s0 in range(start, end, BLOCK_S):
        s_mask = s0 + tl.arange(0, BLOCK_S) < end
        nxt = s0 + BLOCK_S + tl.arange(0, BLOCK_S)
        kb_n, ks_n, kz_n = _load_rows(kc_ptr, ks_ptr, kz_ptr, base + nxt, nxt < end, D, G)
        vb_n, vs_n, vz_n = _load_rows(vc_ptr, vs_ptr, vz_ptr, base + nxt, nxt < end, D, G)

        k_even, k_odd = _halves(kb)
        if FOLD:
            raw = _dot(q_even, tl.trans(k_even.to(dtype)), IEEE) + _dot(
                q_odd, tl.trans(k_odd.to(dtype)), IEEE
            )
            scores = (raw - q_sum[:, None] * kz[None, :]) * ks[None, :]
        else:
            k_even = ((k_even - kz) * ks).to(dtype)
            k_odd = ((k_odd - kz) * ks).to(dtype)
            scores = _dot(q_even, tl.trans(k_even), IEEE) + _dot(q_odd, tl.trans(k_odd), IEEE)
        scores = tl.where(s_mask[None, :], scores, float("-inf"))
        m_new = tl.maximum(m, tl.max(scores, axis=1))
        p = tl.exp(scores - m_new[:, None])
        alpha = tl.exp(m - m_new)
        total = total * alpha + tl.sum(p, axis=1)
        v_even, v_odd = _halves(vb)
        if FOLD:
            p = p * vs[None, :]
            zero_term = zero_term * alpha + tl.sum(p * vz[None, :], axis=1)
        else:
            v_even = (v_even - vz) * vs
            v_odd = (v_odd - vz) * vs
        p = p.to(dtype)
        acc_even = acc_even * alpha[:, None] + _dot(p, v_even.to(dtype), IEEE)
        acc_odd = acc_odd * alpha[:, None] + _dot(p, v_odd.to(dtype), IEEE)
        m = m_new
        kb, ks, kz, vb, vs, vz = kb_n, ks_n, kz_n, vb_n, vs_n, vz_n

    slot = heads * NUM_SPLITS + split
    out_rows = part_ptr + slot[:, None] * D + 2 * half[None, :]
    tl.store(out_rows, acc_even - zero_term[:, None], mask=row_mask[:, None])
    tl.store(out_rows + 1, acc_odd - zero_term[:, None], mask=row_mask[:, None])
    tl.store(stat_ptr + slot * 2, m, mask=row_mask)
    tl.store(stat_ptr + slot * 2 + 1, total, mask=row_mask)


@triton.jit
def _split_fma_kernel(
    q_ptr,
    kc_ptr,
    ks_ptr,
    kz_ptr,
    vc_ptr,
    vs_ptr,
    vz_ptr,
    len_ptr,
    part_ptr,
    stat_ptr,
    scaling,
    HKV,
    S,
    SPLIT_LEN,
    NUM_SPLITS,
    D: tl.constexpr,
    BLOCK_S: tl.constexpr,
    NATIVE: tl.constexpr,
):
    """Multi-head attention (one query row per kv head), one (scale, zero) per cached row: the
    dots as CUDA-core multiply-adds, no tensor-core operand shuffles. kc_ptr / vc_ptr: the codes
    as int32 words; each word's eight codes enter as 0.5 + c/256 (`_word_codes`), dims 8w + j.

    With the query scaled by 256, a key row gives raw = 128·Σq + q·c, so the score is
    scale·(raw - (128 + zero)·Σq); the values' sum is 256·Σ_s p'_s (0.5 + c_s/256) - Σ_s p'_s (128 +
    zero_s) with p' = p·scale. The constant terms are ~10x the code terms at worst, which costs
    ~3 bits of float32's 24: far below the fp16 output's rounding."""
    pid_bh = tl.program_id(0).to(tl.int64)  # = b * H + h: query and kv heads coincide
    split = tl.program_id(1)
    b = pid_bh // HKV
    length = tl.load(len_ptr + b).to(tl.int32)
    start = split * SPLIT_LEN
    end = tl.minimum(start + SPLIT_LEN, length)

    w = tl.arange(0, D // 8)
    q_row = q_ptr + pid_bh * D + 8 * w  # q_j: dims 8w + j, matching the codes' order in a word
    q0 = tl.load(q_row).to(tl.float32) * scaling
    q1 = tl.load(q_row + 1).to(tl.float32) * scaling
    q2 = tl.load(q_row + 2).to(tl.float32) * scaling
    q3 = tl.load(q_row + 3).to(tl.float32) * scaling
    q4 = tl.load(q_row + 4).to(tl.float32) * scaling
    q5 = tl.load(q_row + 5).to(tl.float32) * scaling
    q6 = tl.load(q_row + 6).to(tl.float32) * scaling
    q7 = tl.load(q_row + 7).to(tl.float32) * scaling
    q_sum = tl.sum(q0 + q1 + q2 + q3 + q4 + q5 + q6 + q7, axis=0)
    q0, q1, q2, q3 = q0 * 256.0, q1 * 256.0, q2 * 256.0, q3 * 256.0  # exact (a power of two)
    q4, q5, q6, q7 = q4 * 256.0, q5 * 256.0, q6 * 256.0, q7 * 256.0

    base = pid_bh * S
    m = -float("inf")
    total = 0.0
    zero_term = 0.0  # Σ_s p'_s (128 + zero_s)
    a0 = tl.zeros([BLOCK_S, D // 8], tl.float32)  # a_j: Σ_s p'_s (0.5 + c_s/256) of dims 8w + j,
    a1 = tl.zeros([BLOCK_S, D // 8], tl.float32)  # reduced over positions once, at the end
    a2 = tl.zeros([BLOCK_S, D // 8], tl.float32)
    a3 = tl.zeros([BLOCK_S, D // 8], tl.float32)
    a4 = tl.zeros([BLOCK_S, D // 8], tl.float32)
    a5 = tl.zeros([BLOCK_S, D // 8], tl.float32)
    a6 = tl.zeros([BLOCK_S, D // 8], tl.float32)
    a7 = tl.zeros([BLOCK_S, D // 8], tl.float32)
    offs_s = start + tl.arange(0, BLOCK_S)  # loads of block i + 1 are issued before block i's math
    kw, ks, kz = _load_words(kc_ptr, ks_ptr, kz_ptr, base + offs_s, offs_s < end, D)
    vw, vs, vz = _load_words(vc_ptr, vs_ptr, vz_ptr, base + offs_s, offs_s < end, D)
    for s0 in range(start, end, BLOCK_S):
        s_mask = s0 + tl.arange(0, BLOCK_S) < end
        nxt = s0 + BLOCK_S + tl.arange(0, BLOCK_S)
        kw_n, ks_n, kz_n = _load_words(kc_ptr, ks_ptr, kz_ptr, base + nxt, nxt < end, D)
        vw_n, vs_n, vz_n = _load_words(vc_ptr, vs_ptr, vz_ptr, base + nxt, nxt < end, D)

        k0, k1, k2, k3, k4, k5, k6, k7 = _word_codes(kw, NATIVE)
        raw = k0 * q0[None, :] + k1 * q1[None, :] + k2 * q2[None, :] + k3 * q3[None, :]
        raw += k4 * q4[None, :] + k5 * q5[None, :] + k6 * q6[None, :] + k7 * q7[None, :]
        raw = tl.sum(raw, axis=1)
        scores = tl.where(s_mask, (raw - q_sum * (kz + 128.0)) * ks, float("-inf"))
        m_new = tl.maximum(m, tl.max(scores, axis=0))
        if m_new > m:  # rescale the accumulators only when the running max grows
            alpha = tl.exp(m - m_new)
            a0, a1, a2, a3 = a0 * alpha, a1 * alpha, a2 * alpha, a3 * alpha
            a4, a5, a6, a7 = a4 * alpha, a5 * alpha, a6 * alpha, a7 * alpha
            total = total * alpha
            zero_term = zero_term * alpha
            m = m_new
        p = tl.exp(scores - m)
        total += tl.sum(p, axis=0)
        p = p * vs
        zero_term += tl.sum(p * (vz + 128.0), axis=0)
        p = p[:, None]
        v0, v1, v2, v3, v4, v5, v6, v7 = _word_codes(vw, NATIVE)
        a0, a1, a2, a3 = a0 + p * v0, a1 + p * v1, a2 + p * v2, a3 + p * v3
        a4, a5, a6, a7 = a4 + p * v4, a5 + p * v5, a6 + p * v6, a7 + p * v7
        kw, ks, kz, vw, vs, vz = kw_n, ks_n, kz_n, vw_n, vs_n, vz_n

    slot = pid_bh * NUM_SPLITS + split
    out_row = part_ptr + slot * D + 8 * w
    tl.store(out_row, tl.sum(a0, axis=0) * 256.0 - zero_term)
    tl.store(out_row + 1, tl.sum(a1, axis=0) * 256.0 - zero_term)
    tl.store(out_row + 2, tl.sum(a2, axis=0) * 256.0 - zero_term)
    tl.store(out_row + 3, tl.sum(a3, axis=0) * 256.0 - zero_term)
    tl.store(out_row + 4, tl.sum(a4, axis=0) * 256.0 - zero_term)
    tl.store(out_row + 5, tl.sum(a5, axis=0) * 256.0 - zero_term)
    tl.store(out_row + 6, tl.sum(a6, axis=0) * 256.0 - zero_term)
    tl.store(out_row + 7, tl.sum(a7, axis=0) * 256.0 - zero_term)
    tl.store(stat_ptr + slot * 2, m)
    tl.store(stat_ptr + slot * 2 + 1, total)


@triton.jit
def _merge_kernel(part_ptr, stat_ptr, out_ptr, NUM_SPLITS, BSPLIT: tl.constexpr, D: tl.constexpr):
    head = tl.program_id(0).to(tl.int64)  # b * Hq + h
    splits = tl.arange(0, BSPLIT)
    mask = splits < NUM_SPLITS
    slot = head * NUM_SPLITS + splits
    m = tl.load(stat_ptr + slot * 2, mask=mask, other=float("-inf"))
    total = tl.load(stat_ptr + slot * 2 + 1, mask=mask, other=0.0)
    m_all = tl.max(m, axis=0)
    weight = tl.where(m > float("-inf"), tl.exp(m - m_all), 0.0)
    dims = tl.arange(0, D)
    part = tl.load(part_ptr + slot[:, None] * D + dims[None, :], mask=mask[:, None], other=0.0)
    out = tl.sum(part * weight[:, None], axis=0) / tl.sum(total * weight, axis=0)
    tl.store(out_ptr + head * D + dims, out.to(out_ptr.dtype.element_ty))


@dataclass(frozen=True)
class KVAttentionConfig:
    block_s: int = 64  # cache positions per loop step
    num_warps: int = 4
    num_stages: int = 3
    programs_per_sm: int = 4  # splits over positions are added until the grid gives this many
    method: str = "mma"  # "mma": tensor-core dots; "fma": CUDA-core (MHA, one scale per row only)


def candidates(groups: int = 1, folded: bool = True) -> list[KVAttentionConfig]:
    """Configurations of the split kernel, the measured best first (docs/benchmarks/decode.md).

    `groups`: query heads per kv head; `folded`: one (scale, zero) per cached row. The "fma"
    kernel needs both groups == 1 and folded."""
    fma = groups == 1 and folded
    if interpreting():
        return [KVAttentionConfig(block_s=16, num_stages=1, method="fma" if fma else "mma")]
    mma = [
        KVAttentionConfig(128, 4, 3, 4),  # best at batch 16 and 64 on the H100 before the fold (5-10%)
        KVAttentionConfig(64, 4, 3, 4),
        KVAttentionConfig(64, 4, 3, 8),
        KVAttentionConfig(128, 4, 3, 8),
        KVAttentionConfig(128, 8, 3, 4),
        KVAttentionConfig(256, 8, 3, 4),
        KVAttentionConfig(64, 4, 4, 16),
        KVAttentionConfig(32, 4, 4, 16),
        KVAttentionConfig(128, 4, 2, 16),
    ]
    if not fma:
        return mma
    return [
        KVAttentionConfig(32, 2, 3, 8, "fma"),  # best at batch 16 and 64 on the H200 (decode.md, 2026-12-03)
        KVAttentionConfig(32, 4, 3, 4, "fma"),
        KVAttentionConfig(64, 4, 3, 4, "fma"),
        KVAttentionConfig(32, 4, 3, 8, "fma"),
        KVAttentionConfig(64, 8, 3, 4, "fma"),
        KVAttentionConfig(16, 4, 3, 8, "fma"),
        KVAttentionConfig(64, 4, 2, 16, "fma"),
        *mma,
    ]


def _splits(programs: int, positions: int, device_sms: int, cfg: KVAttentionConfig) -> int:
    """Enough splits to give every SM `programs_per_sm` programs, but never one shorter than a block."""
    wanted = triton.cdiv(cfg.programs_per_sm * device_sms, max(programs, 1))
    return max(1, min(wanted, triton.cdiv(positions, cfg.block_s)))


def launch_kv_attention(
    q: torch.Tensor,
    keys: QuantizedKV,
    values: QuantizedKV,
    lengths: torch.Tensor,
    group_size: int,
    scaling: float,
    config: KVAttentionConfig | None = None,
) -> torch.Tensor:
    """out [B, Hq, D]; `config` None: the first candidate, or the fastest with FQ_KERNELS_AUTOTUNE=1."""
    b, hq, d = q.shape
    hkv, s = keys[0].shape[1], keys[0].shape[2]
    groups = hq // hkv
    if config is None:

        def run(cfg: KVAttentionConfig) -> torch.Tensor:
            return launch_kv_attention(q, keys, values, lengths, group_size, scaling, cfg)

        key = ("kv_attention", b, hq, hkv, s, d, group_size, q.dtype)
        config = tuning.choose(key, candidates(groups, group_size == d), run)
    if config.method == "fma" and not (groups == 1 and group_size == d and d % 8 == 0):
        raise ValueError(
            f"kv_attention's fma kernel needs one query head per kv head, one group per head and a "
            f"head dim divisible by 8, got {groups} and group {group_size} of {d}: use method='mma'"
        )
    num_splits = _splits(b * hkv, s, sm_count(q), config)
    split_len = triton.cdiv(triton.cdiv(s, num_splits), config.block_s) * config.block_s
    part = torch.empty((b, hq, num_splits, d), dtype=torch.float32, device=q.device)
    stats = torch.empty((b, hq, num_splits, 2), dtype=torch.float32, device=q.device)
    out = torch.empty_like(q)
    qc = q.contiguous()
    caches = [t.contiguous() for t in (*keys, *values)]
    if config.method == "fma":  # the CUDA-core kernel reads the codes as int32 words, 8 codes each
        caches[0], caches[3] = caches[0].view(torch.int32), caches[3].view(torch.int32)
    args = (qc, *caches, lengths, part, stats, float(scaling), hkv, s, split_len, num_splits)
    grid = (b * hkv, num_splits)
    launch = {"num_warps": config.num_warps, "num_stages": config.num_stages}
    if config.method == "fma":
        _split_fma_kernel[grid](*args, D=d, BLOCK_S=config.block_s, NATIVE=not interpreting(), **launch)
    else:
        _split_mma_kernel[grid](
            *args,
            GROUPS=groups,
            QG=max(16, next_pow2(groups)),
            D=d,
            G=group_size,
            BLOCK_S=config.block_s,
            IEEE=q.dtype == torch.float32,
            **launch,
        )
    _merge_kernel[(b * hq,)](part, stats, out, num_splits, BSPLIT=max(2, next_pow2(num_splits)), D=d)
    return out
