"""The ``xprospect`` entry point: the top-level parser, logging and the error contract.

Errors a user can fix (``XprospectError``) print one line on stderr and exit with code 2; other
failures print one line and exit with code 1. ``--debug`` shows the full traceback instead.
Command modules import heavy modules (TensorFlow) only when their command runs, so building the
parser, and ``xprospect info``, stay quick.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
import warnings
from collections.abc import Sequence
from typing import Any

from xprospect import __version__
from xprospect.cli import data, demo, evaluate, export, models, predict, style, train, tune
from xprospect.cli.common import (
    EXIT_INTERNAL_ERROR,
    EXIT_INTERRUPTED,
    EXIT_USER_ERROR,
    Handler,
    print_error,
)
from xprospect.errors import XprospectError

__all__ = ["COMMAND_GROUPS", "build_parser", "main"]

COMMAND_GROUPS = (data, models, evaluate, predict, style, export, train, tune, demo)
"""The command modules in the order ``xprospect --help`` lists their commands."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="xprospect",
        description="Chest X-rays to 3D CT: data, DRRs, training, evaluation and export.",
    )
    parser.add_argument("--version", action="version", version=f"xprospect {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="print progress notes")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the CLI; returns the exit code."""
    # TensorFlow's C++ start-up notes (oneDNN, CUDA probing) would bury the CLI's own output.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return EXIT_USER_ERROR
    _configure_logging(debug=args.debug, verbose=args.verbose)
    try:
        return handler(args)
    except XprospectError as exc:
        if args.debug:
            traceback.print_exc()
        print_error(exc)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as exc:
        # Ctrl-C, or SIGINT/SIGTERM stopping a run that saved its state (the message says where).
        said = str(exc).strip().splitlines()
        print(f"xprospect: interrupted{': ' + said[0] if said else ''}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        first = str(exc).strip().splitlines()
        detail = first[0] if first else ""
        print(
            f"xprospect: internal error: {type(exc).__name__}: {detail} (rerun with --debug)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL_ERROR


def _configure_logging(*, debug: bool, verbose: bool) -> None:
    # Library progress notes stay quiet unless asked: an error must be the only line on stderr.
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="xprospect: %(message)s")
    if not debug:
        # Library warnings are messages for the user, not stack dumps.
        warnings.showwarning = _one_line_warning


def _one_line_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    print(f"xprospect: warning: {message}", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
