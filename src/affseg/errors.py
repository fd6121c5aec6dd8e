"""affseg's exceptions.

Every error affseg raises on purpose derives from :class:`AffsegError`, and also from the
built-in exception a caller would expect (``except ValueError`` keeps working for bad input,
``except FileNotFoundError`` for a missing volume). The command line turns them into one-line
messages and exit code 2.
"""
from __future__ import annotations

__all__ = [
    "AffsegError",
    "CorruptInput",
    "InputError",
    "OutputExists",
    "OutputNotWritable",
    "PathNotFound",
    "UnsafeCheckpoint",
    "VolumeNotFound",
]


class AffsegError(Exception):
    """Base of every error affseg raises on purpose."""


class InputError(AffsegError, ValueError):
    """An argument (array, offsets, threshold, option, path) that affseg refuses before any work."""


class PathNotFound(AffsegError, FileNotFoundError):
    """A file or folder that does not exist (a config, a checkpoint, a container)."""


class VolumeNotFound(PathNotFound):
    """A volume container, or a dataset inside one, that does not exist."""


class CorruptInput(AffsegError, ValueError):
    """A file that exists but cannot be read as what it claims to be (HDF5, zarr, checkpoint)."""


class UnsafeCheckpoint(CorruptInput):
    """A checkpoint that holds more than plain data (tensors, numbers, strings, lists, dicts)."""


class OutputExists(AffsegError, FileExistsError):
    """An output that exists and may not be replaced (no ``overwrite``, or not affseg's own)."""


class OutputNotWritable(AffsegError, PermissionError):
    """An output location that cannot be written (checked before any work)."""
