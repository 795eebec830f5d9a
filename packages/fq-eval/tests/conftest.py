"""Shared fixtures: a tiny random Llama as a local HF model folder, a local ARC-Easy copy (offline)."""

from pathlib import Path

import pytest

from fq_core.models.testing import save_tiny_model_dir


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """127 commonest pydoc words + [UNK] as the vocabulary, so the pydoc corpus tokenises to real ids."""
    return save_tiny_model_dir(tmp_path_factory.mktemp("tiny-llama"))


ARC_README = """---
configs:
- config_name: ARC-Easy
  data_files:
  - split: train
    path: ARC-Easy/train-*
  - split: validation
    path: ARC-Easy/validation-*
  - split: test
    path: ARC-Easy/test-*
---
"""


def arc_rows(n):
    words = ["value", "list", "object", "function"]
    return [
        {
            "id": f"q{i}",
            "question": f"which is the {words[i % 4]} of the list",
            "choices": {"text": [words[(i + k) % 4] for k in range(4)], "label": ["A", "B", "C", "D"]},
            "answerKey": "ABCD"[i % 4],
        }
        for i in range(n)
    ]


@pytest.fixture
def arc_data_dir(tmp_path):
    """A local copy of the allenai/ai2_arc dataset repo (ARC-Easy only), laid out as on the hub."""
    import datasets  # here, not at import: the GPU machine runs the device tests without it

    repo = tmp_path / "allenai" / "ai2_arc"
    (repo / "ARC-Easy").mkdir(parents=True)
    (repo / "README.md").write_text(ARC_README)
    for split, n in (("train", 3), ("validation", 2), ("test", 6)):
        datasets.Dataset.from_list(arc_rows(n)).to_parquet(
            str(repo / "ARC-Easy" / f"{split}-00000-of-00001.parquet")
        )
    return tmp_path
