"""``xprospect train``: an experiment YAML, overrides, then :func:`xprospect.training.train`."""

from __future__ import annotations

import argparse
import sys

from xprospect.config import load_config, shipped_configs
from xprospect.training import EXIT_DIVERGED, Trainer

__all__ = ["add_train_arguments", "run_train"]


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds ``xprospect train`` arguments to a (sub)parser."""
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
    """Runs ``xprospect train``; returns 0, or :data:`EXIT_DIVERGED` on a NaN/Inf loss.

    Configuration errors propagate as :class:`~xprospect.errors.ConfigError` (the CLI prints one
    line and exits with 2).
    """
    overrides = list(args.overrides or [])
    if getattr(args, "data", None):
        overrides.append(f"data.dir={args.data}")
    if getattr(args, "output_dir", None):
        overrides.append(f"training.output_dir={args.output_dir}")
    cfg = load_config(args.config, overrides or None)
    result = Trainer(cfg, progress=not getattr(args, "no_progress", False)).fit()
    if not result.ok:
        print(f"xprospect: error: {result.message}", file=sys.stderr)
        return EXIT_DIVERGED
    print(result.message)
    return 0
