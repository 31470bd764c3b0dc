"""``xprospect style train | apply | evaluate``: the CycleGAN stage on the command line."""

from __future__ import annotations

import argparse
from pathlib import Path

from xprospect.cli.common import (
    EXIT_USAGE,
    Subparsers,
    add_trust_model_flag,
    config_errors,
    load_style_model_for,
    overrides_with_shortcuts,
    print_error,
)
from xprospect.constants import VIEWS
from xprospect.style.config import shipped_style_configs

__all__ = ["add_parser", "run_style_apply", "run_style_evaluate", "run_style_train"]


def add_parser(sub: Subparsers) -> None:
    """Adds ``style`` with its three subcommands to the CLI's subparsers."""
    style = sub.add_parser("style", help="CycleGAN style transfer between DRRs and real X-rays")
    ssub = style.add_subparsers(dest="style_command", metavar="STYLE_COMMAND")

    def print_style_help(args: argparse.Namespace) -> int:
        # ``xprospect style`` alone: like ``xprospect`` alone, the help and a usage error.
        style.print_help()
        print_error("style: give a subcommand (train, apply or evaluate)")
        return EXIT_USAGE

    style.set_defaults(handler=print_style_help)

    p = ssub.add_parser("train", help="train one CycleGAN (one view) from a style YAML")
    p.add_argument(
        "--config",
        required=True,
        help="style YAML, or a shipped name: " + ", ".join(shipped_style_configs()),
    )
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--data", help="domain A: dataset folder (data.dir)")
    p.add_argument("--real", help="domain B: real X-ray folder with manifest.csv (data.real_dir)")
    p.add_argument("--view", choices=VIEWS, help="data.view")
    p.add_argument("--output-dir", help="run folder (training.output_dir)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(handler=run_style_train)

    p = ssub.add_parser("apply", help="stylize a dataset (drr2real) or radiographs (real2drr)")
    p.add_argument(
        "--model", action="append", required=True, help="style run folder (one per view)"
    )
    p.add_argument("--direction", choices=("drr2real", "real2drr"), default="drr2real")
    p.add_argument("--data", help="dataset folder to stylize (drr2real)")
    p.add_argument("--input", dest="inputs", nargs="+", help="radiographs (real2drr)")
    p.add_argument("--output", required=True, help="new dataset folder, or PNG folder")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing stylized dataset (drr2real) or existing PNGs (real2drr)",
    )
    add_trust_model_flag(p)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(handler=run_style_apply)

    p = ssub.add_parser("evaluate", help="score translated DRRs against held-out real X-rays")
    p.add_argument("--model", required=True, help="style run folder")
    p.add_argument("--data", help="dataset folder (default: the one it was trained on)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--real", help="real X-ray folder (default: the run's)")
    p.add_argument("--max-images", type=int, help="at most N images per set")
    p.add_argument("--seed", type=int, default=0, help="seed of the classifier test")
    p.add_argument(
        "--c2st-repeats",
        type=int,
        default=1,
        help="repeat the translated DRRs' classifier test with N seeds (median and range)",
    )
    p.add_argument("--output", help="report folder (default RUN/style_eval_SPLIT)")
    p.add_argument(
        "--overwrite", action="store_true", help="write into a report folder that is not empty"
    )
    add_trust_model_flag(p)
    p.set_defaults(handler=run_style_evaluate)


def run_style_train(args: argparse.Namespace) -> int:
    """Runs ``xprospect style train``; returns 0, or ``xprospect.training.EXIT_DIVERGED`` on a
    NaN/Inf loss."""
    from xprospect.style.config import load_style_config
    from xprospect.style.training import train_style
    from xprospect.training import EXIT_DIVERGED

    overrides = overrides_with_shortcuts(
        args.overrides,
        [
            ("data.dir", args.data),
            ("data.real_dir", args.real),
            ("data.view", args.view),
            ("training.output_dir", args.output_dir),
        ],
    )
    with config_errors(args.config):
        cfg = load_style_config(args.config, overrides)
    result = train_style(cfg, progress=not args.no_progress)
    print(result.message)
    return 0 if result.ok else EXIT_DIVERGED


def run_style_apply(args: argparse.Namespace) -> int:
    """Runs ``xprospect style apply``: a stylized dataset (drr2real) or DRR-style PNGs of
    radiographs (real2drr).

    Outputs are checked before a model is loaded: an existing dataset folder, or an existing
    ``NAME_drr_style.png``, is an :class:`~xprospect.errors.OutputExistsError` unless
    ``--overwrite``; two inputs that would write the same PNG are a
    :class:`~xprospect.errors.ConfigError`.
    """
    from xprospect.errors import ConfigError
    from xprospect.style.apply import stylize_dataset
    from xprospect.utils import check_output

    if args.direction == "drr2real":
        if not args.data:
            raise ConfigError("--direction drr2real stylizes a dataset: give --data DIR")
        check_output(args.output, args.overwrite, folder=True)
        models = [
            load_style_model_for(folder, "drr2real", trust=args.trust_model)
            for folder in args.model
        ]
        out = stylize_dataset(
            args.data,
            models,
            args.output,
            direction="drr2real",
            progress=not args.no_progress,
            overwrite=args.overwrite,
        )
        print(f"wrote the stylized dataset {out}; train on it with --data {out}")
        return 0
    from xprospect.io import read_radiograph
    from xprospect.io.raster import write_png

    if not args.inputs:
        raise ConfigError("--direction real2drr translates radiographs: give --input FILE ...")
    if len(args.model) != 1:
        raise ConfigError("--direction real2drr takes one --model (the view of the inputs)")
    out_dir = check_output(args.output, overwrite=True, folder=True)  # may exist, as a folder
    targets: dict[Path, str] = {}
    for path in args.inputs:
        target = out_dir / f"{Path(path).stem.removesuffix('.nii')}_drr_style.png"
        if target in targets:
            raise ConfigError(f"{targets[target]} and {path} would both write {target}")
        targets[check_output(target, args.overwrite)] = path
    model = load_style_model_for(args.model[0], "real2drr", trust=args.trust_model)
    for target, path in targets.items():
        image = model.real_to_drr(read_radiograph(path))
        print(f"wrote {write_png(image, target, overwrite=args.overwrite)}")
    return 0


def run_style_evaluate(args: argparse.Namespace) -> int:
    """Runs ``xprospect style evaluate``: prints the score table and the report folder, which must
    be new or empty (checked first) unless ``--overwrite``."""
    from xprospect.errors import ConfigError
    from xprospect.style.evaluate import evaluate_style
    from xprospect.utils import check_output

    if args.c2st_repeats < 1:  # before the model loads: the mistake is in the command line
        raise ConfigError(f"--c2st-repeats: must be >= 1, got {args.c2st_repeats}")
    out = args.output or str(Path(args.model) / f"style_eval_{args.split}")
    check_output(out, args.overwrite, folder=True)
    model = load_style_model_for(args.model, "drr2real", "real2drr", trust=args.trust_model)
    result = evaluate_style(
        model,
        out,
        dataset_dir=args.data,
        split=args.split,
        real_dir=args.real,
        max_images=args.max_images,
        seed=args.seed,
        c2st_repeats=args.c2st_repeats,
    )
    print(result.table())
    print(f"report: {result.output_dir}")
    return 0
