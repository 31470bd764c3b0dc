"""The ``xprospect`` command line: one module per command group, each parsing its arguments and
calling the library with typed arguments (the library never sees ``argparse``)."""

from __future__ import annotations

from xprospect.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
