"""The CUDA kernels' host side without a GPU: the sources compile for sm_90 with the options their
launchers pass, each launcher compiles the variant it describes, and the launch structures have the
driver API's layout.

On a GPU the launchers compile `fq_kernels/cuda/*.cu` at first use with the NVRTC that torch's CUDA
builds ship; here the same compiler comes from the `nvidia-cuda-nvrtc` wheel (a test dependency,
Linux only), loaded with ctypes. A syntax or type error, or a variant whose defines do not fit
the source, then fails on CPU instead of in a device call.
"""

from __future__ import annotations

import ctypes
import glob
import os
import sys

import pytest

from fq_kernels.cuda import decode_gemm, nvrtc, transform_quant

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="nvidia-cuda-nvrtc ships Linux wheels only")


def _nvrtc() -> ctypes.CDLL:
    try:
        import nvidia
    except ImportError:
        pytest.fail("install the test extra (pip install 'fq-kernels[test]'): it brings nvidia-cuda-nvrtc")
    libs = sorted(p for d in nvidia.__path__ for p in glob.glob(os.path.join(d, "*", "lib", "libnvrtc.so*")))
    if not libs:
        pytest.fail("nvidia-cuda-nvrtc is not installed: pip install 'fq-kernels[test]'")
    return ctypes.CDLL(libs[0])


def compile_for_sm90(file: str, defines: dict[str, int]) -> tuple[int, str]:
    """(NVRTC result code, compile log) of `fq_kernels/cuda/<file>` for sm_90 with the options its
    launcher passes for `defines`."""
    source, options = nvrtc.read_source(file), nvrtc.options(defines)
    lib = _nvrtc()
    prog = ctypes.c_void_p()
    assert lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), b"kernel.cu", 0, None, None) == 0
    opts = [b"--gpu-architecture=sm_90", *(o.encode() for o in options)]
    rc = lib.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    return rc, log.value.decode(errors="replace")


DECODE_VARIANTS = [(cfg, 16, 1, False, False, False) for cfg in decode_gemm.candidates(16, 4096, 4096)]
DECODE_VARIANTS += [
    (decode_gemm.TiledConfig(), 8, 0, True, False, False),
    (decode_gemm.TiledConfig(), 16, 2, False, True, False),
    (decode_gemm.TiledConfig(), 16, 0, False, False, True),
]


@pytest.mark.parametrize("variant", DECODE_VARIANTS, ids=str)
def test_decode_gemm_compiles_for_sm90(variant) -> None:
    rc, log = compile_for_sm90(decode_gemm.SOURCE, decode_gemm.defines(*variant))
    assert rc == 0, log


TQ_VARIANTS = [
    transform_quant.Variant(64, 64, True, True, False, False, False, 4),
    transform_quant.Variant(86, 128, True, True, True, True, False, 4),
    transform_quant.Variant(112, 128, True, True, False, False, True, 4),
    transform_quant.Variant(32, 128, True, False, False, True, True, 4),
    transform_quant.Variant(9, 64, False, True, True, False, False, 8),
]


@pytest.mark.parametrize("variant", TQ_VARIANTS, ids=str)
def test_transform_quant_compiles_for_sm90(variant) -> None:
    rc, log = compile_for_sm90(transform_quant.SOURCE, transform_quant.defines(variant))
    assert rc == 0, log


def test_a_broken_variant_fails_to_compile() -> None:
    """The check can fail: a variant without a transform is rejected by the source's #error."""
    bad = transform_quant.Variant(1, 4096, False, False, False, False, False, 4)
    rc, log = compile_for_sm90(transform_quant.SOURCE, transform_quant.defines(bad))
    assert rc != 0 and "without a transform" in log


def test_launchers_compile_the_variant_they_describe(monkeypatch) -> None:
    """Each launcher hands NVRTC its own source, kernel name and the variant's options, and opts in
    to the variant's shared memory where it passes the default 48 KiB (recorded, not run)."""
    import contextlib

    import torch

    compiled = []

    class Kernel:
        shared = None

        def set_shared_memory_config(self, nbytes: int) -> None:
            self.shared = nbytes

    def fake_compile(source, name, nvcc_options):
        compiled.append((source, name, nvcc_options, Kernel()))
        return compiled[-1][-1]

    monkeypatch.setattr(torch.cuda, "_compile_kernel", fake_compile, raising=False)
    monkeypatch.setattr(torch.cuda, "device", lambda index: contextlib.nullcontext())
    big = transform_quant.Variant(112, 128, True, True, False, False, False, 4)
    small = transform_quant.Variant(64, 64, True, True, False, False, False, 4)
    cfg = decode_gemm.TiledConfig(8, 2, 4)
    transform_quant._kernel.__wrapped__(big, 0)
    transform_quant._kernel.__wrapped__(small, 0)
    decode_gemm._kernel.__wrapped__(cfg, 16, 1, False, False, False, 0)
    expected = [
        (transform_quant, transform_quant.defines(big), big.smem_bytes()),
        (transform_quant, transform_quant.defines(small), None),
        (decode_gemm, decode_gemm.defines(cfg, 16, 1, False, False, False), decode_gemm.ring_bytes(cfg, 16)),
    ]
    assert big.smem_bytes() >= 48 * 1024 > small.smem_bytes() and decode_gemm.ring_bytes(cfg, 16) >= 48 * 1024
    for (source, name, options, kernel), (module, defines, shared) in zip(compiled, expected, strict=True):
        assert (source, name) == (nvrtc.read_source(module.SOURCE), module.KERNEL)
        assert options == nvrtc.options(defines) and kernel.shared == shared


def test_launch_structures_have_the_driver_api_layout() -> None:
    """`cuLaunchKernelEx` reads CUlaunchConfig / CUlaunchAttribute by offset (cuda.h, CUDA 12+):
    grid at 0, block at 12, sharedMemBytes at 24, hStream at 32, attrs at 40, numAttrs at 48
    (56 bytes); an attribute is its id, 4 bytes of padding and a 64-byte value union (72 bytes)."""
    import ctypes

    from fq_kernels.cuda.launch import _LaunchAttribute, _LaunchConfig

    offsets = {name: getattr(_LaunchConfig, name).offset for name, _ in _LaunchConfig._fields_}
    assert offsets == {"grid": 0, "block": 12, "shared_mem": 24, "stream": 32, "attrs": 40, "num_attrs": 48}
    assert ctypes.sizeof(_LaunchConfig) == 56
    assert _LaunchAttribute.value.offset == 8 and ctypes.sizeof(_LaunchAttribute) == 72
