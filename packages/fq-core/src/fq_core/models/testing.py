"""Tiny randomly initialised models for tests of every package: in memory per supported family,
or saved as a local HF model folder with a word-level tokenizer (so the pydoc corpus tokenises to
real ids and the model loads through `fq_core.models.load_model` like any user's model).

Lives in the package (not a tests folder) so fq-core, fq-calib and fq-eval tests share one copy.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import torch

from fq_core.data import pydoc_text

TINY: dict[str, Any] = dict(
    hidden_size=48,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=64,
    max_position_embeddings=256,
)
FAMILY_EXTRAS: dict[str, dict[str, Any]] = {
    "llama": {},
    "mistral": {"sliding_window": 8},
    "qwen2": {},
    "qwen3": {"head_dim": 16},  # head_dim * heads != hidden
}
FAMILIES = tuple(FAMILY_EXTRAS)


def tiny_model(family: str = "llama", seed: int = 0, **overrides: Any) -> torch.nn.Module:
    """A random `*ForCausalLM` of `family` with eager attention and non-trivial norms and biases."""
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    config = AutoConfig.for_model(family, **{**TINY, **FAMILY_EXTRAS[family], **overrides})
    config._attn_implementation = "eager"
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():  # HF inits norms to 1 and biases to 0: make them informative
        for name, param in model.named_parameters():
            if "norm" in name:
                param.uniform_(0.5, 1.5)
            elif name.endswith("bias"):
                param.normal_(0, 0.1)
    return model


def save_tiny_model_dir(folder: str | Path, seed: int = 0, vocab_words: int = 127, layers: int = 2) -> Path:
    """Write a tiny LLaMA and a tokenizer of the commonest pydoc words; returns the folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    folder = Path(folder)
    words = Counter(pydoc_text().split())
    vocab = {"[UNK]": 0, **{w: i + 1 for i, (w, _) in enumerate(words.most_common(vocab_words))}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]").save_pretrained(folder)
    tiny_model("llama", seed, vocab_size=len(vocab), num_hidden_layers=layers).save_pretrained(folder)
    return folder
