"""fq-eval."""

from importlib.metadata import version

__version__ = version("fq-eval")
