"""``xprospect train``: an experiment YAML plus overrides, trained by
:class:`xprospect.training.Trainer`."""

from __future__ import annotations

import argparse

from xprospect.cli.common import Subparsers, config_errors, overrides_with_shortcuts, print_error
from xprospect.config import shipped_configs

__all__ = ["add_parser", "add_train_arguments", "run_train"]


def add_parser(sub: Subparsers) -> None:
    """Adds ``train`` to the CLI's subparsers."""
    p = sub.add_parser("train", help="train a model from an experiment YAML (resumable)")
    add_train_arguments(p)
    p.set_defaults(handler=run_train)


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds ``xprospect train``'s arguments to a (sub)parser (what :func:`run_train` reads)."""
    parser.add_argument(
        "--config",
        required=True,
        help="experiment YAML, or a shipped name: " + ", ".join(shipped_configs()),
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set training.steps=100 (repeatable)",
    )
    parser.add_argument("--data", help="shortcut for --set data.dir=DIR")
    parser.add_argument("--output-dir", help="shortcut for --set training.output_dir=DIR")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run_train(args: argparse.Namespace) -> int:
    """Runs ``xprospect train``; returns 0, or ``xprospect.training.EXIT_DIVERGED`` on a NaN/Inf
    loss.

    Configuration errors propagate as :class:`~xprospect.errors.ConfigError` (the CLI prints one
    line and exits with 5).
    """
    from xprospect.config import load_config
    from xprospect.training import EXIT_DIVERGED, Trainer

    overrides = overrides_with_shortcuts(
        args.overrides,
        [
            ("data.dir", getattr(args, "data", None)),
            ("training.output_dir", getattr(args, "output_dir", None)),
        ],
    )
    with config_errors(args.config):
        cfg = load_config(args.config, overrides)
    result = Trainer(cfg, progress=not getattr(args, "no_progress", False)).fit()
    if not result.ok:
        print_error(result.message)
        return EXIT_DIVERGED
    print(result.message)
    return 0
