"""``xprospect evaluate``: a model and the two baselines scored on one dataset split."""

from __future__ import annotations

import argparse
from pathlib import Path

from xprospect.cli.common import Subparsers, add_trust_model_flag, model_errors

__all__ = ["add_parser", "run_evaluate"]


def add_parser(sub: Subparsers) -> None:
    """Adds ``evaluate`` to the CLI's subparsers."""
    p = sub.add_parser("evaluate", help="score a model and two baselines on a dataset split")
    p.add_argument("--model", required=True, help="run folder, .keras file or SavedModel")
    p.add_argument("--data", required=True, help="dataset folder made by 'xprospect prepare'")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument(
        "--output", help="report folder (default RUN/eval_SPLIT, or beside a model file)"
    )
    p.add_argument("--mode", default="xprospect", choices=("xprospect", "x2ct_compatible"))
    p.add_argument(
        "--protocol",
        choices=("xprospect", "x2ct", "duolift", "cvaa", "s-xr2ct", "xctdiff"),
        help="a paper's own metric definitions (docs/reproducing.md) instead of --mode",
    )
    p.add_argument(
        "--lpips-vgg-weights",
        help="VGG16 backbone weights file for LPIPS (default $XPROSPECT_LPIPS_VGG_WEIGHTS)",
    )
    p.add_argument(
        "--lpips-alex-weights",
        help="AlexNet backbone weights file for LPIPS (default $XPROSPECT_LPIPS_ALEX_WEIGHTS)",
    )
    p.add_argument(
        "--skip-lpips", action="store_true", help="leave the protocol's LPIPS columns out"
    )
    p.add_argument(
        "--whole-cube",
        action="store_true",
        help="score every voxel of the cube, also where a real CT's scan did not reach "
        "(default: inside each case's scanned region when the split has a partly scanned case)",
    )
    p.add_argument("--max-cases", type=int, help="stop after N cases")
    p.add_argument(
        "--overwrite", action="store_true", help="write into a report folder that is not empty"
    )
    add_trust_model_flag(p)
    p.set_defaults(handler=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    """Runs ``xprospect evaluate``: prints the summary table, writes the report folder.

    The report folder (default ``RUN/eval_SPLIT``, beside a model file) must be new or empty,
    checked before the model is loaded, unless ``--overwrite``; so is the dataset's manifest.
    Errors of loading the model are model errors (exit 6).
    """
    from xprospect.data.manifest import read_manifest
    from xprospect.evaluation import evaluate_dataset, summary_markdown
    from xprospect.inference import load_predictor
    from xprospect.protocols import get_protocol
    from xprospect.utils import check_output

    protocol = None
    if args.protocol is not None:
        protocol = get_protocol(args.protocol)
        if args.skip_lpips:
            protocol = protocol.without_lpips()
    lpips_weights = {"vgg": args.lpips_vgg_weights, "alex": args.lpips_alex_weights}
    if protocol is not None:
        from xprospect.lpips import backbone_weights_path

        # Missing backbone weights are a config error before anything is loaded.
        for net in protocol.needs_lpips:
            backbone_weights_path(net, lpips_weights[net])
    model = Path(args.model)
    default = (model if model.is_dir() else model.parent) / f"eval_{args.split}"
    out = check_output(args.output or default, args.overwrite, folder=True)
    read_manifest(args.data)
    with model_errors(args.model):
        predictor = load_predictor(args.model, trust=args.trust_model)
    result = evaluate_dataset(
        predictor,
        args.data,
        out,
        split=args.split,
        mode=args.mode,
        max_cases=args.max_cases,
        overwrite=args.overwrite,
        protocol=protocol,
        lpips_weights=lpips_weights,
        validity_mask=not args.whole_cube,
    )
    label = args.mode if protocol is None else f"{protocol.name} protocol"
    title = f"{args.split} split ({label} metrics)"
    print(summary_markdown(result.summary, title=title, note=result.scope_note))
    print(f"per-case CSV, summary.json, summary.md and panels in {out}")
    return 0
