"""Quantisation math as plain functions: ranges, scales, zero points, (fake) quantisation.

Conventions (shared with the kernels and the checkpoint):
- symmetric: q in [-2^(b-1), 2^(b-1)-1], x ~= q * scale, scale = max(|min|, |max|) / (2^(b-1)-1);
- asymmetric: q in [0, 2^b-1], x ~= (q - zero) * scale, scale = (max - min) / (2^b-1),
  zero = round(-min / scale);
- ranges always include 0 (min <= 0 <= max), so 0 is exactly representable;
- an all-zero slice gets scale 1 (symmetric) or the range [-1, 1] (asymmetric) instead of dividing
  by zero.
Rounding uses a straight-through estimator so clipping factors and transforms receive gradients.
"""

from __future__ import annotations

import functools
import os
import warnings

import torch

from fq_core.quant.spec import QuantSpec


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round to nearest in the forward pass, identity in the backward pass."""
    return (x.round() - x).detach() + x


def to_reduction_view(x: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """Reshape `x` so that each quantisation group is one row of the last dim."""
    if spec.granularity == "tensor":
        return x.reshape(1, -1)
    if spec.granularity == "channel":
        return x.reshape(x.shape[0], -1)
    if spec.granularity == "token":
        return x.reshape(-1, x.shape[-1])
    group = spec.group_size
    assert group is not None
    if x.shape[-1] % group:
        raise ValueError(f"last dim {x.shape[-1]} is not a multiple of group_size {group}")
    return x.reshape(-1, group)


def quant_range(
    x: torch.Tensor,
    spec: QuantSpec,
    clip: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group (min, max) of `x`, widened to include 0, shaped (groups, 1).

    clip: multiplicative factors (for max, for min) in (0, 1], broadcastable to (groups, 1);
    learnable clipping passes sigmoid(theta) here.
    """
    rows = to_reduction_view(x, spec)
    xmax = rows.amax(dim=1, keepdim=True).clamp(min=0)
    xmin = rows.amin(dim=1, keepdim=True).clamp(max=0)
    if clip is not None:
        xmax = xmax * clip[0]
        xmin = xmin * clip[1]
    return xmin, xmax


def scale_zero(xmin: torch.Tensor, xmax: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point for ranges from `quant_range` (zero is 0 when symmetric)."""
    if spec.symmetric:
        absmax = torch.maximum(xmax, -xmin)
        scale = absmax / spec.qmax
        scale = torch.where(absmax == 0, torch.ones_like(scale), scale)
        return scale, torch.zeros_like(scale)
    empty = (xmin == 0) & (xmax == 0)
    xmin = torch.where(empty, -torch.ones_like(xmin), xmin)
    xmax = torch.where(empty, torch.ones_like(xmax), xmax)
    scale = (xmax - xmin) / spec.qmax
    zero = torch.round(-xmin / scale)
    return scale, zero


def quantize(x_rows: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """Integer values (as floats, STE-rounded) of rows already in the reduction view."""
    return torch.clamp(round_ste(x_rows / scale) + zero, spec.qmin, spec.qmax)


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    return (q - zero) * scale


def fake_quant(
    x: torch.Tensor,
    spec: QuantSpec,
    clip: tuple[torch.Tensor, torch.Tensor] | None = None,
    clamp_to_range: bool = False,
) -> torch.Tensor:
    """Quantise and dequantise `x` (same shape and dtype) with dynamic ranges.

    clamp_to_range: clamp values into the (clipped) range before rounding, as learnable weight
    clipping does; activations rely on the integer clamp alone.

    Compiled where it pays: torch.compile fuses its two reductions and dozen elementwise ops, and
    their backward, into a few kernels. On CUDA a calibration step is mostly these ops' launches;
    on the CPU, where each op is a pass over memory, calibration's steps (the inputs require grad)
    run 1.2-1.4x faster per epoch (docs/benchmarks/calibration.md), while inference keeps eager ops
    and so never waits for a compiler.
    `FQ_COMPILE=0` keeps everything eager; without a working C++ compiler the CPU falls back to
    eager with one warning.
    """
    if not spec.enabled:
        return x
    if COMPILE and (x.is_cuda or (x.requires_grad and not _CPU_COMPILE_FAILED)):
        try:
            return compiled_fake_quant()(x, spec, clip, clamp_to_range)
        except Exception as error:  # inductor's CPU code needs a C++ compiler; CUDA errors surface
            if x.is_cuda:
                raise
            _cpu_compile_failed(error)
    return _fake_quant(x, spec, clip, clamp_to_range)


COMPILE = os.environ.get("FQ_COMPILE", "1").strip().lower() not in ("0", "false", "no")
_CPU_COMPILE_FAILED = False


def _cpu_compile_failed(error: Exception) -> None:
    """Run eager on the CPU from now on (a real error in the inputs then surfaces from eager)."""
    global _CPU_COMPILE_FAILED
    _CPU_COMPILE_FAILED = True
    warnings.warn(
        f"compiling the fake quantiser for the CPU failed ({type(error).__name__}); running it eagerly "
        "(slower calibration). Install a C++ compiler (g++) or set FQ_COMPILE=0 to silence this.",
        stacklevel=3,
    )


@functools.cache
def compiled_fake_quant():
    """`fake_quant`'s body through torch.compile (built at first use; dynamic shapes, so one graph
    per quantiser kind serves every layer size).

    A W4A4 KV4 layer has about a dozen kinds (spec x clipping x rank x dtype); past dynamo's
    default of 8 graphs per function the rest would silently run eager, so the limit is raised."""
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    return torch.compile(_fake_quant, dynamic=True)


def _fake_quant(
    x: torch.Tensor, spec: QuantSpec, clip: tuple[torch.Tensor, torch.Tensor] | None, clamp_to_range: bool
) -> torch.Tensor:
    rows = to_reduction_view(x, spec)
    xmin, xmax = quant_range(x, spec, clip)
    if clamp_to_range:
        rows = torch.maximum(torch.minimum(rows, xmax), xmin)
    scale, zero = scale_zero(xmin, xmax, spec)
    out = dequantize(quantize(rows, scale, zero, spec), scale, zero)
    return out.reshape(x.shape).to(x.dtype)


def fake_quant_static(
    x: torch.Tensor, spec: QuantSpec, scale: torch.Tensor, zero: torch.Tensor
) -> torch.Tensor:
    """Fake-quantise with frozen scale and zero (shaped (groups, 1) or (1, 1), as `quant_range` gives).

    Static activation scales are per tensor: a per-token scale cannot be frozen, since the
    tokens change from call to call.
    """
    if not spec.enabled:
        return x
    rows = to_reduction_view(x, spec)
    if scale.shape[0] not in (1, rows.shape[0]):
        raise ValueError(f"static scale has {scale.shape[0]} groups but the tensor has {rows.shape[0]}")
    out = dequantize(quantize(rows, scale, zero, spec), scale, zero)
    return out.reshape(x.shape).to(x.dtype)
