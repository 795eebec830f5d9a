"""Compile the decode GEMM for sm_90 on any machine (no GPU needed) and count what the machine code does.

    python packages/fq-kernels/benchmarks/sass_stats.py --bn 64 --bkp 128 --split 8 --unpack 2
    python packages/fq-kernels/benchmarks/sass_stats.py --bn 128 --bkp 128 --split 4 --unpack 2 --a-contiguous

Prints registers per thread, the instruction count, and the memory instructions of the K loop (the
code after the first backward branch). Uses the ptxas and cuobjdump that Triton's wheel carries;
the device's Triton version (3.6 at the time of docs/benchmarks/kernels.md) gives its figures.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from fq_kernels.triton.gemm_packed import _packed_kernel

POINTERS = ["a_ptr", "b_ptr", "c_ptr", "sx_ptr", "sw_ptr"]
POINTERS += ["bias_ptr", "zx_ptr", "wsum_ptr", "ws_ptr", "lock_ptr"]
TYPES = ["*i8", "*u8", "*bf16", "*fp32", "*fp32", "*fp32", "*fp32", "*fp32", "*i32", "*i32"]
INTS = ["M", "N", "KP", "stride_am", "stride_bn", "stride_cm"]
MEMORY = re.compile(r"\b(LDG|STG|LDS|STS|LDSM|STSM|LDGSTS|ATOMG|REDG)[A-Z0-9.]*")


def compile_packed(args: argparse.Namespace) -> bytes:
    consts = {
        "BM": 16,
        "BN": args.bn,
        "BKP": args.bkp,
        "SPLIT_K": args.split,
        "A_PACKED": False,
        "A_CONTIGUOUS": args.a_contiguous,
        "UNPACK": args.unpack,
        "SWAP": not args.no_swap,
        "NATIVE": True,
        "HAS_BIAS": False,
        "HAS_ZERO": False,
        "RAW": False,
    }
    signature = dict(zip(POINTERS, TYPES, strict=True)) | dict.fromkeys(INTS, "i32")
    signature |= dict.fromkeys(consts, "constexpr")
    names = list(signature)
    # what Triton assumes at run time for 16-byte-aligned pointers and strides (vector loads)
    aligned = {(names.index(n),): [["tt.divisibility", 16]] for n in POINTERS + INTS if n != "M"}
    source = ASTSource(
        fn=_packed_kernel,
        signature=signature,
        constexprs={(names.index(k),): v for k, v in consts.items()},
        attrs=aligned,
    )
    options = {"num_warps": args.warps, "num_stages": args.stages}
    return triton.compile(source, target=GPUTarget("cuda", 90, 32), options=options).asm["cubin"]


def cuobjdump(cubin: bytes, flag: str) -> str:
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        return subprocess.run([tool, flag, f.name], capture_output=True, text=True, check=True).stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bn", type=int, default=128)
    parser.add_argument("--bkp", type=int, default=128)
    parser.add_argument("--split", type=int, default=4)
    parser.add_argument("--unpack", type=int, default=2)
    parser.add_argument("--warps", type=int, default=4)
    parser.add_argument("--stages", type=int, default=4)
    parser.add_argument("--a-contiguous", action="store_true")
    parser.add_argument("--no-swap", action="store_true")
    args = parser.parse_args()
    cubin = compile_packed(args)
    usage = cuobjdump(cubin, "--dump-resource-usage")
    print("triton", triton.__version__, "|", " ".join(re.findall(r"REG:\d+|STACK:\d+", usage)))
    lines = cuobjdump(cubin, "--dump-sass").splitlines()
    sass = [line for line in lines if re.match(r"\s+/\*[0-9a-f]{4}\*/", line)]
    print("instructions", len(sass))
    loop = next((i for i, line in enumerate(sass) if re.search(r"@!?P\d BRA", line)), 0)
    counts = collections.Counter(m.group(0) for line in sass[loop:] for m in [MEMORY.search(line)] if m)
    print("memory instructions from the K loop on:", ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))


if __name__ == "__main__":
    main()
