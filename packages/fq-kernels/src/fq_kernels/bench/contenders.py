"""What the linear-layer benchmark compares, each as `make_call(i)` for `timing.time_graph`.

- bf16: `F.linear` (cuBLAS), the baseline every ratio divides;
- int8: `torch._int_mm` alone (cuBLAS int8 GEMM, no quantisation, no epilogue);
- fp8: `torch._scaled_mm` alone (cuBLAS FP8 GEMM with row-wise scales into bf16);
- unfused: what plain PyTorch gives: `kron_apply` in bf16, the per-token quantiser as separate
  ops, `torch._int_mm`, the scale epilogue as separate ops;
- ours: `transform_quant` + `w4a4_linear` as `QuantLinear` runs them: the packed int4 weights in
  the layout QuantLinear keeps (decode tiles where the shape splits into them, else packed rows) at
  every token count; and each half alone. `prefill="int8"` / `"fp8"` times the opt-in one-byte
  copy above the decode token counts instead, `decode="packed"` the Triton kernels on packed rows.

cuBLAS int8 needs more than 16 rows, so `_int_mm` pads decode-size inputs to 32 rows.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from fq_core.transforms.kronecker import kron_apply
from fq_kernels.bench.problems import LinearProblem
from fq_kernels.bench.timing import copies_to_defeat_l2
from fq_kernels.layout import activation_format, fits_decode_tiles
from fq_kernels.ops import transform_quant, w4a4_linear
from fq_kernels.quant_linear import DECODE_MAX_TOKENS, TILES_MAX_TOKENS

MakeCall = Callable[[int], Callable[[], object]]


def _rows(t: torch.Tensor, rows: int) -> torch.Tensor:
    if t.shape[0] >= rows:
        return t
    return torch.cat([t, t.new_zeros((rows - t.shape[0], *t.shape[1:]))])


def bf16(p: LinearProblem) -> tuple[MakeCall, int]:
    count = copies_to_defeat_l2(p.n * p.k * 2)
    ws = p.weight_copies("bf16", count)
    return (lambda i: lambda: F.linear(p.x, ws[i])), count


def int8_mm(p: LinearProblem) -> tuple[MakeCall, int]:
    count = copies_to_defeat_l2(p.n * p.k)
    ws = p.weight_copies("int8", count)
    a = torch.randint(-8, 8, (max(p.m, 32), p.k), dtype=torch.int8, device=p.device)
    return (lambda i: lambda: torch._int_mm(a, ws[i].t())), count


def fp8_mm(p: LinearProblem) -> tuple[MakeCall, int]:
    count = copies_to_defeat_l2(p.n * p.k)
    ws = p.weight_copies("fp8", count)
    m = max(p.m, 16)
    a = torch.randint(-8, 8, (m, p.k), device=p.device).to(torch.float8_e4m3fn)
    sa = torch.rand(m, 1, device=p.device) + 0.5
    sb = p.scale.reshape(1, -1).contiguous()

    def make(i: int) -> Callable[[], object]:
        return lambda: torch._scaled_mm(a, ws[i].t(), scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16)

    return make, count


def unfused(p: LinearProblem) -> tuple[MakeCall, int]:
    count = copies_to_defeat_l2(p.n * p.k)
    ws = p.weight_copies("int8", count)
    left, right = p.left.to(torch.bfloat16), p.right.to(torch.bfloat16)
    clip = p.clip
    rows = max(p.m, 32)
    sw = p.scale

    def make(i: int) -> Callable[[], object]:
        def call() -> torch.Tensor:
            y = kron_apply(p.x, left, right).float()
            absmax = torch.maximum(
                y.amax(1, keepdim=True).clamp(min=0) * clip[0],
                -y.amin(1, keepdim=True).clamp(max=0) * clip[1],
            )
            scale = torch.where(absmax == 0, torch.ones_like(absmax), absmax / 7)
            q = torch.clamp(torch.round(y / scale), -8, 7).to(torch.int8)
            acc = torch._int_mm(_rows(q, rows), ws[i].t())[: p.m]
            return (acc.float() * scale * sw).to(torch.bfloat16)

        return call

    return make, count


def _decode_kind(p: LinearProblem, decode: str) -> str:
    if decode != "auto":
        return decode
    return "tiles" if fits_decode_tiles(p.n, p.k) else "packed"


def _ours_format(p: LinearProblem, prefill: str | None, decode: str) -> tuple[str, str]:
    """(weight storage kind, activation format) of QuantLinear's path at p.m tokens."""
    decode_kind = _decode_kind(p, decode)
    limit = TILES_MAX_TOKENS if decode_kind == "tiles" else DECODE_MAX_TOKENS
    kind = decode_kind if prefill is None or p.m <= limit else prefill
    return kind, activation_format(p.m, p.weight(kind))


def _ours_weights(p: LinearProblem, prefill: str | None, decode: str) -> tuple[list[torch.Tensor], str, int]:
    kind, fmt = _ours_format(p, prefill, decode)
    count = copies_to_defeat_l2(p.n * p.k // 2 if kind in ("packed", "tiles") else p.n * p.k)
    return p.weight_copies(kind, count), fmt, count


def ours(p: LinearProblem, prefill: str | None = None, decode: str = "auto") -> tuple[MakeCall, int]:
    ws, fmt, count = _ours_weights(p, prefill, decode)

    def make(i: int) -> Callable[[], object]:
        def call() -> torch.Tensor:
            xq, sx = transform_quant(p.x, p.left, p.right, p.clip, 4, fmt)
            return w4a4_linear(xq, sx, ws[i], p.scale, None, torch.bfloat16)

        return call

    return make, count


def ours_transform_quant(
    p: LinearProblem, prefill: str | None = None, decode: str = "auto"
) -> tuple[MakeCall, int]:
    fmt = _ours_format(p, prefill, decode)[1]
    return (lambda i: lambda: transform_quant(p.x, p.left, p.right, p.clip, 4, fmt)), 1


def ours_gemm(p: LinearProblem, prefill: str | None = None, decode: str = "auto") -> tuple[MakeCall, int]:
    ws, fmt, count = _ours_weights(p, prefill, decode)
    xq, sx = transform_quant(p.x, p.left, p.right, p.clip, 4, fmt)
    return (lambda i: lambda: w4a4_linear(xq, sx, ws[i], p.scale, None, torch.bfloat16)), count


CONTENDERS: dict[str, Callable[..., tuple[MakeCall, int]]] = {
    "bf16": bf16,
    "int8": int8_mm,
    "fp8": fp8_mm,
    "unfused": unfused,
    "ours": ours,
    "ours_tq": ours_transform_quant,
    "ours_gemm": ours_gemm,
}
