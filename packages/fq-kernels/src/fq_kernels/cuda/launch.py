"""Launching an NVRTC-compiled kernel with programmatic dependent launch (PDL, Hopper and newer).

A decode layer is two short kernels in a row, transform_quant then the GEMM, and the GEMM's weight
stream does not depend on the first kernel. Launched with the PDL attribute, the GEMM's blocks start
as soon as transform_quant has signalled (`griddepcontrol.launch_dependents`), stream weights and
wait (`griddepcontrol.wait`) only before they read the activations: the launch latency and the
first weight loads overlap transform_quant instead of following it. Stream capture turns the
attribute into a programmatic edge of the CUDA graph.

The GEMM reads its weights before it waits, which is only safe when the kernel before it cannot
have written them. So PDL is used only when the GEMM's activations are the output of the
transform_quant (either kernel) launched just before on the same stream (`mark_output` /
`follows_marked`), as in `QuantLinear.forward`; any other caller gets a plain launch.

torch's `_CudaKernel` launches with `cuLaunchKernel`, which takes no attributes, so this calls
`cuLaunchKernelEx` with its function handle; everywhere else (before sm_90) it is a plain launch.
"""

from __future__ import annotations

import ctypes
import functools

import torch

_PROGRAMMATIC_STREAM_SERIALIZATION = 6  # CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION


class _LaunchAttribute(ctypes.Structure):  # CUlaunchAttribute
    _fields_ = [("id", ctypes.c_int), ("pad", ctypes.c_char * 4), ("value", ctypes.c_int * 16)]


class _LaunchConfig(ctypes.Structure):  # CUlaunchConfig
    _fields_ = [
        ("grid", ctypes.c_uint * 3),
        ("block", ctypes.c_uint * 3),
        ("shared_mem", ctypes.c_uint),
        ("stream", ctypes.c_void_p),
        ("attrs", ctypes.POINTER(_LaunchAttribute)),
        ("num_attrs", ctypes.c_uint),
    ]


_marked: tuple[int, int] | None = None
"""(data pointer, stream) of the last output of a kernel that signals its dependents."""


def mark_output(out: torch.Tensor) -> None:
    """Record that `out` was just written by a kernel calling `griddepcontrol.launch_dependents`."""
    global _marked
    _marked = (out.data_ptr(), torch.cuda.current_stream(out.device).cuda_stream)


def follows_marked(inp: torch.Tensor) -> bool:
    """Whether `inp` is the marked output on the current stream (so that kernel is the one before);
    clears the mark, so a later tensor at the same address is not taken for it."""
    global _marked
    found = _marked == (inp.data_ptr(), torch.cuda.current_stream(inp.device).cuda_stream)
    _marked = None
    return found


def pdl_supported(device: torch.device) -> bool:
    """Whether kernels on `device` can be launched as (and can signal) dependents: CUDA, sm_90+."""
    return device.type == "cuda" and _pdl_on(device.index if device.index is not None else 0)


@functools.cache
def _pdl_on(index: int) -> bool:
    if torch.version.hip or not hasattr(torch.cuda._utils, "_get_gpu_runtime_library"):
        return False
    return torch.cuda.get_device_capability(index) >= (9, 0)


def _c_arg(arg: torch.Tensor | int) -> ctypes.c_void_p | ctypes.c_int:
    if isinstance(arg, torch.Tensor):
        return ctypes.c_void_p(arg.data_ptr())
    return ctypes.c_int(arg)


def launch(
    kernel,
    grid: tuple[int, int, int],
    block: tuple[int, int, int],
    args: list[torch.Tensor | int],
    shared_mem: int,
    device: torch.device,
    overlap_previous: bool = True,
) -> None:
    """Launch `kernel` (from `torch.cuda._compile_kernel`) on the current stream; with PDL where the
    device has it and `overlap_previous` (the kernel must then call `griddepcontrol.wait` before
    it reads what the previous kernel writes)."""
    if not (overlap_previous and pdl_supported(device)):
        kernel(grid=grid, block=block, args=args, shared_mem=shared_mem)
        return
    values = [_c_arg(a) for a in args]  # kept alive until the launch returns
    params = (ctypes.c_void_p * len(values))(*(ctypes.cast(ctypes.byref(v), ctypes.c_void_p) for v in values))
    attr = _LaunchAttribute(id=_PROGRAMMATIC_STREAM_SERIALIZATION)
    attr.value[0] = 1
    config = _LaunchConfig(
        grid=(ctypes.c_uint * 3)(*grid),
        block=(ctypes.c_uint * 3)(*block),
        shared_mem=shared_mem,
        stream=ctypes.c_void_p(torch.cuda.current_stream().cuda_stream),
        attrs=ctypes.pointer(attr),
        num_attrs=1,
    )
    libcuda = torch.cuda._utils._get_gpu_runtime_library()
    rc = libcuda.cuLaunchKernelEx(ctypes.byref(config), kernel.func, params, None)
    if rc != 0:
        raise RuntimeError(f"cuLaunchKernelEx failed with CUresult {rc}")
