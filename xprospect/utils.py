"""Small shared utilities: atomic writes, seeding, progress bars."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from xprospect.errors import (
    ConfigError,
    MissingDataError,
    OutputExistsError,
    ResourceLimitError,
    XprospectError,
)

__all__ = [
    "MAX_JSON_BYTES",
    "MAX_JSON_DEPTH",
    "ProgressBar",
    "atomic_dir",
    "atomic_path",
    "json_depth",
    "progress_bar",
    "read_json_file",
    "seed_everything",
]


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


# === Bounded JSON reading (issue 15: limits before allocation) ===

MAX_JSON_BYTES = 64 << 20
"""Default size limit of :func:`read_json_file` (64 MiB: a manifest of 100k cases fits)."""
MAX_JSON_DEPTH = 32
"""Default nesting limit of :func:`read_json_file` (xprospect's own files nest 4 levels)."""


def json_depth(value: Any) -> int:
    """How deeply lists and mappings nest in ``value`` (a scalar is 0, ``[]`` is 1); iterative,
    so any depth is safe to measure."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, depth + 1)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def read_json_file(
    path: str | os.PathLike[str],
    *,
    max_bytes: int = MAX_JSON_BYTES,
    max_depth: int = MAX_JSON_DEPTH,
    error: type[XprospectError] = ConfigError,
    what: str = "JSON file",
) -> Any:
    """Parses a JSON file that a user or another program wrote, within a size and nesting limit.

    Args:
        path: The file.
        max_bytes: Refuse a larger file before reading it.
        max_depth: Refuse deeper nesting of lists and objects.
        error: The error class for a file that is not text or not JSON (e.g. ``ConfigError`` for
            a settings file, ``ImageFormatError`` for a dataset's manifest).
        what: What the file is, for the message (``"dataset manifest"``).

    Returns:
        The parsed value.

    Raises:
        MissingDataError: No such file.
        ResourceLimitError: The file is larger than ``max_bytes`` or nests deeper than
            ``max_depth``.
        XprospectError: Of class ``error``: unreadable, not UTF-8 text, or invalid JSON (with its
            line and column).
    """
    p = Path(path)
    try:
        with p.open("rb") as fh:
            data = fh.read(max_bytes + 1)
    except FileNotFoundError:
        raise MissingDataError(f"no {what} here", p) from None
    except OSError as exc:
        raise error(f"cannot read {what}: {exc.strerror or exc}", p) from None
    if len(data) > max_bytes:
        raise ResourceLimitError(
            f"{what} is larger than the limit of {max_bytes} bytes; not read", p
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(
            f"{what} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})", p
        ) from None
    try:
        value = json.loads(text)
    except RecursionError:
        raise ResourceLimitError(
            f"{what} nests deeper than the limit of {max_depth} levels", p
        ) from None
    except json.JSONDecodeError as exc:
        raise error(
            f"{what} is not valid JSON: line {exc.lineno}, column {exc.colno}: {exc.msg}", p
        ) from None
    if json_depth(value) > max_depth:
        raise ResourceLimitError(f"{what} nests deeper than the limit of {max_depth} levels", p)
    return value
