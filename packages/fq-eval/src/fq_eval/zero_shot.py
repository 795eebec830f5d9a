"""Zero-shot accuracy through lm-eval, on the in-memory (FP, fake-quant or checkpoint) model.

The protocol is the reference's: `lm_eval.simple_evaluate` on an `HFLM` that wraps the model object
itself (a re-loaded model would lose the fake quantisation), zero-shot, with lm-eval's own task
definitions; the reported number per task is `acc_norm` where the task has it, else `acc` (ARC-e,
ARC-c, HellaSwag and PIQA report acc_norm; LAMBADA and WinoGrande acc).

Data is local only. Each paper task's lm-eval YAML is kept as is and overridden by a generated YAML
that `include`s it and changes `dataset_path` to a local copy of the dataset repo
(DATA_DIR/<hub id>, e.g. DATA_DIR/allenai/ai2_arc, or --data TASK=PATH): see docs/zero-shot.md.
lm-eval is imported inside the functions, so `fq` starts without it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from fq_core.errors import ConfigError, DataError
from fq_eval.local_tasks import LOCAL_TASKS, task_config

PAPER_TASKS = ("arc_easy", "arc_challenge", "hellaswag", "lambada_openai", "piqa", "winogrande")
ALIASES = {
    "arc-e": "arc_easy",
    "arc_e": "arc_easy",
    "arc-c": "arc_challenge",
    "arc_c": "arc_challenge",
    "lambada": "lambada_openai",
    "paper": ",".join(PAPER_TASKS),
    "local": ",".join(LOCAL_TASKS),
}
BOOTSTRAP_ITERS = 1000
"""For the stderr of perplexity-type metrics only (acc's stderr is analytic); lm-eval's 100000 is slow."""


def parse_tasks(spec: str) -> list[str]:
    """Task names from "arc-e,piqa,local": aliases expanded, order kept, duplicates dropped."""
    names: list[str] = []
    for raw in spec.split(","):
        raw = raw.strip().lower()
        if not raw:
            continue
        for name in ALIASES.get(raw, raw).split(","):
            if name not in names:
                names.append(name)
    if not names:
        raise ConfigError("--zero-shot names no task: use e.g. 'paper', 'local' or 'arc_easy,piqa'")
    return names


@functools.cache
def _lm_eval_index() -> Any:
    """lm-eval's own task index (building it scans thousands of YAMLs: ~15 s, so once per process)."""
    from lm_eval.tasks import TaskManager

    return TaskManager()


def _task_yaml(manager: Any, name: str) -> Path:
    from lm_eval.tasks._index import Kind

    entry = manager.task_index.get(name)
    if entry is None:
        known = ", ".join([*PAPER_TASKS, *LOCAL_TASKS])
        raise ConfigError(f"unknown zero-shot task {name!r}: use an lm-eval task name (e.g. {known})")
    if entry.kind != Kind.TASK or entry.yaml_path is None:
        raise ConfigError(f"zero-shot task {name!r} is an lm-eval {entry.kind.name.lower()}: name its tasks")
    return Path(entry.yaml_path)


def local_dataset_path(name: str, dataset_path: str, paths: dict[str, Path], data_dir: Path | None) -> Path:
    """Where task `name`'s dataset repo `dataset_path` lies locally, or one line on what to provide."""
    if name in paths:
        path = Path(paths[name]).expanduser()
        if not path.exists():
            raise DataError(f"{name} data {path} does not exist: give a local copy of {dataset_path}")
        return path
    if data_dir is not None and (Path(data_dir) / dataset_path).is_dir():
        return Path(data_dir) / dataset_path
    where = f" (nothing at {Path(data_dir) / dataset_path})" if data_dir is not None else ""
    raise DataError(
        f"zero-shot task {name} needs a local copy of the dataset repo {dataset_path}{where}: "
        f"pass --data-dir DIR holding {dataset_path}/, or --data {name}=PATH (see docs/zero-shot.md)"
    )


def build_specs(
    names: list[str], override_dir: Path, paths: dict[str, Path] | None = None, data_dir: Path | None = None
) -> tuple[list[Any], Any]:
    """(task specs for simple_evaluate, the TaskManager that knows the local overrides).

    Checks every task and its data before anything runs, so a missing file fails in a second.
    """
    from lm_eval.tasks import TaskManager
    from lm_eval.tasks._yaml_loader import load_yaml

    specs: list[Any] = []
    overrides: list[tuple[str, Path, Path]] = []
    for name in names:
        if name in LOCAL_TASKS:
            specs.append(task_config(name))
            continue
        yaml_path = _task_yaml(_lm_eval_index(), name)
        dataset_path = load_yaml(yaml_path, resolve_func=False).get("dataset_path")
        if not dataset_path:
            raise ConfigError(f"zero-shot task {name!r} has no dataset_path to point at local data")
        local = local_dataset_path(name, dataset_path, paths or {}, data_dir)
        overrides.append((name, yaml_path, local))
        specs.append(name)
    for name, yaml_path, local in overrides:
        # include: the original YAML (absolute path, so its !function helpers resolve beside it).
        text = f"include: {yaml_path.resolve()}\ntask: {name}\ndataset_path: {local.resolve()}\n"
        (override_dir / f"{name}.yaml").write_text(text)
    # Only the overrides are indexed (the defaults are not needed to build them): fast.
    return specs, TaskManager(include_path=str(override_dir), include_defaults=False)


def primary_metric(result: dict[str, Any]) -> str:
    """The reference's choice: acc_norm where the task reports it, else acc."""
    return "acc_norm" if "acc_norm,none" in result else "acc"


def run_zero_shot(
    model: nn.Module,
    tokenizer: Any,
    names: list[str],
    batch_size: int = 8,
    limit: int | None = None,
    paths: dict[str, Path] | None = None,
    data_dir: Path | None = None,
    status: Callable[[str], None] = lambda message: None,
) -> list[dict[str, Any]]:
    """One row per task: {task, metric, accuracy, stderr, acc, acc_norm, n, n_total, eval_s}; fractions.

    n: items scored (fewer than n_total, the split's size, under `limit`).
    """
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    names = parse_tasks(",".join(names))
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fq-eval-tasks-") as override_dir:
        specs, manager = build_specs(names, Path(override_dir), paths, data_dir)
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, **_prefix(tokenizer))
        status(f"lm-eval: {', '.join(names)}")
        level = logging.getLogger("lm_eval").level
        try:
            with contextlib.redirect_stdout(sys.stderr):  # lm-eval prints progress: stdout is for tables
                out = lm_eval.simple_evaluate(
                    lm,
                    tasks=specs,
                    num_fewshot=0,
                    limit=limit,
                    task_manager=manager,
                    log_samples=False,
                    bootstrap_iters=BOOTSTRAP_ITERS,
                    verbosity="ERROR",
                )
        finally:
            logging.getLogger("lm_eval").setLevel(level)
    seconds = time.perf_counter() - start
    rows = []
    for name in names:
        result = out["results"][name]
        metric = primary_metric(result)
        rows.append(
            {
                "task": name,
                "metric": metric,
                "accuracy": result[f"{metric},none"],
                "stderr": _number(result.get(f"{metric}_stderr,none")),
                "acc": result.get("acc,none"),
                "acc_norm": result.get("acc_norm,none"),
                "n": out["n-samples"][name]["effective"],
                "n_total": out["n-samples"][name]["original"],
                "eval_s": seconds / len(names),
            }
        )
    return rows


def _prefix(tokenizer: Any) -> dict[str, int]:
    """HFLM needs a token to stand before an empty context; a tokenizer without BOS/EOS lends its UNK."""
    if tokenizer.bos_token_id is None and tokenizer.eos_token_id is None:
        return {"prefix_token_id": tokenizer.unk_token_id or 0}
    return {}


def _number(value: Any) -> float | None:
    return value if isinstance(value, (int, float)) else None
