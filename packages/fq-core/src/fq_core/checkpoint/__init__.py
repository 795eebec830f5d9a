"""The checkpoint schema: the one format calibration writes and eval and the kernels read.

A checkpoint is a directory with fq_config.json (`CheckpointConfig`) and *.safetensors files whose
tensor inventory follows from the config alone (`expected_tensors`). Only torch, safetensors and the
standard library are used, so kernels-only deployments can import it; see docs/checkpoint-schema.md.
"""

from fq_core.checkpoint.config import (
    CONFIG_NAME,
    FORMAT,
    GEOMETRY_FIELDS,
    METHODS,
    SCHEMA_VERSION,
    CheckpointConfig,
    LayerTransforms,
    ModelGeometry,
    QuantConfig,
    linear_shapes,
)
from fq_core.checkpoint.errors import (
    CheckpointConfigError,
    CheckpointCorruptError,
    CheckpointFileError,
    CheckpointNotFoundError,
    CheckpointTensorError,
    CheckpointVersionError,
    CheckpointWriteError,
    MissingTensorError,
    ModelMismatchError,
    TensorDtypeError,
    TensorShapeError,
    TensorValueError,
    UnexpectedTensorError,
)
from fq_core.checkpoint.inventory import (
    FLOAT_DTYPES,
    TensorSpec,
    expected_tensors,
    qweight_dtype,
    weight_groups,
)
from fq_core.checkpoint.io import (
    DEFAULT_MAX_SHARD_BYTES,
    Checkpoint,
    load_checkpoint,
    read_config,
    save_checkpoint,
    validate_checkpoint,
)
from fq_core.errors import CheckpointError

__all__ = [
    "CONFIG_NAME",
    "DEFAULT_MAX_SHARD_BYTES",
    "FLOAT_DTYPES",
    "FORMAT",
    "GEOMETRY_FIELDS",
    "METHODS",
    "SCHEMA_VERSION",
    "Checkpoint",
    "CheckpointConfig",
    "CheckpointConfigError",
    "CheckpointCorruptError",
    "CheckpointError",
    "CheckpointFileError",
    "CheckpointNotFoundError",
    "CheckpointTensorError",
    "CheckpointVersionError",
    "CheckpointWriteError",
    "LayerTransforms",
    "MissingTensorError",
    "ModelGeometry",
    "ModelMismatchError",
    "QuantConfig",
    "TensorDtypeError",
    "TensorShapeError",
    "TensorSpec",
    "TensorValueError",
    "UnexpectedTensorError",
    "expected_tensors",
    "linear_shapes",
    "load_checkpoint",
    "qweight_dtype",
    "read_config",
    "save_checkpoint",
    "validate_checkpoint",
    "weight_groups",
]
