"""fq-kernels."""

from importlib.metadata import version

__version__ = version("fq-kernels")
