"""Typed errors for everything a user can get wrong.

Every error raised on bad input derives from :class:`XprospectError`, names the file (or folder) it
concerns and says what is wrong in one line, so the CLI can print ``str(error)`` and exit with
code 2.
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
    "InvalidValuesError",
    "LockedError",
    "MissingDataError",
    "ModalityError",
    "OutputExistsError",
    "UnsupportedFormatError",
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


class ConfigError(XprospectError):
    """An experiment or command-line configuration is invalid."""


class LockedError(XprospectError):
    """Another process holds the lock of a run folder or dataset; the message names its PID and
    host."""
