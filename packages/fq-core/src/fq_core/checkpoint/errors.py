"""The ways a checkpoint can be wrong, one class each.

Callers (the CLI, eval, the kernels' loader) catch `fq_core.errors.CheckpointError` to print the
one-line message; tests and tools that need to tell the cases apart catch the subclasses. Every
message names the problem and the fix on one line.
"""

from __future__ import annotations

from fq_core.errors import CheckpointError


class CheckpointNotFoundError(CheckpointError):
    """The checkpoint directory or its fq_config.json does not exist."""


class CheckpointConfigError(CheckpointError, ValueError):
    """fq_config.json is not JSON, has unknown/missing fields, wrong types or inconsistent values."""


class CheckpointVersionError(CheckpointError):
    """fq_config.json is not a flatquant schema this fq-core can read (unknown or newer version)."""


class CheckpointFileError(CheckpointError):
    """A tensor file listed in fq_config.json is missing."""


class CheckpointCorruptError(CheckpointError):
    """A tensor file is truncated, has a bad header, or stores a tensor twice."""


class CheckpointTensorError(CheckpointError):
    """The tensors do not match the inventory the config implies (base of the four below)."""


class MissingTensorError(CheckpointTensorError):
    """A tensor the config requires is absent."""


class UnexpectedTensorError(CheckpointTensorError):
    """A tensor is present that the config does not account for."""


class TensorShapeError(CheckpointTensorError):
    """A tensor has the wrong shape."""


class TensorDtypeError(CheckpointTensorError):
    """A tensor has a dtype the schema does not allow for it."""


class TensorValueError(CheckpointTensorError):
    """A tensor's values are invalid (clip factor outside (0, 1], non-finite scale, zero out of range)."""


class ModelMismatchError(CheckpointError):
    """The checkpoint was made for a model of a different geometry than the one it is loaded into."""


class CheckpointWriteError(CheckpointError):
    """The checkpoint cannot be written to the requested path."""
