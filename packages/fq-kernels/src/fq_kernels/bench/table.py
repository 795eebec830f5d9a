"""The linear-layer benchmark table: every contender at every shape and token count, in one run.

    python packages/fq-kernels/benchmarks/kernels_table.py --out docs/benchmarks

writes kernels_table.md (the table, with device, date, versions and the command), kernels.json
(every timing) and kernels_speedup.png (speedup over bf16 vs M; needs matplotlib, the `bench`
extra). Ratios are bf16 time / contender time from the same run; `tq share` is transform_quant's
time over the whole W4A4 linear (transform_quant + w4a4_linear).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import platform
import shlex
import sys
from pathlib import Path

import torch

from fq_kernels.bench.contenders import CONTENDERS
from fq_kernels.bench.problems import SHAPES, TOKENS, LinearProblem
from fq_kernels.bench.timing import time_graph
from fq_kernels.layout import PREFILL_KINDS

FLOORS = (
    "full W4A4 linear (transform + quant + GEMM) >= 1.6x bf16 and >= 0.95x fp8 `_scaled_mm` at M=2048, "
    "4096x11008 class; 11008x4096 >= 1.2x",
    ">= 1.3x bf16 at M = 64, 256, 512 (no cliff between the decode and the prompt kernels)",
    ">= 2.5x at M = 1 and >= 2.3x at M = 16 on 4096x11008-class shapes",
)
CLASS_SHAPES = ((4096, 11008), (4096, 14336))


def environment() -> dict[str, str]:
    import triton

    return {
        "device": torch.cuda.get_device_name(0),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "torch": torch.__version__,
        "cuda": str(torch.version.cuda),
        "triton": triton.__version__,
        "python": platform.python_version(),
        "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]),
    }


def measure(shapes, tokens, contenders, log, prefill: str | None = None) -> list[dict]:
    rows = []
    for k, n in shapes:
        for m in tokens:
            problem = LinearProblem(m=m, k=k, n=n)
            row: dict = {"k": k, "n": n, "m": m}
            for name in contenders:
                ours = {"prefill": prefill} if name.startswith("ours") else {}
                make, variants = CONTENDERS[name](problem, **ours)
                try:
                    row[name] = time_graph(make, variants)["median_ms"]
                except Exception as exc:  # a contender that cannot run this shape is reported, not fatal
                    row[name] = None
                    row[f"{name}_error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
                del make
                gc.collect()
            rows.append(row)
            log(row)
            del problem
            gc.collect()
            torch.cuda.empty_cache()
    return rows


def _ratio(row: dict, name: str) -> str:
    if row.get(name) is None or row.get("bf16") is None:
        return "n/a"
    return f"{row['bf16'] / row[name]:.2f}"


def markdown(rows: list[dict], env: dict[str, str], chosen: dict[str, str]) -> str:
    lines = [
        f"Device: {env['device']}; date: {env['date']}; torch {env['torch']} (CUDA {env['cuda']}), "
        f"triton {env['triton']}, Python {env['python']}.",
        "",
        f"Command: `{env['command']}`",
        "",
        "Times are medians of CUDA-graph replays (weights rotated through enough copies to miss the "
        "50 MB L2). Ratio = bf16 `F.linear` time / contender time, same run. `ours` = "
        "`transform_quant` + `w4a4_linear` on the packed int4 weights ("
        + (
            "the CUDA decode kernel up to 32 tokens, the Triton prompt GEMM on the same tiles above"
            if env.get("prefill") is None
            else f"above the decode token counts: the opt-in {env['prefill']} one-byte copy"
        )
        + "); `vs fp8` = fp8 `_scaled_mm` time / ours; `tq share` = transform_quant time / ours.",
        "",
        "| K x N | M | bf16 ms | int8 `_int_mm` | fp8 `_scaled_mm` | unfused | **ours** | ours ms "
        "| vs fp8 | tq share |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        share = (
            "n/a"
            if not r.get("ours") or r.get("ours_tq") is None
            else f"{100 * r['ours_tq'] / r['ours']:.0f}%"
        )
        bf16 = "n/a" if r.get("bf16") is None else f"{r['bf16']:.4f}"
        ours = "n/a" if r.get("ours") is None else f"{r['ours']:.4f}"
        vs_fp8 = "n/a" if not r.get("ours") or r.get("fp8") is None else f"{r['fp8'] / r['ours']:.2f}"
        lines.append(
            f"| {r['k']}x{r['n']} | {r['m']} | {bf16} | {_ratio(r, 'int8')} | {_ratio(r, 'fp8')} | "
            f"{_ratio(r, 'unfused')} | **{_ratio(r, 'ours')}** | {ours} | {vs_fp8} | {share} |"
        )
    lines += ["", "Floors (ratio to bf16 in this run):", ""]
    lines += floor_lines(rows)
    if chosen:
        lines += ["", "Configurations picked by FQ_KERNELS_AUTOTUNE in this run:", ""]
        lines += [f"- `{k}`: `{v}`" for k, v in sorted(chosen.items())]
    return "\n".join(lines) + "\n"


def floor_lines(rows: list[dict]) -> list[str]:
    """Each floor of the table (FLOORS) as met / MISSED, from this run's rows."""
    by = {(r["k"], r["n"], r["m"]): r for r in rows}

    def ratio(r: dict | None, base: str = "bf16") -> float | None:
        return r[base] / r["ours"] if r and r.get("ours") and r.get(base) else None

    def line(what: str, value: float | None, floor: float) -> list[str]:
        if value is None:
            return []
        return [f"- {what}: {value:.2f}x (floor {floor}x: {'met' if value >= floor else 'MISSED'})"]

    out = []
    for k, n in CLASS_SHAPES:
        r = by.get((k, n, 2048))
        out += line(f"M=2048, {k}x{n}, vs bf16", ratio(r), 1.6)
        out += line(f"M=2048, {k}x{n}, vs fp8 `_scaled_mm`", ratio(r, "fp8"), 0.95)
        for m in (64, 256, 512):
            out += line(f"M={m}, {k}x{n}, vs bf16", ratio(by.get((k, n, m))), 1.3)
        for m, floor in ((1, 2.5), (16, 2.3)):
            out += line(f"M={m}, {k}x{n}, vs bf16", ratio(by.get((k, n, m))), floor)
    out += line("M=2048, 11008x4096, vs bf16", ratio(by.get((11008, 4096, 2048))), 1.2)
    return out


def plot(rows: list[dict], path: Path, env: dict[str, str]) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install 'fq-kernels[bench]'): no plot written")
        return False
    shapes = sorted({(r["k"], r["n"]) for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, name, title in (
        (axes[0], "ours", "ours (transform_quant + w4a4_linear)"),
        (axes[1], "unfused", "unfused PyTorch pipeline"),
    ):
        for k, n in shapes:
            pts = [
                (r["m"], r["bf16"] / r[name])
                for r in rows
                if (r["k"], r["n"]) == (k, n) and r.get(name) and r.get("bf16")
            ]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", label=f"{k}x{n}")
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("tokens M")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("speedup over bf16 F.linear")
    axes[0].axhline(2.0, color="tab:red", ls="--", lw=0.8)
    axes[0].axhline(1.6, color="tab:orange", ls="--", lw=0.8)
    axes[1].legend(title="K x N")
    fig.suptitle(f"W4A4 linear vs bf16 cuBLAS, {env['device']}, {env['date']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="docs/benchmarks", help="folder for kernels_table.md / .json / .png")
    parser.add_argument("--shapes", default=",".join(f"{k}x{n}" for k, n in SHAPES))
    parser.add_argument("--tokens", default=",".join(str(m) for m in TOKENS))
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument(
        "--prefill",
        default=None,
        choices=PREFILL_KINDS,
        help="time ours with this opt-in one-byte prefill copy (default: the packed weights, as QuantLinear)",
    )
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("the benchmark needs a CUDA device", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    tokens = [int(v) for v in args.tokens.split(",")]
    contenders = args.contenders.split(",")
    env = {**environment(), "prefill": args.prefill}
    print(json.dumps(env), flush=True)
    log_path = out / "kernels.jsonl"
    with log_path.open("w") as log_file:

        def log(row: dict) -> None:
            log_file.write(json.dumps(row) + "\n")
            log_file.flush()
            print(row, flush=True)

        rows = measure(shapes, tokens, contenders, log, args.prefill)
    from fq_kernels import tuning

    chosen = tuning.chosen()
    (out / "kernels.json").write_text(
        json.dumps(
            {"env": env, "rows": rows, "autotune": chosen, "autotune_timings": tuning.timings()}, indent=1
        )
    )
    table = markdown(rows, env, chosen)
    (out / "kernels_table.md").write_text(table)
    plot(rows, out / "kernels_speedup.png", env)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
