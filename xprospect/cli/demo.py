"""``xprospect demo``: the real sample CT preprocessed, then :func:`xprospect.demo.run_demo`."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from xprospect.cli.common import Subparsers

__all__ = ["add_parser", "run_demo"]


def add_parser(sub: Subparsers) -> None:
    """Adds ``demo`` to the CLI's subparsers."""
    p = sub.add_parser("demo", help="run the main job on built-in data (about 15 minutes)")
    p.add_argument("--output", default="demo_output", help="output folder (default demo_output)")
    p.add_argument("--train-cases", type=int, default=200, help="training phantoms")
    p.add_argument("--test-cases", type=int, default=20, help="test phantoms")
    p.add_argument("--steps", type=int, help="training steps (default: demo.yaml's)")
    p.set_defaults(handler=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    """Runs ``xprospect demo``: checks the real sample CT reads, then the demo with
    :class:`~xprospect.demo.DemoSettings` from the flags; prints the report's path."""
    from xprospect import demo
    from xprospect.data.samples import sample_ct
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
    settings = demo.DemoSettings(
        train_cases=args.train_cases, test_cases=args.test_cases, steps=args.steps
    )
    report = demo.run_demo(out, settings)
    print(f"report: {report.resolve()}")
    return 0
