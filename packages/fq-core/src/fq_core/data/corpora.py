"""Text corpora as plain strings, and their token ids.

The embedded corpus is CPython's own documentation (`pydoc_data.topics`): always installed, never
downloaded, English prose with code, ~113k SmolLM2 tokens. The reference anchor (METHOD.md) joins
its topics with blank lines in sorted key order; `pydoc_text` does exactly that, so that our
numbers and the reference's are on the same tokens. Dataset corpora (WikiText-2, C4) come through
the `datasets` library in fq-eval; a local text file works here already.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from fq_core.errors import DataError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def pydoc_text() -> str:
    """The English text of `pydoc_data.topics`: all topics, sorted by key, joined by a blank line."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))


def read_text(path: str | Path) -> str:
    """The raw UTF-8 text of a local file (no cleaning: the file is the corpus)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"text file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DataError(f"{path} is not UTF-8 text (byte {error.start}): convert it to UTF-8") from error
    if not text.strip():
        raise DataError(f"text file {path} is empty")
    return text


def tokenize(tokenizer: PreTrainedTokenizerBase, text: str) -> torch.Tensor:
    """Token ids [N] (int64) of a whole corpus, without special tokens (no BOS), as the reference."""
    ids = tokenizer(text, add_special_tokens=False, return_attention_mask=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.long)
