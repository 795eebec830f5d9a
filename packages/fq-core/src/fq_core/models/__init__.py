"""Model loading: the embedded default model (SmolLM2-135M-Instruct), local GGUF files, HF folders.

Needs the `hf` extra (transformers, gguf, accelerate), imported only when a model is loaded.
"""

from fq_core.models.cache import cache_root, gguf_cache_dir
from fq_core.models.embedded import EMBEDDED_GGUF, INSTALL_HINT, embedded_gguf_path
from fq_core.models.loading import DEFAULT_MODEL, convert_gguf, load_model, load_tokenizer, resolve_model_path

__all__ = [
    "DEFAULT_MODEL",
    "EMBEDDED_GGUF",
    "INSTALL_HINT",
    "cache_root",
    "convert_gguf",
    "embedded_gguf_path",
    "gguf_cache_dir",
    "load_model",
    "load_tokenizer",
    "resolve_model_path",
]
