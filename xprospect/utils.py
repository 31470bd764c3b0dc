"""Small shared utilities: atomic writes, seeding, progress bars."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from xprospect.errors import OutputExistsError

__all__ = [
    "LOCK_FILE",
    "ProgressBar",
    "atomic_dir",
    "atomic_path",
    "folder_lock",
    "process_alive",
    "progress_bar",
    "seed_everything",
    "sweep_temporaries",
    "temp_prefix",
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
    temporary file, so a reader never sees a half-written file. The temporary's name carries the
    writer's PID (:func:`temp_prefix`); what killed writers left in the folder is removed first
    (:func:`sweep_temporaries`).

    Args:
        path: The final destination.
        overwrite: If False and ``path`` exists, raise :class:`OutputExistsError` before writing.
    """
    dest = Path(path)
    if not overwrite and dest.exists():
        raise OutputExistsError("already exists; pass overwrite=True to replace it", dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    sweep_temporaries(dest.parent)
    fd, tmp_name = tempfile.mkstemp(
        prefix=temp_prefix(dest), suffix=".tmp" + _suffixes(dest), dir=dest.parent
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
    sweep_temporaries(dest.parent)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(dest), suffix=".tmp", dir=dest.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if dest.exists():
            trash = Path(tempfile.mkdtemp(prefix=temp_prefix(dest), suffix=".old", dir=dest.parent))
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


# === Temporary files of dead processes, folder locks ===

LOCK_FILE = ".xprospect.lock"
"""The lock file :func:`folder_lock` keeps in a run folder or dataset (``LOCK_FILE + ".json"``
beside it names the holder)."""

_TEMP_RE = re.compile(
    r"^\.(?P<name>.+)\.p(?P<pid>\d+)h(?P<host>[0-9a-f]{8})\.[A-Za-z0-9_]+\.(?:tmp|old)(?:\..*)?$"
)


def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode(), usedforsecurity=False).hexdigest()[:8]


def temp_prefix(path: str | os.PathLike[str]) -> str:
    """The name prefix of a temporary sibling of ``path``: ``.NAME.p<pid>h<host hash>.``.

    The writer's PID and host in the name let :func:`sweep_temporaries` remove what a killed
    writer left behind (``kill -9`` runs no clean-up), and never what a live one is writing.
    """
    return f".{Path(path).name}.p{os.getpid()}h{_host_tag()}."


def process_alive(pid: int) -> bool:
    """Whether a process with this PID runs on this machine (a zombie counts as running)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def sweep_temporaries(folder: str | os.PathLike[str], name: str | None = None) -> list[Path]:
    """Removes the temporary files and folders (:func:`temp_prefix`) in ``folder`` whose writer
    ran on this host and is no longer running.

    Args:
        folder: Where to look (not recursive).
        name: Only the temporaries of this destination name; None: all of them.

    Returns:
        What was removed.
    """
    host = _host_tag()
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = _TEMP_RE.match(entry.name)
        if m is None or (name is not None and m["name"] != name) or m["host"] != host:
            continue
        if process_alive(int(m["pid"])):
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed


def _command_line() -> str:
    argv = list(sys.argv) or ["python"]
    program = Path(argv[0]).name
    if program == "__main__.py":  # python -m PACKAGE
        program = Path(argv[0]).parent.name
    return " ".join([program, *argv[1:4]])[:120]


def _lock_holder(info_path: Path) -> str:
    try:
        info = json.loads(info_path.read_text())
        pid, host = int(info["pid"]), str(info["host"])
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (its PID and host are not recorded)"
    text = f"PID {pid} on host {host}"
    if info.get("since"):
        text += f" since {info['since']}"
    if info.get("command"):
        text += f" ({info['command']})"
    if host == socket.gethostname() and not process_alive(pid):
        text += "; that process has ended, so a process it started still holds the lock"
    return text


@contextlib.contextmanager
def folder_lock(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Holds an exclusive lock on a run folder or dataset while writing into it.

    The lock is an operating-system lock (``flock``, through the ``filelock`` package) on
    ``PATH/.xprospect.lock``: the kernel releases it when its holder exits in any way, ``kill -9``
    included, so a lock left by a dead process is simply taken over (on file systems without
    ``flock``, ``filelock`` falls back to a marker file whose dead holder it detects). A JSON
    sidecar (``.xprospect.lock.json``) records the holder's PID, host, start time and command,
    for the error message. Temporaries that dead writers left in the folder
    (:func:`sweep_temporaries`) are removed once the lock is held.

    Args:
        path: The folder; created if missing.

    Yields:
        The folder.

    Raises:
        LockedError: Another process (or another lock in this process) holds the folder.
    """
    from filelock import FileLock, Timeout

    from xprospect.errors import LockedError

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    info_path = folder / (LOCK_FILE + ".json")
    lock = FileLock(str(folder / LOCK_FILE))
    try:
        lock.acquire(blocking=False)
    except Timeout:
        raise LockedError(
            f"is in use by {_lock_holder(info_path)}; wait for it to finish or stop it",
            folder,
        ) from None
    try:
        sweep_temporaries(folder)
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": _command_line(),
        }
        with atomic_path(info_path) as tmp:
            tmp.write_text(json.dumps(info) + "\n")
        yield folder
    finally:
        with contextlib.suppress(OSError):
            info_path.unlink()
        lock.release()
