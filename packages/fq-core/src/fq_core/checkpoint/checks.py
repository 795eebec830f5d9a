"""Checks shared by the writer and the reader: inventory (names, shapes, dtypes), values, geometry.

The writer runs the same checks as the reader, before writing a byte, so a producer bug surfaces
in the producer and never as a checkpoint that fails later in eval or the kernels.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from fq_core.checkpoint.config import GEOMETRY_FIELDS, ModelGeometry
from fq_core.checkpoint.errors import (
    MissingTensorError,
    ModelMismatchError,
    TensorDtypeError,
    TensorShapeError,
    TensorValueError,
    UnexpectedTensorError,
)
from fq_core.checkpoint.inventory import TensorSpec

DType = torch.dtype | str
"""A tensor's dtype; a str when a file holds a dtype torch has no name for here."""


def dtype_name(dtype: DType) -> str:
    return dtype if isinstance(dtype, str) else str(dtype).removeprefix("torch.")


def _first(names: list[str]) -> str:
    more = f" (and {len(names) - 1} more)" if len(names) > 1 else ""
    return f"{names[0]!r}{more}"


def check_inventory(
    specs: Mapping[str, TensorSpec], found: Mapping[str, tuple[tuple[int, ...], DType]], where: str
) -> None:
    """Names, then shapes, then dtypes of `found` against `specs`; the first problem is raised."""
    missing = [name for name in specs if name not in found]
    if missing:
        raise MissingTensorError(
            f"{where}: missing tensor {_first(missing)} required by the config; the producer must write "
            "every tensor of the inventory (docs/checkpoint-schema.md)"
        )
    extra = sorted(name for name in found if name not in specs)
    if extra:
        raise UnexpectedTensorError(
            f"{where}: unexpected tensor {_first(extra)} not in the config's inventory; remove it, or fix "
            "the config (method, quant bits, model flags) so it accounts for it"
        )
    for name, spec in specs.items():
        shape, dtype = found[name]
        if tuple(shape) != spec.shape:
            raise TensorShapeError(
                f"{where}: tensor {name!r} has shape {list(shape)}, the config implies {list(spec.shape)}; "
                "the tensor or the config's model/layers geometry is wrong"
            )
        if dtype not in spec.dtypes:
            allowed = " or ".join(dtype_name(d) for d in spec.dtypes)
            raise TensorDtypeError(
                f"{where}: tensor {name!r} has dtype {dtype_name(dtype)}, allowed: {allowed}; "
                "convert it before saving"
            )


def check_values(name: str, spec: TensorSpec, tensor: torch.Tensor, where: str) -> None:
    """The data check of `spec.values` (no-op when None)."""
    if spec.values is None:
        return
    if spec.values == "zero":
        top = int(tensor.max()) if tensor.numel() else 0
        if spec.max_value is not None and top > spec.max_value:
            raise TensorValueError(
                f"{where}: zero point {name!r} holds {top}, above the quantised range max {spec.max_value}; "
                "recompute the zero points with the config's weight spec"
            )
        return
    t = tensor.detach().float()
    if not bool(torch.isfinite(t).all()):
        raise TensorValueError(
            f"{where}: tensor {name!r} holds inf or nan; the producer diverged or overflowed, re-run it "
            "(use float32 scales if float16 overflowed)"
        )
    if spec.values == "clip" and not bool(((t > 0) & (t <= 1)).all()):
        bad = t[(t <= 0) | (t > 1)].flatten()[0].item()
        raise TensorValueError(
            f"{where}: clipping factor {name!r} is {bad}, outside (0, 1]; store sigmoid(theta), not theta"
        )


def check_geometry(model: ModelGeometry, expected: Mapping[str, Any] | ModelGeometry, where: str) -> None:
    """The first geometry field where the checkpoint's model differs from `expected`.

    `expected` may hold a subset of the geometry fields (only those are compared) and may hold
    hf_config (ignored: it is informational). Any other key is a caller bug (a typo would silently
    weaken the check), so it raises ValueError.
    """
    if isinstance(expected, ModelGeometry):
        expected = expected.geometry()
    unknown = sorted(set(expected) - set(GEOMETRY_FIELDS) - {"hf_config"})
    if unknown:
        raise ValueError(f"expected_model has unknown key(s) {unknown}; use {', '.join(GEOMETRY_FIELDS)}")
    for field in GEOMETRY_FIELDS:
        if field in expected and expected[field] != getattr(model, field):
            raise ModelMismatchError(
                f"{where}: checkpoint was made for another model: model.{field} is "
                f"{getattr(model, field)!r} in the checkpoint but {expected[field]!r} in the model "
                "it is loaded into; use the checkpoint made for this model"
            )
