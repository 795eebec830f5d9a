"""Where an op runs: the Triton kernels (CUDA, or Triton's CPU interpreter) or the PyTorch reference.

Triton decides between compiling and interpreting when a kernel is *decorated* (import time of
`fq_kernels.triton.*`), so the choice here follows the same environment variable: with
TRITON_INTERPRET=1 CPU tensors go through the kernels in the interpreter (how the CPU tests check
the kernels themselves); without it CPU tensors use the reference, which defines the result anyway.
FQ_KERNELS_BACKEND=reference forces the reference everywhere (debugging, bisecting a kernel bug).
"""

from __future__ import annotations

import functools
import os

import torch

_TRUE = ("1", "true", "yes", "on", "y")


def interpreting() -> bool:
    """Triton's CPU interpreter is on (TRITON_INTERPRET), so kernels accept CPU tensors."""
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in _TRUE


def interpreter_usable() -> bool:
    """TRITON_INTERPRET is on *and* was on when triton was first imported.

    Triton's own library functions (tl.max, tl.sum, tl.cdiv, ...) are decorated at `import triton`;
    if the variable was set only afterwards they stay compiled-mode functions and interpreted kernels
    that call them fail. Tests check this to skip with a clear reason instead of failing obscurely.
    """
    if not interpreting():
        return False
    import triton.language.standard as standard
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(standard.max, InterpretedFunction)


def forced_reference() -> bool:
    return os.environ.get("FQ_KERNELS_BACKEND", "").strip().lower() == "reference"


def use_triton(t: torch.Tensor) -> bool:
    """Whether an op on tensor `t` runs the Triton kernel (else the PyTorch reference)."""
    if forced_reference():
        return False
    if t.device.type == "cuda":
        return not interpreting()
    return t.device.type == "cpu" and interpreter_usable()


@functools.cache
def num_sms(device_index: int) -> int:
    """Streaming multiprocessors of a CUDA device (persistent grids size themselves by it)."""
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def sm_count(t: torch.Tensor) -> int:
    """SM count for `t`'s device; a small stand-in in the interpreter, where programs run in turn."""
    if t.device.type != "cuda":
        return 4
    return num_sms(t.device.index if t.device.index is not None else torch.cuda.current_device())


def next_pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())
