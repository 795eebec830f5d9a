"""Optional run-time choice among a few kernel configurations, timed on the device at first use.

Off by default: each kernel then takes the first candidate its module lists (the configuration
measured best on an H100, docs/benchmarks/kernels.md). With FQ_KERNELS_AUTOTUNE=1 the first call
for a problem key times every candidate with `triton.testing.do_bench` (L2 flushed between runs,
median) and keeps the fastest for the process; `chosen()` reports the picks (the benchmark records
them). Never during CUDA-graph capture: warm up (one eager call per shape) before capturing.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

import torch

from fq_kernels._runtime import interpreting

C = TypeVar("C")
_CHOICES: dict[Hashable, object] = {}
_TIMINGS: dict[Hashable, list[tuple[str, float]]] = {}
_LOCK = threading.Lock()


def enabled() -> bool:
    flag = os.environ.get("FQ_KERNELS_AUTOTUNE", "").strip().lower() in ("1", "true", "yes", "on")
    return flag and not interpreting()


def choose(key: Hashable, candidates: Sequence[C], run: Callable[[C], object]) -> C:
    """The fastest of `candidates` for `key` (the first one when autotuning is off)."""
    if len(candidates) == 1 or not enabled():
        return candidates[0]
    with _LOCK:
        if key in _CHOICES:
            return _CHOICES[key]  # type: ignore[return-value]
    if torch.cuda.is_current_stream_capturing():
        return candidates[0]
    import triton
    import triton.testing

    timings: list[tuple[str, float]] = []
    best, best_ms = candidates[0], math.inf
    for cand in candidates:
        try:
            run(cand)
            torch.cuda.synchronize()
            ms = triton.testing.do_bench(lambda c=cand: run(c), warmup=5, rep=25, return_mode="median")
        except triton.runtime.errors.OutOfResources:
            ms = math.inf
        timings.append((repr(cand), ms))
        if ms < best_ms:
            best, best_ms = cand, ms
    with _LOCK:
        _CHOICES[key] = best
        _TIMINGS[key] = timings
    return best


def chosen() -> dict[str, str]:
    """key -> chosen configuration, for the benchmark's record."""
    with _LOCK:
        return {repr(k): repr(v) for k, v in _CHOICES.items()}


def timings() -> dict[str, list[tuple[str, float]]]:
    with _LOCK:
        return {repr(k): list(v) for k, v in _TIMINGS.items()}
