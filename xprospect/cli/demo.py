"""``xprospect demo``: the real sample CT preprocessed, then :func:`xprospect.demo.run_demo`."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from xprospect.cli.common import Subparsers
from xprospect.demo import OUTPUT_NAMES, DemoSettings
from xprospect.phantoms import PHANTOM_CALIBRATIONS

__all__ = ["SAMPLE_NAMES", "add_parser", "check_demo_folder", "run_demo"]


def add_parser(sub: Subparsers) -> None:
    """Adds ``demo`` to the CLI's subparsers."""
    p = sub.add_parser("demo", help="run the main job on built-in data (about 15 minutes)")
    p.add_argument("--output", default="demo_output", help="output folder (default demo_output)")
    p.add_argument(
        "--train-cases",
        type=int,
        default=DemoSettings.train_cases,
        help="training phantoms (default %(default)s)",
    )
    p.add_argument(
        "--test-cases",
        type=int,
        default=DemoSettings.test_cases,
        help="test phantoms (default %(default)s)",
    )
    p.add_argument("--steps", type=int, help="training steps (default: demo.yaml's)")
    p.add_argument(
        "--phantom-calibration",
        choices=sorted(PHANTOM_CALIBRATIONS),
        help="the phantoms' population (default: real_ct, measured against real chest CT; "
        "see docs/phantoms.md)",
    )
    p.add_argument(
        "--preset",
        help="the model preset to train (default: demo.yaml's; 'xprospect models' lists them)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="write into an output folder that holds other files (a demo's own folder is "
        "continued without it)",
    )
    p.set_defaults(handler=run_demo)


SAMPLE_NAMES = ("sample_ct_128.nii.gz", "sample_ct_slices.png")
"""What the command writes itself before :func:`xprospect.demo.run_demo`."""


def check_demo_folder(path: str | Path, overwrite: bool) -> Path:
    """The demo's output folder, checked before anything runs: new, empty, or holding only what
    the demo writes (a rerun continues it) unless ``overwrite``.

    Raises:
        OutputExistsError: The folder holds anything else and ``overwrite`` is False.
        OutputError: ``path`` is a file.
    """
    from xprospect.errors import OutputExistsError
    from xprospect.utils import check_output

    out = check_output(path, overwrite=True, folder=True)
    if overwrite or out.is_symlink() or not out.is_dir():
        return check_output(out, overwrite, folder=True)
    ours = OUTPUT_NAMES | set(SAMPLE_NAMES)
    # An interrupted demo may leave its temporary files, ".NAME.xxxx.tmp".
    foreign = sorted(
        e.name
        for e in out.iterdir()
        if e.name not in ours and not any(e.name.startswith(f".{n}.") for n in ours)
    )
    if foreign:
        raise OutputExistsError(
            f"holds files the demo did not write ({', '.join(foreign[:3])}); pass --overwrite "
            "to write into it anyway or choose another --output",
            out,
        )
    return out


def run_demo(args: argparse.Namespace) -> int:
    """Runs ``xprospect demo``: checks the output folder (:func:`check_demo_folder`) and that the
    real sample CT reads, then the demo with :class:`~xprospect.demo.DemoSettings` from the
    flags; prints the report's path."""
    from xprospect import demo
    from xprospect.data.samples import sample_ct
    from xprospect.io import read_nifti, write_nifti
    from xprospect.preprocessing import ct_preprocessing
    from xprospect.viz import save_orthogonal_slices

    chosen = {
        k: v
        for k, v in (("phantom_calibration", args.phantom_calibration), ("preset", args.preset))
        if v
    }
    settings = demo.DemoSettings(
        train_cases=args.train_cases, test_cases=args.test_cases, steps=args.steps, **chosen
    )
    demo.check_settings(settings)
    out = check_demo_folder(args.output, args.overwrite)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    raw = read_nifti(sample_ct().ct_path)
    volume = ct_preprocessing(size=128)(raw)
    write_nifti(volume, out / SAMPLE_NAMES[0])
    save_orthogonal_slices(
        [raw, volume], out / SAMPLE_NAMES[1], titles=["original", "preprocessed 128^3"]
    )
    print(f"[demo] real sample CT read and preprocessed in {time.perf_counter() - t0:.1f} s")
    report = demo.run_demo(out, settings)
    print(f"report: {report.resolve()}")
    return 0
