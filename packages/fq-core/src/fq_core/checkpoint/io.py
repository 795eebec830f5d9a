"""Reading and writing checkpoint directories (fq_config.json + *.safetensors).

Writes are all-or-nothing: everything goes into a hidden temp directory next to the target, which
is renamed into place only once complete, so a crash or a bad tensor never leaves a directory that
looks like a checkpoint. Reads check the config, then every file header (names, shapes, dtypes,
sizes) before touching tensor data, so a broken checkpoint fails fast with one line saying what is
wrong. Only safetensors is used for tensor data: never pickle.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

import fq_core
from fq_core.checkpoint.checks import DType, check_geometry, check_inventory, check_values
from fq_core.checkpoint.config import CONFIG_NAME, CheckpointConfig, ModelGeometry
from fq_core.checkpoint.errors import (
    CheckpointConfigError,
    CheckpointCorruptError,
    CheckpointFileError,
    CheckpointNotFoundError,
    CheckpointWriteError,
)
from fq_core.checkpoint.inventory import TensorSpec, expected_tensors
from fq_core.errors import CheckpointError

GiB = 1 << 30
DEFAULT_MAX_SHARD_BYTES = 4 * GiB
SINGLE_FILE = "model.safetensors"

_DTYPES: dict[str, torch.dtype] = {
    "BOOL": torch.bool,
    "U8": torch.uint8,
    "I8": torch.int8,
    "U16": torch.uint16,
    "I16": torch.int16,
    "U32": torch.uint32,
    "I32": torch.int32,
    "U64": torch.uint64,
    "I64": torch.int64,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F32": torch.float32,
    "F64": torch.float64,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}

PathLike = str | os.PathLike[str]


@dataclass
class Checkpoint:
    """A loaded, validated checkpoint: its config and every tensor of its inventory, by name."""

    config: CheckpointConfig
    tensors: dict[str, torch.Tensor]


def _one_line(err: BaseException) -> str:
    return re.sub(r"\s+", " ", str(err)).strip() or type(err).__name__


# ---------------------------------------------------------------------------------------------
# Reading


def read_config(path: PathLike) -> CheckpointConfig:
    """The validated fq_config.json of checkpoint directory `path` (no tensor file is opened)."""
    root = Path(path)
    if not root.is_dir():
        raise CheckpointNotFoundError(
            f"{root}: checkpoint directory does not exist; pass the directory that holds {CONFIG_NAME}"
        )
    config_path = root / CONFIG_NAME
    if not config_path.is_file():
        raise CheckpointNotFoundError(
            f"{root}: no {CONFIG_NAME} in this directory, so it is not a (complete) flatquant checkpoint; "
            "pass the checkpoint directory or re-run the producer"
        )
    try:
        data = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointConfigError(
            f"{config_path}: not valid JSON ({_one_line(err)}); restore the file written by the producer"
        ) from err
    try:
        return CheckpointConfig.from_dict(data)
    except CheckpointError as err:
        raise type(err)(f"{config_path}: {err}") from err


def _file_header(file: Path) -> dict[str, tuple[tuple[int, ...], DType]]:
    """Name -> (shape, dtype) of one safetensors file, after checking that its size is consistent."""
    fix = "the file is truncated or corrupt: copy it again or re-create the checkpoint"
    size = file.stat().st_size
    with file.open("rb") as f:
        prefix = f.read(8)
    if len(prefix) < 8 or 8 + int.from_bytes(prefix, "little") > size:
        raise CheckpointCorruptError(f"{file}: safetensors header is incomplete ({size} bytes); {fix}")
    header_bytes = 8 + int.from_bytes(prefix, "little")
    try:
        with safe_open(str(file), framework="pt") as st:
            entries: dict[str, tuple[tuple[int, ...], DType]] = {}
            for name in st.keys():  # noqa: SIM118 (safe_open is not a Mapping)
                tensor_slice = st.get_slice(name)
                raw = tensor_slice.get_dtype()
                entries[name] = (tuple(tensor_slice.get_shape()), _DTYPES.get(raw, raw))
    except Exception as err:  # safetensors raises its own error type, or OSError / ValueError
        raise CheckpointCorruptError(
            f"{file}: unreadable safetensors file ({_one_line(err)}); {fix}"
        ) from err
    # Older safetensors versions do not check that the data covers the file; mmap past the end of
    # a truncated file would crash the process, so check here (dtypes unknown to torch are skipped).
    if all(isinstance(dtype, torch.dtype) for _, dtype in entries.values()):
        data = 0
        for shape, dtype in entries.values():
            numel = 1
            for dim in shape:
                numel *= dim
            data += numel * dtype.itemsize  # type: ignore[union-attr]
        if header_bytes + data != size:
            raise CheckpointCorruptError(
                f"{file}: file is {size} bytes but its header describes {header_bytes + data}; {fix}"
            )
    return entries


def _read_headers(root: Path, config: CheckpointConfig) -> dict[str, tuple[str, tuple[int, ...], DType]]:
    """Name -> (file, shape, dtype) over all the files listed in the config."""
    found: dict[str, tuple[str, tuple[int, ...], DType]] = {}
    for file in config.files:
        path = root / file
        if not path.is_file():
            raise CheckpointFileError(
                f"{path}: listed in {CONFIG_NAME} 'files' but missing; copy the complete checkpoint "
                "directory or re-create it"
            )
        for name, (shape, dtype) in _file_header(path).items():
            if name in found:
                raise CheckpointCorruptError(
                    f"{path}: tensor {name!r} is also stored in {found[name][0]}; re-create the checkpoint"
                )
            found[name] = (file, shape, dtype)
    return found


def _checked(
    path: PathLike, expected_model: Mapping[str, Any] | ModelGeometry | None
) -> tuple[Path, CheckpointConfig, dict[str, TensorSpec], dict[str, tuple[str, tuple[int, ...], DType]]]:
    """Everything that can be checked without tensor data: config, geometry, files, inventory."""
    root = Path(path)
    config = read_config(root)
    if expected_model is not None:
        check_geometry(config.model, expected_model, str(root))
    specs = expected_tensors(config)
    found = _read_headers(root, config)
    check_inventory(specs, {name: (shape, dtype) for name, (_, shape, dtype) in found.items()}, str(root))
    return root, config, specs, found


def _load_tensors(
    root: Path,
    specs: Mapping[str, TensorSpec],
    found: Mapping[str, tuple[str, tuple[int, ...], DType]],
    names: list[str],
    device: str,
) -> dict[str, torch.Tensor]:
    """Load `names` (file by file) and run their value checks; returned in `names` order."""
    by_file: dict[str, list[str]] = {}
    for name in names:
        by_file.setdefault(found[name][0], []).append(name)
    loaded: dict[str, torch.Tensor] = {}
    for file, file_names in by_file.items():
        try:
            with safe_open(str(root / file), framework="pt", device=device) as st:
                for name in file_names:
                    loaded[name] = st.get_tensor(name)
        except Exception as err:
            raise CheckpointCorruptError(
                f"{root / file}: reading tensor data failed ({_one_line(err)}); the file is corrupt, "
                "copy it again or re-create the checkpoint"
            ) from err
        for name in file_names:
            check_values(name, specs[name], loaded[name], str(root))
    return {name: loaded[name] for name in names}


def load_checkpoint(
    path: PathLike,
    expected_model: Mapping[str, Any] | ModelGeometry | None = None,
    device: str | torch.device = "cpu",
) -> Checkpoint:
    """Load and fully validate a checkpoint; tensors come back in inventory order.

    expected_model: geometry of the model the checkpoint will be applied to (the "model" fields,
    any subset; hf_config is ignored); the first differing field raises `ModelMismatchError`.
    """
    root, config, specs, found = _checked(path, expected_model)
    return Checkpoint(config, _load_tensors(root, specs, found, list(specs), str(device)))


def validate_checkpoint(
    path: PathLike, expected_model: Mapping[str, Any] | ModelGeometry | None = None
) -> CheckpointConfig:
    """Every check of `load_checkpoint`, loading only the small tensors whose values are checked."""
    root, config, specs, found = _checked(path, expected_model)
    _load_tensors(root, specs, found, [name for name, spec in specs.items() if spec.values], "cpu")
    return config


# ---------------------------------------------------------------------------------------------
# Writing


def _check_target(root: Path) -> None:
    """Refuse to replace anything that is not a flatquant checkpoint (or an empty directory)."""
    if not root.exists():
        return
    if not root.is_dir():
        raise CheckpointWriteError(f"{root} exists and is not a directory; choose another output path")
    if not (root / CONFIG_NAME).is_file() and any(root.iterdir()):
        raise CheckpointWriteError(
            f"{root} is a non-empty directory without {CONFIG_NAME}; refusing to replace it, "
            "choose another output path or empty it"
        )


def _plan_shards(
    names: list[str], tensors: Mapping[str, torch.Tensor], max_shard_bytes: int
) -> list[tuple[str, list[str]]]:
    """Consecutive groups of `names` of at most max_shard_bytes each (a bigger tensor is alone)."""
    groups: list[list[str]] = [[]]
    size = 0
    for name in names:
        nbytes = tensors[name].numel() * tensors[name].element_size()
        if groups[-1] and size + nbytes > max_shard_bytes:
            groups.append([])
            size = 0
        groups[-1].append(name)
        size += nbytes
    if len(groups) == 1:
        return [(SINGLE_FILE, groups[0])]
    n = len(groups)
    return [(f"model-{i + 1:05d}-of-{n:05d}.safetensors", g) for i, g in enumerate(groups)]


def _cpu_payload(names: list[str], tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors; a tensor sharing storage with an earlier one is copied (safetensors
    refuses shared storage, e.g. a transform and a view of it)."""
    out: dict[str, torch.Tensor] = {}
    storages: set[int] = set()
    for name in names:
        t = tensors[name].detach().to("cpu").contiguous()
        if t.untyped_storage().data_ptr() in storages:
            t = t.clone()
        storages.add(t.untyped_storage().data_ptr())
        out[name] = t
    return out


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomically(
    root: Path, shards: list[tuple[str, list[str]]], tensors: Mapping[str, torch.Tensor], config_text: str
) -> None:
    root.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:12]
    tmp = root.parent / f".{root.name}.tmp-{token}"
    tmp.mkdir()
    try:
        for file, names in shards:
            save_file(_cpu_payload(names, tensors), str(tmp / file), metadata={"format": "pt"})
            _fsync(tmp / file)
        (tmp / CONFIG_NAME).write_text(config_text, encoding="utf-8")
        _fsync(tmp / CONFIG_NAME)
        _fsync(tmp)
        if root.exists():
            # No POSIX call swaps two directories atomically: move the old one aside, move the new one
            # in, and put the old one back if that fails, so one complete checkpoint always exists.
            old = root.parent / f".{root.name}.old-{token}"
            os.rename(root, old)
            try:
                os.rename(tmp, root)
            except BaseException:
                os.rename(old, root)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_checkpoint(
    path: PathLike,
    config: CheckpointConfig,
    tensors: Mapping[str, torch.Tensor],
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
) -> CheckpointConfig:
    """Validate `tensors` against `config`'s inventory, then write the checkpoint directory atomically.

    config.files is ignored and replaced by the shard names; producers["fq-core"] is set to this
    fq-core's version. Returns the config as written. Nothing is written when validation fails, and
    an existing checkpoint at `path` is replaced only once the new one is complete.
    """
    root = Path(path)
    if max_shard_bytes < 1:
        raise ValueError(f"max_shard_bytes must be >= 1, got {max_shard_bytes}")
    for name, tensor in tensors.items():
        if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
            raise TypeError(f"tensors must map names to torch.Tensor, got {name!r}: {type(tensor).__name__}")
    _check_target(root)
    where = f"save_checkpoint({root})"
    producers = {**config.producers, "fq-core": fq_core.__version__}
    draft = replace(config, files=(SINGLE_FILE,), producers=producers)
    try:
        draft = CheckpointConfig.from_dict(draft.to_dict())  # the same checks a reader will run
    except CheckpointError as err:
        raise type(err)(f"{where}: {err}") from err
    specs = expected_tensors(draft)
    check_inventory(specs, {name: (tuple(t.shape), t.dtype) for name, t in tensors.items()}, where)
    for name, spec in specs.items():
        check_values(name, spec, tensors[name], where)
    shards = _plan_shards(list(specs), tensors, max_shard_bytes)
    final = replace(draft, files=tuple(file for file, _ in shards))
    try:
        config_text = json.dumps(final.to_dict(), indent=2, allow_nan=False) + "\n"
    except (TypeError, ValueError) as err:
        raise CheckpointConfigError(
            f"{where}: config.options or model.hf_config is not plain JSON ({_one_line(err)}); "
            "store only strings, numbers, booleans, null, lists and objects there"
        ) from err
    _write_atomically(root, shards, tensors, config_text)
    return final
