"""Shared fixtures: a tiny random Llama saved as a local HF model folder (offline)."""

from pathlib import Path

import pytest

from fq_core.models.testing import save_tiny_model_dir


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """127 commonest pydoc words + [UNK] as the vocabulary, so the pydoc corpus tokenises to real ids."""
    return save_tiny_model_dir(tmp_path_factory.mktemp("tiny-llama"))
