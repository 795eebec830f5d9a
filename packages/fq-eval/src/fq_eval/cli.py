"""fq-eval's commands for the `fq` app: `fq quickstart` and `fq eval`.

Registered through the `fq.commands` entry point. This module is imported on every `fq` call, so
torch, transformers, datasets, lm-eval and the evaluation code are imported inside the commands.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from fq_core.errors import ConfigError

DEFAULT_METHODS = "fp,rtn,hadamard"


def register(app: typer.Typer) -> None:
    app.command("quickstart")(quickstart)
    app.command("eval")(evaluate)


def _device(device: str) -> Any:
    from fq_core.devices import resolve_device

    return resolve_device(device)


def quickstart(
    ctx: typer.Context,
    model: Annotated[
        str,
        typer.Option(help="'default' (embedded SmolLM2-135M), a local HF model directory or a .gguf file."),
    ] = "default",
    seqlen: Annotated[int, typer.Option(min=2, help="Tokens per evaluation window.")] = 512,
    windows: Annotated[
        int, typer.Option(min=1, help="Evaluation windows: the last windows*seqlen tokens.")
    ] = 16,
    device: Annotated[str, typer.Option(help="torch device; 'auto' takes CUDA when available.")] = "auto",
    output: Annotated[Path | None, typer.Option(help="Write a results JSON here.")] = None,
) -> None:
    """FP vs naive W4A4 RTN vs FlatQuant (calibrated in-process) perplexity on the pydoc tail."""
    from fq_core.models.quiet import quiet_transformers
    from fq_eval.quickstart import run_quickstart
    from fq_eval.report import run_record, write_json
    from fq_eval.tables import quickstart_table

    target = _device(device)
    err = Console(stderr=True)
    # Plain step lines, not a spinner: the perplexity progress bar is a live display of its own.
    with quiet_transformers():
        facts, rows = run_quickstart(
            model, seqlen, windows, target, status=lambda step: err.print(f"[dim]{step}[/]")
        )

    Console().print(quickstart_table(rows, facts, seqlen, windows))
    if "flatquant" in facts:
        err.print(facts["flatquant"])
    if output is not None:
        settings = {"model": model, "seqlen": seqlen, "windows": windows, "dtype": "float32", **facts}
        write_json(output, run_record(_command(ctx), target, settings, rows))
        err.print(f"wrote {output}")


def _csv(value: str | None) -> list[str]:
    if value is None or value.strip().lower() in ("", "none"):
        return []
    return [part.strip() for part in value.split(",") if part.strip()]


def _ints(value: str, option: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in _csv(value))
    except ValueError as error:
        raise ConfigError(f"{option} takes comma-separated integers, got {value!r}") from error


def _data_paths(items: list[str]) -> dict[str, Path]:
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ConfigError(f"--data takes NAME=PATH (e.g. wikitext2=wiki.test.raw), got {item!r}")
        out[name.strip().lower()] = Path(path.strip())
    return out


def evaluate(
    ctx: typer.Context,
    model: Annotated[
        str,
        typer.Option(
            help="'default' (embedded SmolLM2-135M), an HF model dir, a .gguf, or shape:llama-2-7b / "
            "shape:llama-3-8b (random weights, latency only)."
        ),
    ] = "default",
    checkpoint: Annotated[
        Path | None, typer.Option(help="An fq-calib checkpoint dir: adds the 'flatquant' method.")
    ] = None,
    real: Annotated[
        bool,
        typer.Option(help="Run the checkpoint on fq-kernels' int4 kernels instead of fake quantisation."),
    ] = False,
    method: Annotated[
        str | None,
        typer.Option(help="Comma list of fp (= fp16), rtn, hadamard, flatquant. [default: fp,rtn,hadamard]"),
    ] = None,
    w_bits: Annotated[int, typer.Option(help="Weight bits of rtn/hadamard (per channel, sym).")] = 4,
    a_bits: Annotated[int, typer.Option(help="Activation bits (per token, sym; 16 = off).")] = 4,
    kv_bits: Annotated[int, typer.Option(help="KV-cache bits (asym, group 128; 16 = off).")] = 16,
    ppl: Annotated[
        str | None,
        typer.Option(help="Comma list of wikitext2, c4, c4-gptq, pydoc, or 'none'. [default: pydoc]"),
    ] = None,
    seqlen: Annotated[
        int | None, typer.Option(min=2, help="PPL window; default 2048 (wikitext2, c4) and 512 (pydoc).")
    ] = None,
    data: Annotated[
        list[str] | None,
        typer.Option(help="NAME=PATH: a local copy of a PPL dataset or zero-shot task's data (repeatable)."),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Folder of local dataset repos by hub id (allenai/c4, ...). [env FQ_DATA_DIR]"),
    ] = None,
    zero_shot: Annotated[
        str | None,
        typer.Option(help="lm-eval tasks: 'paper' (the 6), 'local' (pydoc cloze), or names."),
    ] = None,
    zero_shot_batch: Annotated[int, typer.Option(min=1, help="lm-eval batch size.")] = 8,
    zero_shot_limit: Annotated[int | None, typer.Option(min=1, help="First N items per task.")] = None,
    latency: Annotated[
        str | None, typer.Option(help="Comma list of prefill, decode (CUDA events; CPU: smoke only).")
    ] = None,
    latency_scope: Annotated[str, typer.Option(help="'model' or 'layer' (decoder layer 0 alone).")] = "model",
    prefill_batch: Annotated[int, typer.Option(min=1, help="Prefill batch.")] = 1,
    prefill_seqlen: Annotated[int, typer.Option(min=1, help="Prefill tokens per sequence.")] = 2048,
    decode_batches: Annotated[str, typer.Option(help="Decode batch sizes.")] = "1,2,4,8,16,32,64",
    decode_prompt: Annotated[int, typer.Option(min=1, help="Prompt tokens in the KV cache.")] = 512,
    decode_tokens: Annotated[int, typer.Option(min=1, help="Timed decode steps per repeat.")] = 32,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed warm-up runs.")] = 2,
    repeats: Annotated[int, typer.Option(min=1, help="Timed repeats (the median is reported).")] = 10,
    layers: Annotated[int | None, typer.Option(min=1, help="Decoder layers of a shape: model.")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="PPL windows per forward.")] = 4,
    dtype: Annotated[str, typer.Option(help="auto (float16 on CUDA, float32 on CPU), float16, bfloat16.")] = (
        "auto"
    ),
    device: Annotated[str, typer.Option(help="torch device; 'auto' takes CUDA when available.")] = "auto",
    device_map: Annotated[
        str | None,
        typer.Option(
            help="Spread each model over the GPUs (then CPU, disk) with accelerate: auto, balanced, "
            "balanced_low_0 or sequential. Replaces --device."
        ),
    ] = None,
    max_memory: Annotated[
        str | None,
        typer.Option(help="Per-device limits of --device-map, e.g. 0=70GiB,1=70GiB,cpu=200GiB."),
    ] = None,
    output: Annotated[Path | None, typer.Option(help="Write a results JSON here.")] = None,
) -> None:
    """Compare methods (FP, RTN, Hadamard, a FlatQuant checkpoint) on PPL, zero-shot and latency."""
    import torch

    from fq_core.models.quiet import quiet_transformers
    from fq_eval.compare import EvalPlan, run_eval
    from fq_eval.latency import LatencySettings
    from fq_eval.methods import Bits, parse_methods
    from fq_eval.placement import parse_placement
    from fq_eval.report import run_record, write_json
    from fq_eval.tables import comparison_table, latency_table
    from fq_eval.zero_shot import parse_tasks

    if device_map is not None and device != "auto":
        raise ConfigError("--device-map places the model itself: leave out --device (or --device-map)")
    placement = parse_placement(_device(device), device_map, max_memory)
    target = placement.device
    dtypes = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
    if dtype != "auto" and dtype not in dtypes:
        raise ConfigError(f"--dtype {dtype!r} is unknown: use auto, {', '.join(dtypes)}")
    for name, bits in (("--w-bits", w_bits), ("--a-bits", a_bits), ("--kv-bits", kv_bits)):
        if not (2 <= bits <= 8 or bits == 16):
            raise ConfigError(f"{name} {bits} is not supported: use 2..8, or 16 for no quantisation")
    phases = _csv(latency)
    unknown = set(phases) - {"prefill", "decode"}
    if unknown:
        raise ConfigError(f"--latency {','.join(sorted(unknown))} is unknown: use prefill and/or decode")
    random_weights = model.startswith("shape:")
    methods = method or DEFAULT_METHODS + (",flatquant" if checkpoint else "")
    plan = EvalPlan(
        model=model,
        methods=parse_methods(methods, bool(checkpoint)),
        bits=Bits(w_bits, a_bits, kv_bits),
        checkpoint=checkpoint,
        real=real,
        ppl=_csv(ppl if ppl is not None else ("none" if random_weights else "pydoc")),
        seqlen=seqlen,
        ppl_batch=batch_size,
        data=_data_paths(data or []),
        data_dir=data_dir or (Path(os.environ["FQ_DATA_DIR"]) if os.environ.get("FQ_DATA_DIR") else None),
        zero_shot=parse_tasks(zero_shot) if zero_shot else [],
        zero_shot_batch=zero_shot_batch,
        zero_shot_limit=zero_shot_limit,
        latency=LatencySettings(
            prefill="prefill" in phases,
            decode="decode" in phases,
            scope=latency_scope,
            prefill_batch=prefill_batch,
            prefill_seqlen=prefill_seqlen,
            decode_batches=_ints(decode_batches, "--decode-batches"),
            decode_prompt=decode_prompt,
            decode_tokens=decode_tokens,
            warmup=warmup,
            repeats=repeats,
        )
        if phases
        else None,
        layers=layers,
    )
    if checkpoint is not None and not checkpoint.is_dir():
        from fq_core.errors import DataError

        raise DataError(f"checkpoint {checkpoint} is not a directory: pass an fq-calib output dir")

    err = Console(stderr=True)
    with quiet_transformers():
        facts, rows = run_eval(
            plan,
            placement,
            None if dtype == "auto" else dtypes[dtype],
            status=lambda step: err.print(f"[dim]{step}[/]"),
        )

    from fq_eval.report import describe_device

    out = Console()
    for table in (comparison_table(rows, facts), latency_table(rows, describe_device(target)["name"])):
        if table is not None:
            out.print(table)
    if target.type == "cpu" and plan.latency is not None:
        err.print("latency on the CPU is a smoke test of the code path, not a benchmark")
    if output is not None:
        settings = {
            "model": model,
            "checkpoint": str(checkpoint) if checkpoint else None,
            "real": real,
            "methods": plan.methods,
            "bits": {"w": w_bits, "a": a_bits, "kv": kv_bits},
            "ppl": plan.ppl,
            "zero_shot": plan.zero_shot,
            "latency": plan.latency.to_dict() if plan.latency else None,
            "device_map": device_map,
            "max_memory": max_memory,
            **facts,
        }
        write_json(output, run_record(_command(ctx), target, settings, rows))
        err.print(f"wrote {output}")


def _command(ctx: typer.Context) -> str:
    """The command that reproduces this run, every option spelled out (defaults included)."""
    values = [(param.name, ctx.params.get(param.name)) for param in ctx.command.params]  # declared order
    options = []
    for name, value in values:
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if item is not None:
                options.append(f"--{name.replace('_', '-')} {shlex.quote(str(item))}")
    return " ".join([ctx.command_path, *options])
