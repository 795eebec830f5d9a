"""The run directory that makes calibration resumable.

`<output>.partial/` holds `progress.json` (the recipe, the model and data fingerprints, one stats
entry per finished layer) and `layer_NNN.safetensors` (that layer's frozen tensors, in checkpoint
naming). Every file is written to a temporary name and renamed, so a run killed at any moment
leaves either the old or the new file, never half of one. Calibration is deterministic (fixed
seeds, batches in order), so a resumed run produces the same checkpoint as an uninterrupted one.
With several ranks only rank 0 checks and writes the directory; the others read it (to resume).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from fq_calib.distributed import is_main, on_main
from fq_core.errors import ConfigError

PROGRESS = "progress.json"


def work_dir_for(output: Path) -> Path:
    return output.with_name(output.name + ".partial")


def _atomic(path: Path, write: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


class RunState:
    def __init__(self, work_dir: Path, identity: dict[str, Any], writer: bool = True) -> None:
        """identity: everything that must match for a resume (recipe, model, data fingerprint).
        writer: whether this process writes the directory (rank 0 only)."""
        self.dir = work_dir
        self.identity = identity
        self.writer = writer
        self.layers: list[dict[str, Any]] = []

    @classmethod
    def start(cls, work_dir: Path, identity: dict[str, Any], resume: bool) -> RunState:
        """Create the run directory, or resume it. Rank 0 does (and may refuse); every rank gets the
        finished layers, or the refusal."""
        state = cls(work_dir, identity, writer=is_main())
        state.layers = on_main(lambda: state._open(resume))
        return state

    def _open(self, resume: bool) -> list[dict[str, Any]]:
        work_dir, identity = self.dir, self.identity
        progress = work_dir / PROGRESS
        if progress.exists():
            if not resume:
                raise ConfigError(
                    f"{work_dir} holds an unfinished run: add --resume to continue it, or delete it"
                )
            saved = json.loads(progress.read_text())
            if saved["identity"] != identity:
                changed = next(k for k in identity if saved["identity"].get(k) != identity[k])
                raise ConfigError(
                    f"cannot resume {work_dir}: its {changed} differs from this run's; use the same options"
                )
            self.layers = saved["layers"]
        elif resume:
            raise ConfigError(f"nothing to resume: {progress} does not exist")
        work_dir.mkdir(parents=True, exist_ok=True)
        self._write_progress()
        return self.layers

    @property
    def done(self) -> int:
        return len(self.layers)

    def layer_file(self, index: int) -> Path:
        return self.dir / f"layer_{index:03d}.safetensors"

    def record_layer(self, index: int, tensors: dict[str, torch.Tensor], stats: dict[str, Any]) -> None:
        """Write the layer's tensors, then the progress that points at them (in that order)."""
        if index != self.done:
            raise RuntimeError(f"layer {index} finished out of order (expected {self.done})")
        self.layers.append(stats)
        if self.writer:
            _atomic(self.layer_file(index), lambda tmp: save_file(tensors, str(tmp)))
            self._write_progress()

    def load_layer(self, index: int) -> dict[str, torch.Tensor]:
        return load_file(str(self.layer_file(index)))

    def _write_progress(self) -> None:
        text = json.dumps({"identity": self.identity, "layers": self.layers}, indent=1)
        _atomic(self.dir / PROGRESS, lambda tmp: tmp.write_text(text))
