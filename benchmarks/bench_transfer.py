"""Issue 17: how far phantom training transfers to real patients' CT, variant by variant.

Each variant is the demo (``xprospect demo``: ``demo.yaml``, the same phantom counts, split,
seeds and step budget) with its phantoms, preset and decoder named:

- ``original``: 512-Dense on the phantoms as first built (``--phantom-calibration original``);
- ``real_ct``: 512-Dense on phantoms calibrated to real chest CT (``PHANTOM_CALIBRATIONS``);
- ``real_ct+resize_conv``: the same with resize-convolution upsampling in the decoder (and
  ``real_ct+subpixel`` on request), the checkerboard fix;
- ``real_ct+projinj``: the 512-ProjInj preset (back-projected X-rays injected at every fusion
  scale, MAE + Nadam), ``+slim`` with ``max_filters`` 16 as ``saved_models/demo/1``;
- ``real_ct_population``: 512-Dense on the calibrated phantoms with an adult population's spread
  (``real_ct_population``), and ``real_ct_population+projinj`` (``+resize_conv``).

Each variant runs :func:`xprospect.demo.run_demo` in its own process (its folder under
``--work`` is a complete demo output; re-running resumes, and a scored variant's record,
``<work>/<variant>/bench_transfer.json``, is reused), then is scored here, every method
inside each real CT's validity mask and with the CT couch set to air (``score_real_ct``'s
default; a record scored before that is rescored when its run folder is still there, and marked
"couch kept" otherwise), with both baselines (mean training volume, calibrated back-projection)
fitted on the variant's own phantom training split:

- the real LIDC chest CT the package ships (``xprospect.data.samples.sample_ct``);
- every CT in ``../shared/data/real_ct`` (or ``--real-ct DIR``; validation only, never trained
  on; skipped with a note when absent);
- the phantom test split of the ``original`` dataset (the same 20 phantoms for every variant)
  and the variant's own test split.

``<variant>@seed<N>`` (N >= 1) trains a variant again with training seed N on the same dataset
(the variant's own run is seed 0 and runs first); the verdict takes each variant's margins as
the mean over its seed runs, and a variant with several seeds is also scored as their ensemble
(the seeds' reconstructions averaged: a measure of what the spread costs a single run, not a
variant, since it takes that many times the budget).

The phantom-vs-real distance table (``bench_phantom_realism``) is included when that module can
be imported. Target (issue 17): on both real CTs the best variant beats the best baseline by
>= 2.5 dB PSNR-3D and >= 0.10 SSIM-3D.

Run: ``.venv/bin/python benchmarks/bench_transfer.py [--variants original,real_ct,...]
[--work /tmp/bench_transfer] [--steps N]``. Writes ``benchmarks/results/bench_transfer.json``
and ``bench_transfer.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from statistics import mean
from typing import Any

from xprospect.constants import NUMPY_ENVIRONMENT

# As the command line runs (xprospect.cli), here and in the variants' processes.
os.environ.update({k: v for k, v in NUMPY_ENVIRONMENT.items() if k not in os.environ})

RESULTS = Path(__file__).parent / "results"
VARIANTS: dict[str, dict[str, Any]] = {
    # The first variants train 512-Dense (demo.yaml's preset when they were defined).
    "original": {"phantom_calibration": "original", "upsampling": None, "preset": "512-Dense"},
    "real_ct": {"phantom_calibration": "real_ct", "upsampling": None, "preset": "512-Dense"},
    "real_ct+resize_conv": {
        "phantom_calibration": "real_ct",
        "upsampling": "resize_conv",
        "preset": "512-Dense",
    },
    "real_ct+subpixel": {
        "phantom_calibration": "real_ct",
        "upsampling": "subpixel",
        "preset": "512-Dense",
    },
    "real_ct_population": {
        "phantom_calibration": "real_ct_population",
        "upsampling": None,
        "preset": "512-Dense",
    },
    "real_ct+projinj": {
        "phantom_calibration": "real_ct",
        "upsampling": None,
        "preset": "512-ProjInj",
    },
    "real_ct_population+projinj": {
        "phantom_calibration": "real_ct_population",
        "upsampling": None,
        "preset": "512-ProjInj",
    },
    "real_ct_population+projinj+resize_conv": {
        "phantom_calibration": "real_ct_population",
        "upsampling": "resize_conv",
        "preset": "512-ProjInj",
    },
    "real_ct+projinj+resize_conv": {
        "phantom_calibration": "real_ct",
        "upsampling": "resize_conv",
        "preset": "512-ProjInj",
    },
    "real_ct+projinj+slim": {
        "phantom_calibration": "real_ct",
        "upsampling": None,
        "preset": "512-ProjInj",
        "model_overrides": {"max_filters": 16},
    },
    # MSE in place of the preset's MAE: the XprospeCT paper's 512-Dense loss. MAE's sharper
    # boundaries cost squared error where phantom anatomy misplaces real lungs.
    "real_ct+projinj+mse": {
        "phantom_calibration": "real_ct",
        "upsampling": None,
        "preset": "512-ProjInj",
        "loss": {"mse": 1.0},
    },
}
# Two and four times the training phantoms for the same 800 steps (batch 2): each phantom is seen
# about 4 or 2 times instead of 8, so the model meets more of a population's anatomy (domain
# randomisation gains from draws, not repeats); each 200 more cost ~1 min to build.
VARIANTS |= {
    "real_ct+projinj+400": {**VARIANTS["real_ct+projinj"], "train_cases": 400},
    "real_ct+projinj+800": {**VARIANTS["real_ct+projinj"], "train_cases": 800},
    "real_ct_population+projinj+resize_conv+400": {
        **VARIANTS["real_ct_population+projinj+resize_conv"],
        "train_cases": 400,
    },
}
# The demo's run with its weights averaged (Keras' EMA, evaluated and exported with the average).
# A momentum of 0.99 averages over the last ~100 of the 800 steps, the cosine schedule's tail;
# the config's default 0.999 would reach back past the whole run.
VARIANTS |= {
    "real_ct+projinj+400+ema": {
        **VARIANTS["real_ct+projinj+400"],
        "overrides": {"optimizer.use_ema": True, "optimizer.ema_momentum": 0.99},
    },
}
# A third of the steps (267, its own cosine schedule): with @seed1 and @seed2, three runs whose
# ensemble costs what one demo run costs (800 steps), against the seeds' spread.
VARIANTS |= {"real_ct+projinj+400+steps267": {**VARIANTS["real_ct+projinj+400"], "steps": 267}}
# The demo on phantoms with the real CTs' lung depth (a thinner chest wall; more lung volume).
VARIANTS |= {
    "real_ct_lungs+projinj+400": {
        **VARIANTS["real_ct+projinj+400"],
        "phantom_calibration": "real_ct_lungs",
    },
}
DEFAULT_VARIANTS = (
    "original",
    "real_ct",
    "real_ct+resize_conv",
    "real_ct+projinj",
    "real_ct+projinj+slim",
    "real_ct_population",
    "real_ct_population+projinj",
    "real_ct_population+projinj+resize_conv",
    "real_ct+projinj+mse",
    "real_ct+projinj+resize_conv",
)
SEED_MARK = "@seed"
"""``<variant>@seed<N>``: the variant trained again with training seed N on the same dataset.
Each variant's own run is its seed 0 (``DemoSettings.seed``); the verdict takes a variant's
margins as the mean over every seed run of it, so one lucky draw does not decide."""
TARGET_DB = 2.5
TARGET_SSIM = 0.10
REAL_SCORING = "couch removed, axial fill"
"""How the real-CT rows are scored now (``score_real_ct``'s default: the CT couch set to air
before the DRRs are rendered, the body's holes filled in axial slices). Records scored another
way (none: the couch kept; ``"couch removed"``: its holes filled in the array's first axis, before
2026-12-04's fix) are rescored by a rerun when their run folder is still there."""


def scoring_note(record: dict[str, Any]) -> str | None:
    """How a record's real-CT rows were scored when not the current way, for its row label."""
    scoring = record.get("real_scoring")
    if scoring == REAL_SCORING:
        return None
    return "couch kept" if scoring is None else f"scored as '{scoring}'"


_WORKER = """
import json, sys
from xprospect.demo import DemoSettings, run_demo
settings = DemoSettings(**json.loads(sys.argv[2]))
run_demo(sys.argv[1], settings)
"""


def default_real_cts() -> list[Path]:
    """The validation CTs beside the project (``../shared/data/real_ct``), if any."""
    folder = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_ct"
    env = os.environ.get("XPROSPECT_REAL_CT")
    if env:
        folder = Path(env)
    return sorted(folder.glob("*.nii.gz")) if folder.is_dir() else []


DATASET_KEYS = ("phantom_calibration", "size", "train_cases", "val_cases", "test_cases")
"""The demo settings that shape its dataset: variants equal in all of them share one."""


def split_seed(name: str) -> tuple[str, int | None]:
    """``("real_ct", 2)`` for ``"real_ct@seed2"``; ``(name, None)`` for a plain variant name."""
    base, mark, seed = name.partition(SEED_MARK)
    if not mark:
        return name, None
    if not seed.isdigit() or int(seed) == 0:
        raise ValueError(f"{name!r}: a seed repeat is <variant>{SEED_MARK}<N> with N >= 1")
    return base, int(seed)


def variant_settings(name: str) -> dict[str, Any]:
    """The demo settings a variant (or a seed repeat of one) changes."""
    base, seed = split_seed(name)
    settings = dict(VARIANTS[base])
    if seed is not None:
        settings["training_seed"] = seed
    return settings


def seed_groups(names: Any) -> dict[str, list[str]]:
    """Variant names grouped by the variant they repeat, in their order."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(split_seed(name)[0], []).append(name)
    return groups


def run_order(names: list[str]) -> list[str]:
    """The variants to run for ``names``: ``original`` first (its test split is every variant's
    common phantom test), and each seed repeat's own variant before it (its seed 0, part of
    the mean)."""
    out = list(names)
    for variant in seed_groups(names):
        if variant not in out:
            first = next(n for n in out if split_seed(n)[0] == variant)
            out.insert(out.index(first), variant)
    return out if "original" in out else ["original", *out]


def dataset_key(settings: dict[str, Any]) -> tuple[Any, ...]:
    """What a variant's dataset is built from (:data:`DATASET_KEYS`)."""
    return tuple(settings[k] for k in DATASET_KEYS)


def share_dataset(
    work: Path, variant: str, key: tuple[Any, ...], done: dict[tuple[Any, ...], Path]
) -> None:
    """Hard-links an already built dataset of the same settings (:func:`dataset_key`) into the
    variant's folder, so ``prepare`` finds it complete instead of building it again."""
    src = done.get(key)
    dst = work / variant / "data"
    # A variant read from its record may have had its data folder removed.
    if src is None or not src.is_dir() or dst.exists():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src, dst, copy_function=os.link)


def run_variant(work: Path, variant: str, settings: dict[str, Any]) -> float:
    """Runs the demo for one variant in a fresh process (outside the repository, so the
    installed package is imported); returns the wall time."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    t0 = time.perf_counter()
    log = work / f"{variant}.log"
    with log.open("a") as fh:
        proc = subprocess.run(
            [sys.executable, "-c", _WORKER, str(work / variant), json.dumps(settings)],
            cwd=work,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if proc.returncode:
        raise SystemExit(f"variant {variant} failed (exit {proc.returncode}); see {log}")
    return time.perf_counter() - t0


def score_variant(
    folder: Path, real_cts: list[tuple[str, Path]], phantom_test: Path
) -> dict[str, Any]:
    """Real-CT and phantom-test scores of one finished demo folder, with both baselines."""
    from xprospect.evaluation import (
        evaluate_dataset,
    )
    from xprospect.inference import load_predictor

    predictor = load_predictor(folder / "run")
    out: dict[str, Any] = {"real": score_real(folder, real_cts, predictor), "phantom_test": {}}
    own = json.loads((folder / "eval" / "summary.json").read_text())["summary"]
    out["phantom_test"]["own"] = _means(own)
    if phantom_test.resolve() != (folder / "data").resolve():
        ev = evaluate_dataset(
            predictor, phantom_test, folder / "eval_original", split="test", panels=0
        )
        out["phantom_test"]["original"] = _means(ev.summary)
    else:
        out["phantom_test"]["original"] = out["phantom_test"]["own"]
    return out


def score_real(
    folder: Path,
    real_cts: list[tuple[str, Path]],
    predictor: Any = None,
    panels: Path | None = None,
) -> dict[str, Any]:
    """The real-CT scores of one finished demo folder (model and both baselines, fitted on its
    own phantom training split), as ``score_real_ct`` scores now (:data:`REAL_SCORING`); the
    comparison panels go to ``panels`` (default: the folder)."""
    from xprospect.evaluation import (
        BackProjectionBaseline,
        MeanVolumeBaseline,
        save_comparison_panel,
        score_real_ct,
    )
    from xprospect.inference import load_predictor

    predictor = predictor or load_predictor(folder / "run")
    window = predictor.hu_window
    baselines: dict[str, Any] = {
        "mean_volume": MeanVolumeBaseline.fit(folder / "data", window),
        "back_projection": BackProjectionBaseline.fit(
            folder / "data", tuple(predictor.views), window
        ),
    }
    out: dict[str, Any] = {}
    for name, path in real_cts:
        scores = score_real_ct(predictor, path, folder / "data", baselines=baselines)
        save_comparison_panel(
            scores.truth, scores.prediction, (panels or folder) / f"real_{name}.png", title=name
        )
        out[name] = {"scanned_fraction": scores.scanned_fraction, "metrics": scores.metrics}
    return out


def rescore_if_stale(
    folder: Path, record: dict[str, Any], real_cts: list[tuple[str, Path]]
) -> bool:
    """Rescores a record's real-CT rows the current way when they were scored another way and
    the variant's run and data are still there; True if it did."""
    if record.get("real_scoring") == REAL_SCORING:
        return False
    if not (folder / "run" / "model.keras").exists():
        return False
    if not (folder / "data" / "manifest.json").exists():
        return False
    record["scores"]["real"] = score_real(folder, real_cts)
    record["real_scoring"] = REAL_SCORING
    record["real_scored"] = time.strftime("%Y-%m-%d")
    return True


def _means(summary: dict[str, Any]) -> dict[str, dict[str, float]]:
    return {
        m: {k: float(v["mean"]) for k, v in metrics.items() if isinstance(v, dict) and "mean" in v}
        for m, metrics in summary.items()
    }


def margins(metrics: dict[str, dict[str, float]]) -> dict[str, float]:
    """Model minus the best baseline, for PSNR-3D (dB) and SSIM-3D."""
    out = {}
    for key in ("psnr_3d", "ssim_3d"):
        best = max(v[key] for m, v in metrics.items() if m != "model")
        out[key] = metrics["model"][key] - best
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Phantom training transferred to real chest CT (issue 17)",
        "",
        f"`{result['command']}` ({result['date']}, {result['machine']})",
        "",
        "Each variant is `xprospect demo` (512-Dense unless the variant names another preset, "
        "`demo.yaml`, "
        f"{result['settings']['train_cases']} training phantoms at "
        f"{result['settings']['size']}^3, {result['steps']} steps) with one change. Real CTs are "
        "reconstructed from their own X2CT DRRs and scored inside their validity mask; the "
        "baselines are fitted on each variant's own phantom training split. Never trained on: "
        "every real CT here.",
        "",
    ]
    reals = sorted({r for v in result["variants"].values() for r in v["scores"]["real"]})
    for real in reals:
        lines += [
            f"## {real}",
            "",
            "| variant | model PSNR-3D | model SSIM-3D | best baseline PSNR | best baseline SSIM "
            "| margin dB | margin SSIM |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, v in result["variants"].items():
            r = v["scores"]["real"].get(real)
            if r is None:
                continue
            if note := scoring_note(v):
                name = f"{name} ({note})"
            m = r["metrics"]
            bp = max(x["psnr_3d"] for k, x in m.items() if k != "model")
            bs = max(x["ssim_3d"] for k, x in m.items() if k != "model")
            g = margins(m)
            lines.append(
                f"| {name} | {m['model']['psnr_3d']:.2f} | {m['model']['ssim_3d']:.3f} | "
                f"{bp:.2f} | {bs:.3f} | {g['psnr_3d']:+.2f} | {g['ssim_3d']:+.3f} |"
            )
        first = next(iter(result["variants"].values()))["scores"]["real"].get(real)
        if first:
            lines += [
                "",
                f"Scanned region: {100 * first['scanned_fraction']:.1f} % of the cube.",
                "",
            ]
    lines += lung_markdown(result, reals)
    lines += seeds_markdown(result["variants"], result.get("ensembles"))
    lines += [
        "## Phantom test splits",
        "",
        "| variant | split | model PSNR-3D | model SSIM-3D | mean volume PSNR | "
        "back-projection PSNR |",
        "|---|---|---|---|---|---|",
    ]
    for name, v in result["variants"].items():
        for split, s in v["scores"]["phantom_test"].items():
            lines.append(
                f"| {name} | {split} | {s['model']['psnr_3d']:.2f} | "
                f"{s['model']['ssim_3d']:.3f} | {s['mean_volume']['psnr_3d']:.2f} | "
                f"{s['back_projection']['psnr_3d']:.2f} |"
            )
    reused = result.get("reused", [])
    if reused:
        dates = ", ".join(
            f"{n} ({result['variants'][n].get('date', 'an earlier run')})" for n in reused
        )
        lines += [
            "",
            f"Read from their records in the work folder, measured by an earlier run of this "
            f"script with the same settings: {dates}.",
        ]
    stale = [n for n, v in result["variants"].items() if v.get("real_scoring") != REAL_SCORING]
    if stale:
        lines += [
            "",
            f"Real-CT rows scored an earlier way (marked): {', '.join(stale)}, with no run folder "
            "left to rescore ('couch kept': before real CTs lost their couch, "
            "`xprospect.preprocessing.remove_couch`); the verdict compares the variants scored "
            "the current way.",
        ]
    lines += ["", "## Verdict", "", result["verdict"], ""]
    if result.get("realism_markdown"):
        lines += [result["realism_markdown"], ""]
    return "\n".join(lines)


def seed_ensemble(folders: list[Path]) -> Any:
    """A predictor averaging the reconstructions of the seed runs in ``folders`` (each a demo
    folder): what the seeds' spread costs a single run, measured by removing it."""
    import dataclasses

    import numpy as np

    from xprospect.inference import load_predictor

    members = [load_predictor(f / "run") for f in folders]

    def model(chunk: dict[str, Any]) -> Any:
        return np.mean([np.asarray(m.model(chunk, training=False)) for m in members], axis=0)

    return dataclasses.replace(members[0], model=model, source=f"mean of {len(members)} runs")


def score_ensembles(
    work: Path, variants: dict[str, Any], real_cts: list[tuple[str, Path]]
) -> dict[str, Any]:
    """Real-CT scores of each variant's seed ensemble (:func:`seed_ensemble`), baselines fitted
    on its own training split; panels and the record (``ensemble.json``) in
    ``<work>/<variant>@ensemble``. An ensemble whose runs are gone is read from its record when
    the record names the same runs, and left out otherwise."""
    out: dict[str, Any] = {}
    for variant, runs in seed_groups(variants).items():
        if len(runs) < 2:
            continue
        panels = work / f"{variant}@ensemble"
        record = panels / "ensemble.json"
        if not all((work / n / "run").is_dir() for n in runs):
            if record.exists():
                kept = json.loads(record.read_text())
                if kept.get("runs") == runs:
                    out[variant] = kept
            continue
        panels.mkdir(exist_ok=True)
        predictor = seed_ensemble([work / n for n in runs])
        out[variant] = {
            "runs": runs,
            "real": score_real(work / variant, real_cts, predictor, panels),
        }
        record.write_text(json.dumps(out[variant], indent=2) + "\n")
    return out


def seeds_markdown(variants: dict[str, Any], ensembles: dict[str, Any] | None = None) -> list[str]:
    """The margins of every variant trained with more than one seed, run by run, their mean,
    and the seed ensemble's (``ensembles``, :func:`score_ensembles`): how much of a row's margin
    is the draw of its training seed."""
    groups = {b: runs for b, runs in seed_groups(variants).items() if len(runs) > 1}
    if not groups:
        return []
    lines = [
        "## Training seeds",
        "",
        "Margins over the best baseline (PSNR-3D dB / SSIM-3D) of variants trained again with "
        f"another training seed on the same dataset (`<variant>{SEED_MARK}<N>`; seed 0 is the "
        "variant's own row). The verdict reads the means.",
        "",
        "The ensemble column averages the seed runs' reconstructions (one model per seed, so "
        "that many times the training budget): not a variant, a measure of what the spread "
        "between seeds costs a single run.",
        "",
        "| variant | real CT | per seed (0, 1, ...) | mean | ensemble of the seeds |",
        "|---|---|---|---|---|",
    ]
    for base, runs in groups.items():
        ens = (ensembles or {}).get(base, {}).get("real", {})
        for real, g in seed_margins(variants, runs).items():
            each = ", ".join(
                f"{d:+.2f} / {s:+.3f}" for d, s in zip(g["psnr_3d"], g["ssim_3d"], strict=True)
            )
            e = margins(ens[real]["metrics"]) if real in ens else None
            lines.append(
                f"| {base} | {real} | {each} | "
                f"{mean(g['psnr_3d']):+.2f} / {mean(g['ssim_3d']):+.3f} | "
                + ("-" if e is None else f"{e['psnr_3d']:+.2f} / {e['ssim_3d']:+.3f}")
                + " |"
            )
    return [*lines, ""]


def lung_markdown(result: dict[str, Any], reals: list[str]) -> list[str]:
    """The lungs of each variant's reconstruction on every real CT against its own phantom test
    split: Dice of the lung masks (< -400 HU inside the body, :mod:`xprospect.metrics`) and
    predicted / true lung volume. Where PSNR-3D says how far off a model is, this says how: a
    model that sees phantom-like lungs in every input keeps its lungs on phantoms and loses them
    on real DRRs."""

    def cell(m: dict[str, float] | None) -> str:
        if not m or "lung_dice" not in m:  # a record scored before lungs were measured
            return "-"
        ratio = m["lung_volume_ml_pred"] / max(m["lung_volume_ml_truth"], 1e-9)
        return f"{m['lung_dice']:.2f} / {ratio:.2f}"

    lines = [
        "## Lungs",
        "",
        "Lung Dice / predicted over true lung volume of the model (the mean volume's in "
        "brackets), on each real CT and on the variant's own phantom test split (means over "
        "its cases).",
        "",
        "| variant | " + " | ".join(reals) + " | phantom test (own) |",
        "|---|" + "---|" * (len(reals) + 1),
    ]
    for name, v in result["variants"].items():
        row = [name]
        for real in reals:
            r = v["scores"]["real"].get(real)
            m = r["metrics"] if r else None
            row.append("-" if m is None else f"{cell(m['model'])} ({cell(m.get('mean_volume'))})")
        row.append(cell(v["scores"]["phantom_test"].get("own", {}).get("model")))
        lines.append("| " + " | ".join(row) + " |")
    return [*lines, ""]


def seed_margins(variants: dict[str, Any], names: list[str]) -> dict[str, dict[str, list[float]]]:
    """Each real CT's margins (:func:`margins`) over the seed runs ``names`` of one variant:
    ``{real: {"psnr_3d": [...], "ssim_3d": [...]}}``, real CTs every run scored."""
    reals = set.intersection(*(set(variants[n]["scores"]["real"]) for n in names))
    out: dict[str, dict[str, list[float]]] = {}
    for real in sorted(reals):
        runs = [margins(variants[n]["scores"]["real"][real]["metrics"]) for n in names]
        out[real] = {k: [g[k] for g in runs] for k in ("psnr_3d", "ssim_3d")}
    return out


def verdict(result: dict[str, Any]) -> tuple[str, str | None]:
    """The best variant (largest smallest PSNR margin over the real CTs, each margin the mean
    over the variant's seed runs) and a sentence."""
    best, best_key = None, None
    current = {n: v for n, v in result["variants"].items() if v.get("real_scoring") == REAL_SCORING}
    variants = current or result["variants"]
    groups = seed_groups(variants)
    for name, runs in groups.items():
        per_real = seed_margins(variants, runs)
        if not per_real:
            continue
        key = min(mean(g["psnr_3d"]) for g in per_real.values())
        if best_key is None or key > best_key:
            best, best_key = name, key
    if best is None:
        return "no real CT was scored", None
    runs = groups[best]
    parts = []
    met = True
    for real, g in seed_margins(variants, runs).items():
        db, ssim = mean(g["psnr_3d"]), mean(g["ssim_3d"])
        met &= db >= TARGET_DB and ssim >= TARGET_SSIM
        spread = f" (range {min(g['psnr_3d']):+.2f} to {max(g['psnr_3d']):+.2f})"
        parts.append(f"{real}: {db:+.2f} dB{spread if len(runs) > 1 else ''}, {ssim:+.3f} SSIM")
    label = f"{best}, " + (f"mean of {len(runs)} training seeds" if len(runs) > 1 else "one seed")
    target = f">= {TARGET_DB} dB and >= {TARGET_SSIM} SSIM over the best baseline on every real CT"
    status = "MET" if met and len(parts) >= 2 else "NOT met"
    return (
        f"Best variant: **{label}** ({'; '.join(parts)}). Target {target}: **{status}**.",
        best,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS))
    parser.add_argument("--work", default="/tmp/bench_transfer")
    parser.add_argument("--steps", type=int, default=None, help="default: demo.yaml's")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--train-cases", type=int, default=200)
    parser.add_argument("--val-cases", type=int, default=10)
    parser.add_argument("--test-cases", type=int, default=20)
    parser.add_argument("--real-ct", help="validation CT folder (default ../shared/data/real_ct)")
    parser.add_argument("--output", default=str(RESULTS / "bench_transfer.json"))
    args = parser.parse_args(argv)

    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [n for n in names if split_seed(n)[0] not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {sorted(VARIANTS)}")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.real_ct:
        os.environ["XPROSPECT_REAL_CT"] = args.real_ct
    from xprospect.data.samples import sample_ct

    real_cts = [("LIDC (shipped sample)", Path(sample_ct().ct_path))]
    real_cts += [(p.name.split(".")[0], p) for p in default_real_cts()]

    base = {
        "size": args.size,
        "train_cases": args.train_cases,
        "val_cases": args.val_cases,
        "test_cases": args.test_cases,
        "steps": args.steps,
    }
    from xprospect.config import load_config

    demo_steps = load_config("demo").training.steps
    done: dict[tuple[Any, ...], Path] = {}
    result: dict[str, Any] = {
        "command": "python benchmarks/bench_transfer.py " + " ".join(argv or sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "settings": base,
        "steps": demo_steps if args.steps is None else args.steps,
        "variants": {},
    }
    names = run_order(names)
    for name in names:
        settings = {**base, **variant_settings(name)}
        share_dataset(work, name, dataset_key(settings), done)
        cached = work / name / "bench_transfer.json"
        if cached.exists():  # a finished variant: its record (a rerun rebuilds the tables)
            record = json.loads(cached.read_text())
            if rescore_if_stale(work / name, record, real_cts):
                print(f"[bench_transfer] {name}: real CTs rescored ({REAL_SCORING})", flush=True)
                cached.write_text(json.dumps(record, indent=2) + "\n")
            result["variants"][name] = record
            result.setdefault("reused", []).append(name)
            done.setdefault(dataset_key(settings), work / name / "data")
            continue
        print(f"[bench_transfer] {name}: training", flush=True)
        wall = run_variant(work, name, settings)
        done.setdefault(dataset_key(settings), work / name / "data")
        print(f"[bench_transfer] {name}: scoring ({wall:.0f} s)", flush=True)
        scores = score_variant(work / name, real_cts, work / "original" / "data")
        result["variants"][name] = {
            **variant_settings(name),
            "date": time.strftime("%Y-%m-%d"),
            "wall_s": wall,
            "scores": scores,
            "real_scoring": REAL_SCORING,
        }
        cached.write_text(json.dumps(result["variants"][name], indent=2) + "\n")
    result["verdict"], result["best"] = verdict(result)
    result["ensembles"] = score_ensembles(work, result["variants"], real_cts)
    try:
        sys.path.insert(0, str(Path(__file__).parent))
        import bench_phantom_realism

        result["realism"] = bench_phantom_realism.measure()
        result["realism_markdown"] = bench_phantom_realism.markdown(result["realism"])
    except ImportError as exc:
        print(f"[bench_transfer] no distance table: {exc}", flush=True)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
