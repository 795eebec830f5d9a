"""Every way a checkpoint on disk can be broken gives its own error type and a one-line message.

Broken checkpoints are made by writing files directly (bypassing `save_checkpoint`, which would
refuse them), starting from a valid one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from fq_core.checkpoint import (
    CONFIG_NAME,
    CheckpointConfigError,
    CheckpointCorruptError,
    CheckpointError,
    CheckpointFileError,
    CheckpointNotFoundError,
    CheckpointVersionError,
    MissingTensorError,
    ModelMismatchError,
    TensorDtypeError,
    TensorShapeError,
    TensorValueError,
    UnexpectedTensorError,
    load_checkpoint,
    read_config,
    save_checkpoint,
    validate_checkpoint,
)
from fq_core.checkpoint.testing import random_tensors, tiny_config
from fq_core.errors import FqError

SHARD = "model.safetensors"


@pytest.fixture
def ck(tmp_path: Path) -> Path:
    """A valid single-file W4A4KV4 checkpoint."""
    config = tiny_config()
    save_checkpoint(tmp_path / "ck", config, random_tensors(config))
    return tmp_path / "ck"


def _edit_config(root: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    data = json.loads((root / CONFIG_NAME).read_text())
    edit(data)
    (root / CONFIG_NAME).write_text(json.dumps(data))


def _edit_tensors(root: Path, edit: Callable[[dict[str, torch.Tensor]], None]) -> None:
    tensors = load_checkpoint(root).tensors
    edit(tensors)
    save_file(tensors, str(root / SHARD))


def _set_tensor(name: str, value: torch.Tensor) -> Callable[[Path], None]:
    return lambda root: _edit_tensors(root, lambda t: t.__setitem__(name, value))


def _truncate(root: Path) -> None:
    data = (root / SHARD).read_bytes()
    (root / SHARD).write_bytes(data[: len(data) - 10])


def _scale_with_inf(root: Path) -> None:
    def edit(t: dict[str, torch.Tensor]) -> None:
        t["layers.1.mlp.up_proj.scale"][3, 0] = float("inf")

    _edit_tensors(root, edit)


def _split_with_duplicate(root: Path) -> None:
    tensors = load_checkpoint(root).tensors
    save_file({"norm.weight": tensors["norm.weight"]}, str(root / "extra.safetensors"))
    _edit_config(root, lambda d: d["files"].append("extra.safetensors"))


BROKEN: list[tuple[str, Callable[[Path], None], type[CheckpointError], str]] = [
    ("no-directory", lambda r: __import__("shutil").rmtree(r), CheckpointNotFoundError, "does not exist"),
    ("no-config", lambda r: (r / CONFIG_NAME).unlink(), CheckpointNotFoundError, f"no {CONFIG_NAME}"),
    (
        "config-not-json",
        lambda r: (r / CONFIG_NAME).write_text("{'a': 1"),
        CheckpointConfigError,
        "not valid JSON",
    ),
    (
        "config-binary",
        lambda r: (r / CONFIG_NAME).write_bytes(b"\xff\xfe\x00"),
        CheckpointConfigError,
        "JSON",
    ),
    (
        "unknown-field",
        lambda r: _edit_config(r, lambda d: d.__setitem__("calib_loss", 0.1)),
        CheckpointConfigError,
        "unknown field config.calib_loss",
    ),
    (
        "wrong-type",
        lambda r: _edit_config(r, lambda d: d["model"].__setitem__("num_heads", "2")),
        CheckpointConfigError,
        "model.num_heads must be an integer",
    ),
    (
        "wrong-format",
        lambda r: _edit_config(r, lambda d: d.__setitem__("format", "gptq")),
        CheckpointConfigError,
        "not a flatquant checkpoint",
    ),
    (
        "newer-schema",
        lambda r: _edit_config(r, lambda d: d.__setitem__("schema_version", 7)),
        CheckpointVersionError,
        "written by a newer flatquant",
    ),
    (
        "unknown-schema",
        lambda r: _edit_config(r, lambda d: d.__setitem__("schema_version", -1)),
        CheckpointVersionError,
        "schema_version -1 is unknown",
    ),
    ("file-missing", lambda r: (r / SHARD).unlink(), CheckpointFileError, "listed in fq_config.json"),
    ("truncated", _truncate, CheckpointCorruptError, "truncated or corrupt"),
    (
        "garbage",
        lambda r: (r / SHARD).write_bytes(b"not a safetensors file"),
        CheckpointCorruptError,
        "corrupt",
    ),
    ("empty-file", lambda r: (r / SHARD).write_bytes(b""), CheckpointCorruptError, "header is incomplete"),
    (
        "bad-header",
        lambda r: (r / SHARD).write_bytes((10).to_bytes(8, "little") + b"{not json}"),
        CheckpointCorruptError,
        "unreadable safetensors file",
    ),
    (
        "trailing-bytes",
        lambda r: (r / SHARD).write_bytes((r / SHARD).read_bytes() + b"\0" * 4),
        CheckpointCorruptError,
        "corrupt",
    ),
    ("duplicate", _split_with_duplicate, CheckpointCorruptError, "'norm.weight' is also stored in"),
    (
        "missing-tensor",
        lambda r: _edit_tensors(r, lambda t: t.pop("layers.1.k_cache.matrix_inv")),
        MissingTensorError,
        "missing tensor 'layers.1.k_cache.matrix_inv'",
    ),
    (
        "extra-tensor",
        _set_tensor("layers.0.q_proj.weight", torch.zeros(16, 16)),
        UnexpectedTensorError,
        "unexpected tensor 'layers.0.q_proj.weight'",
    ),
    (
        "wrong-shape",
        _set_tensor("layers.1.down_in.right", torch.zeros(4, 4)),
        TensorShapeError,
        "'layers.1.down_in.right' has shape [4, 4], the config implies [8, 8]",
    ),
    (
        "unpacked-int4",
        _set_tensor("layers.0.self_attn.q_proj.qweight", torch.zeros(16, 16, dtype=torch.int8)),
        TensorShapeError,
        "has shape [16, 16], the config implies [16, 8]",
    ),
    (
        "wrong-dtype",
        _set_tensor("layers.0.attn_in.left", torch.zeros(4, 4, dtype=torch.float16)),
        TensorDtypeError,
        "'layers.0.attn_in.left' has dtype float16, allowed: float32",
    ),
    (
        "int-scale",
        _set_tensor("layers.0.mlp.down_proj.scale", torch.ones(16, 1, dtype=torch.int32)),
        TensorDtypeError,
        "allowed: float16 or bfloat16 or float32",
    ),
    (
        "clip-zero",
        _set_tensor("layers.1.v_cache.clip_min", torch.tensor([0.0])),
        TensorValueError,
        "'layers.1.v_cache.clip_min' is 0.0, outside (0, 1]",
    ),
    (
        "clip-above-one",
        _set_tensor("layers.0.attn_in.clip_max", torch.tensor([4.0])),
        TensorValueError,
        "outside (0, 1]",
    ),
    (
        "clip-nan",
        _set_tensor("layers.0.down_in.clip_max", torch.tensor([float("nan")])),
        TensorValueError,
        "nan",
    ),
    ("scale-inf", _scale_with_inf, TensorValueError, "'layers.1.mlp.up_proj.scale' holds inf or nan"),
    (
        "transform-nan",
        _set_tensor("layers.0.o_in.heads", torch.full((2, 2), float("nan"))),
        TensorValueError,
        "inf or nan",
    ),
]


@pytest.mark.parametrize(("break_it", "error", "text"), [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_broken_checkpoint(ck: Path, break_it: Callable[[Path], None], error: type, text: str) -> None:
    break_it(ck)
    for check in (load_checkpoint, validate_checkpoint):
        with pytest.raises(error) as info:
            check(ck)
        message = str(info.value)
        assert "\n" not in message, message
        assert text in message, message
        assert isinstance(info.value, FqError)  # the CLI turns these into one line and exit code 2


def test_zero_point_above_range(tmp_path: Path) -> None:
    from fq_core.quant import QuantSpec

    config = tiny_config(weight=QuantSpec(bits=4, symmetric=False))
    tensors = random_tensors(config)
    save_checkpoint(tmp_path / "ck", config, tensors)
    tensors["layers.0.mlp.gate_proj.zero"][0, 0] = 16
    save_file(tensors, str(tmp_path / "ck" / SHARD))
    with pytest.raises(TensorValueError, match="holds 16, above the quantised range max 15"):
        load_checkpoint(tmp_path / "ck")


def test_config_errors_name_the_file(ck: Path) -> None:
    _edit_config(ck, lambda d: d["model"].__setitem__("hidden_size", 17))
    with pytest.raises(CheckpointConfigError) as info:
        read_config(ck)
    assert str(info.value).startswith(str(ck / CONFIG_NAME))
    assert "\n" not in str(info.value)


def test_expected_model_geometry(ck: Path) -> None:
    model = tiny_config().model
    assert load_checkpoint(ck, expected_model=model.to_dict()).config.model == model
    assert validate_checkpoint(ck, expected_model=model) == read_config(ck)
    assert load_checkpoint(ck, expected_model={"hidden_size": 16, "num_layers": 2}).config.model == model
    # hf_config is informational: a different one is no mismatch
    load_checkpoint(ck, expected_model={**model.geometry(), "hf_config": {"other": 1}})
    wrong = {**model.geometry(), "num_kv_heads": 2, "vocab_size": 51}
    for check in (load_checkpoint, validate_checkpoint):
        with pytest.raises(ModelMismatchError) as info:
            check(ck, expected_model=wrong)
        # the first differing field in schema order is named, with both values
        assert "model.num_kv_heads is 1 in the checkpoint but 2" in str(info.value)
        assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="num_layer"):
        load_checkpoint(ck, expected_model={"num_layer": 2})


def test_error_before_any_data_is_read(ck: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Inventory problems are found from headers alone: no tensor is loaded before they are raised."""
    import fq_core.checkpoint.io as ckio

    _edit_tensors(ck, lambda t: t.pop("norm.weight"))

    def no_load(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("tensor data was loaded before the inventory check")

    monkeypatch.setattr(ckio, "_load_tensors", no_load)
    with pytest.raises(MissingTensorError):
        load_checkpoint(ck)


def test_own_size_check_catches_truncation(ck: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Older safetensors versions read a truncated file's header without complaint (and mmap past its
    end later); the reader's own size check must catch it. Simulated by letting safe_open see an
    intact copy while the file on disk is truncated."""
    import fq_core.checkpoint.io as ckio

    intact = ck.parent / "intact.safetensors"
    intact.write_bytes((ck / SHARD).read_bytes())
    _truncate(ck)
    real = ckio.safe_open
    monkeypatch.setattr(ckio, "safe_open", lambda path, **kw: real(str(intact), **kw))
    with pytest.raises(CheckpointCorruptError, match=r"file is \d+ bytes but its header describes"):
        validate_checkpoint(ck)
