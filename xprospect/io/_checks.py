"""The checks every reader makes before opening a file, and a file object that cannot be made
to allocate more than the file holds."""

from __future__ import annotations

import io
import os
from pathlib import Path

from xprospect.errors import EmptyFileError, MissingDataError

__all__ = ["ClampedReader", "open_clamped", "require_file"]


def require_file(path: str | os.PathLike[str]) -> Path:
    """Returns ``path`` as a Path if it exists and is not an empty file.

    Raises:
        MissingDataError: Nothing at the path.
        EmptyFileError: A file with no bytes.
    """
    p = Path(path)
    if not p.exists():
        raise MissingDataError("no such file", p)
    if p.is_file() and p.stat().st_size == 0:
        raise EmptyFileError("file is empty (0 bytes)", p)
    return p


_SMALL_READ = 1 << 16


class ClampedReader(io.BufferedReader):
    """A binary file whose ``read(n)`` never asks for more than what is left in the file.

    Python allocates ``n`` bytes before it reads, so a parser that trusts a corrupt length field
    (a DICOM element or a PNG chunk claiming 4 GiB in a 20 KiB file; pydicom and Pillow both do)
    would allocate gigabytes; clamped, it gets a short read and fails on it.
    """

    def __init__(self, raw: io.RawIOBase, size: int) -> None:
        super().__init__(raw)
        self._size = size

    def read(self, size: int | None = -1, /) -> bytes:
        # Small reads cannot allocate much; only large ones pay for tell().
        if size is not None and size > _SMALL_READ:
            size = max(0, min(size, self._size - self.tell()))
        return super().read(size)


def open_clamped(path: str | os.PathLike[str]) -> ClampedReader:
    """Opens ``path`` for reading as a :class:`ClampedReader` (use it in a ``with``)."""
    return ClampedReader(io.FileIO(path, "rb"), os.stat(path).st_size)
