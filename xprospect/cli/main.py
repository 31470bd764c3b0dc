"""The ``xprospect`` entry point: the top-level parser, logging and the error contract.

Every failure a user can fix prints one line on stderr, ``xprospect: error: <path or key>: <what is
wrong> [what to do]``, and exits with its category's code (``docs/errors.md``;
:func:`xprospect.cli.common.describe_failure`). Anything else is a bug: one line saying where to
report it and the path of the traceback file written for it, exit code 1. ``--debug`` also prints
the traceback. TensorFlow's start-up log lines are kept off stderr unless ``--verbose``.

Command modules import heavy modules (TensorFlow) only when their command runs, so building the
parser, and ``xprospect info``, stay quick.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import logging
import os
import platform
import re
import sys
import tempfile
import time
import traceback
import types
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

from xprospect import __version__
from xprospect.cli import data, demo, evaluate, export, models, predict, style, train, tune
from xprospect.cli.common import (
    EXIT_INTERNAL_ERROR,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    ISSUE_TRACKER_URL,
    Handler,
    describe_failure,
    one_line,
    print_error,
)
from xprospect.utils import in_result

__all__ = [
    "COMMAND_GROUPS",
    "OPTIONAL_AT_TENSORFLOW_IMPORT",
    "build_parser",
    "hidden_at_tensorflow_import",
    "keras_backend_setting",
    "main",
    "quiet_tensorflow_start_up",
    "without_tensorflow_noise",
]

OPTIONAL_AT_TENSORFLOW_IMPORT = ("sklearn", "jax")
"""Modules TensorFlow imports with itself only where installed, that the commands do not use:
hidden during that import (:func:`hidden_at_tensorflow_import`). Keras' scikit-learn wrappers
import scikit-learn (used by ``tune``'s Bayesian search only); TensorFlow Lite's converter
imports JAX (installed with the dev extras for the JAX-backend tests; the CLI runs Keras on
TensorFlow)."""

COMMAND_GROUPS = (data, models, evaluate, predict, style, export, train, tune, demo)
"""The command modules in the order ``xprospect --help`` lists their commands."""


class _Parser(argparse.ArgumentParser):
    """argparse's parser with the CLI's one-line usage error (subcommands' parsers are made of
    the same class). Exit code 2, as argparse's own."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("xprospect").strip()
        where = f"{command}: " if command else ""
        self.exit(EXIT_USAGE, f"xprospect: error: {where}{message}; see '{self.prog} --help'\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = _Parser(
        prog="xprospect",
        description="Chest X-rays to 3D CT: data, DRRs, training, evaluation and export.",
        epilog="Exit codes: 0 ok, 1 internal error (a bug), 2 usage, 3 training diverged, "
        "4 input, 5 config, 6 model, 7 output, 8 resource, 130 interrupted (docs/errors.md).",
    )
    parser.add_argument("--version", action="version", version=f"xprospect {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show full tracebacks (and library warnings) on errors"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="print progress notes and TensorFlow's log"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the CLI; returns the exit code (``docs/errors.md``)."""
    # TensorFlow's C++ notes after start-up (XLA, device placement) would bury the CLI's output.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        print_error("give a command (listed above)")
        return EXIT_USAGE
    _configure_logging(debug=args.debug, verbose=args.verbose)
    hidden = hidden_at_tensorflow_import(handler.__module__)
    quiet = _QuietTensorFlowImport.install_unless_imported(quiet=not args.verbose, hidden=hidden)
    try:
        return handler(args)
    except (Exception, KeyboardInterrupt) as exc:
        return _fail(exc, debug=args.debug, argv=sys.argv[1:] if argv is None else argv)
    finally:
        if quiet is not None:
            quiet.uninstall()


def keras_backend_setting() -> str:
    """The Keras backend Keras will choose, read as Keras reads it without importing Keras:
    ``KERAS_BACKEND``, else the ``backend`` of ``keras.json`` in ``KERAS_HOME`` (``~/.keras``),
    else ``"tensorflow"``."""
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    with (
        contextlib.suppress(OSError, ValueError, AttributeError),
        open(os.path.join(home, "keras.json"), encoding="utf-8") as fh,
    ):
        return str(json.load(fh).get("backend", "tensorflow"))
    return "tensorflow"


def hidden_at_tensorflow_import(command_module: str) -> tuple[str, ...]:
    """The modules hidden while TensorFlow imports for the command defined in
    ``command_module``: those of :data:`OPTIONAL_AT_TENSORFLOW_IMPORT` for every command but
    ``tune`` (scikit-learn serves its Bayesian search), JAX only where Keras' backend is not JAX
    (Keras, imported with TensorFlow, would need it); together about 1.4 s and 200 MB here. For
    ``predict`` Keras too: TensorFlow imports it only for its ``tf.keras`` alias, which nothing
    here uses, and a SavedModel runs on TensorFlow alone (a ``.keras`` model imports Keras after
    TensorFlow, as usual): 0.7 s and about 25 MB of the one-pair prediction's peak."""
    if command_module == tune.__name__:
        return ()
    jax_backend = keras_backend_setting() == "jax"
    hidden = tuple(m for m in OPTIONAL_AT_TENSORFLOW_IMPORT if not (jax_backend and m == "jax"))
    return (*hidden, "keras") if command_module == predict.__name__ else hidden


def _fail(exc: BaseException, *, debug: bool, argv: Sequence[str]) -> int:
    """Prints the one line of a failure (and with ``debug`` its traceback); returns the code."""
    code, message = describe_failure(exc)
    if debug:
        traceback.print_exception(exc)
    if code == EXIT_INTERRUPTED:
        print(f"xprospect: {message}", file=sys.stderr)
    elif code != EXIT_INTERNAL_ERROR:
        print_error(message)
    else:
        print(f"xprospect: internal error: {_bug_report(exc, argv)}", file=sys.stderr)
    return code


def _bug_report(exc: BaseException, argv: Sequence[str]) -> str:
    """Writes the traceback file of a bug; returns the rest of the one line that says so."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    what = one_line(f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__)
    if len(what) > 300:
        what = what[:297] + "..."
    report = (
        f"xprospect {__version__}, Python {platform.python_version()}, {platform.platform()}\n"
        f"command: xprospect {' '.join(argv)}\n\n" + "".join(traceback.format_exception(exc))
    )
    try:
        path = _write_traceback(report)
    except OSError as write_error:
        where = f"could not write the traceback ({write_error.strerror}); rerun with --debug"
    else:
        where = f"with the traceback in {path}"
    return f"{what}; this is a bug in xprospect: please report it at {ISSUE_TRACKER_URL} {where}"


def _write_traceback(report: str) -> Path:
    """Writes ``report`` to ``TMPDIR/xprospect-traceback-<time>-<pid>.txt`` atomically."""
    folder = Path(tempfile.gettempdir())
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = folder / f"xprospect-traceback-{stamp}-{os.getpid()}.txt"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(report)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return path


def _configure_logging(*, debug: bool, verbose: bool) -> None:
    # Library progress notes stay quiet unless asked: an error must be the only line on stderr.
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    root = logging.getLogger()
    if not root.handlers:  # as logging.basicConfig: a program embedding the CLI keeps its own
        handler = logging.StreamHandler()
        handler.setFormatter(_LogFormatter())
        # A message the command prints itself from a result (a diverged run) is said once.
        handler.addFilter(lambda record: not in_result(record))
        root.addHandler(handler)
        root.setLevel(level)
    if not debug:
        # Library warnings are messages for the user, not stack dumps.
        warnings.showwarning = _one_line_warning


class _LogFormatter(logging.Formatter):
    """``xprospect: NOTE`` for progress notes, ``xprospect: warning: ...`` for the library's
    warnings and errors: the one ``xprospect: error:`` line is the CLI's own."""

    def format(self, record: logging.LogRecord) -> str:
        kind = "warning: " if record.levelno >= logging.WARNING else ""
        return f"xprospect: {kind}{one_line(record.getMessage())}"


def _one_line_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    print(f"xprospect: warning: {one_line(message)}", file=sys.stderr)


# === TensorFlow's start-up lines ===

_TF_NOISE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w.\-]+:\d+\] "  # absl: I0000 00:00:17.4 42 a.cc:1]
    r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] [\w/.\-]+:\d+\] "  # TensorFlow's own, older
    r"|To enable the following instructions: .* rebuild TensorFlow"  # cpu_feature_guard's 2nd line
)
"""A line TensorFlow's C++ code logs while it loads and probes devices (oneDNN note, CUDA stubs,
cuInit failures, cuDNN/cuBLAS factory registration): written by absl to file descriptor 2 before
logging is initialised, so ``TF_CPP_MIN_LOG_LEVEL`` does not reach it."""


def without_tensorflow_noise(text: str) -> str:
    """``text`` without TensorFlow's start-up lines. A progress bar's last update (written with
    ``\\r`` and no newline) may run into such a line: the part before it is kept."""
    out = []
    parts = text.split("\n")
    for i, part in enumerate(parts):
        noise = _TF_NOISE.search(part)
        if noise is not None:
            out.append(part[: noise.start()])  # the noise's own newline goes with it
        else:
            out.append(part if i == len(parts) - 1 else part + "\n")
    return "".join(out)


@contextlib.contextmanager
def _filtered_fd2() -> Iterator[None]:
    """Sends file descriptor 2 to a file while the block runs, then writes back to ``sys.stderr``
    every line that is not TensorFlow start-up noise (Python warnings, real errors)."""
    for stream in (sys.stderr, sys.__stderr__):
        with contextlib.suppress(Exception):
            stream.flush()  # type: ignore[union-attr]
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to keep clean
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            for stream in (sys.stderr, sys.__stderr__):
                with contextlib.suppress(Exception):
                    stream.flush()  # type: ignore[union-attr]
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", errors="replace")
            kept = without_tensorflow_noise(text)
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


@contextlib.contextmanager
def _hidden_modules(names: Sequence[str]) -> Iterator[None]:
    """While the block runs, ``import NAME`` raises ImportError for each of ``names`` not yet
    imported (as if it were not installed); afterwards they import as usual."""
    hide = [n for n in names if n not in sys.modules]
    for name in hide:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        for name in hide:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]


class _QuietLoader(importlib.abc.Loader):
    """TensorFlow's own loader, run with its start-up lines filtered out of stderr (unless not
    ``quiet``) and the ``hidden`` modules hidden; once loaded, the GPU platform is probed inside
    the filter too (that prints the cuInit lines)."""

    def __init__(
        self,
        loader: importlib.abc.Loader,
        spec: importlib.machinery.ModuleSpec,
        *,
        quiet: bool = True,
        hidden: Sequence[str] = (),
    ) -> None:
        self.loader = loader
        self.spec = spec
        self.quiet = quiet
        self.hidden = tuple(hidden)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        try:
            with (
                _filtered_fd2() if self.quiet else contextlib.nullcontext(),
                _hidden_modules(self.hidden),
            ):
                self.loader.exec_module(module)
                with contextlib.suppress(Exception):
                    module.config.list_physical_devices("GPU")
        finally:
            # Later users (importlib.resources, reload) see TensorFlow's own loader.
            self.spec.loader = self.loader
            module.__loader__ = self.loader


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` as the other finders do, with :class:`_QuietLoader` as its loader."""

    def __init__(self, *, quiet: bool = True, hidden: Sequence[str] = ()) -> None:
        self.quiet = quiet
        self.hidden = tuple(hidden)

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "tensorflow":
            return None
        self.uninstall()
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _QuietLoader(spec.loader, spec, quiet=self.quiet, hidden=self.hidden)
        return spec

    @classmethod
    def install_unless_imported(
        cls, *, quiet: bool = True, hidden: Sequence[str] = ()
    ) -> _QuietTensorFlowImport | None:
        """Puts a new finder first on ``sys.meta_path``; None when TensorFlow is imported or
        there is nothing to do."""
        if "tensorflow" in sys.modules or not (quiet or hidden):
            return None
        finder = cls(quiet=quiet, hidden=hidden)
        sys.meta_path.insert(0, finder)
        return finder

    def uninstall(self) -> None:
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)


@contextlib.contextmanager
def quiet_tensorflow_start_up() -> Iterator[None]:
    """While the block runs, a first ``import tensorflow`` (direct, or through Keras) keeps
    TensorFlow's start-up log lines off stderr; other lines written meanwhile still appear.

    ``TF_CPP_MIN_LOG_LEVEL`` cannot do this: the lines are logged by absl before TensorFlow reads
    it, and ``TF_ENABLE_ONEDNN_OPTS=0`` would change numerics. Nothing happens when TensorFlow is
    already imported.
    """
    finder = _QuietTensorFlowImport.install_unless_imported()
    try:
        yield
    finally:
        if finder is not None:
            finder.uninstall()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
