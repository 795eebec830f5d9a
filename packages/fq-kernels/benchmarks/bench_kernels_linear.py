"""pytest-benchmark view of the linear-layer contenders (`nox -s bench`; CUDA only).

Each case times a CUDA graph holding `reps` calls (rotating weight copies, as in
fq_kernels.bench.timing) and reports time per call; compare with `--benchmark-compare`.
The full table with ratios is written by kernels_table.py.
"""

from __future__ import annotations

import pytest
import torch

from fq_kernels.bench.contenders import CONTENDERS
from fq_kernels.bench.problems import SHAPES, TOKENS, LinearProblem

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="benchmarks need a CUDA device")

NAMES = ("bf16", "int8", "fp8", "unfused", "ours", "ours_tq")
_PROBLEMS: dict[tuple[int, int, int], LinearProblem] = {}


def _problem(m: int, k: int, n: int) -> LinearProblem:
    if (m, k, n) not in _PROBLEMS:
        _PROBLEMS.clear()
        torch.cuda.empty_cache()
        _PROBLEMS[(m, k, n)] = LinearProblem(m=m, k=k, n=n)
    return _PROBLEMS[(m, k, n)]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("m", TOKENS)
@pytest.mark.parametrize(("k", "n"), SHAPES, ids=[f"{k}x{n}" for k, n in SHAPES])
def test_linear(benchmark, k: int, n: int, m: int, name: str) -> None:
    make, variants = CONTENDERS[name](_problem(m, k, n))
    calls = [make(i) for i in range(variants)]
    reps = max(variants, 20)
    reps = -(-reps // variants) * variants
    for call in calls:
        call()
    torch.cuda.synchronize()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        for i in range(reps):
            calls[i % variants]()

    def replay() -> None:
        graph.replay()
        torch.cuda.synchronize()

    benchmark.extra_info.update({"reps_per_round": reps, "k": k, "n": n, "m": m})
    benchmark.pedantic(replay, rounds=10, warmup_rounds=2)
