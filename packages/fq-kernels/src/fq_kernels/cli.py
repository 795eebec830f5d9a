"""`fq kernels ...`: fq-kernels' entry point of the ``fq.commands`` group.

Only `fq kernels info` for now: whether Triton imports, which device the kernels could run on, and
whether Triton's CPU interpreter is switched on. It reports facts about the environment; it does not
run the kernels (their tests do).

Nothing heavy is imported at module level: `fq` imports every plugin on each invocation.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
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
    }


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
    width = max(len(key) for key in lines)
    for key, value in lines.items():
        typer.echo(f"{key:<{width}}  {value}")
    typer.echo(_verdict(report))


def register(app: typer.Typer) -> None:
    """Entry point of ``fq.commands``: adds the `fq kernels` sub-app."""
    kernels = typer.Typer(
        name="kernels",
        help="FlatQuant fused kernels (Triton): environment checks.",
        no_args_is_help=True,
        rich_markup_mode="rich",
    )
    kernels.command("info")(_info)
    app.add_typer(kernels, name="kernels")
