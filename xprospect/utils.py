"""Small shared utilities: atomic writes, seeding, progress bars."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from xprospect.errors import OutputExistsError

__all__ = ["ProgressBar", "atomic_dir", "atomic_path", "progress_bar", "seed_everything"]


def _umask() -> int:
    # os.umask can only be read by setting it; restore at once.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _suffixes(path: Path) -> str:
    # Keep ".nii.gz" whole: nibabel and PIL choose the format from the temp file's suffix.
    return "".join(path.suffixes[-2:]) if path.name.endswith(".gz") else path.suffix


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, overwrite: bool = True) -> Iterator[Path]:
    """Yields a temporary file path beside ``path``; on success renames it onto ``path``.

    A crash or exception leaves ``path`` untouched (the old file, or nothing) and removes the
    temporary file, so a reader never sees a half-written file.

    Args:
        path: The final destination.
        overwrite: If False and ``path`` exists, raise :class:`OutputExistsError` before writing.
    """
    dest = Path(path)
    if not overwrite and dest.exists():
        raise OutputExistsError("already exists; pass overwrite=True to replace it", dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{dest.name}.", suffix=".tmp" + _suffixes(dest), dir=dest.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp makes 0600 files; give the result the permissions a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yields a temporary folder beside ``path``; on success moves it to ``path``.

    With ``overwrite=True`` an existing folder is swapped out only after the new one is complete.

    Raises:
        OutputExistsError: If ``path`` exists and ``overwrite`` is False.
    """
    dest = Path(path)
    if dest.exists() and not overwrite:
        raise OutputExistsError("already exists; pass overwrite=True to replace it", dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if dest.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".old", dir=dest.parent))
            os.replace(dest, trash / "old")
            os.replace(tmp, dest)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def seed_everything(seed: int) -> np.random.Generator:
    """Seeds Python, NumPy and (if installed) Keras/TensorFlow for a reproducible run.

    Args:
        seed: Any non-negative integer.

    Returns:
        A fresh ``numpy.random.Generator`` seeded with ``seed``, to pass on explicitly.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - legacy global state that third-party code reads
    os.environ["PYTHONHASHSEED"] = str(seed)
    try:
        import keras
    except ImportError:  # pragma: no cover - keras is a hard dependency, but seeding must not fail
        pass
    else:
        keras.utils.set_random_seed(seed)
    return np.random.default_rng(seed)


class ProgressBar(Protocol):
    """What :func:`progress_bar` returns: ``update(n)`` after ``n`` more items, ``close()``."""

    def update(self, n: int) -> Any: ...

    def close(self) -> Any: ...


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(
    total: int, enabled: bool, *, unit: str = "case", desc: str = "prepare"
) -> ProgressBar:
    """A ``tqdm`` bar over ``total`` items, or one that shows nothing.

    Args:
        total: Items to come; 0 shows nothing.
        enabled: False shows nothing (quiet runs, tests).
        unit: The items' name in the bar.
        desc: The bar's label.

    Returns:
        A :class:`ProgressBar`: ``update(n)`` and ``close()``.
    """
    if not enabled or total == 0:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, desc=desc)
