"""Reference of the online activation path: Kronecker transform, per-token quantisation, layout.

`transform_quant_ref` defines what `fq_kernels.transform_quant` returns:

1. the online transform of each token x (size K = n1 * n2), in float64 by default:
   - Kronecker (left [n1, n1] and right [n2, n2]): x @ kron(left, right) = vec(leftᵀ X right) with
     X = x viewed row-major as n1 x n2 (`fq_core.transforms.kronecker.kron_apply`);
   - heads only (o_proj; left = the heads factor, right None): x @ kron(left, I) = vec(leftᵀ X);
   - right only: x @ kron(I, right), the same right factor applied to each block of n2;
   - none: the token as it is (its transform was merged into the weights);
2. rounding of the transformed token to float32, then fq-core's symmetric per-token quantiser with
   the activation clipping pair (clip_max, clip_min): absmax = max(max(y,0)·clip_max,
   -min(y,0)·clip_min), scale = absmax / qmax, q = clamp(round_half_even(y / scale), qmin, qmax),
   an all-zero token gets scale 1;
   `transform_quant_asym_ref` uses fq-core's asymmetric per-token quantiser instead:
   lo = min(y,0)·clip_min, hi = max(y,0)·clip_max ([-1, 1] if both are 0), scale = (hi - lo) / qmax,
   zero = round_half_even(-lo / scale), q = clamp(round_half_even(y / scale) + zero, 0, qmax) with
   qmax = 2^b - 1; q and zero are returned minus `asym_shift` = 2^(b-1), i.e. in the signed range
   of the symmetric path (same storage, same GEMMs), and q - zero is unchanged;
3. NONFINITE_RULE below for tokens holding NaN or ±inf (asymmetric: the zero point is 0 too);
4. the requested storage of the int values: packed int4 (two per byte, fq-core's nibble order),
   int8, or float8 e4m3 (every int4 value is exact in e4m3).

Without a transform the kernel result is bit-exact with this. With one, the kernel computes the
transform on tensor cores in lower precision, so its fp32 `y` differs from the float64 one by
rounding: scales agree to the dot precision and a value sitting within that error of a rounding
boundary may land one step away (the tests bound both).
"""

from __future__ import annotations

import torch

from fq_core.quant import functional as F
from fq_core.quant.pack import pack_int4
from fq_core.quant.spec import QuantSpec
from fq_core.transforms.kronecker import apply_left, apply_right, kron_apply

OUT_FORMATS: tuple[str, ...] = ("packed", "int8", "fp8")
NONFINITE_RULE = (
    "a token (KV: a group) holding NaN or ±inf after the transform gets scale NaN and all-zero "
    "integers, so every output that reads it is NaN; other tokens are unaffected"
)


def act_spec(bits: int = 4, symmetric: bool = True) -> QuantSpec:
    """An activation quantiser the kernels implement: per token, dynamic, symmetric or not."""
    return QuantSpec(bits=bits, symmetric=symmetric, granularity="token")


def asym_shift(bits: int) -> int:
    """What asymmetric codes q in [0, 2^b - 1] and their zero points are stored minus: 2^(b-1)."""
    return 2 ** (bits - 1)


def clip_pair(
    clip: torch.Tensor | float | tuple[float, float], device: torch.device | str = "cpu"
) -> torch.Tensor:
    """The clipping factors as a float32 tensor [clip_max, clip_min].

    Accepts one float (both factors), a pair, or a tensor of 1 or 2 elements (as the checkpoint's
    `clip_max` / `clip_min` are shaped [1]).
    """
    if isinstance(clip, torch.Tensor):
        flat = clip.detach().reshape(-1).to(device=device, dtype=torch.float32)
        if flat.numel() == 1:
            return flat.repeat(2)
        if flat.numel() == 2:
            return flat
        raise ValueError(f"clip must have 1 or 2 elements (clip_max, clip_min), got {flat.numel()}")
    if isinstance(clip, (tuple, list)):
        if len(clip) != 2:
            raise ValueError(f"clip must be one factor or a (clip_max, clip_min) pair, got {clip!r}")
        return torch.tensor([float(clip[0]), float(clip[1])], dtype=torch.float32, device=device)
    return torch.tensor([float(clip), float(clip)], dtype=torch.float32, device=device)


def online_transform(
    x: torch.Tensor,
    left: torch.Tensor | None,
    right: torch.Tensor | None,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """The transformed tokens, [M, K] in `dtype`; see the module docstring for the variants."""
    k = x.shape[-1]
    y = x.reshape(-1, k).to(dtype)
    if left is not None and right is not None:
        return kron_apply(y, left.to(y.device, dtype), right.to(y.device, dtype))
    if left is not None:
        return apply_left(y, left.to(y.device, dtype))
    if right is not None:
        return apply_right(y, right.to(y.device, dtype))
    return y


def factor_sizes(k: int, left: torch.Tensor | None, right: torch.Tensor | None) -> tuple[int, int]:
    """(n1, n2) of the token tile: from the factors, or (1, K) when there is no transform."""
    if left is not None and right is not None:
        n1, n2 = left.shape[0], right.shape[0]
        if n1 * n2 != k:
            raise ValueError(f"left {tuple(left.shape)} x right {tuple(right.shape)} do not factor K = {k}")
        return n1, n2
    if left is not None:
        n1 = left.shape[0]
        if k % n1:
            raise ValueError(f"heads factor of size {n1} does not divide K = {k}")
        return n1, k // n1
    if right is not None:
        n2 = right.shape[0]
        if k % n2:
            raise ValueError(f"right factor of size {n2} does not divide K = {k}")
        return k // n2, n2
    return 1, k


def _quantize_rows(
    y: torch.Tensor, clip: torch.Tensor, spec: QuantSpec
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """fq-core's quantiser `spec` on float32 rows y [M, K]: (int8 values, fp32 scales [M], fp32
    zero points [M]); asymmetric values and zero points shifted by -`asym_shift`."""
    if y.dtype != torch.float32:
        raise ValueError(f"quantize_tokens expects float32 rows, got {y.dtype}")
    clip = clip_pair(clip, y.device)
    xmin, xmax = F.quant_range(y, spec, (clip[0:1], clip[1:2]))
    scale, zero = F.scale_zero(xmin, xmax, spec)
    q = F.quantize(y, scale, zero, spec)
    if not spec.symmetric:
        shift = asym_shift(spec.bits)
        q, zero = q - shift, zero - shift
    bad = ~torch.isfinite(y).all(dim=1, keepdim=True)
    q = torch.where(bad, torch.zeros_like(q), q)
    scale = torch.where(bad, torch.full_like(scale, float("nan")), scale)
    zero = torch.where(bad, torch.zeros_like(zero), zero)
    return q.to(torch.int8), scale.reshape(-1), zero.reshape(-1)


def quantize_tokens(y: torch.Tensor, clip: torch.Tensor, bits: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """fq-core's per-token symmetric quantiser on float32 rows y [M, K]: (int8 values, fp32 scales [M])."""
    q, scale, _ = _quantize_rows(y, clip, act_spec(bits))
    return q, scale


def quantize_tokens_asym(
    y: torch.Tensor, clip: torch.Tensor, bits: int = 4
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """fq-core's per-token asymmetric quantiser on float32 rows y [M, K], shifted (module docstring):
    (int8 values q - 2^(b-1), fp32 scales [M], fp32 zero points zero - 2^(b-1) [M])."""
    return _quantize_rows(y, clip, act_spec(bits, symmetric=False))


def format_values(q: torch.Tensor, out_format: str, bits: int = 4) -> torch.Tensor:
    """Store int values (int8 [M, K]) as packed int4 bytes [M, K/2], int8, or float8 e4m3."""
    if out_format == "packed":
        if bits > 4:
            raise ValueError(f"packed int4 output needs bits <= 4, got {bits}")
        return pack_int4(q)
    if out_format == "int8":
        return q.to(torch.int8)
    if out_format == "fp8":
        if bits > 5:
            raise ValueError(
                f"fp8 e4m3 holds integers exactly only up to 16 in magnitude: bits <= 5, got {bits}"
            )
        return q.to(torch.float8_e4m3fn)
    raise ValueError(f"out_format must be one of {', '.join(OUT_FORMATS)}, got {out_format!r}")


def _transform_quant(
    x: torch.Tensor,
    left: torch.Tensor | None,
    right: torch.Tensor | None,
    clip: torch.Tensor | float | tuple[float, float],
    bits: int,
    out_format: str,
    transform_dtype: torch.dtype,
    symmetric: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    lead = x.shape[:-1]
    y = online_transform(x, left, right, transform_dtype).to(torch.float32)
    q, scale, zero = _quantize_rows(y, clip_pair(clip, x.device), act_spec(bits, symmetric))
    out = format_values(q, out_format, bits)
    return out.reshape(*lead, out.shape[-1]), scale.reshape(lead), zero.reshape(lead)


def transform_quant_ref(
    x: torch.Tensor,
    left: torch.Tensor | None,
    right: torch.Tensor | None,
    clip: torch.Tensor | float | tuple[float, float] = 1.0,
    bits: int = 4,
    out_format: str = "packed",
    transform_dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(values [..., K or K/2], scales [...] float32): the exact definition of `transform_quant`."""
    q, scale, _ = _transform_quant(x, left, right, clip, bits, out_format, transform_dtype, True)
    return q, scale


def transform_quant_asym_ref(
    x: torch.Tensor,
    left: torch.Tensor | None,
    right: torch.Tensor | None,
    clip: torch.Tensor | float | tuple[float, float] = 1.0,
    bits: int = 4,
    out_format: str = "packed",
    transform_dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(values, scales, zero points [...] float32), shifted: the exact definition of
    `transform_quant_asym`; x ~= (values - zeros) * scales."""
    return _transform_quant(x, left, right, clip, bits, out_format, transform_dtype, False)
