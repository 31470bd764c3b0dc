"""Typed errors for everything a user can get wrong.

Every error raised on bad input derives from :class:`XprospectError`, names the file (or folder) it
concerns and says what is wrong in one line, so the CLI can print ``str(error)`` and exit with the
code of its category: input (4), config (5), model (6), output (7) or resource (8). Which class
belongs to which category is :data:`xprospect.cli.common.ERROR_CATEGORIES`, documented in
``docs/errors.md``.
"""

from __future__ import annotations

from os import PathLike

__all__ = [
    "ConfigError",
    "DicomError",
    "DicomSeriesError",
    "EmptyFileError",
    "GeometryError",
    "ImageFormatError",
    "ImplausibleInputError",
    "InvalidValuesError",
    "LockedError",
    "MissingDataError",
    "ModalityError",
    "ModelError",
    "OutputError",
    "OutputExistsError",
    "ResourceLimitError",
    "ShardError",
    "UnsupportedFormatError",
    "UntrustedModelError",
    "XprospectError",
]


class XprospectError(Exception):
    """Base class of every error xprospect raises on bad input or bad configuration.

    Args:
        message: What is wrong, one sentence.
        path: The file or folder concerned, if any; it is put in front of the message.
    """

    def __init__(self, message: str, path: str | PathLike[str] | None = None) -> None:
        self.message = message
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)


class UnsupportedFormatError(XprospectError):
    """The file's type is not one xprospect reads (by extension and by content)."""


class EmptyFileError(XprospectError):
    """The file exists but holds no bytes."""


class ImageFormatError(XprospectError):
    """The file claims a format but cannot be decoded: truncated, corrupt, or wrong dimensions."""


class InvalidValuesError(XprospectError):
    """The image decodes but holds values no image may hold (NaN, Inf)."""


class DicomError(ImageFormatError):
    """A DICOM file is unreadable or lacks a tag xprospect needs."""


class DicomSeriesError(XprospectError):
    """A DICOM series cannot form a volume: gaps, duplicate positions, mixed geometry."""


class ModalityError(XprospectError):
    """The data is of a modality the reader was not made for (e.g. MR given to the CT reader)."""


class MissingDataError(XprospectError):
    """An expected file, key or series is absent."""


class GeometryError(XprospectError):
    """Spacing, affine or shape arguments are inconsistent or non-physical."""


class OutputExistsError(XprospectError):
    """Writing would overwrite something the user made; pass ``overwrite=True`` to allow it."""


class OutputError(XprospectError):
    """An output cannot be written: disk full, permission denied, read-only file system."""


class ConfigError(XprospectError):
    """An experiment or command-line configuration is invalid."""


class UntrustedModelError(XprospectError):
    """A model file that is not trusted (not an xprospect export, or holding refused operations);
    ``--trust-model`` (``trust=True``) overrides."""


class ModelError(XprospectError):
    """A model cannot be loaded: missing, corrupt, of a format or version xprospect cannot read."""


class ResourceLimitError(XprospectError):
    """A header, file or config exceeds a limit (voxels, bytes, nesting depth) before anything is
    allocated; the message names the limit and how to raise it."""


class ImplausibleInputError(XprospectError):
    """The input is valid but implausible for its role (one CT slice, a 1x1 X-ray, a lateral view
    given as frontal); ``--force`` accepts it."""


class LockedError(XprospectError):
    """Another process holds the lock of a run folder or dataset; the message names its PID and
    host."""


class ShardError(ImageFormatError):
    """A TFRecord shard of a prepared dataset is truncated or corrupt (the message names it)."""
