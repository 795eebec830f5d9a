"""Test helpers shared by the CPU (interpreter) and GPU test suites: inputs and comparisons.

The comparisons encode the contracts of `fq_kernels.reference`:
- quantised integers: equal (no transform, or an exactly representable one), else at most one step
  apart on a small fraction of values (the transform's rounding differs);
- GEMM accumulators: equal; the epilogue: within one rounding of the output dtype.
"""

from __future__ import annotations

import torch

from fq_core.quant.pack import unpack_int4
from fq_core.transforms import orthogonal

EPILOGUE_RTOL: dict[torch.dtype, float] = {
    torch.bfloat16: 2.0**-7,
    torch.float16: 2.0**-10,
    torch.float32: 2.0**-21,
}
"""One unit in the last place of each output dtype, relative: the epilogue's allowed difference."""


def random_orthogonal(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """fq-core's random orthogonal matrix in float32, row-major as `QuantLinear` holds its factors
    (QR's own Q is column-major, and such factors cost every transform_quant call a copy of each:
    kernels.md, run S)."""
    return orthogonal.random_orthogonal(n, generator).float()


def signed_permutation(n: int, generator: torch.Generator | None = None, scale: float = 1.0) -> torch.Tensor:
    """An orthogonal matrix (times a power of two) whose products are exact in any float format."""
    perm = torch.randperm(n, generator=generator)
    signs = torch.randint(0, 2, (n,), generator=generator).float() * 2 - 1
    m = torch.zeros(n, n)
    m[torch.arange(n), perm] = signs * scale
    return m


def int_values(t: torch.Tensor, k: int | None = None) -> torch.Tensor:
    """int64 values of a quantised tensor stored packed (uint8), int8 or fp8."""
    if t.dtype == torch.uint8:
        return unpack_int4(t.reshape(-1, t.shape[-1]), signed=True).to(torch.int64)
    return t.reshape(-1, t.shape[-1]).to(torch.float32).to(torch.int64)


def assert_quant_equal(q: torch.Tensor, s: torch.Tensor, q_ref: torch.Tensor, s_ref: torch.Tensor) -> None:
    """Bit-exact values and scales (NaN scales must match too)."""
    assert q.dtype == q_ref.dtype and q.shape == q_ref.shape, (q.dtype, q.shape, q_ref.dtype, q_ref.shape)
    assert torch.equal(int_values(q).cpu(), int_values(q_ref).cpu()), "quantised values differ"
    s, s_ref = s.cpu(), s_ref.cpu()
    assert torch.equal(torch.isnan(s), torch.isnan(s_ref)), "NaN scales differ"
    assert torch.equal(s.nan_to_num(-1.0), s_ref.nan_to_num(-1.0)), (s - s_ref).abs().nan_to_num(0).max()


def assert_quant_close(
    q: torch.Tensor,
    s: torch.Tensor,
    q_ref: torch.Tensor,
    s_ref: torch.Tensor,
    scale_rtol: float,
    max_mismatch: float,
) -> None:
    """Scales within scale_rtol; values at most one step apart, on at most max_mismatch of them."""
    s, s_ref = s.cpu().float(), s_ref.cpu().float()
    assert torch.equal(torch.isnan(s), torch.isnan(s_ref)), "NaN scales differ"
    ok = ~torch.isnan(s_ref)
    rel = (
        ((s[ok] - s_ref[ok]).abs() / s_ref[ok].abs().clamp_min(1e-30)).max()
        if ok.any()
        else torch.tensor(0.0)
    )
    assert rel <= scale_rtol, f"scale relative error {rel:.3g} > {scale_rtol:.3g}"
    diff = (int_values(q).cpu() - int_values(q_ref).cpu()).abs()
    assert diff.max() <= 1, f"a quantised value is {int(diff.max())} steps off"
    frac = (diff > 0).float().mean().item()
    assert frac <= max_mismatch, f"{frac:.3%} of values differ by one step (> {max_mismatch:.3%})"


def epilogue_terms(
    xq: torch.Tensor,
    sx: torch.Tensor,
    wq: torch.Tensor,
    sw: torch.Tensor,
    bias: torch.Tensor | None = None,
    zx: torch.Tensor | None = None,
    wsum: torch.Tensor | None = None,
) -> torch.Tensor:
    """|acc' * sx * sw| + |bias|: the size of the float32 terms the epilogue adds (see below), with
    acc' = acc - zx * wsum for asymmetric activations (that difference is exact: no rounding)."""
    from fq_kernels.reference import int_matmul_ref

    acc = int_matmul_ref(xq, wq).double()
    if zx is not None and wsum is not None:
        acc = acc - zx.reshape(-1, 1).double() * wsum.reshape(1, -1).double()
    terms = (acc.float() * sx.reshape(-1, 1).float() * sw.reshape(1, -1).float()).abs()
    return terms if bias is None else terms + bias.reshape(1, -1).float().abs()


def assert_epilogue_close(out: torch.Tensor, ref: torch.Tensor, terms: torch.Tensor | None = None) -> None:
    """Equal up to one rounding of the output dtype; NaN exactly where the reference has NaN.

    `terms` (from `epilogue_terms`) widens the bound by four float32 roundings (2^-24 each) of the
    summands: the kernel rounds acc*sx, then *sw, may fuse `+ bias` into one FMA, and where the sum
    cancels those roundings are large relative to the result (two roundings were measured 7% short
    at K = 4096 on the H100).
    """
    assert out.dtype == ref.dtype and out.shape == ref.shape, (out.dtype, out.shape, ref.dtype, ref.shape)
    a, b = out.float(), ref.to(out.device).float()
    assert torch.equal(torch.isnan(a), torch.isnan(b)), "NaN positions differ"
    keep = ~torch.isnan(b)
    rtol = EPILOGUE_RTOL[out.dtype]
    err = (a[keep] - b[keep]).abs()
    bound = torch.maximum(a[keep].abs(), b[keep].abs()) * rtol + 1e-30
    if terms is not None:
        bound = bound + terms.to(out.device).float().reshape(b.shape)[keep] * 2.0**-21
    assert bool((err <= bound).all()), f"epilogue differs by {(err / bound).max():.3g} ulp-bounds"


def small_packed_config(kernel: str, split: int, unpack: int):
    """A decode-GEMM configuration with 16-wide tiles (several tiles and K steps at test sizes) for
    `kernel`: "mma" (tokens as the MMA's rows), "swap" (weights as its rows) or "gemv" (CUDA cores)."""
    from fq_kernels.triton.gemm_packed import PackedConfig

    return PackedConfig(
        block_m=16,
        block_n=16,
        block_kp=16,
        split_k=split,
        num_stages=1,
        unpack=unpack,
        gemv=kernel == "gemv",
        swap=kernel == "swap",
    )
