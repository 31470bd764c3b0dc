"""What every command module shares: the error contract (exit codes, the category of every typed
error, the one-line message), the handler and subparsers types, the wrappers that type the errors
of loading a model or a config, and the shortcut flags that stand for ``--set KEY=VALUE``.

The contract (``docs/errors.md``): every failure a user can fix exits with the code of its
category and prints one line on stderr, ``xprospect: error: <path or key>: <what is wrong>
[what to do]``; exit code 1 ("internal error") is kept for bugs. :func:`describe_failure` turns
any exception into that code and line.

Only the standard library and :mod:`xprospect.errors` are imported here, so building the parser
stays quick.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from xprospect.errors import (
    ConfigError,
    DicomError,
    DicomSeriesError,
    EmptyFileError,
    GeometryError,
    ImageFormatError,
    ImplausibleInputError,
    InvalidValuesError,
    LockedError,
    MissingDataError,
    ModalityError,
    ModelError,
    OutputError,
    OutputExistsError,
    ResourceLimitError,
    UnsupportedFormatError,
    UntrustedModelError,
    XprospectError,
)

__all__ = [
    "ERROR_CATEGORIES",
    "EXIT_CONFIG",
    "EXIT_INPUT",
    "EXIT_INTERNAL_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_MODEL",
    "EXIT_OK",
    "EXIT_OUTPUT",
    "EXIT_RESOURCE",
    "EXIT_USAGE",
    "EXIT_USER_ERROR",
    "ISSUE_TRACKER_URL",
    "TRUST_MODEL_HELP",
    "ErrorCategory",
    "Handler",
    "Subparsers",
    "add_trust_model_flag",
    "config_errors",
    "describe_failure",
    "error_category",
    "load_style_model_for",
    "model_errors",
    "one_line",
    "overrides_with_shortcuts",
    "print_error",
    "user_path",
]

EXIT_OK = 0
"""The command did what it was asked."""
EXIT_INTERNAL_ERROR = 1
"""A bug in xprospect: the CLI says where to report it and writes the traceback to a file."""
EXIT_USAGE = 2
"""The command line itself is wrong (argparse's own code: unknown flag, missing argument)."""
# 3 is ``xprospect.training.EXIT_DIVERGED``: the training loss became NaN or Inf.
EXIT_INPUT = 4
"""An input file or folder is missing, unreadable, corrupt or implausible."""
EXIT_CONFIG = 5
"""A config file, ``--set`` override or combination of flags is invalid."""
EXIT_MODEL = 6
"""A model cannot be loaded, or is not trusted."""
EXIT_OUTPUT = 7
"""An output cannot be written: it exists, it is locked, the disk is full, permission denied."""
EXIT_RESOURCE = 8
"""An input or config exceeds a size limit, or memory ran out."""
EXIT_INTERRUPTED = 130
"""Exit code after Ctrl-C, as shells report a SIGINT."""

EXIT_USER_ERROR = EXIT_USAGE
"""The former single code of every user error; now only usage errors exit with it. Kept for code
written before the categories: use the category's code."""

ISSUE_TRACKER_URL = "https://github.com/xprospect/xprospect/issues"
"""Where an internal error (a bug) is to be reported. (A placeholder until the project's public
tracker has its address; this is the only place to change.)"""


@dataclass(frozen=True)
class ErrorCategory:
    """One row of the error contract: which errors exit with which code, and what to do.

    Attributes:
        name: The category, as ``docs/errors.md`` names it.
        code: The exit code.
        errors: The typed errors of the category; a subclass of one of them belongs to it too,
            unless it is listed elsewhere itself.
        advice: What the user can do, in general (the message says what, in particular).
    """

    name: str
    code: int
    errors: tuple[type[BaseException], ...]
    advice: str


ERROR_CATEGORIES = (
    ErrorCategory(
        "input",
        EXIT_INPUT,
        (
            XprospectError,  # any typed error not listed below is about an input
            MissingDataError,
            EmptyFileError,
            UnsupportedFormatError,
            ImageFormatError,
            DicomError,
            DicomSeriesError,
            InvalidValuesError,
            ModalityError,
            GeometryError,
            ImplausibleInputError,
        ),
        "fix or replace the named file; --force accepts an implausible one",
    ),
    ErrorCategory("config", EXIT_CONFIG, (ConfigError,), "correct the named key or flag"),
    ErrorCategory(
        "model",
        EXIT_MODEL,
        (ModelError, UntrustedModelError),
        "give a model that xprospect wrote; --trust-model loads an unverified one",
    ),
    ErrorCategory(
        "output",
        EXIT_OUTPUT,
        (OutputExistsError, OutputError, LockedError),
        "choose another output, pass --overwrite, free disk space or wait for the lock holder",
    ),
    ErrorCategory(
        "resource",
        EXIT_RESOURCE,
        (ResourceLimitError, MemoryError),
        "check the input is what you meant; raise the limit if it is",
    ),
)
"""The exit code of every typed error (``docs/errors.md`` shows this table)."""

_CATEGORY_OF = {cls: category for category in ERROR_CATEGORIES for cls in category.errors}


def error_category(exc: BaseException) -> ErrorCategory | None:
    """The category of an exception: that of the nearest class in its MRO that a category lists,
    or None for an exception of no category (a bug, or an untyped error of a library)."""
    for cls in type(exc).__mro__:
        if cls in _CATEGORY_OF:
            return _CATEGORY_OF[cls]
    return None


# === One line ===

Handler = Callable[[argparse.Namespace], int]
"""What a subcommand runs: the parsed arguments in, the exit code out."""


class Subparsers(Protocol):
    """The object ``ArgumentParser.add_subparsers()`` returns, as far as command modules use it."""

    def add_parser(self, *args: Any, **kwargs: Any) -> argparse.ArgumentParser:
        """Adds one subcommand and returns its parser."""
        ...


_TEMP_NAME = re.compile(
    r"(?<![^/\\])\.([^/\\]+?)(?:\.p\d+h[0-9a-f]{8})?\.[a-z0-9_]{8}\.(?:tmp|old)(?:\.[A-Za-z0-9.]+)?"
)
"""A temporary name of :func:`xprospect.utils.atomic_path` / ``atomic_dir``
(``.NAME[.pPIDhHOST].XXXXXXXX.tmp[.SUFFIX]`` beside ``NAME``), as a component of a path."""


def user_path(text: str) -> str:
    """``text`` with every temporary file or folder name of an atomic write replaced by the name
    the user gave, so that an error raised while writing names the user's path."""
    return _TEMP_NAME.sub(r"\1", text)


def one_line(text: object) -> str:
    """``text`` on one line: its lines joined with spaces, temporary names made the user's."""
    return user_path(" ".join(part.strip() for part in str(text).splitlines() if part.strip()))


def print_error(message: object) -> None:
    """Prints the one-line ``xprospect: error: MESSAGE`` on stderr."""
    print(f"xprospect: error: {one_line(message)}", file=sys.stderr)


# === Untyped failures ===

_WRITE_ERRNOS = {
    errno.ENOSPC: "disk full (no space left on device); free some space and rerun",
    errno.EDQUOT: "disk quota exceeded; free some space and rerun",
    errno.EFBIG: "file too large for the file system",
    errno.EROFS: "read-only file system; choose another output",
}
_RESOURCE_ERRNOS = {
    errno.ENOMEM: "out of memory",
    errno.EMFILE: "too many open files; raise the limit (ulimit -n) or use fewer --workers",
    errno.ENFILE: "too many open files in the system",
}
_TF_ERRORS = {
    # TensorFlow's errors, by name (the CLI does not import TensorFlow to classify them).
    "ResourceExhaustedError": (EXIT_RESOURCE, "out of memory on the device"),
    "DataLossError": (EXIT_INPUT, "corrupt or truncated data"),
    "NotFoundError": (EXIT_INPUT, "not found"),
}


def _file_in_the_way(path: str) -> str | None:
    """The path itself or its nearest existing ancestor, if that is a file (not a folder)."""
    current = os.path.abspath(path)
    while not os.path.lexists(current):
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent
    return current if os.path.isfile(current) else None


def _os_failure(exc: OSError) -> tuple[int, str] | None:
    code = exc.errno
    path = user_path(os.fsdecode(exc.filename)) if exc.filename is not None else None
    prefix = f"{path}: " if path else ""
    reason = exc.strerror or str(exc)
    if code in _WRITE_ERRNOS:
        return EXIT_OUTPUT, f"{prefix}cannot write: {_WRITE_ERRNOS[code]}"
    if code in _RESOURCE_ERRNOS:
        return EXIT_RESOURCE, f"{prefix}{_RESOURCE_ERRNOS[code]}"
    if path is None:
        return None  # no file to name: nothing the user can be told to fix
    was_temp = user_path(os.fsdecode(exc.filename)) != os.fsdecode(exc.filename)
    if code == errno.ENOENT and not was_temp:
        return EXIT_INPUT, f"{prefix}no such file or folder"
    if os.path.exists(path) and not os.access(path, os.R_OK):
        return EXIT_INPUT, f"{prefix}cannot read: {reason}; check its permissions"
    if code in (errno.EEXIST, errno.ENOTDIR):
        in_the_way = _file_in_the_way(path)
        if in_the_way is not None:
            return EXIT_OUTPUT, (
                f"{prefix}cannot write: {in_the_way} is a file, not a folder; choose another output"
            )
    if code == errno.EISDIR:
        return EXIT_OUTPUT, f"{prefix}cannot write: is a folder, not a file; choose another output"
    if was_temp or code in (errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR, errno.EEXIST):
        return EXIT_OUTPUT, f"{prefix}cannot write: {reason}; check the folder and its permissions"
    return EXIT_INPUT, f"{prefix}cannot read: {reason}"


_TF_TELLING = re.compile(r"record|corrupt|truncat|Read less|OOM|out of memory|not found|No such")


def _tf_detail(exc: BaseException) -> str:
    """The telling line of a TensorFlow error (graph-mode messages start with a stack trace of
    the node that failed)."""
    text = str(getattr(exc, "message", None) or exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    telling = [line for line in lines if _TF_TELLING.search(line) and "File " not in line]
    detail = telling[0] if telling else lines[0] if lines else type(exc).__name__
    detail = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", detail)
    return re.sub(r"\s*\[\[?\{\{node [^]]*\]\]?|\s*\[Op:[^]]*\].*$", "", detail)


def describe_failure(exc: BaseException) -> tuple[int, str | None]:
    """The exit code and the one-line message (without ``xprospect: error:``) of a failure.

    Typed errors (:class:`~xprospect.errors.XprospectError` and ``MemoryError``) give their
    category's code; OS errors naming a file give input (4), output (7) or resource (8) by their
    ``errno`` and the file; TensorFlow's out-of-memory, data-loss and not-found errors their
    category. Anything else is a bug: :data:`EXIT_INTERNAL_ERROR` and no message (the caller
    writes the traceback file).
    """
    if isinstance(exc, KeyboardInterrupt):
        # Ctrl-C, or a signal that stopped a run after it saved its state (the text says where).
        said = one_line(exc)
        return EXIT_INTERRUPTED, f"interrupted: {said}" if said else "interrupted"
    if isinstance(exc, MemoryError):
        return EXIT_RESOURCE, (
            f"out of memory ({one_line(exc) or 'MemoryError'}); use a smaller input or --size, "
            "or free memory"
        )
    category = error_category(exc)
    if category is not None:
        return category.code, one_line(exc)
    if isinstance(exc, OSError):
        failure = _os_failure(exc)
        if failure is not None:
            return failure[0], one_line(failure[1])
    tf_kind = _TF_ERRORS.get(type(exc).__name__)
    if tf_kind is not None and type(exc).__module__.startswith("tensorflow"):
        return tf_kind[0], one_line(f"{tf_kind[1]}: {_tf_detail(exc)}")
    return EXIT_INTERNAL_ERROR, None


# === Typing the errors of libraries ===

_PASS_THROUGH = (KeyboardInterrupt, SystemExit, MemoryError, GeneratorExit)


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _inside(path: str | None, root: str) -> bool:
    """Whether ``path`` is ``root`` or inside it (both as given, or both resolved)."""
    if not path:
        return False
    for a, b in ((path, root), (os.path.realpath(path), os.path.realpath(root))):
        a, b = os.path.normpath(a), os.path.normpath(b)
        if a == b or a.startswith(b.rstrip(os.sep) + os.sep):
            return True
    return False


@contextlib.contextmanager
def model_errors(path: str | os.PathLike[str], doing: str = "load") -> Iterator[None]:
    """Types the errors of loading (or exporting) the model at ``path`` as model errors (exit 6)
    naming it.

    Keras and TensorFlow raise ``ValueError``, ``TypeError``, ``OSError`` and their own errors on
    a corrupt or foreign model file: any untyped error becomes a
    :class:`~xprospect.errors.ModelError`, and so does a typed error about the model's own files
    (a missing model, a broken run config). Typed errors about other paths (an output that
    exists, a bad flag) and OS errors on other files (a full disk while writing) keep their
    category.

    Args:
        path: The model as the user gave it (a run folder, ``.keras`` file or SavedModel).
        doing: What is done with it, for the message: ``load`` or ``export``.
    """
    root = os.fspath(path)
    try:
        yield
    except _PASS_THROUGH:
        raise
    except (ModelError, UntrustedModelError):
        raise
    except XprospectError as exc:
        if _inside(exc.path, root) and error_category(exc) in (
            _CATEGORY_OF[MissingDataError],
            _CATEGORY_OF[ConfigError],
        ):
            raise ModelError(exc.message, exc.path) from exc
        raise
    except OSError as exc:
        name = None if exc.filename is None else os.fsdecode(exc.filename)
        if name is not None and not _inside(name, root):
            raise  # not the model's file: the CLI reports it as an input or output error
        raise ModelError(f"cannot {doing} the model ({_first_line(exc)})", root) from exc
    except Exception as exc:
        raise ModelError(f"cannot {doing} the model ({_first_line(exc)})", root) from exc


@contextlib.contextmanager
def config_errors(path: str | os.PathLike[str]) -> Iterator[None]:
    """Types the untyped errors of reading the config file at ``path`` as config errors (exit 5):
    a binary file (not UTF-8 text) and YAML the parser refuses. Typed errors pass unchanged."""
    try:
        yield
    except UnicodeError as exc:
        raise ConfigError(
            f"not a text file (not UTF-8: {_first_line(exc)}); give a YAML config", path
        ) from exc
    except RecursionError as exc:
        raise ResourceLimitError(
            "nested too deeply to be a config (the file, or a --set value)", path
        ) from exc
    except Exception as exc:
        if type(exc).__module__.startswith("yaml"):
            raise ConfigError(f"invalid YAML ({_first_line(exc)})", path) from exc
        raise


def load_style_model_for(
    folder: str | os.PathLike[str], *directions: str, trust: bool = False
) -> Any:
    """The style model of a ``style train`` run folder with the generators of ``directions``
    loaded (in Keras safe mode unless ``trust``), its errors typed as model errors
    (:func:`model_errors`)."""
    from xprospect.style.apply import load_style_model

    with model_errors(folder):
        model = load_style_model(folder, trust=trust)
        for direction in directions:
            model.generator(direction)
    return model


# === Flags ===


TRUST_MODEL_HELP = (
    "load a model that cannot be verified (a SavedModel that is not an xprospect export or uses "
    "ops outside the allow-list; a .keras file without safe mode): it runs as a program with "
    "your permissions (see SECURITY.md)"
)
"""The help of ``--trust-model``, the same on every command that loads a model."""


def add_trust_model_flag(parser: argparse.ArgumentParser) -> None:
    """Adds ``--trust-model`` (``args.trust_model``) to a command that loads models."""
    parser.add_argument("--trust-model", action="store_true", help=TRUST_MODEL_HELP)


def overrides_with_shortcuts(
    overrides: Sequence[str] | None, shortcuts: Iterable[tuple[str, Any]]
) -> list[str] | None:
    """The ``--set KEY=VALUE`` overrides, then ``KEY=VALUE`` for every shortcut flag given.

    Args:
        overrides: The ``--set`` values in command-line order.
        shortcuts: ``(config key, flag value)`` pairs, e.g. ``("data.dir", args.data)``; a flag
            left out (``None`` or empty) adds nothing. Shortcuts come after ``--set`` so they win.

    Returns:
        The override strings, or ``None`` when there are none (what the config loaders take for
        "no overrides").
    """
    merged = list(overrides or [])
    merged.extend(f"{key}={value}" for key, value in shortcuts if value)
    return merged or None
