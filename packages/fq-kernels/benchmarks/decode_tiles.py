"""Decode GEMM alone at M <= 16: the CUDA kernel on decode tiles (every configuration) against the
Triton kernel on packed rows and bf16 cuBLAS, in one run (docs/benchmarks/kernels.md).

    python packages/fq-kernels/benchmarks/decode_tiles.py --out OUT [--shapes 4096x11008,...]
        [--tokens 1,8,16]

Times are medians of CUDA-graph replays with the weights rotated through enough copies to defeat
the L2 (`fq_kernels.bench.timing`); GB/s counts the packed weight bytes only (what bounds decode).
Writes OUT/decode_tiles.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from fq_kernels.bench.problems import LinearProblem
from fq_kernels.bench.timing import copies_to_defeat_l2, time_graph
from fq_kernels.cuda import decode_gemm
from fq_kernels.triton import gemm_packed


def _time(make, count: int) -> float:
    return time_graph(make, count)["median_ms"] * 1e3


def measure(m: int, k: int, n: int) -> dict[str, float]:
    p = LinearProblem(m, k, n)
    row: dict[str, float] = {}
    count = copies_to_defeat_l2(n * k * 2)
    ws = p.weight_copies("bf16", count)
    row["bf16"] = _time(lambda i: lambda: F.linear(p.x, ws[i]), count)

    count = copies_to_defeat_l2(n * k // 2)
    sx = torch.rand(m, device="cuda") + 0.5
    out = torch.empty(m, n, dtype=torch.bfloat16, device="cuda")
    packed = p.weight_copies("packed", count)
    x8 = torch.randint(-8, 8, (m, k), dtype=torch.int8, device="cuda")
    x4 = p.packed[:m].clone() if m <= n else None
    triton = gemm_packed.candidates(m, n, k // 2)
    contiguous = next((c for c in triton if c.a_contiguous), None)
    for name, cfg in (("triton", triton[0]), ("triton_a_contiguous", contiguous)):
        if cfg is None:
            continue
        a = x8 if (cfg.gemv or cfg.a_contiguous) else x4

        def make(i: int, a=a, cfg=cfg):
            return lambda: gemm_packed.launch_packed(a, packed[i], sx, p.scale, None, out, cfg)

        row[name] = _time(make, count)
    tiles = p.weight_copies("tiles", count)
    for cfg in decode_gemm.candidates(m, n, k):
        key = f"tiles w{cfg.warps} t{cfg.tiles} s{cfg.stages}"

        def make_tiled(i: int, cfg=cfg):
            return lambda: decode_gemm.launch_tiled(x8, tiles[i], sx, p.scale, None, out, cfg)

        row[key] = _time(make_tiled, count)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--shapes", default="4096x11008,4096x14336,11008x4096,14336x4096,4096x4096")
    parser.add_argument("--tokens", default="1,8,16")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for shape in args.shapes.split(","):
        k, n = (int(v) for v in shape.split("x"))
        for m in (int(t) for t in args.tokens.split(",")):
            row = measure(m, k, n)
            results.append({"m": m, "k": k, "n": n, "us": row})
            gbs = {name: n * k / 2 / (us * 1e-6) / 1e9 for name, us in row.items()}
            best = min((v, name) for name, v in row.items() if name.startswith("tiles"))
            nan = float("nan")
            print(
                f"K={k} N={n} M={m}: bf16 {row['bf16']:.1f} us | triton {row.get('triton', nan):.1f} "
                f"(a-contiguous {row.get('triton_a_contiguous', nan):.1f}) | best {best[1]} "
                f"{best[0]:.1f} us = {gbs[best[1]]:.0f} GB/s, {row['bf16'] / best[0]:.2f}x bf16",
                flush=True,
            )
            print("   " + ", ".join(f"{name} {us:.1f}" for name, us in row.items()), flush=True)
    (args.out / "decode_tiles.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
