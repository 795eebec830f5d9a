"""fq-kernels' commands, its entry point of the ``fq.commands`` group.

- `fq kernels info`: whether Triton imports, which device the kernels could run on, and whether
  Triton's CPU interpreter is switched on (facts about the environment; it runs no kernel);
- `fq generate`: a checkpoint's real-int4 model continues a prompt (needs fq-kernels[hf]);
- `fq export`: a checkpoint in a serving layout (compressed-tensors).

Nothing heavy is imported at module level: `fq` imports every plugin on each invocation.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

INTERPRET_ENV = "TRITON_INTERPRET"
_TRUE = ("1", "true", "yes", "on", "y")
"""Values Triton treats as "on" for its boolean environment switches."""


def _one_line(exc: BaseException) -> str:
    message = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _triton_record() -> dict[str, Any]:
    try:
        import triton
    except Exception as exc:  # ImportError, or a broken install raising anything at import
        return {"importable": False, "version": None, "error": _one_line(exc)}
    version = getattr(triton, "__version__", None)
    if version is None:
        try:
            version = importlib.metadata.version("triton")
        except importlib.metadata.PackageNotFoundError:
            version = None
    return {"importable": True, "version": version, "error": None}


def _device_record() -> dict[str, Any]:
    try:
        import torch
    except Exception as exc:
        return {"torch": None, "cuda_available": False, "device": None, "error": _one_line(exc)}
    record: dict[str, Any] = {
        "torch": torch.__version__,
        "cuda_available": bool(torch.cuda.is_available()),
        "device": None,
        "error": None,
    }
    if record["cuda_available"]:
        major, minor = torch.cuda.get_device_capability(0)
        record["device"] = {"index": 0, "name": torch.cuda.get_device_name(0), "capability": [major, minor]}
    return record


def collect_kernels_info() -> dict[str, Any]:
    """What `fq kernels info` reports, as JSON-ready data."""
    raw = os.environ.get(INTERPRET_ENV)
    triton = _triton_record()
    device = _device_record()
    interpret = raw is not None and raw.strip().lower() in _TRUE
    if not triton["importable"]:
        triton_runs_on = None
    elif interpret:
        triton_runs_on = "interpreter"
    elif device["cuda_available"]:
        triton_runs_on = "cuda"
    else:
        triton_runs_on = None
    return {
        "triton": triton,
        **device,
        "triton_interpret": {"value": raw, "enabled": interpret},
        "triton_runs_on": triton_runs_on,
        "cuda_decode_tiles": _cuda_kernel_runs("decode_gemm") if device["cuda_available"] else False,
        "cuda_transform_quant": _cuda_kernel_runs("transform_quant") if device["cuda_available"] else False,
    }


def _cuda_kernel_runs(module: str) -> bool:
    """Whether a CUDA kernel of `fq_kernels.cuda` (NVRTC-compiled at first use) runs on cuda:0."""
    return importlib.import_module(f"fq_kernels.cuda.{module}").available("cuda:0")


def _verdict(report: dict[str, Any]) -> str:
    where = report["triton_runs_on"]
    if where == "interpreter":
        return f"Triton code runs in its CPU interpreter ({INTERPRET_ENV} is on): correct but slow"
    if where == "cuda":
        return "Triton code compiles for cuda:0"
    if not report["triton"]["importable"]:
        return "Triton code cannot run: triton does not import"
    return f"Triton code cannot run here: no CUDA device and {INTERPRET_ENV} is not on"


def _info(
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Triton availability and version, the CUDA device (name, capability), and TRITON_INTERPRET."""
    report = collect_kernels_info()
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    triton = report["triton"]
    if triton["importable"]:
        triton_line = f"{triton['version'] or 'unknown version'}"
    else:
        triton_line = f"does not import ({triton['error']})"
    if report["error"]:
        device_line = f"unknown (torch does not import: {report['error']})"
    elif report["device"] is None:
        device_line = "none (torch.cuda.is_available() is False)"
    else:
        dev = report["device"]
        major, minor = dev["capability"]
        device_line = f"cuda:0 {dev['name']} (compute capability {major}.{minor})"
    raw = report["triton_interpret"]["value"]
    if raw is None:
        interpret_line = "not set"
    else:
        interpret_line = f"{raw!r} ({'on' if report['triton_interpret']['enabled'] else 'off'})"
    lines = {
        "triton": triton_line,
        "torch": report["torch"] or "not importable",
        "device": device_line,
        INTERPRET_ENV: interpret_line,
    }
    if report["device"] is not None:
        tiles = report["cuda_decode_tiles"]
        lines["decode GEMM"] = "CUDA, decode tiles" if tiles else "Triton (the CUDA kernel did not compile)"
        tq = report["cuda_transform_quant"]
        lines["transform_quant"] = (
            "CUDA for 16-bit activations" if tq else "Triton (the CUDA kernel did not compile)"
        )
    width = max(len(key) for key in lines)
    for key, value in lines.items():
        typer.echo(f"{key:<{width}}  {value}")
    typer.echo(_verdict(report))


def _generate(
    prompt: Annotated[str, typer.Argument(help="The text to continue.")],
    checkpoint: Annotated[Path, typer.Option(help="A W4A4 or W4A4KV4 flatquant checkpoint directory.")],
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Tokens to generate (greedy).")] = 64,
    tokenizer: Annotated[
        str | None,
        typer.Option(help="'default' or a local model dir/.gguf; default: the checkpoint's source model."),
    ] = None,
    device: Annotated[str, typer.Option(help="torch device; 'auto' takes CUDA when available.")] = "auto",
    engine: Annotated[
        str,
        typer.Option(
            help="static: preallocated int4 cache, CUDA-graph decode on CUDA; transformers: model.generate."
        ),
    ] = "static",
) -> None:
    """Continue PROMPT with the checkpoint's real-int4 model (int4 GEMMs and KV cache), streaming tokens."""
    import sys

    from fq_core.devices import resolve_device
    from fq_core.models.quiet import quiet_transformers
    from fq_kernels.runtime import require_transformers

    require_transformers()
    from fq_kernels.runtime.generate import stream_generate

    with quiet_transformers():
        stream_generate(
            checkpoint, prompt, sys.stdout, max_new_tokens, resolve_device(device), tokenizer, engine
        )


def _export(
    checkpoint: Annotated[Path, typer.Option(help="The flatquant checkpoint directory to export.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory to write; must not exist.")],
    format: Annotated[
        str, typer.Option("--format", help="compressed-tensors: int4 weights packed in int32, + transforms.")
    ] = "compressed-tensors",
) -> None:
    """Write a checkpoint in a serving layout (atomically: OUT is complete or absent)."""
    from fq_core.errors import ConfigError
    from fq_kernels.export import FORMATS, export_compressed_tensors

    if format not in FORMATS:
        raise ConfigError(f"--format {format!r} is unknown: use {', '.join(FORMATS)}")
    written = export_compressed_tensors(checkpoint, output)
    size = sum(f.stat().st_size for f in written.iterdir())
    typer.echo(f"wrote {written} ({format}, {len(list(written.iterdir()))} files, {size / 2**20:.1f} MiB)")


def register(app: typer.Typer) -> None:
    """Entry point of ``fq.commands``: adds `fq kernels`, `fq generate` and `fq export`."""
    kernels = typer.Typer(
        name="kernels",
        help="FlatQuant fused kernels (Triton): environment checks.",
        no_args_is_help=True,
        rich_markup_mode="rich",
    )
    kernels.command("info")(_info)
    app.add_typer(kernels, name="kernels")
    app.command("generate")(_generate)
    app.command("export")(_export)
