"""Launch one kernel of the W4A4 linear a few times, for Nsight Compute to profile the last launch.

    ncu --clock-control none -k regex:_transform_quant_kernel --launch-skip 3 --launch-count 1 \\
        --section SpeedOfLight --section Occupancy --section WarpStateStats \\
        python packages/fq-kernels/benchmarks/profile_kernels.py tq 2048 4096 11008

what: tq (transform_quant), decode (packed GEMM, M <= 16) or prefill (int8 GEMM); M K N.
Or `kv B HQ HKV`: kv_attention over an int4 cache of 2304 positions, head_dim 128 (a 2048-token
prompt and 256 new tokens). Uses the configuration the kernels pick without autotuning (the first
candidate).
"""

from __future__ import annotations

import sys

import torch

from fq_kernels.bench.problems import LinearProblem
from fq_kernels.layout import prefill_weight
from fq_kernels.ops import transform_quant, w4a4_linear


def kv(b: int, hq: int, hkv: int, s: int = 2304, d: int = 128) -> None:
    from fq_kernels.ops import kv_attention, quant_kv

    keys = quant_kv(torch.randn(b, hkv, s, d, device="cuda", dtype=torch.float16), d)
    values = quant_kv(torch.randn(b, hkv, s, d, device="cuda", dtype=torch.float16), d)
    q = torch.randn(b, hq, d, device="cuda", dtype=torch.float16)
    lengths = torch.full((b,), s, dtype=torch.int32, device="cuda")
    for _ in range(5):
        kv_attention(q, keys, values, lengths, d, d**-0.5)
    torch.cuda.synchronize()


def main(what: str, m: int, k: int, n: int) -> None:
    if what == "kv":
        return kv(m, k, n)
    p = LinearProblem(m=m, k=k, n=n)
    fmt = "packed" if what == "decode" else "int8"
    weight = p.packed if what == "decode" else prefill_weight(p.packed, "int8")
    xq, sx = transform_quant(p.x, p.left, p.right, p.clip, 4, fmt)
    for _ in range(5):
        if what == "tq":
            transform_quant(p.x, p.left, p.right, p.clip, 4, fmt)
        else:
            w4a4_linear(xq, sx, weight, p.scale)
    torch.cuda.synchronize()


if __name__ == "__main__":
    main(sys.argv[1], *(int(v) for v in sys.argv[2:5]))
