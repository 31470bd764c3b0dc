"""The ``xprospect`` command line: one module per command group, each parsing its arguments and
calling the library with typed arguments or a config object (the library never sees
``argparse``).

Which module owns which command (each exposes ``add_parser(subparsers)`` and ``run_*`` handlers
that take the parsed ``argparse.Namespace`` and return the exit code):

============================  =========================================================
module                        commands
============================  =========================================================
:mod:`xprospect.cli.main`     the top-level parser, logging, the error contract (one
                              line and the category's exit code; 1 and a traceback file
                              for bugs; ``--debug`` tracebacks), TensorFlow's start-up
                              lines kept off stderr unless ``--verbose``
:mod:`xprospect.cli.common`   shared pieces: exit codes and error categories
                              (``docs/errors.md``), one-line errors, typing the errors of
                              loading models and configs, ``--set`` shortcut flags
:mod:`xprospect.cli.data`     ``info``, ``drr``, ``prepare``
:mod:`xprospect.cli.models`   ``models``
:mod:`xprospect.cli.evaluate` ``evaluate``
:mod:`xprospect.cli.predict`  ``predict``
:mod:`xprospect.cli.style`    ``style train``, ``style apply``, ``style evaluate``
:mod:`xprospect.cli.export`   ``export``
:mod:`xprospect.cli.train`    ``train`` (also ``add_train_arguments`` for any parser)
:mod:`xprospect.cli.tune`     ``tune``
:mod:`xprospect.cli.demo`     ``demo``
============================  =========================================================
"""

from __future__ import annotations

import os

from xprospect.constants import NUMPY_ENVIRONMENT

# Before anything imports NumPy (the package's own __init__ does not): NumPy reads it at import.
os.environ.update({k: v for k, v in NUMPY_ENVIRONMENT.items() if k not in os.environ})

from xprospect.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
