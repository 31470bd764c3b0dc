"""The op types xprospect's SavedModel exports contain: the measurement behind the allow-list.

Usage: ``.venv/bin/python scripts/export_op_inventory.py [SAVED_MODEL_DIR ...] [--presets]``

Prints, for each SavedModel folder given and (with ``--presets``) for a tiny export of every
preset in every view set, in float32 and mixed precision, the op types outside and inside the
checkpoint (save/restore) functions, then the union and whether
:data:`xprospect.trust.ALLOWED_OPS` / :data:`xprospect.trust.CHECKPOINT_OPS` cover it. Run it
when a model family or Keras changes; an op missing from the allow-list is added there only
after checking that it computes on tensors and touches nothing outside the process.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# Small constructor arguments per family (as the model tests use them).
TINY: dict[str, dict[str, Any]] = {
    "dualunet": {"base_filters": 2, "max_filters": 8},
    "x2ct": {
        "stem_filters": 4,
        "growth_rate": 2,
        "block_layers": (1, 1, 1),
        "bottleneck": 2,
        "grid_filters": 4,
        "decoder_filters": 2,
    },
    "cvaa": {"base_filters": 2, "max_filters": 4, "growth_rate": 2, "dense_layers": 2},
    "duolift": {
        "encoder_filters": 4,
        "encoder_blocks": (1, 1),
        "base_filters": 2,
        "unetpp_filters": 2,
        "unet_filters": 2,
        "max_filters": 8,
    },
    "sxr2ct": {
        "base_filters": 2,
        "base_filters_2d": 4,
        "max_filters": 8,
        "depths": (1, 1, 1),
        "num_heads": 2,
        "attention_blocks": 1,
    },
}
SIZE = 32


def preset_exports(out: Path) -> list[tuple[str, Path]]:
    """A tiny export of every preset, view set and dtype policy under ``out``."""
    from xprospect.export import export_model
    from xprospect.models import PRESETS, build_model

    # XctDiff's tiny pipeline is the one its training tests use (one copy of its arguments).
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "training"))
    from test_xctdiff_training import TINY as XCTDIFF_TINY

    TINY["xctdiff"] = XCTDIFF_TINY

    done = []
    for preset, info in PRESETS.items():
        family = info["family"]
        # The geometry changes the graph only where X-rays are back-projected.
        injects = (info.get("model") or {}).get("back_projection")
        geometries = ("x2ct", "parallel", "xprospect_mean") if injects else (None,)
        for views in info["views"]:
            for dtype in (None, "mixed_bfloat16", "mixed_float16"):
                for geometry in geometries:
                    args: dict[str, Any] = dict(TINY[family])
                    if dtype:
                        args["dtype"] = dtype
                    if geometry:
                        args["geometry"] = geometry
                    label = f"{preset} {'+'.join(views)} {dtype or 'float32'} {geometry or ''}"
                    try:
                        model = build_model(preset, size=SIZE, views=tuple(views), **args)
                    except Exception as exc:
                        print(f"skip {label}: {exc}", file=sys.stderr)
                        continue
                    name = f"m{len(done)}"
                    dest = export_model(model, name, version=1, output_dir=out, warmup=False)
                    done.append((label, dest))
    return done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", help="SavedModel version folders")
    parser.add_argument("--presets", action="store_true", help="export and measure every preset")
    args = parser.parse_args()

    from xprospect.trust import ALLOWED_OPS, CHECKPOINT_OPS, graph_ops

    targets = [(str(f), Path(f)) for f in args.folders]
    with tempfile.TemporaryDirectory() as tmp:
        if args.presets:
            targets += preset_exports(Path(tmp))
        serving: set[str] = set()
        checkpoint: set[str] = set()
        for label, folder in targets:
            for ops in graph_ops(folder):
                s = ops.serving_ops()
                c = ops.all_ops() - s
                serving |= s
                checkpoint |= c
                print(f"{label}: {len(s)} serving ops, {len(c)} checkpoint-only ops")
    print("serving ops:", " ".join(sorted(serving)))
    print("checkpoint-only ops:", " ".join(sorted(checkpoint)))
    missing = sorted(serving - ALLOWED_OPS)
    missing_ckpt = sorted(checkpoint - ALLOWED_OPS - CHECKPOINT_OPS)
    unused = sorted(ALLOWED_OPS - serving)
    print("not allowed:", " ".join(missing + missing_ckpt) or "none")
    print("allowed but not measured:", " ".join(unused) or "none")
    return 1 if missing or missing_ckpt else 0


if __name__ == "__main__":
    sys.exit(main())
