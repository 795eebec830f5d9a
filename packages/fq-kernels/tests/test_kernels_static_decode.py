"""`StaticDecoder` generates exactly what transformers' `generate` does with the same model.

The expectation is transformers' own greedy loop over the same weights (its dynamic cache, its
attention), which shares nothing with the static cache, the fused projections or `kv_attention`.
On the CPU the decode step runs eagerly, on the ops' PyTorch references (the kernels have their own
tests; stepping tokens through the Triton interpreter would take minutes); graph capture and the
Triton kernels inside the loop are tested on the device (test_kernels_gpu).
"""

from __future__ import annotations

import pytest
import torch

from fq_core.errors import ConfigError
from fq_core.models.testing import tiny_model
from fq_kernels.runtime import StaticDecoder, load_int4_model

pytestmark = pytest.mark.usefixtures("reference_ops")


IDS = torch.randint(0, 64, (3, 7), generator=torch.Generator().manual_seed(0))


def hf_greedy(model: torch.nn.Module, ids: torch.Tensor, new: int) -> torch.Tensor:
    out = model.generate(
        ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, do_sample=False, pad_token_id=0
    )
    return out[:, ids.shape[1] :]


@pytest.mark.parametrize(
    ("family", "with_kv4"),
    [("llama", True), ("llama", False), ("qwen2", True), ("qwen3", True)],
    ids=["llama-KV4", "llama-KV16", "qwen2-KV4", "qwen3-KV4"],
)
@torch.no_grad()
def test_int4_model_generates_the_tokens_of_transformers_generate(
    checkpoint, family: str, with_kv4: bool
) -> None:
    model = load_int4_model(checkpoint(family, with_kv4))
    decoder = StaticDecoder(model, max_batch=4, max_len=32, graph=False)
    assert decoder.layers[0].kv.keys[0].dtype == (torch.uint8 if with_kv4 else torch.float32)
    assert torch.equal(decoder.generate(IDS, 10), hf_greedy(model, IDS, 10))


@torch.no_grad()
def test_full_precision_model_generates_the_same_tokens_and_keeps_working() -> None:
    model = tiny_model("qwen2").eval()  # q/k/v biases: fused with the weights
    want = hf_greedy(model, IDS, 12)
    params = sum(p.numel() for p in model.parameters())
    decoder = StaticDecoder(model, max_batch=3, max_len=40, graph=False)
    assert torch.equal(decoder.generate(IDS, 12), want)
    # The model's own linears now view the fused weights: same values, no second copy.
    assert torch.equal(hf_greedy(model, IDS, 12), want)
    assert sum(p.numel() for p in model.parameters()) == params
    attention = model.model.layers[0].self_attn
    fused = decoder.layers[0].attention.qkv_proj.weight
    assert attention.q_proj.weight.data_ptr() == fused.data_ptr()


@torch.no_grad()
def test_a_decoder_is_reused_across_calls_and_batch_sizes(checkpoint) -> None:
    model = load_int4_model(checkpoint("llama", True))
    decoder = StaticDecoder(model, max_batch=3, max_len=32, graph=False)
    first = decoder.generate(IDS, 6)
    assert torch.equal(decoder.generate(IDS[1:2, :4], 9), hf_greedy(model, IDS[1:2, :4], 9))
    assert torch.equal(decoder.generate(IDS, 6), first)


@torch.no_grad()
def test_limits_are_one_clear_error(checkpoint) -> None:
    model = load_int4_model(checkpoint("llama", True))
    decoder = StaticDecoder(model, max_batch=2, max_len=12, graph=False)
    with pytest.raises(ConfigError, match="max_batch=3"):
        decoder.generate(IDS, 2)
    with pytest.raises(ConfigError, match="max_len 12"):
        decoder.generate(IDS[:2], 6)
    with pytest.raises(ConfigError, match="CUDA graphs need"):
        StaticDecoder(model, graph=True)
    with pytest.raises(ConfigError, match="sliding-window"):
        StaticDecoder(tiny_model("mistral"))
