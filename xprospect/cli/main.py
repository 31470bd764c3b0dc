"""The ``xprospect`` command line.

Errors a user can fix (``XprospectError``) print one line on stderr and exit with code 2; other
failures print one line and exit with code 1. ``--debug`` shows the full traceback instead.
Subcommands import heavy modules (TensorFlow) only when they run, so ``xprospect info`` is quick.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from xprospect import __version__
from xprospect.errors import XprospectError

__all__ = ["build_parser", "main"]

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 1


# === Subcommands ===


def _cmd_info(args: argparse.Namespace) -> int:
    from xprospect.io import X2CTCase, read_any

    obj = read_any(args.path)
    if isinstance(obj, X2CTCase):
        info: dict[str, Any] = {
            "kind": "x2ct-case",
            "volume": obj.volume.describe(),
            "frontal": obj.frontal.describe(),
            "lateral": obj.lateral.describe(),
        }
    else:
        info = obj.describe()
    if args.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        _print_info(info)
    return 0


def _print_info(info: dict[str, Any], indent: str = "") -> None:
    for key, value in info.items():
        if isinstance(value, dict):
            print(f"{indent}{key}:")
            _print_info(value, indent + "  ")
        else:
            print(f"{indent}{key:<18} {_fmt(value)}")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list | tuple):
        return " x ".join(_fmt(v) for v in value) if value else "-"
    return str(value)


def _cmd_demo(args: argparse.Namespace) -> int:
    from xprospect.data.samples import sample_ct
    from xprospect.demo import DemoSettings, run_demo
    from xprospect.io import read_nifti, write_nifti
    from xprospect.preprocessing import ct_preprocessing
    from xprospect.viz import save_orthogonal_slices

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    raw = read_nifti(sample_ct().ct_path)
    volume = ct_preprocessing(size=128)(raw)
    write_nifti(volume, out / "sample_ct_128.nii.gz")
    save_orthogonal_slices(
        [raw, volume], out / "sample_ct_slices.png", titles=["original", "preprocessed 128^3"]
    )
    print(f"[demo] real sample CT read and preprocessed in {time.perf_counter() - t0:.1f} s")
    settings = DemoSettings(
        train_cases=args.train_cases, test_cases=args.test_cases, steps=args.steps
    )
    report = run_demo(out, settings)
    print(f"report: {report.resolve()}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from xprospect.cli.train import run_train

    return run_train(args)


def _cmd_drr(args: argparse.Namespace) -> int:
    import numpy as np

    from xprospect.io import read_volume, write_png
    from xprospect.preprocessing import ct_preprocessing
    from xprospect.projection import render_drr
    from xprospect.utils import atomic_path

    volume = ct_preprocessing(size=args.size, fov_mm=args.fov_mm)(read_volume(args.ct))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    geometry = {"mean": "xprospect_mean"}.get(args.geometry, args.geometry)
    for view in ("frontal", "lateral"):
        line = render_drr(volume, view, geometry, args.size, "line_integral", backend=args.backend)
        with atomic_path(out / f"{view}.npy") as tmp, tmp.open("wb") as f:
            np.save(f, line.array)
        peak = float(line.array.max()) or 1.0
        png = write_png(line.array / peak, out / f"{view}.png", bits=args.bits)
        print(f"{view:<8} {line.shape[0]}x{line.shape[1]}  line integral max {peak:.3f}  -> {png}")
    return 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    from xprospect.data.prepare import PrepareConfig, prepare_dataset

    cfg = PrepareConfig(
        size=args.size,
        fov_mm=args.fov_mm,
        geometry={"mean": "xprospect_mean"}.get(args.geometry, args.geometry),
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        split_seed=args.seed,
        shard_size=args.shard_size,
    )
    result = prepare_dataset(
        args.inputs,
        args.output,
        cfg,
        phantoms=args.phantoms,
        workers=args.workers,
        overwrite=args.overwrite,
        split_file=args.splits,
    )
    print(
        f"wrote {len(result.written)} case(s), skipped {len(result.skipped)} already done, "
        f"{len(result.failed)} failed (see failures.json) in {result.seconds:.1f} s "
        f"-> {result.output}"
    )
    return 0 if not result.failed else EXIT_USER_ERROR


def _cmd_models(args: argparse.Namespace) -> int:
    from xprospect.models import list_presets

    rows = list_presets(sizes=tuple(args.sizes))
    print(f"{'preset':<16} {'size':>5} {'generator':>12} {'discriminator':>14}  description")
    for r in rows:
        d = f"{r.discriminator_params:>14,}" if r.discriminator_params else f"{'-':>14}"
        print(f"{r.name:<16} {r.size:>5} {r.params:>12,} {d}  {r.description}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from xprospect.evaluation import evaluate_dataset, summary_markdown
    from xprospect.inference import load_predictor

    predictor = load_predictor(args.model)
    out = Path(args.output or Path(args.model) / f"eval_{args.split}")
    result = evaluate_dataset(
        predictor, args.data, out, split=args.split, mode=args.mode, max_cases=args.max_cases
    )
    print(summary_markdown(result.summary, title=f"{args.split} split ({args.mode} metrics)"))
    print(f"per-case CSV, summary.json, summary.md and panels in {out}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from xprospect.inference import load_predictor
    from xprospect.io import read_radiograph, write_nifti
    from xprospect.viz import save_orthogonal_slices

    predictor = load_predictor(args.model)
    xrays = {"frontal": read_radiograph(args.frontal, view="PA")}
    if args.lateral:
        xrays["lateral"] = read_radiograph(args.lateral, view="LATERAL")
    missing = [v for v in predictor.views if v not in xrays]
    from xprospect.errors import ConfigError

    if missing:
        raise ConfigError(f"this model needs --{missing[0]} (it takes {list(predictor.views)})")
    prepared = None
    if args.style_model:
        from xprospect.style.apply import load_style_model

        prepared = {}
        for folder in args.style_model:
            style = load_style_model(folder)
            if style.view not in xrays:
                raise ConfigError(f"style model {folder} is for the {style.view} view, not given")
            prepared[style.view] = style.real_to_drr(xrays[style.view], predictor.size)
    volume = predictor.reconstruct(xrays, prepared=prepared)
    out = write_nifti(volume, args.out)
    print(f"wrote {out} {volume.shape} at {volume.spacing_mm[0]:.2f} mm")
    if args.dicom_out:
        from xprospect.io.dicom import write_dicom_series

        print(f"wrote {write_dicom_series(volume, args.dicom_out, overwrite=args.overwrite)}")
    preview = Path(str(out).removesuffix(".gz").removesuffix(".nii") + "_preview.png")
    print(f"wrote {save_orthogonal_slices(volume, preview, titles=['prediction'])}")
    return 0


# === Parser ===

Handler = Callable[[argparse.Namespace], int]


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

    p = sub.add_parser("info", help="print what a CT or X-ray file holds")
    p.add_argument("path", help="DICOM folder or file, .nii/.nii.gz, X2CT .h5/case, PNG/JPEG")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(handler=_cmd_info)

    p = sub.add_parser("drr", help="render frontal and lateral DRRs of one CT (PNG + .npy)")
    p.add_argument("ct", help="CT file or DICOM folder")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--geometry", default="x2ct", choices=("x2ct", "mean", "parallel"))
    p.add_argument("--size", type=int, default=128, help="cube and detector size (default 128)")
    p.add_argument("--fov-mm", type=float, default=320.0, help="field of view of the cube")
    p.add_argument("--bits", type=int, default=16, choices=(8, 16), help="PNG bit depth")
    p.add_argument("--backend", default="tensorflow", choices=("tensorflow", "plastimatch"))
    p.set_defaults(handler=_cmd_drr)

    p = sub.add_parser("prepare", help="build a TFRecord dataset (CT + DRRs) from CT or phantoms")
    p.add_argument("inputs", nargs="*", help="DICOM folders, NIfTI files, X2CT case folders")
    p.add_argument("--output", required=True, help="dataset folder")
    p.add_argument("--phantoms", type=int, default=0, help="add N procedural chest phantoms")
    p.add_argument("--size", type=int, default=128, help="cube size, e.g. 64 or 128")
    p.add_argument("--fov-mm", type=float, default=320.0, help="field of view of the cube")
    p.add_argument("--geometry", default="x2ct", choices=("x2ct", "mean", "parallel"))
    p.add_argument("--workers", type=int, default=1, help="processes reading cases")
    p.add_argument("--overwrite", action="store_true", help="replace a different dataset")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--test-fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0, help="seed of the patient-level split")
    p.add_argument("--splits", help="JSON or CSV (id,split) assigning cases or patients")
    p.add_argument("--shard-size", type=int, default=16, help="cases per TFRecord shard")
    p.set_defaults(handler=_cmd_prepare)

    p = sub.add_parser("models", help="list model presets with parameter counts")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128], help="cube sizes")
    p.set_defaults(handler=_cmd_models)

    p = sub.add_parser("evaluate", help="score a model and two baselines on a dataset split")
    p.add_argument("--model", required=True, help="run folder, .keras file or SavedModel")
    p.add_argument("--data", required=True, help="dataset folder made by 'xprospect prepare'")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--output", help="report folder (default RUN/eval_SPLIT)")
    p.add_argument("--mode", default="xprospect", choices=("xprospect", "x2ct_compatible"))
    p.add_argument("--max-cases", type=int, help="stop after N cases")
    p.set_defaults(handler=_cmd_evaluate)

    p = sub.add_parser("predict", help="reconstruct a CT from X-ray files (PNG or DICOM)")
    p.add_argument("--model", required=True, help="run folder, .keras file or SavedModel")
    p.add_argument("--frontal", required=True, help="frontal (PA/AP) radiograph")
    p.add_argument("--lateral", help="lateral radiograph (biplanar models)")
    p.add_argument("--out", required=True, help="output .nii or .nii.gz")
    p.add_argument("--dicom-out", help="also write a DICOM series to this folder")
    p.add_argument("--overwrite", action="store_true", help="replace an existing DICOM folder")
    p.add_argument(
        "--style-model",
        action="append",
        default=[],
        help="style run (xprospect style train) mapping that view's real X-ray to DRR style "
        "first (repeat for the other view)",
    )
    p.set_defaults(handler=_cmd_predict)

    from xprospect.cli.style import add_style_parser

    add_style_parser(sub)

    from xprospect.cli.export import add_export_parser

    add_export_parser(sub)

    from xprospect.cli.train import add_train_arguments

    p = sub.add_parser("train", help="train a model from an experiment YAML (resumable)")
    add_train_arguments(p)
    p.set_defaults(handler=_cmd_train)

    from xprospect.cli.tune import add_tune_parser

    add_tune_parser(sub)

    p = sub.add_parser("demo", help="run the main job on built-in data (about 15 minutes)")
    p.add_argument("--output", default="demo_output", help="output folder (default demo_output)")
    p.add_argument("--train-cases", type=int, default=200, help="training phantoms")
    p.add_argument("--test-cases", type=int, default=20, help="test phantoms")
    p.add_argument("--steps", type=int, help="training steps (default: demo.yaml's)")
    p.set_defaults(handler=_cmd_demo)
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
    # Library progress notes stay quiet unless asked: an error must be the only line on stderr.
    level = logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="xprospect: %(message)s")
    if not args.debug:
        # Library warnings are messages for the user, not stack dumps.
        warnings.showwarning = _one_line_warning
    try:
        return handler(args)
    except XprospectError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"xprospect: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("xprospect: interrupted", file=sys.stderr)
        return 130
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
