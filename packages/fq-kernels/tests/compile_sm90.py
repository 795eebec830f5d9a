"""Compile every Triton kernel of fq-kernels for sm_90 (Hopper) without a GPU; launch nothing.

The CPU tests run the kernels in Triton's interpreter, which never compiles them and never takes
their NATIVE branches (inline PTX, libdevice); a kernel that the compiler rejects (a variable
redefined with another shape, an unsupported op in a NATIVE branch) passes there and fails only on
the device. This script installs a Triton driver that targets sm_90, compiles through the kernels'
own launch functions on CPU tensors (so each kernel gets the arguments and constexprs a real call
gives it), and makes the launches no-ops. Run by `test_kernels_compile_sm90.py` in a subprocess
(the driver is process-wide and TRITON_INTERPRET must be off); prints one line per failure and
exits 1 if any.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable

os.environ.pop("TRITON_INTERPRET", None)
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

import torch
from triton.backends.compiler import GPUTarget
from triton.backends.driver import DriverBase
from triton.runtime import driver


class _NoLaunch:
    def __init__(self, src, metadata) -> None:
        pass

    def __call__(self, *args, **kwargs) -> None:
        pass


class _Utils:
    def load_binary(self, *args):
        return None, None, 0, 0, 1024  # module, function, registers, spills, max threads per block

    def get_device_properties(self, device) -> dict[str, int]:
        return {"max_shared_mem": 232448, "multiprocessor_count": 132, "max_num_regs": 65536, "warpSize": 32}


class CompileOnlySm90(DriverBase):
    """Targets an H100/H200 (sm_90); compiled kernels are kept, launches do nothing."""

    def __init__(self) -> None:
        self.utils = _Utils()
        self.launcher_cls = _NoLaunch

    @classmethod
    def is_active(cls) -> bool:
        return True

    def get_current_target(self) -> GPUTarget:
        return GPUTarget("cuda", 90, 32)

    def get_current_device(self) -> int:
        return 0

    def set_current_device(self, device) -> None:
        pass

    def get_current_stream(self, device=None) -> int:
        return 0

    def get_active_torch_device(self) -> torch.device:
        return torch.device("cpu")

    def get_device_interface(self):
        return torch.cuda

    def get_benchmarker(self):
        raise RuntimeError("compile-only driver: nothing runs")

    def get_empty_cache_for_benchmark(self):
        raise RuntimeError("compile-only driver: nothing runs")

    def clear_cache(self, cache) -> None:
        pass

    def map_python_to_cpp_type(self, ty):
        raise NotImplementedError


def cases() -> list[tuple[str, Callable[[], object]]]:
    """(name, call) for each kernel and each variant with its own constexprs that decode and
    prefill run by default (plus the decode GEMM's other unpacking and layout options)."""
    from fq_kernels.reference.activation import clip_pair
    from fq_kernels.triton import gemm_packed, gemm_prefill, kv, kv_attention, rope
    from fq_kernels.triton.transform_quant import launch_transform_quant

    g = torch.Generator().manual_seed(0)
    clip = clip_pair((0.9, 0.8))
    out: list[tuple[str, Callable[[], object]]] = []

    def tq(name, k, n1, n2, fmt, sym, left=True, right=True, m=3):
        x = torch.randn(m, k, generator=g).to(torch.bfloat16)
        lf = torch.randn(n1, n1) if left else None
        rf = torch.randn(n2, n2) if right else None
        out.append((name, lambda: launch_transform_quant(x, lf, rf, clip, 4, fmt, symmetric=sym)))

    tq("transform_quant 64x64 int8", 4096, 64, 64, "int8", True)
    tq("transform_quant 64x64 packed", 4096, 64, 64, "packed", True)
    tq("transform_quant 64x64 fp8", 4096, 64, 64, "fp8", True)
    tq("transform_quant_asym 64x64 int8", 4096, 64, 64, "int8", False)
    tq("transform_quant 86x128 int8 (down_proj)", 11008, 86, 128, "int8", True)
    tq("transform_quant_asym heads 32x128", 4096, 32, 128, "int8", False, right=False)
    tq("quantize_act (no transform) packed", 4096, 1, 4096, "packed", True, left=False, right=False)

    def with_pdl(call: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:  # as on an sm_90 device: the kernel signals its dependents
            from fq_kernels.triton import transform_quant

            saved, transform_quant.pdl_supported = transform_quant.pdl_supported, lambda device: True
            try:
                return call()
            finally:
                transform_quant.pdl_supported = saved

        return run

    name, call = out[0]
    out.append((f"{name}, signalling dependents (PDL)", with_pdl(call)))

    k, n = 4096, 1024
    w = torch.randint(0, 256, (n, k // 2), generator=g, dtype=torch.uint8)
    sw, one = torch.rand(n), torch.ones(64)

    def packed(name, m, cfg, a_packed=False, raw=False, zero=False):
        a = (
            torch.randint(0, 256, (m, k // 2), dtype=torch.uint8)
            if a_packed
            else torch.randint(-8, 8, (m, k), dtype=torch.int8)
        )
        c = torch.empty(m, n, dtype=torch.int32 if raw else torch.bfloat16)
        zx, wsum = (one[:m], sw) if zero else (None, None)
        out.append((name, lambda: gemm_packed.launch_packed(a, w, one[:m], sw, sw, c, cfg, raw, zx, wsum)))

    first = {m: gemm_packed.candidates(m, n, k // 2) for m in (1, 16, 32)}
    packed("decode GEMV dp4a (M=1)", 1, first[1][0])
    packed("decode GEMV bytes (M=1, packed activations)", 1, first[1][0], a_packed=True)
    packed("decode GEMM M=16 default (asym)", 16, first[16][0], a_packed=True, zero=True)
    packed("decode GEMM M=16 default raw", 16, first[16][0], a_packed=True, raw=True)
    for unpack in (0, 1):
        cfg = next(c for c in first[16] if c.unpack == unpack)
        packed(f"decode GEMM M=16 unpack={unpack}", 16, cfg, a_packed=True)
    packed("decode GEMM M=16 a_contiguous", 16, next(c for c in first[16] if c.a_contiguous))
    packed("decode GEMM M=32 (tokens as rows)", 32, first[32][0], a_packed=True)

    for kind, dtype in (("int8", torch.int8), ("fp8", torch.float8_e4m3fn)):
        for m in (64, 2048):
            a8 = torch.randint(-8, 8, (m, k), dtype=torch.int8).to(dtype)
            b8 = torch.randint(-8, 8, (n, k), dtype=torch.int8).to(dtype)
            c = torch.empty(m, n, dtype=torch.bfloat16)
            cfgs = gemm_prefill.candidates(m, n, k, kind == "fp8")
            cfg = next(c for c in cfgs if c.schedule != "scaled_mm")  # (the library's is not Triton)
            sx = torch.ones(m)
            for swiglu in (False, True):
                name = f"prefill GEMM {kind} M={m} ({cfg.schedule}{', swiglu' if swiglu else ''})"
                c = torch.empty(m, n // 2 if swiglu else n, dtype=torch.bfloat16)
                out.append(
                    (
                        name,
                        lambda a8=a8, b8=b8, c=c, cfg=cfg, sx=sx, swiglu=swiglu: gemm_prefill.launch_prefill(
                            a8, b8, sx, sw, None, c, cfg, swiglu=swiglu
                        ),
                    )
                )

    from fq_core.quant.pack import pack_int4
    from fq_kernels.layout import tile_decode_weight
    from fq_kernels.triton import gemm_tiles

    tiles = tile_decode_weight(pack_int4(torch.randint(-8, 8, (n, k), dtype=torch.int8)))
    for m, swiglu in ((64, False), (256, False), (2048, False), (2048, True)):
        a8, sx = torch.randint(-8, 8, (m, k), dtype=torch.int8), torch.ones(m)
        c = torch.empty(m, n // 2 if swiglu else n, dtype=torch.bfloat16)
        for cfg in gemm_tiles.candidates(m, n, k, swiglu):
            name = f"tiles GEMM M={m} {cfg}{' swiglu' if swiglu else ''}"
            out.append(
                (
                    name,
                    lambda a8=a8, c=c, cfg=cfg, sx=sx, swiglu=swiglu: gemm_tiles.launch_tiles(
                        a8, tiles, sx, sw, None, c, cfg, swiglu=swiglu
                    ),
                )
            )

    for tokens in (40, 4096):  # 16- and 64-token programs
        qkv = torch.randn(1, tokens, 3 * 32 * 128).to(torch.bfloat16)
        x, cos = qkv[..., : 32 * 128].view(1, tokens, 32, 128), torch.randn(1, tokens, 128).to(torch.bfloat16)
        for mapped in (True, False):
            head_map = torch.randn(128, 128) if mapped else None
            name = f"rope_map {tokens} tokens ({'with' if mapped else 'no'} head map)"
            out.append((name, lambda x=x, c=cos, m=head_map: rope.launch_rope_map(x, c, c, m)))

    xkv = torch.randn(2, 8, 5, 128).to(torch.bfloat16)
    out.append(("quant_kv", lambda: kv.launch_quant_kv(xkv, 128, clip)))
    cache = (
        torch.zeros(4, 8, 16, 64, dtype=torch.uint8),
        torch.ones(4, 8, 16, 1),
        torch.zeros(4, 8, 16, 1, dtype=torch.uint8),
    )
    where = torch.arange(5)
    out.append(("quant_kv_into", lambda: kv.launch_quant_kv_into(xkv, 128, clip, cache, where)))
    qkv = kv.launch_quant_kv(xkv, 128, clip)
    out.append(("dequant_kv", lambda: kv.launch_dequant_kv(*qkv, 128, torch.bfloat16)))
    lengths = torch.tensor([5, 3], dtype=torch.int32)
    for hq, name in ((8, "kv_attention MHA (fma)"), (32, "kv_attention GQA (mma)")):
        q = torch.randn(2, hq, 128).to(torch.bfloat16)
        out.append((name, lambda q=q: kv_attention.launch_kv_attention(q, qkv, qkv, lengths, 128, 0.1)))
    return out


def main() -> int:
    driver.set_active(CompileOnlySm90())
    failures = 0
    for name, call in cases():
        try:
            call()
        except Exception as exc:  # report every kernel, not just the first failure
            failures += 1
            last = traceback.format_exception_only(type(exc), exc)[-1].strip().splitlines()[0]
            print(f"FAILED {name}: {last[:400]}")
        else:
            print(f"ok {name}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
