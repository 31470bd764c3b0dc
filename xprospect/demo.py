"""``xprospect demo``: the main job end to end on built-in data.

1. Build a phantom dataset (procedural chest CTs calibrated to real chest CT, ``docs/phantoms.md``,
   with X2CT-geometry DRRs) at 64^3.
2. Train the ``512-ProjInj`` preset in bfloat16 for a fixed budget (the shipped ``demo.yaml``;
   of the variants ``benchmarks/bench_transfer.py`` compares, it transferred best to real CT).
3. Evaluate it on the test split against the two baselines (mean training volume, calibrated
   unfiltered back-projection).
4. Reconstruct the real LIDC chest CT from its own DRRs and score it inside its scanned region.
5. Write ``report.md`` with the metric tables and the PNG figures.

Every step is resumable: re-running continues the dataset and the training where they stopped.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xprospect.utils import atomic_path

__all__ = ["OUTPUT_NAMES", "DemoSettings", "check_settings", "run_demo"]

OUTPUT_NAMES = frozenset({"data", "run", "eval", "real_ct_panel.png", "report.md"})
"""What :func:`run_demo` writes in its output folder (a folder holding only these is a demo's,
which a rerun continues)."""


@dataclass(frozen=True)
class DemoSettings:
    """Sizes and budgets of the demo (the defaults fit about 15 minutes on 2 CPU cores)."""

    size: int = 64
    train_cases: int = 400
    """Training phantoms. 400 rather than 200 for the same 800 steps: of the variants
    ``benchmarks/bench_transfer.py`` trained, it transferred best to both real CTs (each phantom
    is seen about 4 times instead of 8); 800 did not do better (results/bench_transfer.md)."""
    val_cases: int = 10
    test_cases: int = 20
    steps: int | None = None
    seed: int = 0
    """Draws the dataset's split and, unless ``training_seed`` is given, seeds the training."""
    training_seed: int | None = None
    """The training run's seed (``training.seed``: initial weights, batch order, augmentation);
    None: ``seed``. A different one on the same dataset measures how much a score owes to the
    draw (``benchmarks/bench_transfer.py``'s seed repeats)."""
    phantom_calibration: str = "real_ct"
    """The phantoms' population (:data:`xprospect.phantoms.PHANTOM_CALIBRATIONS`): the calibrated
    one, which transfers better to real CT (``benchmarks/bench_transfer.py``)."""
    preset: str | None = None
    """The model preset (``model.preset``); None keeps ``demo.yaml``'s (512-ProjInj)."""
    upsampling: str | None = None
    """The decoder's upsampling (``model.overrides.upsampling``); None keeps ``demo.yaml``'s."""
    model_overrides: Mapping[str, Any] = field(default_factory=dict)
    """More ``model.overrides`` (``build_model`` arguments, e.g. ``{"max_filters": 16}``)."""
    loss: Mapping[str, float] | None = None
    """Loss weights by term (the config's ``loss``, e.g. ``{"mse": 1.0}``); None keeps
    ``demo.yaml``'s (the preset's default)."""
    overrides: Mapping[str, Any] = field(default_factory=dict)
    """More config overrides by dotted key, as ``xprospect train --set`` takes them (e.g.
    ``{"optimizer.use_ema": True}``), applied after every other setting."""


def check_settings(settings: DemoSettings) -> None:
    """Checks the named choices of ``settings`` before anything runs.

    Raises:
        ConfigError: An unknown preset or phantom calibration, named with what is known.
    """
    from xprospect.models import canonical_preset
    from xprospect.phantoms import phantom_calibration

    if settings.preset is not None:
        canonical_preset(settings.preset)
    phantom_calibration(settings.phantom_calibration)


def _log(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def run_demo(output: str | os.PathLike[str], settings: DemoSettings | None = None) -> Path:
    """Runs the demo and returns the path of ``report.md``."""
    from xprospect.config import load_config
    from xprospect.data.prepare import PrepareConfig, prepare_dataset
    from xprospect.evaluation import evaluate_dataset, scope_note, summary_markdown
    from xprospect.inference import load_predictor
    from xprospect.training import train

    s = settings or DemoSettings()
    check_settings(s)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    n = s.train_cases + s.val_cases + s.test_cases
    _log(f"1/5 phantom dataset: {n} cases at {s.size}^3 -> {out / 'data'}")
    prepare_dataset(
        [],
        out / "data",
        PrepareConfig(
            size=s.size,
            geometry="x2ct",
            val_fraction=s.val_cases / n,
            test_fraction=s.test_cases / n,
            split_seed=s.seed,
            shard_size=32,
            phantom_calibration=s.phantom_calibration,
        ),
        phantoms=n,
        workers=2,
    )
    config = load_config(Path(__file__).parent / "configs" / "demo.yaml")
    preset = s.preset or config.model.preset
    _log(f"2/5 training {preset} ({time.perf_counter() - t0:.0f} s so far)")
    overrides: dict[str, Any] = {
        "data.dir": str(out / "data"),
        "training.output_dir": str(out / "run"),
        "model.size": s.size,
        "training.seed": s.seed if s.training_seed is None else s.training_seed,
    }
    if s.steps is not None:
        overrides["training.steps"] = s.steps
    if s.preset is not None:
        overrides["model.preset"] = s.preset
    if s.upsampling is not None:
        overrides["model.overrides.upsampling"] = s.upsampling
    overrides.update({f"model.overrides.{k}": v for k, v in s.model_overrides.items()})
    if s.loss is not None:
        overrides["loss"] = dict(s.loss)
    overrides.update(s.overrides)
    result = train(config, overrides=overrides)
    _log(f"3/5 evaluation on the test split ({time.perf_counter() - t0:.0f} s so far)")
    predictor = load_predictor(out / "run")
    ev = evaluate_dataset(predictor, out / "data", out / "eval", split="test")
    _log(f"4/5 the real LIDC CT from its own DRRs ({time.perf_counter() - t0:.0f} s so far)")
    real, real_fraction = _real_ct(predictor, out, ev.baselines)
    _log("5/5 report")
    report = out / "report.md"
    lines = [
        "# xprospect demo report",
        "",
        f"- dataset: {s.train_cases} training, {s.val_cases} validation and {s.test_cases} test "
        f"procedural chest phantoms ({s.phantom_calibration!r} calibration) "
        f"at {s.size}^3 ({320 / s.size:.1f} mm voxels over a 320 mm field of view), X2CT "
        "cone-beam DRRs",
        f"- model: {preset} preset, trained {getattr(result, 'steps', '?')} steps in bfloat16 on "
        "this machine (see `run/metrics.csv`, `run/curves.png`, TensorBoard in `run/tensorboard`)",
        f"- total time: {time.perf_counter() - t0:.0f} s",
        "",
        summary_markdown(
            ev.summary, title="Test split: model against the baselines", note=ev.scope_note
        ),
        _verdict(ev.summary),
        "",
        "### The real LIDC chest CT, reconstructed from its own DRRs",
        "",
        "| metric | model | mean volume | back-projection |",
        "|---|---|---|---|",
        *[
            f"| {k} | "
            + " | ".join(f"{real[m][k]:.4g}" for m in ("model", "mean_volume", "back_projection"))
            + " |"
            for k in real["model"]
        ],
        "",
        "The model never saw real CT: it was trained on phantoms only, so these rows measure how",
        "far the phantom training transfers, not the method's ceiling. The baselines are fitted",
        "on the same phantom training split. " + scope_note(real_fraction) + " Every method is",
        "scored inside the CT's validity mask (`xprospect.preprocessing.scan_mask`): outside it",
        "lie the voxels the scanner did not reconstruct (the corners outside its reconstruction",
        "circle, stored as -2048 HU, and any part of the cube beyond the scan's extent), which the",
        "preprocessing fills with air although the X-rays may see a body there. The CT couch",
        "(everything outside the patient's body) is set to air before the DRRs are rendered",
        "(`xprospect.preprocessing.remove_couch`): a radiograph of a standing patient shows none.",
        "",
        "## Figures",
        "",
        "![training curves](run/curves.png)",
        "",
        *[
            f"![{p.stem}](eval/panels/{p.name})"
            for p in sorted((out / "eval" / "panels").glob("*.png"))
        ],
        "",
        "![real CT](real_ct_panel.png)",
        "",
    ]
    with atomic_path(report) as tmp:
        tmp.write_text("\n".join(lines))
    _log(f"done in {time.perf_counter() - t0:.0f} s; report: {report.resolve()}")
    return report


def _verdict(summary: dict[str, dict[str, dict[str, float]]]) -> str:
    lines = []
    for metric in ("psnr_3d", "ssim_3d"):
        if metric not in summary.get("model", {}):
            continue
        model = summary["model"][metric]["mean"]
        best = max(summary[b][metric]["mean"] for b in summary if b != "model")
        verdict = "beats" if model > best else "does NOT beat"
        lines.append(
            f"- {metric}: the model ({model:.4g}) {verdict} the best baseline ({best:.4g})"
        )
    return "\n".join(lines)


def _real_ct(
    predictor: Any, out: Path, baselines: dict[str, Any]
) -> tuple[dict[str, dict[str, float]], float]:
    """The model and both baselines (fitted on the demo's phantom training split) on the real
    LIDC CT's own DRRs: metrics by method, all taken inside the CT's scanned region, and the
    share of the cube that region covers."""
    from xprospect.data.samples import sample_ct
    from xprospect.evaluation import save_comparison_panel, score_real_ct

    scores = score_real_ct(predictor, sample_ct().ct_path, out / "data", baselines=baselines)
    save_comparison_panel(
        scores.truth, scores.prediction, out / "real_ct_panel.png", title="real LIDC CT"
    )
    return scores.metrics, scores.scanned_fraction
