"""fq-calib."""

from importlib.metadata import version

__version__ = version("fq-calib")
