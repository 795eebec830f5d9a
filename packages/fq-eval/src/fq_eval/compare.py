"""`fq eval`'s engine: several methods, one process, the same data, one row per method.

The FP model is loaded once; every protocol's tokens are prepared (and every zero-shot task's data
checked) before the first model runs, so a missing file fails in seconds, not after an hour of
perplexity. Then each method is built from the FP model, evaluated, and freed.
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fq_core.errors import ConfigError
from fq_eval.latency import SHAPE_PREFIX, LatencySettings, random_model, release_memory, run_latency
from fq_eval.methods import Bits, build, describe
from fq_eval.perplexity import perplexity
from fq_eval.placement import Placement, placed
from fq_eval.ppl_data import PROTOCOLS, PplData, load_ppl_data, resolve_path


@dataclass
class EvalPlan:
    """Everything one `fq eval` run does."""

    model: str = "default"
    methods: list[str] = field(default_factory=lambda: ["fp", "rtn", "hadamard"])
    bits: Bits = field(default_factory=Bits)
    checkpoint: Path | None = None
    real: bool = False
    """Run the flatquant checkpoint on fq-kernels' int4 kernels instead of fake quantisation."""
    ppl: list[str] = field(default_factory=lambda: ["pydoc"])
    seqlen: int | None = None
    ppl_batch: int = 4
    data: dict[str, Path] = field(default_factory=dict)
    data_dir: Path | None = None
    zero_shot: list[str] = field(default_factory=list)
    zero_shot_batch: int = 8
    zero_shot_limit: int | None = None
    latency: LatencySettings | None = None
    layers: int | None = None
    """Decoder layers of a `shape:` model (None: the shape's own)."""

    @property
    def random_weights(self) -> bool:
        return self.model.startswith(SHAPE_PREFIX)


def default_dtype(device: torch.device) -> torch.dtype:
    """float16 on CUDA (the reference's evaluation dtype), float32 on the CPU."""
    return torch.float16 if device.type == "cuda" else torch.float32


def load_base(plan: EvalPlan, dtype: torch.dtype, device: torch.device) -> tuple[nn.Module, Any]:
    """(FP model, tokenizer or None for a random-weight shape)."""
    if plan.random_weights:
        return random_model(plan.model.removeprefix(SHAPE_PREFIX), dtype, device, plan.layers), None
    from fq_core.models import load_model

    return load_model(plan.model, dtype=dtype, device=device)


def check_plan(plan: EvalPlan, placement: Placement | None = None) -> None:
    if plan.random_weights and (plan.ppl or plan.zero_shot):
        raise ConfigError(
            f"{plan.model} has random weights and no tokenizer: only --latency runs on it "
            "(pass --ppl none and no --zero-shot)"
        )
    if plan.real and placement is not None and placement.spread:
        raise ConfigError(
            "--real loads the int4 model onto one GPU (a 70B model's int4 weights fit one H100): "
            "leave out --device-map"
        )
    if plan.real and "flatquant" not in plan.methods:
        raise ConfigError(
            "--real runs the flatquant method on the int4 kernels: pass --checkpoint DIR and keep "
            "flatquant in --method"
        )
    if not (plan.ppl or plan.zero_shot or plan.latency):
        raise ConfigError("nothing to evaluate: ask for --ppl, --zero-shot and/or --latency")
    for name in plan.ppl:  # names and local files, before minutes go into loading a model
        if name not in PROTOCOLS:
            raise ConfigError(f"unknown perplexity dataset {name!r}: use one of {', '.join(PROTOCOLS)}")
        if name != "pydoc":
            resolve_path(name, plan.data, plan.data_dir)


def run_eval(
    plan: EvalPlan,
    where: torch.device | Placement,
    dtype: torch.dtype | None = None,
    status: Callable[[str], None] = lambda message: None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(facts: data sizes, timings; rows: one per method, FP first, with ratios to FP).

    `where` is a device, or a Placement that spreads each method's model over several GPUs."""
    placement = where if isinstance(where, Placement) else Placement(where)
    check_plan(plan, placement)
    device = placement.build_device
    dtype = dtype or default_dtype(placement.device)
    facts: dict[str, Any] = {"dtype": str(dtype).removeprefix("torch.")}
    if plan.zero_shot:
        _check_zero_shot(plan)

    status(f"loading {plan.model}")
    start = time.perf_counter()
    fp_model, tokenizer = load_base(plan, dtype, device)
    facts["load_s"] = time.perf_counter() - start

    datasets = [
        load_ppl_data(name, tokenizer, plan.seqlen, plan.data, plan.data_dir, status) for name in plan.ppl
    ]
    facts["ppl_data"] = {
        d.name: {"tokens": d.ids.numel(), "seqlen": d.seqlen, "windows": d.n_windows, "source": d.source}
        for d in datasets
    }

    rows = []
    for method in plan.methods:
        status(f"building {method}")
        start = time.perf_counter()
        model = build(method, fp_model, plan.bits, plan.checkpoint, device, plan.real)
        row = {**describe(method, model, dtype), "build_s": time.perf_counter() - start}
        with placed(model, placement, master=model is fp_model) as running:
            if placement.spread:
                row["device_map"] = _devices_used(running.fq_device_map)
            row.update(_evaluate(running, tokenizer, plan, datasets, status))
        rows.append(row)
        # Freed before the next method is built and dispatched, not when the names are rebound.
        del running
        if model is not fp_model:
            del model
        release_memory(placement.devices)
    add_ratios(rows)
    return facts, rows


def _devices_used(device_map: dict[str, int | str]) -> dict[str, int]:
    """{device: modules placed there} of an accelerate device map ('cuda:0', 'cpu', 'disk')."""
    return dict(
        Counter(f"cuda:{where}" if isinstance(where, int) else str(where) for where in device_map.values())
    )


def _check_zero_shot(plan: EvalPlan) -> None:
    from fq_eval.zero_shot import build_specs

    with tempfile.TemporaryDirectory(prefix="fq-eval-check-") as folder:
        build_specs(plan.zero_shot, Path(folder), plan.data, plan.data_dir)


def _evaluate(
    model: nn.Module,
    tokenizer: Any,
    plan: EvalPlan,
    datasets: list[PplData],
    status: Callable[[str], None],
) -> dict[str, Any]:
    out: dict[str, Any] = {"ppl": {}, "zero_shot": {}, "latency": [], "eval_s": {}}
    for data in datasets:
        status(f"perplexity on {data.name} ({data.n_windows} x {data.seqlen})")
        start = time.perf_counter()
        out["ppl"][data.name] = perplexity(model, data.ids, data.seqlen, plan.ppl_batch)
        out["eval_s"][data.name] = time.perf_counter() - start
    if plan.zero_shot:
        from fq_eval.zero_shot import run_zero_shot

        start = time.perf_counter()
        for row in run_zero_shot(
            model,
            tokenizer,
            plan.zero_shot,
            plan.zero_shot_batch,
            plan.zero_shot_limit,
            plan.data,
            plan.data_dir,
            status,
        ):
            out["zero_shot"][row["task"]] = row
        out["eval_s"]["zero_shot"] = time.perf_counter() - start
        accs = [row["accuracy"] for row in out["zero_shot"].values()]
        out["zero_shot_avg"] = sum(accs) / len(accs)
    if plan.latency is not None:
        start = time.perf_counter()
        out["latency"] = run_latency(model, plan.latency, status)
        out["eval_s"]["latency"] = time.perf_counter() - start
    return out


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """ppl_ratio (PPL / FP's), acc_ratio (mean accuracy / FP's), speedup (FP ms / ms), where FP ran."""
    fp = next((row for row in rows if row["method"] == "fp"), None)
    for row in rows:
        if fp is None:
            break
        row["ppl_ratio"] = {name: ppl / fp["ppl"][name] for name, ppl in row["ppl"].items()}
        if "zero_shot_avg" in row and fp.get("zero_shot_avg"):
            row["acc_ratio"] = row["zero_shot_avg"] / fp["zero_shot_avg"]
        for mine, base in zip(row["latency"], fp["latency"], strict=True):
            if mine.get("ms") and base.get("ms"):
                mine["speedup_vs_fp"] = base["ms"] / mine["ms"]
