"""Export a flatquant checkpoint for serving engines (`fq export`); torch and safetensors only.

from fq_kernels.export import export_compressed_tensors, load_compressed_tensors
export_compressed_tensors("out/smollm2-w4a4", "out/smollm2-w4a4-ct")
"""

from fq_kernels.export.compressed_tensors import (
    FLATQUANT_CONFIG,
    TRANSFORMS_FILE,
    export_compressed_tensors,
    load_compressed_tensors,
    quantization_config,
)
from fq_kernels.export.int32_pack import pack_int32, unpack_int32

FORMATS = ("compressed-tensors",)
"""What `fq export --format` writes."""

__all__ = [
    "FLATQUANT_CONFIG",
    "FORMATS",
    "TRANSFORMS_FILE",
    "export_compressed_tensors",
    "load_compressed_tensors",
    "pack_int32",
    "quantization_config",
    "unpack_int32",
]
