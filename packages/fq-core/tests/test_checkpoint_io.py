"""Writing and reading checkpoint directories: round trips, sharding, atomicity, import hygiene."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import fq_core
import fq_core.checkpoint.io as ckio
from fq_core.checkpoint import (
    CONFIG_NAME,
    CheckpointWriteError,
    MissingTensorError,
    TensorValueError,
    UnexpectedTensorError,
    load_checkpoint,
    read_config,
    save_checkpoint,
    validate_checkpoint,
)
from fq_core.checkpoint.testing import random_tensors, tiny_config
from fq_core.quant import NO_QUANT, QuantSpec


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        assert torch.equal(a[name], b[name]), name


@pytest.mark.parametrize(
    "config",
    [
        tiny_config(),
        tiny_config(
            method="rtn", weight=QuantSpec(bits=4, symmetric=False, granularity="group", group_size=8)
        ),
        tiny_config(method="hadamard", weight=QuantSpec(bits=8), key=NO_QUANT, value=NO_QUANT, k_cache=False),
        tiny_config(weight=NO_QUANT, act=NO_QUANT, key=NO_QUANT, value=NO_QUANT),
    ],
    ids=["flatquant-w4a4kv4", "rtn-w4-asym-g8", "hadamard-w8a4", "w16a16"],
)
def test_round_trip_is_bit_exact(tmp_path: Path, config) -> None:
    tensors = random_tensors(config, seed=1)
    tensors["norm.weight"] = tensors["norm.weight"].to(torch.bfloat16)  # any float dtype is kept as is
    written = save_checkpoint(tmp_path / "ck", config, tensors)
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == [CONFIG_NAME, "model.safetensors"]
    assert written.files == ("model.safetensors",)
    assert written.producers == {"tests": "0", "fq-core": fq_core.__version__}
    loaded = load_checkpoint(tmp_path / "ck")
    _assert_same(loaded.tensors, tensors)
    assert loaded.config == written
    assert read_config(tmp_path / "ck") == written
    assert validate_checkpoint(str(tmp_path / "ck")) == written
    on_disk = json.loads((tmp_path / "ck" / CONFIG_NAME).read_text())
    assert on_disk == {**config.to_dict(), "files": ["model.safetensors"], "producers": written.producers}


def test_sharding_splits_by_size_and_round_trips(tmp_path: Path) -> None:
    config = tiny_config()
    tensors = random_tensors(config)
    limit = 2000  # embed_tokens alone is 50*16*4 = 3200 bytes: it gets a shard of its own
    written = save_checkpoint(tmp_path / "ck", config, tensors, max_shard_bytes=limit)
    n = len(written.files)
    assert n > 3
    assert written.files == tuple(f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1))
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == sorted([*written.files, CONFIG_NAME])
    seen: list[str] = []
    for file in written.files:
        with safe_open(str(tmp_path / "ck" / file), framework="pt") as st:
            names = list(st.keys())
            sizes = [st.get_tensor(k).numel() * st.get_tensor(k).element_size() for k in names]
        assert sum(sizes) <= limit or len(names) == 1, file
        seen += names
    assert sorted(seen) == sorted(tensors)  # every tensor exactly once
    _assert_same(load_checkpoint(tmp_path / "ck").tensors, tensors)


def test_tensors_sharing_storage_and_non_contiguous_are_saved(tmp_path: Path) -> None:
    config = tiny_config()
    tensors = random_tensors(config)
    both = torch.randn(2, 4, 4)
    tensors["layers.0.attn_in.left"] = both[0]  # views of one storage
    tensors["layers.0.attn_in.left_inv"] = both[1]
    tensors["layers.0.mlp_in.right"] = torch.randn(4, 4).t()  # non-contiguous
    save_checkpoint(tmp_path / "ck", config, tensors)
    _assert_same(load_checkpoint(tmp_path / "ck").tensors, tensors)


def test_overwrite_replaces_the_whole_directory(tmp_path: Path) -> None:
    config = tiny_config()
    save_checkpoint(tmp_path / "ck", config, random_tensors(config, seed=1), max_shard_bytes=2000)
    new = random_tensors(config, seed=2)
    save_checkpoint(tmp_path / "ck", config, new)
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == [CONFIG_NAME, "model.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]
    _assert_same(load_checkpoint(tmp_path / "ck").tensors, new)


def _failing_writer(monkeypatch: pytest.MonkeyPatch, fail_at: int) -> None:
    """Make the safetensors writer raise on its `fail_at`-th call (earlier calls really write)."""
    real = ckio.save_file
    calls = {"n": 0}

    def writer(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == fail_at:
            raise OSError("disk full (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(ckio, "save_file", writer)


def test_failure_mid_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tiny_config()
    _failing_writer(monkeypatch, fail_at=3)
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint(tmp_path / "ck", config, random_tensors(config), max_shard_bytes=2000)
    assert list(tmp_path.iterdir()) == []  # no target, no temp leftovers


def test_failure_keeps_the_old_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tiny_config()
    old = random_tensors(config, seed=1)
    save_checkpoint(tmp_path / "ck", config, old)
    before = {p.name: p.read_bytes() for p in (tmp_path / "ck").iterdir()}
    _failing_writer(monkeypatch, fail_at=2)
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint(tmp_path / "ck", config, random_tensors(config, seed=2), max_shard_bytes=2000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]
    assert {p.name: p.read_bytes() for p in (tmp_path / "ck").iterdir()} == before
    _assert_same(load_checkpoint(tmp_path / "ck").tensors, old)


def test_failed_swap_restores_the_old_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tiny_config()
    old = random_tensors(config, seed=1)
    save_checkpoint(tmp_path / "ck", config, old)
    real_rename = os.rename

    def rename(src, dst):
        if ".tmp-" in str(src):
            raise OSError("rename failed (simulated)")
        return real_rename(src, dst)

    monkeypatch.setattr(ckio.os, "rename", rename)
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint(tmp_path / "ck", config, random_tensors(config, seed=2))
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]
    _assert_same(load_checkpoint(tmp_path / "ck").tensors, old)


def test_invalid_tensors_fail_before_anything_is_written(tmp_path: Path) -> None:
    config = tiny_config()
    tensors = random_tensors(config)
    missing = {k: v for k, v in tensors.items() if k != "layers.1.v_out.matrix_inv"}
    with pytest.raises(MissingTensorError, match=r"'layers\.1\.v_out\.matrix_inv'"):
        save_checkpoint(tmp_path / "ck", config, missing)
    with pytest.raises(UnexpectedTensorError, match=r"'lm_head\.weight'"):
        save_checkpoint(tmp_path / "ck", config, {**tensors, "lm_head.weight": torch.zeros(50, 16)})
    bad_clip = {**tensors, "layers.0.o_in.clip_max": torch.tensor([1.5])}
    with pytest.raises(TensorValueError, match="outside"):
        save_checkpoint(tmp_path / "ck", config, bad_clip)
    assert list(tmp_path.iterdir()) == []


def test_non_json_options_fail_before_writing(tmp_path: Path) -> None:
    from dataclasses import replace

    from fq_core.checkpoint import CheckpointConfigError

    config = replace(tiny_config(), options={"lr": float("nan")})
    with pytest.raises(CheckpointConfigError, match="not plain JSON") as info:
        save_checkpoint(tmp_path / "ck", config, random_tensors(config))
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_replace_something_that_is_not_a_checkpoint(tmp_path: Path) -> None:
    config = tiny_config()
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "notes.txt").write_text("keep me")
    with pytest.raises(CheckpointWriteError, match="refusing to replace"):
        save_checkpoint(tmp_path / "home", config, random_tensors(config))
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointWriteError, match="not a directory"):
        save_checkpoint(tmp_path / "file", config, random_tensors(config))
    assert (tmp_path / "home" / "notes.txt").read_text() == "keep me"
    (tmp_path / "empty").mkdir()
    save_checkpoint(tmp_path / "empty", config, random_tensors(config))  # an empty directory is fine
    assert (tmp_path / "empty" / CONFIG_NAME).is_file()


def test_import_needs_no_transformers_and_no_pickle() -> None:
    code = (
        "import sys, fq_core.checkpoint, fq_core.checkpoint.testing\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('transformers', 'accelerate', 'gguf')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    source_dir = Path(ckio.__file__).parent
    for source in source_dir.glob("*.py"):
        text = source.read_text()
        assert "torch.load" not in text and "import pickle" not in text, source
