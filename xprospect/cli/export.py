"""``xprospect export``: a trained model to a TF Serving SavedModel, by
:func:`xprospect.export.export_model`."""

from __future__ import annotations

import argparse
from pathlib import Path

from xprospect.cli.common import Subparsers, model_errors

__all__ = ["add_parser", "run_export"]


def add_parser(sub: Subparsers) -> None:
    """Adds ``export`` to the CLI's subparsers."""
    p = sub.add_parser("export", help="export a trained model as a TF Serving SavedModel")
    p.add_argument("run", help="run folder (model.keras + config.yaml) or a .keras file")
    p.add_argument("--name", required=True, help="model name in TF Serving (and its folder)")
    p.add_argument("--version", type=int, help="version number (default: next free)")
    p.add_argument("--output-dir", default="saved_models", help="model root (default saved_models)")
    p.add_argument(
        "--serving-root",
        help="base_path prefix written to models.config, e.g. /models inside the "
        "tensorflow/serving container (default: the output folder's absolute path)",
    )
    p.add_argument("--no-warmup", action="store_true", help="skip the warmup requests file")
    p.set_defaults(handler=run_export)


def run_export(args: argparse.Namespace) -> int:
    """Runs ``xprospect export``; prints the version folder, sizes and the TF Serving config."""
    from xprospect.export import MODELS_CONFIG, SIGNATURES, export_model, read_model_card

    with model_errors(args.run, "export"):
        dest = export_model(
            args.run,
            args.name,
            version=args.version,
            output_dir=args.output_dir,
            warmup=not args.no_warmup,
            serving_root=args.serving_root,
        )
    card = read_model_card(dest)
    sizes = card["sizes"]
    print(
        f"exported {card['name']} version {card['version']} -> {dest}\n"
        f"  views {', '.join(card['views'])}; size {card['size']}; "
        f"hu_window {card['hu_window']}; signatures {', '.join(SIGNATURES)}\n"
        f"  variables {sizes['variables_bytes'] / 2**20:.2f} MiB "
        f"({sizes['variables_over_weights']:.3f}x the weights), "
        f"total {sizes['total_bytes'] / 2**20:.2f} MiB\n"
        f"  TF Serving config: {Path(args.output_dir) / MODELS_CONFIG}"
    )
    return 0
