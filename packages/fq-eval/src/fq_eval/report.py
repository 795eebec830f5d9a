"""What every result file records besides the numbers: where and with what it ran.

A perplexity means little without the device, the library versions and the exact command, so
each results JSON carries them (versions come from package metadata, without importing anything).
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import platform
from pathlib import Path
from typing import Any

import torch

PACKAGES = (
    "fq-core",
    "fq-eval",
    "fq-calib",
    "torch",
    "transformers",
    "tokenizers",
    "gguf",
    "datasets",
    "lm-eval",
)


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def describe_device(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return {
            "type": "cuda",
            "name": torch.cuda.get_device_name(device),
            "capability": f"{major}.{minor}",
            "cuda": torch.version.cuda,
        }
    return {
        "type": device.type,
        "name": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
    }


def run_record(
    command: str, device: torch.device, settings: dict[str, Any], results: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "device": describe_device(device),
        "versions": versions(),
        "settings": settings,
        "results": results,
    }


def write_json(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
