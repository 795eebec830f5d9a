"""The elementwise work between a decoder layer's GEMMs, as functions the static loop can compile.

Between the int4 GEMMs a layer runs a residual add, an RMSNorm (in transformers: a float32 cast,
square, mean, rsqrt, two multiplies and a cast back, each a pass over the hidden states) and the
gated activation. At a 2048-token prompt these passes cost about as much GPU time in the int4 model
as in FP16 (docs/benchmarks/e2e.md), and at one token per step they are a hundred tiny launches.
`torch.compile` fuses each group into one kernel (RoPE has its own kernel, `fq_kernels.rope_map`,
fused with the key map); the eager functions are the reference, used on the CPU, with
`FQ_COMPILE=0`, and by the HF-module path.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import nn

from fq_core.quant.functional import COMPILE

Activation = Callable[[torch.Tensor], torch.Tensor]


def residual_norm(norm: nn.Module, x: torch.Tensor, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x + delta, norm(x + delta)): the residual stream and the next sublayer's input."""
    x = x + delta
    return x, norm(x)


def gated_activation(act_fn: Activation, gate_up: torch.Tensor) -> torch.Tensor:
    """act(gate) * up of a fused gate|up projection's output."""
    gate, up = gate_up.chunk(2, dim=-1)
    return act_fn(gate) * up


@functools.cache
def _compiled(fn: Callable) -> Callable:
    return torch.compile(fn, dynamic=True)


def for_device(fn: Callable, device: torch.device) -> Callable:
    """`fn` compiled on CUDA (unless FQ_COMPILE=0), eager elsewhere."""
    return _compiled(fn) if COMPILE and device.type == "cuda" else fn
