"""`kv_attention`: decode attention read straight from the int4 KV cache.

The reference is checked against torch's own attention over the dequantised cache (an independent
implementation) and a hand-computed case; the Triton kernel (the CPU interpreter here, CUDA on the
device) against the reference, for MHA and grouped-query heads, lengths from 1 to the whole cache,
caches that are not a multiple of the kernel's block and several splits.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from fq_kernels import reference as ref
from fq_kernels._runtime import interpreter_usable
from fq_kernels.ops import kv_attention, quant_kv

DEV = "cuda" if torch.cuda.is_available() else "cpu"
kernels = pytest.mark.skipif(
    DEV == "cpu" and not interpreter_usable(),
    reason="needs TRITON_INTERPRET=1 before triton is imported (nox -s tests) or a GPU",
)


def _cache(b: int, hkv: int, s: int, d: int, group: int, g: torch.Generator, device: str = "cpu"):
    """Quantised keys and values of random data, as the KV cache stores them."""
    k = torch.randn(b, hkv, s, d, generator=g)
    v = torch.randn(b, hkv, s, d, generator=g)
    clip = torch.tensor([1.0, 1.0])
    keys = tuple(t.to(device) for t in ref.quant_kv_ref(k, group, clip))
    values = tuple(t.to(device) for t in ref.quant_kv_ref(v, group, clip))
    return keys, values


def test_reference_equals_sdpa_over_the_dequantised_cache() -> None:
    g = torch.Generator().manual_seed(0)
    b, hq, hkv, s, d, group = 3, 8, 2, 37, 64, 32
    keys, values = _cache(b, hkv, s, d, group, g)
    q = torch.randn(b, hq, d, generator=g)
    lengths = torch.tensor([1, 20, 37])
    got = ref.kv_attention_ref(q, keys, values, lengths, group, 0.125)
    k = ref.dequant_kv_ref(*keys, group, torch.float32)
    v = ref.dequant_kv_ref(*values, group, torch.float32)
    for i, n in enumerate(lengths.tolist()):
        want = F.scaled_dot_product_attention(
            q[i : i + 1, :, None], k[i : i + 1, :, :n], v[i : i + 1, :, :n], scale=0.125, enable_gqa=True
        )[0, :, 0]
        torch.testing.assert_close(got[i], want, rtol=1e-5, atol=1e-5)


def test_equal_keys_average_the_visible_values() -> None:
    """All keys equal: every visible position gets the same weight, whatever q is."""
    b, h, s, d, group = 1, 1, 10, 8, 8
    codes = torch.full((b, h, s, d // 2), 0x53, dtype=torch.uint8)  # nibbles 3 and 5
    scale = torch.ones(b, h, s, 1)
    zero = torch.full((b, h, s, 1), 4, dtype=torch.uint8)
    v_codes = torch.zeros(b, h, s, d // 2, dtype=torch.uint8)
    v_codes[..., 0] = torch.arange(s, dtype=torch.uint8)  # first value = position (lo nibble)
    v_zero = torch.zeros(b, h, s, 1, dtype=torch.uint8)
    q = torch.randn(b, h, d)
    out = ref.kv_attention_ref(
        q, (codes, scale, zero), (v_codes, scale, v_zero), torch.tensor([4]), group, 1.0
    )
    assert out[0, 0, 0].item() == pytest.approx((0 + 1 + 2 + 3) / 4)
    assert out[0, 0, 1:].abs().max().item() == 0.0


@kernels
@pytest.mark.parametrize(
    ("b", "hq", "hkv", "s", "d", "group"),
    [(2, 4, 4, 100, 64, 64), (1, 8, 2, 200, 64, 32), (3, 4, 1, 65, 32, 16)],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_kernel_matches_reference(
    b: int, hq: int, hkv: int, s: int, d: int, group: int, dtype: torch.dtype
) -> None:
    g = torch.Generator().manual_seed(b * 100 + s)
    keys, values = _cache(b, hkv, s, d, group, g, DEV)
    q = torch.randn(b, hq, d, generator=g).to(DEV, dtype)
    lengths = torch.tensor([1, s, s // 2][:b], dtype=torch.int32, device=DEV)
    got = kv_attention(q, keys, values, lengths, group, d**-0.5)
    want = ref.kv_attention_ref(q, keys, values, lengths, group, d**-0.5)
    tol = 1e-5 if dtype == torch.float32 else 2e-3
    torch.testing.assert_close(got.float(), want.float(), rtol=tol, atol=tol)


def _configs(groups: int, folded: bool):
    """Every configuration autotuning may pick on the GPU; a spread of block sizes and splits for
    each kernel the shape allows in the interpreter (its own candidate list has one)."""
    from fq_kernels.triton.kv_attention import KVAttentionConfig, candidates

    if DEV == "cuda":
        return candidates(groups, folded)
    methods = ["mma", "fma"] if groups == 1 and folded else ["mma"]
    spread = [(16, 4, 1, 4), (32, 4, 1, 64), (128, 4, 1, 1)]
    return [KVAttentionConfig(*c, method) for method in methods for c in spread]


@kernels
@pytest.mark.parametrize(("hq", "hkv"), [(8, 2), (4, 4)])
@pytest.mark.parametrize("group", [64, 32])
def test_every_configuration_matches_reference(hq: int, hkv: int, group: int) -> None:
    """Block size, split count and kernel (tensor-core or CUDA-core dots, scales folded out of the
    dots or applied per element) change the loop and the merge, never the result."""
    from fq_kernels.triton.kv_attention import launch_kv_attention

    g = torch.Generator().manual_seed(5)
    b, s, d = 2, 300, 64
    keys, values = _cache(b, hkv, s, d, group, g, DEV)
    q = torch.randn(b, hq, d, generator=g).to(DEV, torch.float16)
    lengths = torch.tensor([300, 77], dtype=torch.int32, device=DEV)
    want = ref.kv_attention_ref(q, keys, values, lengths, group, d**-0.5)
    configs = _configs(hq // hkv, group == d)
    assert any(c.method == "fma" for c in configs) == (hq == hkv and group == d)
    for cfg in configs:
        got = launch_kv_attention(q, keys, values, lengths, group, d**-0.5, cfg)
        torch.testing.assert_close(got.float(), want.float(), rtol=2e-3, atol=2e-3, msg=str(cfg))


@kernels
def test_fma_kernel_refuses_grouped_query_heads() -> None:
    from fq_kernels.triton.kv_attention import KVAttentionConfig, launch_kv_attention

    keys, values = _cache(1, 2, 16, 64, 64, torch.Generator().manual_seed(0), DEV)
    q = torch.zeros(1, 4, 64, device=DEV)
    with pytest.raises(ValueError, match="one query head per kv head"):
        launch_kv_attention(
            q, keys, values, torch.tensor([16], device=DEV), 64, 0.125, KVAttentionConfig(method="fma")
        )


@kernels
def test_kernel_reads_the_cache_written_by_quant_kv() -> None:
    """End to end on the device's own quantiser: attention over what `quant_kv` wrote."""
    g = torch.Generator().manual_seed(3)
    k = torch.randn(2, 2, 70, 64, generator=g).to(DEV)
    v = torch.randn(2, 2, 70, 64, generator=g).to(DEV)
    keys, values = quant_kv(k, 64), quant_kv(v, 64)
    q = torch.randn(2, 2, 64, generator=g).to(DEV)
    lengths = torch.tensor([70, 3], device=DEV)
    torch.testing.assert_close(
        kv_attention(q, keys, values, lengths, 64, 0.125),
        ref.kv_attention_ref(q, keys, values, lengths, 64, 0.125),
        rtol=1e-5,
        atol=1e-5,
    )


def test_bad_shapes_name_the_problem() -> None:
    keys = (
        torch.zeros(1, 2, 4, 32, dtype=torch.uint8),
        torch.ones(1, 2, 4, 1),
        torch.zeros(1, 2, 4, 1, dtype=torch.uint8),
    )
    with pytest.raises(ValueError, match="multiple of kv heads"):
        kv_attention(torch.zeros(1, 3, 64), keys, keys, torch.tensor([1]), 64)
    with pytest.raises(ValueError, match="lengths must be"):
        kv_attention(torch.zeros(1, 2, 64), keys, keys, torch.tensor([1, 1]), 64)
