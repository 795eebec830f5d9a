"""Fused online transform + per-token quantisation: one read of x, one write of the int values.

Each program owns whole tokens (a token's absmax needs all of it). For a token x of size n1 * n2,
viewed as the n1 x n2 tile X (padded to powers of two, padding = 0):

    Y = leftᵀ · X · right      (two tensor-core dots; either factor may be absent)
    absmax = max(max(Y, 0)·clip_max, -min(Y, 0)·clip_min);  scale = absmax / qmax (1 if absmax == 0)
    q = clamp(round_half_even(Y / scale), qmin, qmax)

and q leaves as packed int4 bytes, int8 or fp8 e4m3 (whatever the GEMM that reads it wants), with
one float32 scale per token. The programs loop over tokens (a persistent grid), so the two factors
are loaded once per program and the next token's load overlaps this one's math.

ASYM swaps in fq-core's asymmetric quantiser (range [lo, hi] from the clipped min and max, scale =
(hi - lo) / qmax, one zero point per token; see `fq_kernels.reference.activation`) and stores its
codes and zero points minus 2^(b-1), in the symmetric path's signed range, so the GEMMs read them
unchanged and only their epilogue adds the zero points' share.

Precision of the dots (`dot`): "ieee" (float32; the interpreter's only exact mode, and the default
for float32 inputs), "tf32", "bf16" / "fp16" (the token's own 16-bit type; factors and the
intermediate rounded to it, float32 accumulation). Quotients are IEEE-rounded (`div_rn` per
token; per element the reciprocal and one FMA correction, `div_rn_by_reciprocal`, which rounds
exactly as division does at a fraction of its cost), so with no transform the result is bit-exact
with the reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from fq_kernels import tuning
from fq_kernels._runtime import interpreting, next_pow2, sm_count
from fq_kernels.cuda.launch import pdl_supported
from fq_kernels.reference.activation import factor_sizes
from fq_kernels.triton.common import div_rn_by_reciprocal, max_keep_nan, min_keep_nan, rint

OUT_CODES: dict[str, int] = {"packed": 0, "int8": 1, "fp8": 2}
DOT_CODES: dict[str, int] = {"ieee": 0, "tf32": 1, "bf16": 2, "fp16": 3}
ROUNDING_SHIFT: tl.constexpr = tl.constexpr(12582912.0)  # 1.5 * 2^23
DEFAULT_DOT: dict[torch.dtype, str] = {
    torch.float32: "ieee",
    torch.bfloat16: "bf16",
    torch.float16: "fp16",
}
"""Dot precision per input dtype on the GPU (the benchmark records which one it ran)."""


@dataclass(frozen=True)
class TQConfig:
    num_warps: int = 4
    num_stages: int = 1  # software pipelining of the token loop
    # Programs per SM in the grid: fewer programs, more tokens each, fewer loads of the factors (at
    # 2048 tokens, 4 per SM took a fifth off the 64 x 64 tile's time with 8: kernels.md, run S).
    programs_per_sm: int = 8
    reduce_axes: bool = False  # reduce rows then columns instead of the flattened tile
    # A register cap per thread: 8 warps on a 128 x 128 tile take ~170 registers, one program per
    # SM; capped at 128, two programs share an SM and one's loads overlap the other's math.
    maxnreg: int | None = None


def candidates(b1: int, b2: int) -> list[TQConfig]:
    """Configurations for a token tile of b1 x b2 elements, the measured best first."""
    elems = b1 * b2
    if elems <= 1024:
        return [TQConfig(2), TQConfig(4)]
    if elems <= 4096:
        return [
            TQConfig(4, programs_per_sm=4),
            TQConfig(4),
            TQConfig(4, reduce_axes=True),
            TQConfig(8, reduce_axes=True),
            TQConfig(4, 2, 16, True),
        ]
    return [
        TQConfig(8, 1, 2, maxnreg=128),
        TQConfig(8, 1, 4, maxnreg=128),
        TQConfig(8, 3, 4),
        TQConfig(16, programs_per_sm=4),
        TQConfig(16, 1, 4, True),
        TQConfig(8, 1, 8, True),
        TQConfig(8, 1, 4),
    ]


@triton.jit
def _dot(a, b, DOT: tl.constexpr):
    if DOT == 0:
        out = tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    elif DOT == 1:
        out = tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="tf32")
    elif DOT == 2:
        out = tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16))
    else:
        out = tl.dot(a.to(tl.float16), b.to(tl.float16))
    return out


@triton.jit
def _transform_quant_kernel(
    x_ptr,
    left_ptr,
    right_ptr,
    clip_ptr,
    q_ptr,
    s_ptr,
    z_ptr,
    M,
    stride_xm,
    stride_qm,
    N1: tl.constexpr,
    N2: tl.constexpr,
    B1: tl.constexpr,
    B2: tl.constexpr,
    HAS_LEFT: tl.constexpr,
    HAS_RIGHT: tl.constexpr,
    OUT: tl.constexpr,
    DOT: tl.constexpr,
    QMIN: tl.constexpr,
    QMAX: tl.constexpr,
    ASYM: tl.constexpr,
    NATIVE: tl.constexpr,
    REDUCE_AXES: tl.constexpr,
    PDL: tl.constexpr,
):
    if PDL:  # the GEMM reading q may launch now and stream its weights (`fq_kernels.cuda.launch`)
        tl.inline_asm_elementwise(
            "griddepcontrol.launch_dependents; // $0", "=r", [], dtype=tl.int32, is_pure=False, pack=1
        )
    pid = tl.program_id(0).to(tl.int64)  # int64 token index: M * K may pass 2^31
    nprog = tl.num_programs(0)
    rows = tl.arange(0, B1)
    cols = tl.arange(0, B2)
    tile_mask = (rows[:, None] < N1) & (cols[None, :] < N2)
    tile_offs = rows[:, None] * N2 + cols[None, :]
    if HAS_RIGHT:
        right = tl.load(
            right_ptr + cols[:, None] * N2 + cols[None, :],
            mask=(cols[:, None] < N2) & (cols[None, :] < N2),
            other=0.0,
        )
    if HAS_LEFT:
        # left_t[i, k] = left[k, i]
        left_t = tl.load(
            left_ptr + rows[None, :] * N1 + rows[:, None],
            mask=(rows[:, None] < N1) & (rows[None, :] < N1),
            other=0.0,
        )
    clip_max = tl.load(clip_ptr)
    clip_min = tl.load(clip_ptr + 1)
    for t in range(pid, M, nprog):
        x = tl.load(x_ptr + t * stride_xm + tile_offs, mask=tile_mask, other=0.0)
        y = x.to(tl.float32)
        if HAS_RIGHT:
            y = _dot(x, right, DOT)
        if HAS_LEFT:
            y = _dot(left_t, y, DOT)
        # NaN-keeping extremes: a token holding NaN or ±inf shows it in them, no test per element
        if REDUCE_AXES:  # row then column: stays in the dot's register layout
            ymax = tl.reduce(tl.reduce(y, 1, max_keep_nan), 0, max_keep_nan)
            ymin = tl.reduce(tl.reduce(y, 1, min_keep_nan), 0, min_keep_nan)
        else:
            ymax = tl.reduce(y, None, max_keep_nan)
            ymin = tl.reduce(y, None, min_keep_nan)
        scale, zero, inv, bad = _token_scale(ymax, ymin, clip_max, clip_min, QMAX, ASYM, NATIVE)
        q = _codes(y, scale, inv, zero, bad, QMIN, QMAX, ASYM)
        _store_codes(q, q_ptr + t * stride_qm, tile_offs, tile_mask, OUT, N1, N2, B1, B2)
        _store_token(s_ptr + t, z_ptr + t, scale, zero, bad, QMAX, ASYM)


@triton.jit
def _token_scale(
    ymax, ymin, clip_max, clip_min, QMAX: tl.constexpr, ASYM: tl.constexpr, NATIVE: tl.constexpr
):
    """(scale, zero, 1 / scale, non-finite?) of a token with these NaN-keeping extremes."""
    bad = ~((ymax < float("inf")) & (ymin > -float("inf")))  # NaN compares false
    ymax = tl.maximum(ymax, 0.0) * clip_max
    ymin = tl.minimum(ymin, 0.0) * clip_min
    if ASYM:
        empty = (ymax == 0.0) & (ymin == 0.0)
        ymax = tl.where(empty, 1.0, ymax)
        ymin = tl.where(empty, -1.0, ymin)
        scale = tl.math.div_rn(ymax - ymin, tl.zeros_like(ymax) + QMAX)
        zero = rint(tl.math.div_rn(-ymin, scale), NATIVE)
    else:
        absmax = tl.maximum(ymax, -ymin)
        scale = tl.math.div_rn(absmax, tl.zeros_like(absmax) + QMAX)
        scale = tl.where(absmax == 0.0, 1.0, scale)
        zero = tl.zeros_like(scale)
    return scale, zero, tl.math.div_rn(tl.zeros_like(scale) + 1.0, scale), bad


@triton.jit
def _codes(
    y,
    scale,
    inv,
    zero,
    bad,
    QMIN: tl.constexpr,
    QMAX: tl.constexpr,
    ASYM: tl.constexpr,
):
    """The integer codes of y, asymmetric ones shifted into the signed range, all 0 for a
    non-finite token: as floats plus ROUNDING_SHIFT (the code in the low mantissa bits; see
    _store_codes).

    The codes clamp after rounding; clamping the quotient first to the same integer bounds (for
    asymmetric codes, less the integer zero point) gives the same integers with one clamp, and a
    non-finite token gets the bounds [0, 0] (the clamp maps NaN to a bound too)."""
    v = div_rn_by_reciprocal(y, scale, inv)
    if ASYM:
        v = tl.minimum(tl.maximum(v, tl.where(bad, 0.0, -zero)), tl.where(bad, 0.0, QMAX - zero))
    else:
        v = tl.minimum(tl.maximum(v, tl.where(bad, 0.0, QMIN)), tl.where(bad, 0.0, QMAX))
    # Adding 1.5 * 2^23 rounds v to an integer (half to even: the constant is even) and leaves it
    # in the low mantissa bits as two's complement: one add for a rounding and a conversion (and
    # for fp8, with the subtraction in _store_codes, two full-rate adds instead of a `cvt.rni`).
    q = v + ROUNDING_SHIFT
    if ASYM:
        q += tl.where(bad, 0.0, zero - (QMAX + 1) // 2)  # integers: exact
    return q


@triton.jit
def _store_codes(
    q,
    row_ptr,
    tile_offs,
    tile_mask,
    OUT: tl.constexpr,
    N1: tl.constexpr,
    N2: tl.constexpr,
    B1: tl.constexpr,
    B2: tl.constexpr,
):
    """One token's codes q [B1, B2] (its n1 x n2 tile, padded; as `_codes` leaves them) at row_ptr,
    value offsets tile_offs: packed int4 (value pairs along a tile row, one byte each), int8 or fp8."""
    if OUT == 0:
        lo, hi = tl.split(tl.reshape(q.to(tl.int32, bitcast=True), [B1, B2 // 2, 2]))
        rows = tl.arange(0, B1)
        pcols = tl.arange(0, B2 // 2)
        pmask = (rows[:, None] < N1) & (pcols[None, :] < N2 // 2)
        byte = ((lo & 15) | ((hi & 15) << 4)).to(tl.uint8)
        tl.store(row_ptr + rows[:, None] * (N2 // 2) + pcols[None, :], byte, mask=pmask)
    elif OUT == 1:
        tl.store(row_ptr + tile_offs, q.to(tl.int32, bitcast=True).to(tl.int8), mask=tile_mask)
    else:
        tl.store(row_ptr + tile_offs, (q - ROUNDING_SHIFT).to(tl.float8e4nv), mask=tile_mask)


@triton.jit
def _store_token(s_ptr, z_ptr, scale, zero, bad, QMAX: tl.constexpr, ASYM: tl.constexpr):
    """A token's scale (NaN for a non-finite token) and, asymmetric, its shifted zero point."""
    if ASYM:
        tl.store(z_ptr, tl.where(bad, 0.0, zero - (QMAX + 1) // 2))
    tl.store(s_ptr, tl.where(bad, float("nan"), scale))


def launch_transform_quant(
    x2: torch.Tensor,
    left: torch.Tensor | None,
    right: torch.Tensor | None,
    clip: torch.Tensor,
    bits: int,
    out_format: str,
    dot: str | None = None,
    config: TQConfig | None = None,
    symmetric: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Run the kernel on x2 [M, K] (last dim contiguous): (values [M, K or K/2], scales [M], zero
    points [M]: float32 for symmetric=False, else None).

    `clip` is float32 [2] (clip_max, clip_min) on x2's device. The factors are cast to float32,
    except that factors already in the dot's 16-bit type pass as they are (the dot rounds them to it
    anyway, so the codes are the same; half the bytes for each program to load and nothing to convert).
    """
    m, k = x2.shape
    n1, n2 = factor_sizes(k, left, right)
    has_left, has_right = left is not None, right is not None
    fmt = out_format
    if fmt == "packed" and n2 % 2:
        fmt = "int8"  # a packed byte would straddle two tile rows: pack the int8 values afterwards
    transformed = has_left or has_right
    b1 = max(next_pow2(n1), 16 if transformed else 1)
    b2 = max(next_pow2(n2), 16 if transformed else 2)
    if dot is None:
        dot = "ieee" if interpreting() else DEFAULT_DOT.get(x2.dtype, "ieee")
    device = x2.device
    width = k // 2 if fmt == "packed" else k
    out_dtype = {"packed": torch.uint8, "int8": torch.int8, "fp8": torch.float8_e4m3fn}[fmt]
    q = torch.empty((m, width), dtype=out_dtype, device=device)
    scale = torch.empty((m,), dtype=torch.float32, device=device)
    zero = None if symmetric else torch.empty((m,), dtype=torch.float32, device=device)
    qmin, qmax = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if symmetric else (0, 2**bits - 1)
    pdl = not interpreting() and pdl_supported(device)
    if m > 0:
        kept = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(dot)

        def factor(f: torch.Tensor | None) -> torch.Tensor:
            if f is None:
                return clip  # an unused pointer
            return f.to(device=device, dtype=f.dtype if f.dtype == kept else torch.float32).contiguous()

        left_f, right_f = factor(left), factor(right)

        def run(cfg: TQConfig) -> None:
            grid = (min(m, sm_count(x2) * cfg.programs_per_sm),)
            cap = {} if cfg.maxnreg is None or interpreting() else {"maxnreg": cfg.maxnreg}
            _transform_quant_kernel[grid](
                x2,
                left_f,
                right_f,
                clip,
                q,
                scale,
                scale if zero is None else zero,
                m,
                x2.stride(0),
                q.stride(0),
                N1=n1,
                N2=n2,
                B1=b1,
                B2=b2,
                HAS_LEFT=has_left,
                HAS_RIGHT=has_right,
                OUT=OUT_CODES[fmt],
                DOT=DOT_CODES[dot],
                QMIN=qmin,
                QMAX=qmax,
                ASYM=not symmetric,
                NATIVE=not interpreting(),
                REDUCE_AXES=cfg.reduce_axes,
                PDL=pdl,
                num_warps=cfg.num_warps,
                num_stages=cfg.num_stages,
                **cap,
            )

        cands = candidates(b1, b2) if config is None else [config]
        key = ("transform_quant", min(next_pow2(m), 4096), n1, n2, has_left, has_right, fmt, dot, symmetric)
        run(tuning.choose(key, cands, run))
    if fmt != out_format:  # packed output of an odd-n2 tile
        from fq_core.quant.pack import pack_int4

        q = pack_int4(q)
    return q, scale, zero
