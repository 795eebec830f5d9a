"""fq-core: the light foundation every flatquant package builds on.

Quantisers (`fq_core.quant`), learnable Kronecker affine transforms (`fq_core.transforms`) and the
checkpoint schema (`fq_core.checkpoint`) need only torch and safetensors. Model adapters, the flat
fake-quant model and the embedded default model (`fq_core.adapters`, `fq_core.flat`,
`fq_core.models`) need the `hf` extra (transformers).
"""

from importlib.metadata import version

__version__ = version("fq-core")
