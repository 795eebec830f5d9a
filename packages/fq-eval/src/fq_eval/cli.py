"""fq-eval's commands for the `fq` app: `fq quickstart`.

Registered through the `fq.commands` entry point. This module is imported on every `fq` call, so
torch, transformers and the evaluation code are imported inside the command.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from fq_core.errors import ConfigError


def register(app: typer.Typer) -> None:
    app.command("quickstart")(quickstart)


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
    """FP vs naive W4A4 RTN perplexity on the tail of the embedded pydoc corpus."""
    import torch

    from fq_core.models.quiet import quiet_transformers
    from fq_eval.quickstart import run_quickstart
    from fq_eval.report import run_record, write_json

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        target = torch.device(device)
    except RuntimeError as error:
        raise ConfigError(f"--device {device!r} is not a torch device (e.g. cpu, cuda, cuda:1)") from error
    err = Console(stderr=True)
    # Plain step lines, not a spinner: the perplexity progress bar is a live display of its own.
    with quiet_transformers():
        facts, rows = run_quickstart(
            model, seqlen, windows, target, status=lambda step: err.print(f"[dim]{step}[/]")
        )

    Console().print(_table(rows, facts, seqlen, windows))
    if output is not None:
        settings = {"model": model, "seqlen": seqlen, "windows": windows, "dtype": "float32", **facts}
        write_json(output, run_record(_command(ctx), target, settings, rows))
        err.print(f"wrote {output}")


def _table(rows: list[dict[str, Any]], facts: dict[str, Any], seqlen: int, windows: int) -> Table:
    table = Table(
        title=f"pydoc tail: {windows} windows x {seqlen} tokens",
        caption=f"load {facts['load_s']:.1f} s, eval " + ", ".join(f"{r['eval_s']:.1f} s" for r in rows),
    )
    table.add_column("method")
    table.add_column("W/A bits", justify="center")
    table.add_column("PPL", justify="right")
    table.add_column("ratio to FP", justify="right")
    for row in rows:
        table.add_row(
            row["method"],
            f"{row['w_bits']}/{row['a_bits']}",
            f"{row['ppl']:.2f}",
            f"{row['ratio_to_fp']:.2f}",
        )
    return table


def _command(ctx: typer.Context) -> str:
    """The command that reproduces this run, every option spelled out (defaults included)."""
    values = [(param.name, ctx.params.get(param.name)) for param in ctx.command.params]  # declared order
    options = [
        f"--{name.replace('_', '-')} {shlex.quote(str(value))}" for name, value in values if value is not None
    ]
    return " ".join([ctx.command_path, *options])
