"""A tiny random LLaMA with a word-level tokenizer, saved as a local HF model folder, for tests.

Lives in the package (not a tests folder) so every package's tests (eval, calib, ...) can build the
same offline model dir: the pydoc corpus tokenises to real ids and the model loads through
`fq_core.models.load_model` like any user's model.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch

from fq_core.data import pydoc_text


def save_tiny_model_dir(folder: str | Path, seed: int = 0, vocab_words: int = 127, layers: int = 2) -> Path:
    """Write the model (hidden 32, 4 heads / 2 KV heads, MLP 64) and tokenizer; returns the folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = Path(folder)
    words = Counter(pydoc_text().split())
    vocab = {"[UNK]": 0, **{w: i + 1 for i, (w, _) in enumerate(words.most_common(vocab_words))}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]").save_pretrained(folder)
    torch.manual_seed(seed)
    config = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(vocab),
        max_position_embeddings=256,
    )
    LlamaForCausalLM(config).eval().save_pretrained(folder)
    return folder
