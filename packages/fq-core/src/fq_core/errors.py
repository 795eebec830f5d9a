"""Typed errors for everything a user can get wrong.

Every error a user can cause (bad checkpoint, missing file, unsupported model) is an `FqError`
subclass whose message is one line naming the problem and the fix. The `fq` CLI prints that line
and exits with code 2 instead of a traceback.
"""


class FqError(Exception):
    """Base class of all user-facing errors of the flatquant packages."""


class ConfigError(FqError, ValueError):
    """An option or a combination of options is invalid."""


class UnsupportedModelError(FqError):
    """The model's architecture has no adapter."""


class DataError(FqError):
    """A data file or corpus is missing or unusable."""


class CheckpointError(FqError):
    """A checkpoint directory cannot be written or read back as valid."""
