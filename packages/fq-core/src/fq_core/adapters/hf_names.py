"""Keyword and attribute names that transformers renamed within the 5.x releases we support.

transformers 5.24 renamed `past_key_values` to `cache` in the models' forward signatures and outputs
(the old names still work there until 5.40, with a warning each time). Our own attention modules
accept both (`given_cache`); code that calls a transformers model asks here for the name it expects.
"""

from __future__ import annotations

import inspect
from functools import cache
from typing import Any


@cache
def cache_kwarg() -> str:
    """The keyword under which a transformers model takes its KV cache: `cache` or `past_key_values`."""
    from transformers.models.llama.modeling_llama import LlamaModel

    return "cache" if "cache" in inspect.signature(LlamaModel.forward).parameters else "past_key_values"


def output_cache(output: Any) -> Any:
    """The KV cache a transformers model returned in `output`."""
    return getattr(output, cache_kwarg())


def given_cache(cache: Any, past_key_values: Any) -> Any:
    """The KV cache an attention module's caller passed, under either name."""
    return past_key_values if cache is None else cache
