"""The checks every reader makes before opening a file."""

from __future__ import annotations

import os
from pathlib import Path

from xprospect.errors import EmptyFileError, MissingDataError

__all__ = ["require_file"]


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
