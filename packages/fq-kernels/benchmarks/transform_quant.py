"""transform_quant alone: the CUDA kernel against the Triton kernel, in one run, at the factor
shapes of LLaMA-2-7B / LLaMA-3-8B; and the decode layer (CUDA transform_quant + tiled GEMM) with and
without programmatic dependent launch (docs/benchmarks/kernels.md).

    python packages/fq-kernels/benchmarks/transform_quant.py --out OUT [--tokens 1,16,32,2048]
        [--cases 64x64,86x128,112x128,heads32x128] [--format int8]
        [--layers 4096x11008,4096x14336,11008x4096] [--layer-tokens 1,16,32]

Times are medians of CUDA-graph replays (`fq_kernels.bench.timing`), the tokens rotated through
enough copies to defeat the L2. Each row also says how far the two kernels' results are apart
(share of codes that differ, largest relative scale difference): both round the same float32
sums of 16-bit products, in different orders. Writes OUT/transform_quant.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from fq_kernels import ops
from fq_kernels.bench.problems import LinearProblem
from fq_kernels.bench.timing import copies_to_defeat_l2, time_graph
from fq_kernels.cuda import decode_gemm
from fq_kernels.cuda import transform_quant as cuda_tq
from fq_kernels.testing import random_orthogonal
from fq_kernels.triton.transform_quant import launch_transform_quant


def _factors(case: str, g: torch.Generator) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(left, right) float32 on the GPU: random orthogonal factors of the case's sizes."""

    def orthogonal(n: int) -> torch.Tensor:
        return random_orthogonal(n, g).cuda()

    if case.startswith("heads"):
        heads, _ = (int(v) for v in case[len("heads") :].split("x"))
        return orthogonal(heads), None
    n1, n2 = (int(v) for v in case.split("x"))
    return orthogonal(n1), orthogonal(n2)


def _k(case: str) -> int:
    a, b = (int(v) for v in case.removeprefix("heads").split("x"))
    return a * b


def measure(case: str, m: int, fmt: str) -> dict[str, float]:
    g = torch.Generator().manual_seed(m)
    left, right = _factors(case, g)
    k = _k(case)
    clip = torch.tensor([0.95, 0.9], device="cuda")
    count = copies_to_defeat_l2(m * k * 2)
    xs = [(torch.randn(m, k, generator=g) * 3).to(torch.bfloat16).cuda() for _ in range(count)]

    def triton(i: int):
        return lambda: launch_transform_quant(xs[i], left, right, clip, 4, fmt)

    def cuda(i: int):
        return lambda: cuda_tq.launch(xs[i], left, right, clip, 4, fmt)

    row = {"triton_us": time_graph(triton, count)["median_ms"] * 1e3}
    row["cuda_us"] = time_graph(cuda, count)["median_ms"] * 1e3
    (qt, st, _), (qc, sc, _) = triton(0)(), cuda(0)()
    row["codes_differ"] = (qt != qc).float().mean().item()
    row["scale_rel_diff"] = ((st - sc).abs() / st.abs()).max().item()
    return row


def measure_layer(k: int, n: int, m: int) -> dict[str, float]:
    """The decode layer (op calls, as QuantLinear makes them) with either transform_quant kernel, with
    and without the GEMM overlapping it (where `decode_gemm` overlaps at all: wide layers, or one
    token), against bf16 cuBLAS; weights rotated to defeat the L2."""
    p = LinearProblem(m, k, n)
    count = copies_to_defeat_l2(n * k * 2)
    ws = p.weight_copies("bf16", count)
    row = {"bf16_us": time_graph(lambda i: lambda: F.linear(p.x, ws[i]), count)["median_ms"] * 1e3}
    count = copies_to_defeat_l2(n * k // 2)
    tiles = p.weight_copies("tiles", count)

    def layer(i: int):
        def run():
            xq, sx = ops.transform_quant(p.x, p.left, p.right, p.clip, 4, "int8")
            return ops.w4a4_linear(xq, sx, tiles[i], p.scale)

        return run

    supports = cuda_tq.supports
    for kernel in ("triton", "cuda"):
        cuda_tq.supports = lambda *args, kernel=kernel: kernel == "cuda"  # the kernel, whatever ops picks
        for overlap in (False, True):
            decode_gemm.OVERLAP_TRANSFORM_QUANT = overlap
            name = f"{kernel}_{'overlap' if overlap else 'serial'}_us"
            row[name] = time_graph(layer, count)["median_ms"] * 1e3
    cuda_tq.supports = supports
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cases", default="64x64,86x128,112x128,heads32x128")
    parser.add_argument("--tokens", default="1,16,32,2048")
    parser.add_argument("--format", default="int8", choices=["int8", "packed"])
    parser.add_argument("--layers", default="4096x11008,4096x14336,11008x4096")
    parser.add_argument("--layer-tokens", default="1,16,32")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for case in args.cases.split(","):
        for m in (int(t) for t in args.tokens.split(",")):
            row = measure(case, m, args.format)
            results.append({"case": case, "m": m, "format": args.format, **row})
            print(
                f"{case} M={m}: triton {row['triton_us']:.1f} us | cuda {row['cuda_us']:.1f} us "
                f"({row['triton_us'] / row['cuda_us']:.2f}x) | codes differ {row['codes_differ']:.2e}, "
                f"scale rel diff {row['scale_rel_diff']:.1e}",
                flush=True,
            )
    layers = []
    for shape in filter(None, args.layers.split(",")):
        k, n = (int(v) for v in shape.split("x"))
        for m in (int(t) for t in args.layer_tokens.split(",")):
            row = measure_layer(k, n, m)
            layers.append({"k": k, "n": n, "m": m, **row})
            bf16 = row["bf16_us"]
            times = ", ".join(f"{name[:-3]} {us:.1f} us ({bf16 / us:.2f}x)" for name, us in row.items())
            print(f"layer K={k} N={n} M={m}: {times}", flush=True)
    (args.out / "transform_quant.json").write_text(json.dumps({"tq": results, "layers": layers}, indent=1))


if __name__ == "__main__":
    main()
