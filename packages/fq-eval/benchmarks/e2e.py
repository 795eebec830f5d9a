"""End to end on one GPU: a W4A4KV4 model against FP16 and FP8 (W8A8) models of the same shape, in
the same run.

Models: `fp16` (transformers, 16-bit everything), `fp8` (per-channel e4m3 weights, per-token dynamic
e4m3 activations, cuBLASLt's FP8 GEMM, 16-bit KV cache: `fq_kernels.runtime.quantize_fp8_`, the
baseline a Hopper user picks) and `w4a4kv4` (ours: packed int4 weights for every token count, int4
activations, int4 KV cache). Measured per model (docs/benchmarks/e2e.md records a run):
- prefill: one forward over batch x seqlen prompt tokens into a fresh cache (transformers' model,
  `fq_eval.latency`), for several batches;
- decode in transformers' own loop (`fq_eval.latency`: one `model(...)` call per token);
- decode in the static CUDA-graph loop (`fq_kernels.runtime.StaticDecoder`): `--new` tokens after a
  `--prompt`-token prefill, per batch; ms per step and tokens/s;
- memory: the weights as loaded (all of them, and bytes per linear weight), the KV cache per token,
  the peak of each measurement, and the largest batch whose decode state fits at each
  `--fit-context` length.

Weights are random (latency does not depend on values): the W4A4KV4 model is an FP16 model of the
shape made `as_if_calibrated` (fq_core.flat.testing) and read through the same checkpoint tensors
and loader as a calibrated checkpoint, in memory. The default recipe's quantisers: asymmetric
per-token activations, KV4 asymmetric per group of 128.

    python packages/fq-eval/benchmarks/e2e.py --shape llama-2-7b --out $OUT/e2e       # on the GPU
    python packages/fq-eval/benchmarks/e2e.py --report results/e2e-*.json --plot e2e.png   # anywhere
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fq_core.checkpoint import Checkpoint
from fq_core.flat import FlatConfig, checkpoint_from_model
from fq_core.flat.testing import as_if_calibrated, kv4_specs
from fq_core.quant import QuantSpec
from fq_eval.latency import LatencySettings, random_model, release_memory, run_latency, time_ms
from fq_eval.report import describe_device, versions


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def int4_random_model(shape: str, device: torch.device, layers: int | None) -> nn.Module:
    """W4A4KV4 (asymmetric activations) of a random FP16 model of `shape`, via the checkpoint tensors."""
    from fq_kernels.runtime.loader import int4_model

    dtype = torch.float16 if device.type == "cuda" else torch.float32
    fp = random_model(shape, dtype, device, layers)
    head_dim = fp.config.hidden_size // fp.config.num_attention_heads
    config = FlatConfig(act=QuantSpec(4, False, "token"), **kv4_specs(min(128, head_dim)))
    config_and_tensors = checkpoint_from_model(as_if_calibrated(fp, config))
    del fp
    release_memory(device)
    return int4_model(Checkpoint(*config_and_tensors), device, dtype=dtype)


def fp8_random_model(shape: str, device: torch.device, layers: int | None) -> nn.Module:
    """The FP8 baseline of a random FP16 model of `shape` (its 16-bit linears replaced, not kept)."""
    from fq_kernels.runtime import quantize_fp8_

    model = quantize_fp8_(random_model(shape, torch.float16, device, layers))
    release_memory(device)
    return model


def _is_linear(module: nn.Module) -> bool:
    from fq_kernels.quant_linear import QuantLinear
    from fq_kernels.runtime import Fp8Linear

    return isinstance(module, (nn.Linear, QuantLinear, Fp8Linear))


def memory_row(model: nn.Module) -> dict[str, Any]:
    """What the loaded model holds: GiB on the device, bytes per weight of its decoder linears (all
    their parameters and buffers: packed weights, scales, transforms, epilogue terms), and the KV
    cache's bytes per token of context (the static decoder's cache, all layers)."""
    from fq_kernels.runtime import StaticDecoder

    device = model.get_input_embeddings().weight.device
    head = model.get_output_embeddings()
    linear_bytes = weights = 0
    for module in model.modules():
        if _is_linear(module) and module is not head:
            linear_bytes += sum(t.nbytes for t in (*module.parameters(False), *module.buffers(False)))
            weights += module.in_features * module.out_features
    held = sum(t.nbytes for t in {id(t): t for t in (*model.parameters(), *model.buffers())}.values())
    length = 1024
    decoder = StaticDecoder(model, max_batch=1, max_len=length, graph=False)
    kv = sum(t.nbytes for layer in decoder.layers for t in (*layer.kv.keys, *layer.kv.values))
    del decoder
    release_memory(device)
    return {
        "phase": "memory",
        "model_gib": held / 2**30,
        "linear_bytes_per_weight": linear_bytes / weights,
        "kv_bytes_per_token": kv / length,
    }


def static_decode_row(model: nn.Module, batch: int, prompt: int, new: int, repeats: int) -> dict[str, Any]:
    """ms per decode step of the graph loop: `new` steps after a `prompt` prefill (first run untimed:
    it captures the graph)."""
    from fq_kernels.runtime import StaticDecoder

    device = model.get_input_embeddings().weight.device
    row: dict[str, Any] = {"phase": "decode-graph", "batch": batch, "prompt": prompt, "steps": new}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    decoder = None
    try:
        decoder = StaticDecoder(model, max_batch=batch, max_len=prompt + new + 2)
        ids = torch.randint(0, model.config.vocab_size, (batch, prompt), device=device)
        decode, prefill = decoder.decode, decoder.prefill
        # the warm-up run captures the graph; each run starts from a fresh prefill (untimed)
        times = time_ms(lambda: decode(batch, new), device, 1, repeats, lambda: prefill(ids))
        times = [t / new for t in times]
        row.update(ms=statistics.median(times), ms_all=times)
        row["tokens_per_s"] = batch / (row["ms"] / 1e3)
        row["peak_gib"] = peak_gib(device)
    except torch.cuda.OutOfMemoryError:
        row.update(ms=None, error="out of memory")
    finally:
        del decoder
        release_memory(device)
    return row


def static_prefill_row(model: nn.Module, batch: int, seqlen: int, repeats: int) -> dict[str, Any]:
    """ms per prefill of the static loop: the first two (untimed) runs see the shape, then capture
    its graph; the timed runs replay it."""
    from fq_kernels.runtime import StaticDecoder

    device = model.get_input_embeddings().weight.device
    row: dict[str, Any] = {"phase": "prefill-graph", "batch": batch, "seqlen": seqlen}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    decoder = None
    try:
        decoder = StaticDecoder(model, max_batch=batch, max_len=seqlen + 2)
        ids = torch.randint(0, model.config.vocab_size, (batch, seqlen), device=device)
        prefill = decoder.prefill
        times = time_ms(lambda: prefill(ids), device, 2, repeats)
        row.update(ms=statistics.median(times), ms_all=times, peak_gib=peak_gib(device))
    except torch.cuda.OutOfMemoryError:
        row.update(ms=None, error="out of memory")
    finally:
        del decoder
        release_memory(device)
    return row


def largest_batch(model: nn.Module, context: int, limit: int = 4096) -> int:
    """The largest batch whose static decode state (cache of `context` tokens + one step) fits."""
    from fq_kernels.runtime import StaticDecoder

    device = model.get_input_embeddings().weight.device

    def fits(batch: int) -> bool:
        decoder = None
        try:
            decoder = StaticDecoder(model, max_batch=batch, max_len=context, graph=False)
            decoder.prefill(torch.zeros(batch, 8, dtype=torch.long, device=device))
            decoder.decode(batch, 1)
            torch.cuda.synchronize(device)
            return True
        except torch.cuda.OutOfMemoryError:
            return False
        finally:
            del decoder
            release_memory(device)

    low, high = 0, 1
    while high <= limit and fits(high):
        low, high = high, high * 2
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    return low


def measure(model: nn.Module, label: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for batch in args.prefill_batches:
        log(f"{label}: prefill {batch} x {args.prefill_seqlen}")
        settings = LatencySettings(
            decode=False,
            prefill_batch=batch,
            prefill_seqlen=args.prefill_seqlen,
            warmup=1,
            repeats=args.repeats,
        )
        rows += run_latency(model, settings)
    for batch in args.static_prefill_batches:
        log(f"{label}: static-loop prefill {batch} x {args.prefill_seqlen} (graph)")
        rows.append(static_prefill_row(model, batch, args.prefill_seqlen, args.repeats))
    if args.hf_batches:
        log(f"{label}: transformers' decode loop, batches {args.hf_batches}")
        settings = LatencySettings(
            prefill=False,
            decode_batches=tuple(args.hf_batches),
            decode_prompt=args.prompt,
            decode_tokens=args.hf_steps,
            warmup=1,
            repeats=args.repeats,
        )
        rows += [{**row, "phase": "decode-hf"} for row in run_latency(model, settings)]
    for batch in args.decode_batches:
        log(f"{label}: graph decode batch {batch}, {args.new} tokens after {args.prompt}")
        rows.append(static_decode_row(model, batch, args.prompt, args.new, args.graph_repeats))
    for context in args.fit_context if model.get_input_embeddings().weight.is_cuda else []:
        log(f"{label}: largest batch at {context} tokens")
        rows.append({"phase": "fit", "context": context, "batch": largest_batch(model, context)})
    return [{**row, "model": label} for row in rows]


def profile(model: nn.Module, label: str, args: argparse.Namespace) -> None:
    """Per-kernel CUDA time of a 1 x `--prefill-seqlen` prefill of the static loop (run eagerly: the
    same kernels its graph replays) and of one eager static decode step per batch in
    `--decode-batches`, as torch.profiler tables in `--profile`."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from fq_kernels.runtime import StaticDecoder

    device = model.get_input_embeddings().weight.device
    args.profile.mkdir(parents=True, exist_ok=True)
    ids = torch.randint(0, model.config.vocab_size, (1, args.prefill_seqlen), device=device)
    decoder = StaticDecoder(model, max_batch=1, max_len=args.prefill_seqlen + 2, graph=False)
    for _ in range(3):
        decoder.prefill(ids)
    torch.cuda.synchronize(device)
    with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
        decoder.prefill(ids)
        torch.cuda.synchronize(device)
    del decoder
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=30, max_name_column_width=70)
    (args.profile / f"{label}-static-prefill-1x{args.prefill_seqlen}.txt").write_text(table)
    for batch in args.decode_batches:
        decoder = StaticDecoder(model, max_batch=batch, max_len=args.prompt + 8, graph=False)
        decoder.prefill(torch.randint(0, model.config.vocab_size, (batch, args.prompt), device=device))
        decoder.decode(batch, 2)
        torch.cuda.synchronize(device)
        with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
            decoder.decode(batch, 1)
            torch.cuda.synchronize(device)
        table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=30, max_name_column_width=70)
        (args.profile / f"{label}-decode-step-b{batch}.txt").write_text(table)
        del decoder
        release_memory(device)


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    record: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join(sys.argv),
        "device": describe_device(device),
        "versions": {**versions(), "triton": _version("triton")},
        "shape": args.shape,
        "rows": [],
    }
    for label in args.models:
        log(f"building {label} ({args.shape})")
        start = time.perf_counter()
        if label == "w4a4kv4":
            model = int4_random_model(args.shape, device, args.layers)
        elif label == "fp8":
            model = fp8_random_model(args.shape, device, args.layers)
        else:
            model = random_model(
                args.shape, torch.float16 if device.type == "cuda" else torch.float32, device, args.layers
            )
        log(f"built in {time.perf_counter() - start:.1f} s")
        if args.profile:
            log(f"{label}: profiling")
            profile(model, label, args)
        else:
            record["rows"].append({**memory_row(model), "model": label})
            record["rows"] += measure(model, label, args)
        del model
        release_memory(device)
        if args.out and not args.profile:
            write(record, args.out)
    return record


def _version(name: str) -> str | None:
    try:
        return __import__(name).__version__
    except ImportError:
        return None


def write(record: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"e2e-{record['shape']}.json").write_text(json.dumps(record, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------
# Report: markdown tables and the plot, from the JSON of one or more runs.


MODELS = (("fp16", "FP16"), ("fp8", "FP8"), ("w4a4kv4", "W4A4KV4"))
"""The models of a record, in table order, with their column names."""


def _rows(record: dict[str, Any], phase: str, key: str = "batch") -> dict[tuple[str, int], dict[str, Any]]:
    return {(r["model"], r[key]): r for r in record["rows"] if r["phase"] == phase}


def _ms(row: dict[str, Any] | None) -> str:
    if row is None:
        return "-"
    return "OOM" if row.get("ms") is None else f"{row['ms']:.2f}"


def _ratio(base: dict[str, Any] | None, ours: dict[str, Any] | None) -> str:
    if not base or not ours or base.get("ms") is None or ours.get("ms") is None:
        return "-"
    return f"**{base['ms'] / ours['ms']:.2f}x**"


def _gib(row: dict[str, Any] | None) -> str:
    return f"{row['peak_gib']:.1f}" if row and row.get("peak_gib") else "-"


def _timing_table(record: dict[str, Any], phase: str, title: str, tokens_per_s: bool) -> list[str]:
    """One row per batch: each model's ms, W4A4KV4's speed-up over FP16 and FP8, peaks."""
    rows = _rows(record, phase)
    if not rows:
        return []
    present = [(m, name) for m, name in MODELS if any(model == m for model, _ in rows)]
    names = [name for _, name in present]
    head = [title, *(f"{n} ms" for n in names), "W4A4KV4 vs FP16", "W4A4KV4 vs FP8"]
    head += ["W4A4KV4 tok/s"] if tokens_per_s else []
    head += [f"peak GiB {' / '.join(names)}"]
    lines = ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for batch in sorted({b for _, b in rows}):
        got = {m: rows.get((m, batch)) for m, _ in present}
        ours = got.get("w4a4kv4")
        size = next(r for r in got.values() if r)
        what = f"{batch} x {size['seqlen']}" if "seqlen" in size else str(batch)
        cells = [what, *(_ms(got[m]) for m, _ in present), _ratio(got.get("fp16"), ours)]
        cells += [_ratio(got.get("fp8"), ours)]
        if tokens_per_s:
            cells += [f"{ours['tokens_per_s']:.0f}" if ours and ours.get("ms") else "-"]
        cells += [" / ".join(_gib(got[m]) for m, _ in present)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def report(record: dict[str, Any]) -> str:
    lines = [f"### {record['shape']} ({record['date']})"]
    lines += _timing_table(record, "prefill", "prefill (transformers forward) batch x seqlen", False)
    lines += _timing_table(record, "prefill-graph", "static-loop prefill (CUDA graph) batch x seqlen", False)
    lines += _timing_table(record, "decode-graph", "graph decode batch", True)
    lines += _timing_table(record, "decode-hf", "transformers decode loop batch", True)
    memory = {r["model"]: r for r in record["rows"] if r["phase"] == "memory"}
    if memory:
        present = [(m, name) for m, name in MODELS if m in memory]
        lines += ["", "| memory | " + " | ".join(name for _, name in present) + " |"]
        lines.append("|" + "---|" * (len(present) + 1))
        for what, key, fmt in (
            ("model on the GPU, GiB", "model_gib", "{:.2f}"),
            ("decoder linears, bytes per weight", "linear_bytes_per_weight", "{:.3f}"),
            ("KV cache, KiB per token", "kv_bytes_per_token", "{:.1f}"),
        ):
            scale = 1 / 1024 if key == "kv_bytes_per_token" else 1
            lines.append(
                f"| {what} | " + " | ".join(fmt.format(memory[m][key] * scale) for m, _ in present) + " |"
            )
    fits = _rows(record, "fit", "context")
    if fits:
        present = [(m, name) for m, name in MODELS if any(model == m for model, _ in fits)]
        head = ["largest decode batch at context", *(name for _, name in present), "W4A4KV4 / FP8"]
        lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for context in sorted({c for _, c in fits}):
            got = {m: fits.get((m, context), {}).get("batch") for m, _ in present}
            ratio = (
                f"**{got['w4a4kv4'] / got['fp8']:.1f}x**" if got.get("w4a4kv4") and got.get("fp8") else "-"
            )
            lines.append(
                f"| {context} tokens | "
                + " | ".join(str(got[m] if got[m] is not None else "-") for m, _ in present)
                + f" | {ratio} |"
            )
    return "\n".join(lines) + "\n"


def merged(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per shape; a later run's row replaces an earlier one of the same phase, model and
    batch (e.g. a decode-only rerun after a kernel change), and the dates of all runs are kept."""

    def key(r: dict[str, Any]) -> tuple:
        return r["phase"], r["model"], r["context"] if r["phase"] == "fit" else r.get("batch")

    by_shape: dict[str, dict[str, Any]] = {}
    for record in records:
        into = by_shape.setdefault(record["shape"], {**record, "rows": [], "date": ""})
        keep = {key(r): r for r in into["rows"]}
        keep.update({key(r): r for r in record["rows"]})
        into["rows"] = list(keep.values())
        into["date"] = ", ".join(filter(None, [into["date"], record["date"]]))
    return list(by_shape.values())


def plot(records: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(records), figsize=(6 * len(records), 4.2), squeeze=False)
    for ax, record in zip(axes[0], records, strict=True):
        for phase, style in (("decode-graph", "-"), ("decode-hf", ":")):
            rows = _rows(record, phase)
            for (model, name), color in zip(MODELS, ("tab:gray", "tab:orange", "tab:blue"), strict=True):
                points = sorted(
                    (b, r["tokens_per_s"]) for (m, b), r in rows.items() if m == model and r.get("ms")
                )
                if points:
                    loop = "CUDA graph" if phase == "decode-graph" else "transformers loop"
                    label = f"{name}, {loop}"
                    ax.plot(*zip(*points, strict=True), style, marker="o", color=color, label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch")
        ax.set_ylabel("decode tokens/s")
        ax.set_title(f"{record['shape']}, {record['device'].get('name', '')}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="llama-2-7b")
    parser.add_argument("--layers", type=int, default=None, help="fewer decoder layers (smoke tests)")
    parser.add_argument("--models", default="w4a4kv4,fp8,fp16", type=lambda s: s.split(","))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ints = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
    parser.add_argument("--prefill-batches", type=ints, default=[1, 4, 16])
    parser.add_argument("--prefill-seqlen", type=int, default=2048)
    parser.add_argument(
        "--static-prefill-batches", type=ints, default=[1], help="prefill through the static loop's graph"
    )
    parser.add_argument("--hf-batches", type=ints, default=[1, 16])
    parser.add_argument("--hf-steps", type=int, default=32)
    parser.add_argument("--decode-batches", type=ints, default=[1, 4, 16, 32, 64])
    parser.add_argument("--prompt", type=int, default=2048)
    parser.add_argument("--new", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--graph-repeats", type=int, default=2)
    parser.add_argument(
        "--fit-context", type=ints, default=[4096, 32768], help="context lengths of the largest-batch search"
    )
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--profile", type=Path, default=None, help="write per-kernel profiles here instead")
    parser.add_argument("--report", type=Path, nargs="*", help="print tables of these result JSONs and stop")
    parser.add_argument("--plot", type=Path, default=None, help="with --report: write the decode plot here")
    args = parser.parse_args()
    if args.report:
        records = merged([json.loads(path.read_text()) for path in args.report])
        print("\n".join(report(r) for r in records))
        if args.plot:
            plot(records, args.plot)
        return
    record = run(args)
    print(report(record))


if __name__ == "__main__":
    main()
