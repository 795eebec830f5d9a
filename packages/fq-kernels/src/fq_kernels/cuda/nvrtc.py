"""Compiling this folder's CUDA C++ sources at first use, with the NVRTC wrapper of torch.

Each launcher describes a variant of its kernel as compile-time defines; this module turns them into
the compiler options (`options`, also what the CPU tests compile for sm_90), compiles a variant once
per device (`compile_kernel`) and says whether a device can run a kernel at all (`usable`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from importlib import resources

import torch

DEFAULT_SHARED_LIMIT = 48 * 1024
"""Dynamic shared memory a block gets without opting in (`set_shared_memory_config`)."""


@functools.cache
def read_source(file: str) -> str:
    return resources.files("fq_kernels.cuda").joinpath(file).read_text()


def options(defines: Mapping[str, int]) -> list[str]:
    """NVRTC options: no fused multiply-adds (epilogues follow the references' float32 order), then
    the variant's defines."""
    return ["--fmad=false", *(f"-D{name}={value}" for name, value in defines.items())]


def compile_kernel(file: str, name: str, defines: Mapping[str, int], shared_mem: int, device: int):
    """Kernel `name` of `file` compiled for `device` with `defines`, allowed `shared_mem` bytes."""
    with torch.cuda.device(device):
        kernel = torch.cuda._compile_kernel(read_source(file), name, nvcc_options=options(defines))
        if shared_mem >= DEFAULT_SHARED_LIMIT:
            kernel.set_shared_memory_config(shared_mem)
    return kernel


def usable(device: torch.device | str, compile_default: Callable[[int], object]) -> bool:
    """Whether `device` runs a kernel of this folder: CUDA, compute capability 8.0 or newer, torch's
    NVRTC wrapper present, and `compile_default(index)` compiling (callers keep Triton otherwise)."""
    device = torch.device(device)
    if device.type != "cuda" or not hasattr(torch.cuda, "_compile_kernel") or torch.version.hip:
        return False
    index = device.index if device.index is not None else torch.cuda.current_device()
    return _compiles(index, compile_default)


@functools.cache
def _compiles(index: int, compile_default: Callable[[int], object]) -> bool:
    if torch.cuda.get_device_capability(index) < (8, 0):
        return False
    try:
        compile_default(index)
    except Exception:  # no NVRTC, an older torch without its wrapper, a compile error
        return False
    return True
