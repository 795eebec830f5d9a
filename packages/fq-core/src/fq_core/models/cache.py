"""The user cache of converted models: GGUF files dequantised once, then reloaded as safetensors.

Converting a GGUF with transformers takes ~20-30 s on two CPU cores; reloading the saved float
model takes well under a second. Entries are keyed by the GGUF's name, size and mtime, so a
changed file gets a new entry, and are written to a temporary folder renamed into place, so an
interrupted run never leaves a half-written entry behind.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

CACHE_FORMAT = 1  # bump when the layout of an entry changes
ENTRY_FILES = ("config.json", "model.safetensors")


def cache_root() -> Path:
    """`$FQ_CACHE_DIR`, else `$XDG_CACHE_HOME/flatquant`, else `~/.cache/flatquant`."""
    if os.environ.get("FQ_CACHE_DIR"):
        return Path(os.environ["FQ_CACHE_DIR"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "flatquant"
    return Path.home() / ".cache" / "flatquant"


def gguf_cache_dir(gguf: Path) -> Path:
    """The cache entry of one GGUF file (which may not exist yet)."""
    stat = gguf.stat()
    key = f"{gguf.name}:{stat.st_size}:{stat.st_mtime_ns}:{CACHE_FORMAT}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_root() / "models" / f"{gguf.stem}-{digest}"


def is_complete(entry: Path) -> bool:
    return all((entry / name).is_file() for name in ENTRY_FILES)


def write_entry(entry: Path, save: Callable[[Path], None]) -> None:
    """Run `save(folder)` into a temporary folder beside `entry`, then rename it into place.

    If another process finished the same entry first, its copy is kept and ours is dropped.
    """
    entry.parent.mkdir(parents=True, exist_ok=True)
    if entry.exists() and not is_complete(entry):
        shutil.rmtree(entry, ignore_errors=True)  # left by hand or by an older format
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", dir=entry.parent))
    try:
        save(tmp)
        os.replace(tmp, entry)
    except OSError:
        if not is_complete(entry):
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
