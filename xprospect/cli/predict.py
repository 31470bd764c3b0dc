"""``xprospect predict``: a CT reconstructed from X-ray files (NIfTI, optional DICOM, preview)."""

from __future__ import annotations

import argparse
from pathlib import Path

from xprospect.cli.common import Subparsers

__all__ = ["add_parser", "run_predict"]


def add_parser(sub: Subparsers) -> None:
    """Adds ``predict`` to the CLI's subparsers."""
    p = sub.add_parser("predict", help="reconstruct a CT from X-ray files (PNG or DICOM)")
    p.add_argument("--model", required=True, help="run folder, .keras file or SavedModel")
    p.add_argument("--frontal", required=True, help="frontal (PA/AP) radiograph")
    p.add_argument("--lateral", help="lateral radiograph (biplanar models)")
    p.add_argument("--out", required=True, help="output .nii or .nii.gz")
    p.add_argument("--dicom-out", help="also write a DICOM series to this folder")
    p.add_argument("--overwrite", action="store_true", help="replace an existing DICOM folder")
    p.add_argument(
        "--force",
        action="store_true",
        help="accept implausible X-rays (tiny, elongated, view tags contradicting the role)",
    )
    p.add_argument(
        "--style-model",
        action="append",
        default=[],
        help="style run (xprospect style train) mapping that view's real X-ray to DRR style "
        "first (repeat for the other view)",
    )
    p.set_defaults(handler=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    """Runs ``xprospect predict``; a missing view or a style model for a view not given is a
    :class:`~xprospect.errors.ConfigError`."""
    from xprospect.errors import ConfigError
    from xprospect.io import check_radiograph, read_radiograph, write_nifti

    # Every input is read and checked before the model is loaded (seconds), so a missing or
    # implausible file fails at once.
    xrays = {"frontal": read_radiograph(args.frontal, view="PA")}
    if args.lateral:
        xrays["lateral"] = read_radiograph(args.lateral, view="LATERAL")
    for role, xray in xrays.items():
        check_radiograph(xray, role, force=args.force)  # type: ignore[arg-type]

    from xprospect.inference import load_predictor
    from xprospect.viz import save_orthogonal_slices

    predictor = load_predictor(args.model)
    missing = [v for v in predictor.views if v not in xrays]
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
