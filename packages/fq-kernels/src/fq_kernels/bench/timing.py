"""GPU timing that measures the kernels, not Python: CUDA-graph replays timed with CUDA events.

A Triton launch costs tens of microseconds of Python, more than a decode-size kernel runs, so each
measured function is captured `reps` times into one CUDA graph and the graph's replays are timed.
Every call may use a different input set (`make_call(i)` -> callable): rotating through several
copies of the weights keeps the measurement out of the 50 MB L2 when one copy would fit in it.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

import torch

L2_BYTES = 50 * 2**20


def copies_to_defeat_l2(nbytes: int, l2_bytes: int = L2_BYTES) -> int:
    """How many distinct copies of an input of `nbytes` make one rotation at least 3x the L2."""
    return max(1, min(64, -(-3 * l2_bytes // max(nbytes, 1))))


def time_graph(
    make_call: Callable[[int], Callable[[], object]],
    variants: int = 1,
    reps: int | None = None,
    replays: int = 15,
    warmup: int = 3,
) -> dict[str, float]:
    """Median / min / max milliseconds per call of make_call(i % variants)(), over graph replays.

    Each replay runs `reps` calls (a multiple of `variants`); the spread is over replays.
    """
    calls = [make_call(i) for i in range(variants)]
    for call in calls:  # compile, autotune, allocate workspaces outside the capture
        call()
    torch.cuda.synchronize()
    if reps is None:
        reps = max(variants, 20)
        reps = -(-reps // variants) * variants
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for call in calls:
            call()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        for i in range(reps):
            calls[i % variants]()
    for _ in range(warmup):
        graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(replays):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / reps)
    del graph
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times), "reps": reps}
