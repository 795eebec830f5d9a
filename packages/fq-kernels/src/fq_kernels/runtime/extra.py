"""The `hf` extra: the runtime builds transformers models, which a kernels-only deployment lacks."""

from __future__ import annotations

from fq_core.errors import FqError

HF_EXTRA_HINT = "pip install fq-kernels[hf]"


class MissingExtraError(FqError, ImportError):
    """An optional dependency of fq-kernels is not installed (`fq` prints the one-line fix)."""


def require_transformers() -> None:
    """Fail with the install command, not with an ImportError from deep inside a module."""
    try:
        import transformers  # noqa: F401  (the runtime's modules import it right after)
    except ImportError as error:
        raise MissingExtraError(f"the int4 runtime builds transformers models: {HF_EXTRA_HINT}") from error
