"""`fq inspect`: registered through fq-eval's `fq.commands` entry point.

Imported on every `fq` call, so torch, transformers and matplotlib are imported inside the command.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from fq_core.errors import ConfigError


def register(app: typer.Typer) -> None:
    app.command("inspect")(inspect_command)


def inspect_command(
    checkpoint: Annotated[Path, typer.Option(help="A flatquant checkpoint directory (from fq calib).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory for the PNGs and the JSON.")],
    layer: Annotated[int | None, typer.Option(help="The decoder layer to inspect (0-based).")] = None,
    all_layers: Annotated[
        bool, typer.Option("--all-layers", help="Inspect every layer, plus a summary plot.")
    ] = False,
    model: Annotated[
        str, typer.Option(help="The checkpoint's FP model: 'default' (embedded SmolLM2), an HF dir or .gguf.")
    ] = "default",
    samples: Annotated[int, typer.Option(min=1, help="Windows of pydoc calibration text.")] = 4,
    seqlen: Annotated[int, typer.Option(min=2, help="Tokens per window.")] = 512,
    device: Annotated[str, typer.Option(help="torch device; 'auto' takes CUDA when available.")] = "auto",
) -> None:
    """Why a layer quantises well or badly: FP, per-channel scaling, Hadamard and FlatQuant side by side.

    Plots the sorted per-channel magnitudes of each site's activations and weights under each
    transform, and reports their flatness (max / mean) and the W/A round-to-nearest error.
    """
    from fq_core.devices import resolve_device
    from fq_core.models.quiet import quiet_transformers
    from fq_eval.inspect.analysis import inspect_checkpoint, plan_layers
    from fq_eval.inspect.files import write_atomically
    from fq_eval.inspect.plots import layer_figure, save_png, summary_figure
    from fq_eval.inspect.table import COLUMNS, inspect_table
    from fq_eval.inspect.transforms import SMOOTH_ALPHA
    from fq_eval.methods import bits_label
    from fq_eval.report import run_record

    config, layers = plan_layers(checkpoint, layer, all_layers)
    if output.exists() and not output.is_dir():
        raise ConfigError(f"--output {output} is a file: pass a directory (it is created if missing)")
    target = resolve_device(device)
    err = Console(stderr=True)
    with quiet_transformers():
        reports = inspect_checkpoint(
            checkpoint,
            config,
            layers,
            model,
            samples,
            seqlen,
            target,
            status=lambda step: err.print(f"[dim]{step}[/]"),
        )

    quant = config.quant
    bits = bits_label(
        {"w": quant.weight.bits, "a": quant.act.bits, "k": quant.key.bits, "v": quant.value.bits}
    )
    about = f"{model} + {checkpoint.name} ({bits}), {samples} x {seqlen} tokens, W/A RTN"
    out = Console()
    for number in COLUMNS:
        out.print(inspect_table(reports, number, about))

    stem = "inspect_layers" if all_layers else f"inspect_layer_{layers[0]:02d}"
    paths = []
    for report in reports:
        paths.append(output / f"inspect_layer_{report.layer:02d}.png")
        save_png(layer_figure(report, f"layer {report.layer}: {about}"), paths[-1])
    if all_layers:
        paths.append(output / f"{stem}.png")
        save_png(summary_figure(reports, f"all layers: {about}"), paths[-1])
    settings = {
        "checkpoint": str(checkpoint),
        "model": model,
        "samples": samples,
        "seqlen": seqlen,
        "act": quant.act.to_dict(),
        "weight": quant.weight.to_dict(),
        "smooth_alpha": SMOOTH_ALPHA,
    }
    which = ["--all-layers"] if all_layers else ["--layer", str(layer)]
    command = ["fq", "inspect", "--checkpoint", str(checkpoint), *which, "--model", model]
    command += ["--samples", str(samples), "--seqlen", str(seqlen), "--device", device, "-o", str(output)]
    record = run_record(shlex.join(command), target, settings, [report.to_dict() for report in reports])
    paths.append(output / f"{stem}.json")
    write_atomically(paths[-1], lambda tmp: tmp.write_text(json.dumps(record, indent=2) + "\n"))
    for path in paths:
        err.print(f"wrote {path}")
