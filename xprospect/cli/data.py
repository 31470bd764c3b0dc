"""``xprospect info | drr | prepare``: look at a CT or X-ray file, render DRRs, build a dataset."""

from __future__ import annotations

import argparse
import json
from typing import Any

from xprospect.cli.common import EXIT_INPUT, Subparsers, print_error
from xprospect.constants import DEFAULT_FOV_MM, VIEWS
from xprospect.phantoms import PHANTOM_CALIBRATIONS

__all__ = ["add_parser", "run_drr", "run_info", "run_prepare"]

_GEOMETRY_CHOICES = ("x2ct", "mean", "parallel")
"""The ``--geometry`` names; ``mean`` is short for the library's ``xprospect_mean``."""


def add_parser(sub: Subparsers) -> None:
    """Adds ``info``, ``drr`` and ``prepare`` to the CLI's subparsers."""
    p = sub.add_parser("info", help="print what a CT or X-ray file holds")
    p.add_argument("path", help="DICOM folder or file, .nii/.nii.gz, X2CT .h5/case, PNG/JPEG")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(handler=run_info)

    p = sub.add_parser("drr", help="render frontal and lateral DRRs of one CT (PNG + .npy)")
    p.add_argument("ct", help="CT file or DICOM folder")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--geometry", default="x2ct", choices=_GEOMETRY_CHOICES)
    p.add_argument("--size", type=int, default=128, help="cube and detector size (default 128)")
    p.add_argument(
        "--fov-mm", type=float, default=DEFAULT_FOV_MM, help="field of view of the cube (mm)"
    )
    p.add_argument("--bits", type=int, default=16, choices=(8, 16), help="PNG bit depth")
    p.add_argument("--backend", default="tensorflow", choices=("tensorflow", "plastimatch"))
    p.add_argument(
        "--overwrite", action="store_true", help="replace existing frontal/lateral .png and .npy"
    )
    p.add_argument("--force", action="store_true", help="accept an implausible CT (few slices)")
    p.set_defaults(handler=run_drr)

    p = sub.add_parser("prepare", help="build a TFRecord dataset (CT + DRRs) from CT or phantoms")
    p.add_argument("inputs", nargs="*", help="DICOM folders, NIfTI files, X2CT case folders")
    p.add_argument("--output", required=True, help="dataset folder")
    p.add_argument("--phantoms", type=int, default=0, help="add N procedural chest phantoms")
    p.add_argument(
        "--phantom-calibration",
        default="original",
        choices=sorted(PHANTOM_CALIBRATIONS),
        help="the phantoms' population: 'original', or 'real_ct' (measured against real chest "
        "CT: framing, body size, fat, bone and lung HU, scanner blur)",
    )
    p.add_argument("--size", type=int, default=128, help="cube size, e.g. 64 or 128")
    p.add_argument(
        "--fov-mm", type=float, default=DEFAULT_FOV_MM, help="field of view of the cube (mm)"
    )
    p.add_argument("--geometry", default="x2ct", choices=_GEOMETRY_CHOICES)
    p.add_argument("--workers", type=int, default=1, help="processes reading cases")
    p.add_argument("--overwrite", action="store_true", help="replace a different dataset")
    p.add_argument(
        "--retry-failed",
        action="store_true",
        help="read the cases listed in failures.json again (a case whose input changed is "
        "always read again)",
    )
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--test-fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0, help="seed of the patient-level split")
    p.add_argument("--splits", help="JSON or CSV (id,split) assigning cases or patients")
    p.add_argument("--shard-size", type=int, default=16, help="cases per TFRecord shard")
    p.add_argument(
        "--real-augment",
        type=int,
        default=0,
        metavar="N",
        help="add N augmented variants of each real CT (ids <case>_aug1..N, in the source's "
        "split): a small random rotation/scale/shift, a smooth deformation of a few mm and a "
        "HU scale/offset/noise that keeps air; drawn parameters and seeds go in the manifest",
    )
    p.add_argument(
        "--augment-seed", type=int, default=0, help="seed of the --real-augment variants"
    )
    p.add_argument(
        "--keep-couch",
        action="store_true",
        help="keep what lies outside the patient in real CTs (by default the couch is set to air: "
        "a radiograph of a standing patient shows none)",
    )
    p.add_argument(
        "--force", action="store_true", help="accept implausible CTs (few slices, constant)"
    )
    p.set_defaults(handler=run_prepare)


def _geometry_name(choice: str) -> str:
    """The library's geometry name for a ``--geometry`` choice."""
    return {"mean": "xprospect_mean"}.get(choice, choice)


def _format_value(value: Any) -> str:
    """One value of ``xprospect info``'s text output: floats to 6 digits, sizes as ``A x B``."""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list | tuple):
        return " x ".join(_format_value(v) for v in value) if value else "-"
    return str(value)


def _print_info(info: dict[str, Any], indent: str = "") -> None:
    for key, value in info.items():
        if isinstance(value, dict):
            print(f"{indent}{key}:")
            _print_info(value, indent + "  ")
        else:
            print(f"{indent}{key:<18} {_format_value(value)}")


def run_info(args: argparse.Namespace) -> int:
    """Runs ``xprospect info``: what :func:`xprospect.io.read_any` finds, as text or JSON."""
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


def run_drr(args: argparse.Namespace) -> int:
    """Runs ``xprospect drr``: frontal and lateral line integrals as ``.npy`` and PNG.

    The folder may exist; the four files are checked before anything is rendered (an existing
    one is an :class:`~xprospect.errors.OutputExistsError` unless ``--overwrite``).
    """
    import numpy as np

    from xprospect.io import check_ct, read_volume, write_png
    from xprospect.preprocessing import ct_preprocessing
    from xprospect.projection import render_drr
    from xprospect.utils import atomic_path, check_output

    ct = check_ct(read_volume(args.ct), force=args.force)
    out = check_output(args.out, overwrite=True, folder=True)  # a folder, existing or not
    for view in VIEWS:
        for suffix in (".npy", ".png"):
            check_output(out / f"{view}{suffix}", args.overwrite)
    volume = ct_preprocessing(size=args.size, fov_mm=args.fov_mm)(ct)
    geometry = _geometry_name(args.geometry)
    for view in VIEWS:
        line = render_drr(volume, view, geometry, args.size, "line_integral", backend=args.backend)
        with atomic_path(out / f"{view}.npy", overwrite=args.overwrite) as tmp, tmp.open("wb") as f:
            np.save(f, line.array)
        peak = float(line.array.max()) or 1.0
        png = write_png(
            line.array / peak, out / f"{view}.png", bits=args.bits, overwrite=args.overwrite
        )
        print(f"{view:<8} {line.shape[0]}x{line.shape[1]}  line integral max {peak:.3f}  -> {png}")
    return 0


def run_prepare(args: argparse.Namespace) -> int:
    """Runs ``xprospect prepare``; exits with :data:`~xprospect.cli.common.EXIT_INPUT` and one
    error line naming the first failed input when a case failed (all are in ``failures.json``)."""
    from xprospect.data.prepare import PrepareConfig, prepare_dataset

    cfg = PrepareConfig(
        size=args.size,
        fov_mm=args.fov_mm,
        geometry=_geometry_name(args.geometry),
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        split_seed=args.seed,
        shard_size=args.shard_size,
        real_augment=args.real_augment,
        augment_seed=args.augment_seed,
        phantom_calibration=args.phantom_calibration,
        remove_couch=not args.keep_couch,
    )
    result = prepare_dataset(
        args.inputs,
        args.output,
        cfg,
        phantoms=args.phantoms,
        workers=args.workers,
        overwrite=args.overwrite,
        retry_failed=args.retry_failed,
        split_file=args.splits,
        force=args.force,
    )
    again = f" ({len(result.reprocessed)} built again)" if result.reprocessed else ""
    print(
        f"wrote {len(result.written)} case(s){again}, skipped {len(result.skipped)} already done, "
        f"{len(result.failed)} failed (see failures.json) in {result.seconds:.1f} s "
        f"-> {result.output}"
    )
    if not result.failed:
        return 0
    first = result.failed[0]["error"]
    print_error(
        f"{len(result.failed)} case(s) failed, listed in {result.output / 'failures.json'}; "
        f"the first: {first}; fix or remove the input(s) and rerun"
    )
    return EXIT_INPUT
