"""Small shared utilities: output checks and atomic writes, seeding, progress bars."""

from __future__ import annotations

import contextlib
import errno
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
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from xprospect.errors import (
    ConfigError,
    MissingDataError,
    OutputError,
    OutputExistsError,
    ResourceLimitError,
    XprospectError,
)

__all__ = [
    "IN_RESULT",
    "LOCK_FILE",
    "MAX_JSON_BYTES",
    "MAX_JSON_DEPTH",
    "ProgressBar",
    "atomic_dir",
    "atomic_path",
    "check_output",
    "folder_lock",
    "grappler_options",
    "in_result",
    "json_depth",
    "output_error",
    "process_alive",
    "progress_bar",
    "read_json_file",
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


# === May I write here? ===

_EXISTS = "already exists; pass --overwrite to replace it"

_DISK_REASONS = {
    errno.ENOSPC: "disk full (no space left on device)",
    errno.EDQUOT: "disk full (disk quota exceeded)",
    errno.EFBIG: "file too large for the file system",
}
"""Failures of the write itself: what the user must fix is the disk, not the path."""

_PATH_REASONS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "read-only file system",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "is a folder, not a file",
    errno.ENAMETOOLONG: "file name too long",
}

_NO_HARD_LINKS = {errno.EPERM, errno.EXDEV, errno.EMLINK, errno.ENOSYS, errno.EOPNOTSUPP}
"""``os.link`` errors of file systems without hard links: fall back to check-then-rename."""


def _reason(exc: BaseException, table: dict[int, str]) -> str | None:
    # OSError carries errno; TensorFlow and h5py errors carry only strerror's text.
    code = getattr(exc, "errno", None)
    if isinstance(code, int) and code in table:
        return table[code]
    text = str(exc)
    return next((reason for num, reason in table.items() if os.strerror(num) in text), None)


def _disk_full(exc: BaseException) -> bool:
    """Whether a failure while writing the data itself is the disk's (full, file too large); other
    errors of a writer (bad arguments, bugs) pass through unchanged."""
    return _reason(exc, _DISK_REASONS) is not None


def output_error(
    exc: BaseException, path: str | os.PathLike[str], note: str = ""
) -> OutputError | None:
    """The :class:`OutputError` an OS failure while writing ``path`` amounts to, or None.

    Disk full (ENOSPC, EDQUOT), file too large, permission denied and read-only file systems are
    recognised by ``errno`` or, for errors of TensorFlow and h5py that carry only the system's
    text, by ``os.strerror``'s message.

    Args:
        exc: The exception the write raised.
        path: The user's path (never a temporary file's).
        note: What is left, e.g. ``"the existing file is unchanged"``; appended after ``;``.

    Returns:
        ``OutputError("cannot write: disk full (no space left on device); NOTE", path)``, or None
        when ``exc`` is not one of these failures.
    """
    reason = _reason(exc, _DISK_REASONS) or _reason(exc, _PATH_REASONS)
    if reason is None:
        return None
    return OutputError(f"cannot write: {reason}" + (f"; {note}" if note else ""), path)


def _failed(exc: OSError, path: Path, note: str) -> OutputError:
    err = output_error(exc, path, note)
    return err or OutputError(f"cannot write: {exc.strerror or exc}; {note}", path)


def _untouched(existed: bool) -> str:
    return "the existing file is unchanged" if existed else "nothing was written"


def _check_parents(path: Path) -> None:
    # The nearest existing ancestor must be a folder we may write in.
    for parent in path.absolute().parents:
        if os.path.lexists(parent):
            if not parent.is_dir():
                raise OutputError(f"cannot write: {parent} is a file, not a folder", path)
            effective = os.access in os.supports_effective_ids
            if not os.access(parent, os.W_OK | os.X_OK, effective_ids=effective):
                raise OutputError(f"cannot write: permission denied in {parent}", path)
            return


def check_output(
    path: str | os.PathLike[str], overwrite: bool = False, *, folder: bool = False
) -> Path:
    """Checks that a command may write its output at ``path``; call it before any work is done.

    A file output (``folder=False``) may go where nothing is. An existing file counts as
    existing, and so does a symbolic link, whatever it points to: writers replace the link
    itself and never write through it. A folder output (``folder=True``) may be a new or an empty
    folder; a folder with anything in it, or a link, is existing (with ``overwrite`` the command
    writes its files into it, replacing its own names and keeping everything else).

    Args:
        path: The output the user named.
        overwrite: The command's ``--overwrite``: existing outputs may be replaced.
        folder: The output is a folder rather than a file.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is False; the message says
            "pass --overwrite to replace it".
        OutputError: ``path`` is a folder where a file is wanted (or a file where a folder is),
            whatever ``overwrite`` says, or a parent is a file or not writable.
    """
    p = Path(path)
    try:
        _check(p, overwrite, folder)
    except OSError as exc:  # e.g. a folder we may not list
        raise _failed(exc, p, "nothing was written") from exc
    return p


def _check(p: Path, overwrite: bool, folder: bool) -> None:
    link = p.is_symlink()
    if folder:
        if p.exists() and not p.is_dir():
            raise OutputError("is a file, not a folder; choose a folder path", p)
        if not overwrite and link:
            raise OutputExistsError(
                f"is a symbolic link (to {os.readlink(p)}); pass --overwrite to write into it", p
            )
        if not overwrite and p.is_dir() and any(p.iterdir()):
            raise OutputExistsError(
                "is a folder that is not empty; pass --overwrite to replace its files", p
            )
    else:
        if p.is_dir() and not link:
            raise OutputError("is a folder; give a file name", p)
        if not overwrite and link:
            raise OutputExistsError(
                f"is a symbolic link (to {os.readlink(p)}); pass --overwrite to replace the "
                "link (its target is never written)",
                p,
            )
        if not overwrite and p.exists():
            raise OutputExistsError(_EXISTS, p)
    _check_parents(p)


# === Atomic writes ===


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, overwrite: bool = True) -> Iterator[Path]:
    """Yields a temporary file path beside ``path``; on success renames it onto ``path``.

    A crash or exception leaves ``path`` untouched (the old file, or nothing) and removes the
    temporary file, so a reader never sees a half-written file. A symbolic link at ``path`` is
    replaced, never written through. With ``overwrite=False`` the file is published with a hard
    link, which fails if anything appeared at ``path`` meanwhile (no race with another writer).
    The temporary's name carries the writer's PID (:func:`temp_prefix`); what killed writers left
    in the folder is removed first (:func:`sweep_temporaries`).

    Args:
        path: The final destination.
        overwrite: If False and ``path`` exists (or is a link), raise :class:`OutputExistsError`
            before writing.

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
        OutputError: Writing failed: disk full, permission denied, read-only file system, a
            folder at ``path``. It names ``path``, never the temporary file; ``path`` is unchanged.
    """
    dest = Path(path)
    check_output(dest, overwrite)
    existed = os.path.lexists(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        sweep_temporaries(dest.parent)
        fd, tmp_name = tempfile.mkstemp(
            prefix=temp_prefix(dest), suffix=".tmp" + _suffixes(dest), dir=dest.parent
        )
    except OSError as exc:
        raise _failed(exc, dest, _untouched(existed)) from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            yield tmp
        except Exception as exc:
            err = output_error(exc, dest, _untouched(existed)) if _disk_full(exc) else None
            if err is None:
                raise
            raise err from exc
        try:
            # mkstemp makes 0600 files; give the result the permissions a plain open() would.
            os.chmod(tmp, 0o666 & ~_umask())
            _publish_file(tmp, dest, overwrite)
        except OSError as exc:
            raise _failed(exc, dest, _untouched(existed)) from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _publish_file(tmp: Path, dest: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp, dest)
        return
    try:
        os.link(tmp, dest)  # fails if dest appeared since the check: never clobbers
    except FileExistsError:
        raise OutputExistsError(_EXISTS, dest) from None
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        if os.path.lexists(dest):
            raise OutputExistsError(_EXISTS, dest) from None
        os.replace(tmp, dest)


def _empty_folder(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yields a temporary folder beside ``path``; on success moves it to ``path``.

    An empty folder at ``path`` counts as nothing. With ``overwrite=True`` an existing folder (or
    a symbolic link, which is replaced, never followed) is swapped out only after the new one is
    complete. A regular file at ``path`` is never replaced by a folder.

    Raises:
        OutputExistsError: If ``path`` exists (a folder with anything in it, a file, a link) and
            ``overwrite`` is False.
        OutputError: A file at ``path``, or writing failed (disk full, permission denied); it
            names ``path``, never the temporary folder, and ``path`` is unchanged.
    """
    dest = Path(path)
    existed = os.path.lexists(dest) and not _empty_folder(dest)
    if existed and not overwrite:
        raise OutputExistsError(_EXISTS, dest)
    if existed and not dest.is_symlink() and not dest.is_dir():
        raise OutputError("is a file, not a folder; choose a folder path", dest)
    _check_parents(dest)
    note = "the existing folder is unchanged" if existed else "nothing was written"
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        sweep_temporaries(dest.parent)
        tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(dest), suffix=".tmp", dir=dest.parent))
    except OSError as exc:
        raise _failed(exc, dest, note) from exc
    try:
        try:
            yield tmp
        except Exception as exc:
            err = output_error(exc, dest, note) if _disk_full(exc) else None
            if err is None:
                raise
            raise err from exc
        try:
            os.chmod(tmp, 0o777 & ~_umask())
            _publish_dir(tmp, dest, overwrite)
        except OSError as exc:
            raise _failed(exc, dest, note) from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _publish_dir(tmp: Path, dest: Path, overwrite: bool) -> None:
    if not os.path.lexists(dest) or _empty_folder(dest):
        try:
            os.replace(tmp, dest)  # POSIX renames onto an empty folder, never a full one
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR) and not overwrite:
                raise OutputExistsError(_EXISTS, dest) from None  # appeared meanwhile
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                raise
        else:
            return
    if not overwrite:
        raise OutputExistsError(_EXISTS, dest)
    trash = Path(tempfile.mkdtemp(prefix=temp_prefix(dest), suffix=".old", dir=dest.parent))
    try:
        os.replace(dest, trash / "old")
        try:
            os.replace(tmp, dest)
        except OSError:
            os.replace(trash / "old", dest)  # put the old folder back
            raise
    finally:
        shutil.rmtree(trash, ignore_errors=True)


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


# === Logging ===

IN_RESULT = {"xprospect_in_result": True}
"""``extra=`` of a log record whose message the call also returns in its result (a diverged
training run): a program that reports the result itself, like the command line, filters these
records (:func:`in_result`) so the message is said once; a notebook still sees the log."""


def in_result(record: Any) -> bool:
    """Whether a :class:`logging.LogRecord` was logged with :data:`IN_RESULT`."""
    return bool(getattr(record, "xprospect_in_result", False))


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


@contextlib.contextmanager
def grappler_options(options: Mapping[str, bool]) -> Iterator[None]:
    """TensorFlow's graph-optimiser (Grappler) options set while the block runs, and put back as
    they were after (also on an error). The options are the process's, read when a function is
    instantiated (``tf.config.optimizer.set_experimental_options``)."""
    import tensorflow as tf

    current = tf.config.optimizer.get_experimental_options()
    previous = {name: current.get(name) for name in options}
    tf.config.optimizer.set_experimental_options(dict(options))
    try:
        yield
    finally:
        # None is "TensorFlow's default" for an option never set.
        tf.config.optimizer.set_experimental_options(previous)
