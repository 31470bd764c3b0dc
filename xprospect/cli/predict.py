"""``xprospect predict``: a CT reconstructed from X-ray files (NIfTI, optional DICOM, preview)."""

from __future__ import annotations

import argparse
from pathlib import Path

from xprospect.cli.common import Subparsers, add_trust_model_flag, model_errors, print_error

__all__ = ["add_parser", "preview_path", "run_predict"]


def preview_path(out: str | Path) -> Path:
    """The preview PNG written beside the NIfTI output: ``ct.nii.gz`` -> ``ct_preview.png``."""
    return Path(str(out).removesuffix(".gz").removesuffix(".nii") + "_preview.png")


def add_parser(sub: Subparsers) -> None:
    """Adds ``predict`` to the CLI's subparsers."""
    p = sub.add_parser("predict", help="reconstruct a CT from X-ray files (PNG or DICOM)")
    p.add_argument("--model", required=True, help="run folder, .keras file or SavedModel")
    p.add_argument("--frontal", help="frontal (PA/AP) radiograph")
    p.add_argument("--lateral", help="lateral radiograph (biplanar models)")
    p.add_argument("--out", help="output .nii or .nii.gz")
    p.add_argument(
        "--batch",
        help="many cases: a CSV (frontal, lateral, case_id columns) or a radiograph folder with "
        "manifest.csv (file, view, pair_id); writes CASE.nii.gz, CASE_preview.png, "
        "reprojection.csv and failures.json into --out-dir",
    )
    p.add_argument("--out-dir", help="output folder of --batch (new or empty)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (--batch)")
    p.add_argument("--dicom-out", help="also write a DICOM series to this folder")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing outputs (the NIfTI file, its preview PNG, the DICOM folder)",
    )
    add_trust_model_flag(p)
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
        "first (repeat for the other view); --trust-model covers it too",
    )
    p.add_argument(
        "--sampling-steps",
        type=int,
        help="diffusion models (XctDiff): DDIM sampling steps (default: the model's, 50)",
    )
    p.add_argument(
        "--seed",
        type=int,
        help="diffusion models (XctDiff): seed of the sampled noise (default: the model's, 0); "
        "the same seed gives the same volume",
    )
    # Which flags go together depends on --batch, which argparse cannot say: run_predict checks
    # and reports a wrong combination as argparse would (one line, exit 2).
    p.set_defaults(handler=run_predict, usage_error=p.error)


def run_predict(args: argparse.Namespace) -> int:
    """Runs ``xprospect predict``: one case (``--frontal``, ``--out``) or a batch (``--batch``,
    ``--out-dir``; see :func:`run_predict_batch`)."""
    if args.batch or args.out_dir:
        if not (args.batch and args.out_dir) or args.frontal or args.lateral or args.out:
            args.usage_error("--batch goes with --out-dir, instead of --frontal/--lateral/--out")
        return run_predict_batch(args)
    missing = [
        flag for flag, value in (("--frontal", args.frontal), ("--out", args.out)) if not value
    ]
    if missing:
        args.usage_error(
            f"the following arguments are required: {', '.join(missing)} (or --batch and --out-dir)"
        )
    return run_predict_one(args)


def run_predict_batch(args: argparse.Namespace) -> int:
    """Runs ``xprospect predict --batch``: the case list and the output folder are checked, then
    the model (and style models) load once; a bad case is listed in ``failures.json`` and the
    batch goes on. Exits 0 when every case was predicted, 4 (input) when some failed."""
    from xprospect.batch import FAILURES_FILE, predict_batch, read_cases
    from xprospect.cli.common import EXIT_INPUT
    from xprospect.errors import ConfigError
    from xprospect.inference import load_predictor
    from xprospect.style.apply import load_style_model
    from xprospect.utils import check_output

    check_output(args.out_dir, args.overwrite, folder=True)
    styles = {}
    for folder in args.style_model:
        with model_errors(folder):
            style = load_style_model(folder, trust=args.trust_model)
        styles[style.view] = style
    with model_errors(args.model):
        predictor = load_predictor(args.model, trust=args.trust_model)
    cases = read_cases(args.batch, predictor.views)
    for view, style in styles.items():
        if view not in predictor.views:
            raise ConfigError(f"style model {style.folder} is for the {view} view, not an input")
        with model_errors(style.folder):
            style.generator("real2drr")
    result = predict_batch(
        predictor,
        cases,
        args.out_dir,
        style_inputs=lambda view, xray: styles[view].real_to_drr(xray, predictor.size),
        styled_views=tuple(styles),
        force=args.force,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    print(f"wrote {len(result.written)} of {len(cases)} case(s) to {result.output_dir}")
    if result.failures:
        first = result.failures[0]
        print_error(
            f"{len(result.failures)} case(s) failed, listed in "
            f"{result.output_dir / FAILURES_FILE}; first: {first['error']}"
        )
        return EXIT_INPUT
    return 0


def run_predict_one(args: argparse.Namespace) -> int:
    """Runs ``xprospect predict``; a missing view or a style model for a view not given is a
    :class:`~xprospect.errors.ConfigError`.

    Every output (the NIfTI file, its ``_preview.png`` and the ``--dicom-out`` folder) is checked
    first: one that exists is an :class:`~xprospect.errors.OutputExistsError` unless
    ``--overwrite``, and is left as it was. The X-rays are read next, before the model is loaded
    (a bad input fails in a moment), then the style runs' metadata (a style model for a view
    not given fails before any model loads); errors of loading a model are model errors (exit 6).
    ``--trust-model`` covers the style models' generators as well as the model.
    """
    from xprospect.errors import ConfigError
    from xprospect.inference import load_predictor
    from xprospect.io import check_radiograph, read_radiograph, write_nifti
    from xprospect.io.nifti import is_nifti_path
    from xprospect.style.apply import load_style_model
    from xprospect.utils import check_output
    from xprospect.viz import save_orthogonal_slices

    if not is_nifti_path(args.out):
        raise ConfigError("--out must end in .nii or .nii.gz", args.out)
    out = check_output(args.out, args.overwrite)
    preview = check_output(preview_path(out), args.overwrite)
    if args.dicom_out:
        dicom = check_output(args.dicom_out, args.overwrite, folder=True)
        if dicom.absolute() in (out.absolute(), preview.absolute()):
            raise ConfigError("--dicom-out must be a folder of its own, not --out", dicom)
    xrays = {"frontal": read_radiograph(args.frontal, view="PA")}
    if args.lateral:
        xrays["lateral"] = read_radiograph(args.lateral, view="LATERAL")
    for role, xray in xrays.items():
        check_radiograph(xray, role, force=args.force)  # type: ignore[arg-type]
    styles = []
    for folder in args.style_model:
        with model_errors(folder):
            style = load_style_model(folder, trust=args.trust_model)  # metadata only
        if style.view not in xrays:
            raise ConfigError(f"style model {folder} is for the {style.view} view, not given")
        styles.append(style)
    with model_errors(args.model):
        predictor = load_predictor(args.model, trust=args.trust_model)
    predictor.set_sampling(getattr(args, "sampling_steps", None), getattr(args, "seed", None))
    missing = [v for v in predictor.views if v not in xrays]
    if missing:
        raise ConfigError(f"this model needs --{missing[0]} (it takes {list(predictor.views)})")
    prepared = None
    if styles:
        prepared = {}
        for style in styles:
            with model_errors(style.folder):
                style.generator("real2drr")
            prepared[style.view] = style.real_to_drr(xrays[style.view], predictor.size)
    volume = predictor.reconstruct(xrays, prepared=prepared)
    write_nifti(volume, out, overwrite=args.overwrite)
    print(f"wrote {out} {volume.shape} at {volume.spacing_mm[0]:.2f} mm")
    if args.dicom_out:
        from xprospect.io.dicom import write_dicom_series

        print(f"wrote {write_dicom_series(volume, args.dicom_out, overwrite=args.overwrite)}")
    save_orthogonal_slices(volume, preview, titles=["prediction"], overwrite=args.overwrite)
    print(f"wrote {preview}")
    return 0
