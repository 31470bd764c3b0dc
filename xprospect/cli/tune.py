"""``xprospect tune``: a KerasTuner search from a tune YAML, run by
:func:`xprospect.tuning.tune`."""

from __future__ import annotations

import argparse
import logging

from xprospect.cli.common import Subparsers, config_errors, overrides_with_shortcuts, print_error
from xprospect.tuning import shipped_tune_configs

__all__ = ["add_parser", "run_tune"]


def add_parser(sub: Subparsers) -> None:
    """Adds ``tune`` to the CLI's subparsers."""
    p = sub.add_parser(
        "tune",
        help="KerasTuner search over an experiment's hyperparameters (resumable, distributable)",
        description="Search hyperparameters with KerasTuner; every trial trains like "
        "'xprospect train'. Distributed: set KERASTUNER_TUNER_ID (chief | tuner0, tuner1, ...), "
        "KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT on every process (docs/tuning.md).",
    )
    p.add_argument(
        "--config",
        required=True,
        help="tune YAML (experiment + tuner), or a shipped name: "
        + ", ".join(shipped_tune_configs()),
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a value, e.g. --set tuner.max_trials=5 (repeatable)",
    )
    p.add_argument("--data", help="shortcut for --set experiment.data.dir=DIR")
    p.add_argument("--no-progress", action="store_true", help="hide trial tables and progress")
    p.set_defaults(handler=run_tune)


class _NoRetracingNote(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


def run_tune(args: argparse.Namespace) -> int:
    """Runs ``xprospect tune``; prints the results table. Returns 0, or 1 when no trial
    completed."""
    from xprospect.tuning import load_tune_config, tune

    overrides = overrides_with_shortcuts(
        args.overrides, [("experiment.data.dir", getattr(args, "data", None))]
    )
    with config_errors(args.config):
        config = load_tune_config(args.config, overrides)
    # Every trial builds new models, so TensorFlow's advice against retracing is noise here.
    logging.getLogger("tensorflow").addFilter(_NoRetracingNote())
    result = tune(config, progress=not getattr(args, "no_progress", False))
    if result.trials:
        print(result.table())
    print(result.message)
    if result.role != "worker" and result.best is None:
        print_error("no trial completed")
        return 1
    return 0
