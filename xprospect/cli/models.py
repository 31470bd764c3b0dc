"""``xprospect models``: the model presets with their parameter counts."""

from __future__ import annotations

import argparse

from xprospect.cli.common import Subparsers

__all__ = ["add_parser", "run_models"]


def add_parser(sub: Subparsers) -> None:
    """Adds ``models`` to the CLI's subparsers."""
    p = sub.add_parser("models", help="list model presets with parameter counts")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128], help="cube sizes")
    p.set_defaults(handler=run_models)


def run_models(args: argparse.Namespace) -> int:
    """Runs ``xprospect models``: one table row per preset and cube size."""
    from xprospect.models import list_presets

    rows = list_presets(sizes=tuple(args.sizes))
    print(f"{'preset':<16} {'size':>5} {'generator':>12} {'discriminator':>14}  description")
    for r in rows:
        d = f"{r.discriminator_params:>14,}" if r.discriminator_params else f"{'-':>14}"
        print(f"{r.name:<16} {r.size:>5} {r.params:>12,} {d}  {r.description}")
    return 0
