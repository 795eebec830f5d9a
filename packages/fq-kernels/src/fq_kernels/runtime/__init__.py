"""Real int4 inference in transformers: a flatquant checkpoint as a runnable `*ForCausalLM`.

    from fq_kernels.runtime import load_int4_model
    model = load_int4_model("out/smollm2-w4a4kv4", device="cuda")   # int4 GEMMs, int4 KV cache
    model.generate(input_ids, max_new_tokens=32)
    StaticDecoder(model, max_batch=8, max_len=4096).generate(input_ids, 32)   # CUDA-graph decode

Needs transformers (`pip install fq-kernels[hf]`); `import fq_kernels` does not, so the names here
load lazily and a missing transformers is one clear error (`MissingExtraError`).
"""

from __future__ import annotations

import importlib
from typing import Any

from fq_kernels.runtime.extra import HF_EXTRA_HINT, MissingExtraError, require_transformers

_LAZY = {
    "load_int4_model": "fq_kernels.runtime.loader",
    "Int4KVCache": "fq_kernels.runtime.kv_cache",
    "Int4KVLayer": "fq_kernels.runtime.kv_cache",
    "KVQuant": "fq_kernels.runtime.kv_cache",
    "Int4Attention": "fq_kernels.runtime.attention",
    "Int4MLP": "fq_kernels.runtime.mlp",
    "StaticDecoder": "fq_kernels.runtime.static_decode",
    "Fp8Linear": "fq_kernels.runtime.fp8",
    "quantize_fp8_": "fq_kernels.runtime.fp8",
}

__all__ = ["HF_EXTRA_HINT", "MissingExtraError", "require_transformers", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        require_transformers()
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fq_kernels.runtime' has no attribute {name!r}")
