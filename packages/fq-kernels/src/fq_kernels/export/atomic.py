"""Write a directory all at once: fill a hidden sibling, rename it into place when complete."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fq_core.errors import ConfigError


@contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield an empty temporary directory that becomes `target` only if the block succeeds.

    A failure (or Ctrl-C) removes it, so `target` is either complete or absent: a reader never
    sees half an export. An existing `target` is refused rather than replaced.
    """
    if target.exists():
        raise ConfigError(f"{target} already exists: choose another output path or delete it")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        yield tmp
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
