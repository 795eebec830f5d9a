"""The Triton toolchain the kernels will rely on works here: a trivial kernel runs and is exact.

On a CPU machine this goes through Triton's interpreter (TRITON_INTERPRET=1, as `nox -s tests`
sets); the `gpu` test compiles the same kernel for the CUDA device (`nox -s kernels_gpu`).
Triton reads TRITON_INTERPRET when a function is decorated with `triton.jit`, so the kernel is
defined inside `_add_kernel()`, after the test has set the variable.
"""

from __future__ import annotations

import pytest
import torch
import triton  # a dependency of fq-kernels on Linux, where these tests run


def _add_kernel():  # -> triton.JITFunction
    import triton.language as tl

    @triton.jit
    def add(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
        offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offsets < n
        x = tl.load(x_ptr + offsets, mask=mask)
        y = tl.load(y_ptr + offsets, mask=mask)
        tl.store(out_ptr + offsets, x + y, mask=mask)

    return add


def _run_add(device: str, n: int = 1000, block: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, generator=gen).to(device)
    y = torch.randn(n, generator=gen).to(device)
    out = torch.full_like(x, float("nan"))
    _add_kernel()[(triton.cdiv(n, block),)](x, y, out, n, BLOCK=block)
    return out, x + y


def test_interpreter_runs_a_kernel_on_cpu_tensors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    out, expected = _run_add("cpu", n=1000, block=256)  # 4 programs, the last one masked
    assert torch.equal(out, expected)


@pytest.mark.gpu
def test_kernel_compiles_and_runs_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    assert torch.cuda.is_available(), "a gpu test ran without CUDA: run it through `nox -s kernels_gpu`"
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    out, expected = _run_add("cuda", n=1 << 20, block=1024)
    assert torch.equal(out, expected)
