"""Issue 17: how far the chest phantoms are from real chest CT, per phantom calibration.

For each calibration in :data:`xprospect.phantoms.PHANTOM_CALIBRATIONS` (``original``: the
phantoms as first built; ``real_ct``: calibrated to real CT) the phantoms are measured against
each real CT, every CT preprocessed as ``prepare`` does (``ct_preprocessing(size)(raw,
scan_mask(raw))``; a real CT's statistics only inside its scan mask):

- the shipped LIDC sample (``xprospect.data.samples.sample_ct``);
- every ``*.nii.gz`` in ``../shared/data/real_ct`` (or ``$XPROSPECT_REAL_CT``; validation only,
  licence CC BY-NC: only summary numbers are written; skipped with a note when absent).

Measured, per volume:

- HU inside the body (:func:`xprospect.preprocessing.body_mask`) and per tissue class by HU
  threshold: lung (< -400 HU, the two largest such components inside the body of at least
  200 ml), fat [-190, -30), soft tissue [-30, 150), bone >= 200 HU: fraction of the body's
  volume, mean, 10th and 90th percentiles, and the 1-D Wasserstein-1 distance between the pooled
  phantom HU and each real CT's HU (``scipy.stats.wasserstein_distance``); the lung's texture
  as the standard deviation of its HU minus a Gaussian-smoothed copy (sigma 1 voxel), inside
  the lung eroded by one voxel;
- geometry: the body's anterior-posterior and left-right diameters on the axial slice where the
  lungs' cross-section is largest, the lungs' own extents on that slice (front of the most
  anterior to back of the most posterior lung voxel, right to left across both lungs), the
  lung volume, the lung apex's distance below the top of
  the field, the diaphragm's level (where the lungs' cross-section falls to half its maximum
  below that slice). The heart's size is not measured: the gap between the lungs on axial
  slices, tried as a cardiothoracic ratio, was dominated by the lungs' thin anterior tips
  (0.94 on the LIDC CT, 0.66 on the second);
- DRRs: frontal and lateral X2CT DRRs (``render_drr_batch`` then ``display_unit``) of every
  volume under a random pose (rotation within +-5 degrees about each axis, shift within
  +-10 mm, scale within +-5 %, about the cube's centre; seeded): the histogram (Wasserstein,
  Jensen-Shannon) and radial-spectrum distances of :mod:`xprospect.style.metrics` between the
  phantom DRRs and the real-CT DRRs, and a classifier two-sample test
  (:func:`xprospect.style.metrics.classifier_two_sample_test`) between them, frontal and lateral
  side by side in one image: held-out accuracy and AUC, 0.5 = indistinguishable. The real side
  is ``n_poses`` poses spread evenly over the real CTs, the phantom side one pose of each
  phantom; the same real poses, and phantom ``i`` the same pose, for every calibration. A real
  CT's cube is air where the scan ends (a field of view shorter than 320 mm, the corners outside
  the reconstruction circle) and a phantom's is anatomy throughout, so every DRR score is also
  given *framed*: phantom ``i`` set to air outside real CT ``i``'s scan mask before posing.

A scalar's distance is the mean over the real CTs of ``|phantom mean - real value|``; the
classifier's is ``|accuracy - 0.5|`` and ``|AUC - 0.5|``. Vessels are not measured separately
(at 64^3 a voxel is 5 mm: the lung's 90th percentile and texture carry them).

Run: ``.venv/bin/python benchmarks/bench_phantom_realism.py [--size 64] [--phantoms 40]
[--poses 40]``. Writes ``benchmarks/results/bench_phantom_realism.json`` and ``.md``. It takes
about two minutes at 64^3 on two cores. ``bench_transfer`` calls :func:`measure` and
:func:`markdown`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.stats import wasserstein_distance

from xprospect.constants import DEFAULT_FOV_MM, STORED_HU_RANGE

RESULTS = Path(__file__).parent / "results"
LUNG_HU = -400.0  # below it inside the body: air (lung, airways)
FAT_HU = (-190.0, -30.0)
SOFT_HU = (-30.0, 150.0)
BONE_HU = 200.0
MIN_LUNG_ML = 200.0
POSE_DEG = 5.0
POSE_SHIFT_MM = 10.0
POSE_SCALE = 0.05
AIR_HU = STORED_HU_RANGE[0]
TISSUES = ("lung", "fat", "soft", "bone")


# --- per-volume measurements ----------------------------------------------------------------
def lung_mask(hu: np.ndarray, body: np.ndarray, spacing_mm: float) -> np.ndarray:
    """The lungs: the two largest components of ``hu < -400`` inside ``body``, each kept only if
    it holds at least 200 ml (so bowel gas or a lone airway is not a lung)."""
    labels, n = ndimage.label((hu < LUNG_HU) & body)
    lung = np.zeros(hu.shape, bool)
    if n == 0:
        return lung
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    min_voxels = MIN_LUNG_ML * 1000.0 / spacing_mm**3
    for i in np.argsort(sizes)[::-1][:2]:
        if sizes[i] >= min_voxels:
            lung |= labels == i + 1
    return lung


def tissue_masks(hu: np.ndarray, body: np.ndarray, lung: np.ndarray) -> dict[str, np.ndarray]:
    """The tissue classes by HU threshold inside the body (lung: the given lung mask)."""
    return {
        "lung": lung,
        "fat": body & (hu >= FAT_HU[0]) & (hu < FAT_HU[1]),
        "soft": body & (hu >= SOFT_HU[0]) & (hu < SOFT_HU[1]),
        "bone": body & (hu >= BONE_HU),
    }


def geometry(body: np.ndarray, lung: np.ndarray, spacing_mm: float) -> dict[str, float]:
    """Body diameters, lung volume and levels of a canonical ``("I", "P", "L")`` volume (axis 0
    from head to feet, axis 1 front to back, axis 2 right to left), in mm and ml; NaN where the
    lungs are not found."""
    nan = float("nan")
    area = lung.sum(axis=(1, 2)).astype(float)
    out = {"lung_ml": float(lung.sum()) * spacing_mm**3 / 1000.0}
    if area.max() == 0:
        keys = ("ap_mm", "lr_mm", "lung_ap_mm", "lung_lr_mm", "apex_mm", "diaphragm_mm")
        return {**out, **dict.fromkeys(keys, nan)}
    widest = int(np.argmax(area))
    rows = np.flatnonzero(body[widest].any(axis=1))
    cols = np.flatnonzero(body[widest].any(axis=0))
    out["ap_mm"] = float(rows[-1] - rows[0] + 1) * spacing_mm if rows.size else nan
    out["lr_mm"] = float(cols[-1] - cols[0] + 1) * spacing_mm if cols.size else nan
    rows = np.flatnonzero(lung[widest].any(axis=1))
    cols = np.flatnonzero(lung[widest].any(axis=0))
    out["lung_ap_mm"] = float(rows[-1] - rows[0] + 1) * spacing_mm
    out["lung_lr_mm"] = float(cols[-1] - cols[0] + 1) * spacing_mm
    out["apex_mm"] = float(np.flatnonzero(area)[0]) * spacing_mm
    below = np.flatnonzero(area[widest:] < 0.5 * area[widest])
    out["diaphragm_mm"] = float(widest + int(below[0])) * spacing_mm if below.size else nan
    return out


def lung_texture_hu(hu: np.ndarray, lung: np.ndarray) -> float:
    """Standard deviation of the lung's HU minus its Gaussian-smoothed copy (sigma 1 voxel),
    inside the lung eroded by one voxel (so the lung's edge does not count)."""
    inner = ndimage.binary_erosion(lung)
    if not inner.any():
        return float("nan")
    detail = hu - ndimage.gaussian_filter(hu, 1.0)
    return float(np.std(detail[inner]))


def volume_stats(hu: np.ndarray, valid: np.ndarray, spacing_mm: float) -> dict[str, Any]:
    """Every per-volume measurement of one canonical HU cube: scalars (``stats``) and the HU
    samples of the body and each tissue class (``samples``, for the Wasserstein distances)."""
    from xprospect.preprocessing import body_mask

    body = body_mask(hu) & valid
    lung = lung_mask(hu, body, spacing_mm)
    masks = tissue_masks(hu, body, lung)
    n_body = max(int(body.sum()), 1)
    stats: dict[str, float] = geometry(body, lung, spacing_mm)
    stats["lung_texture_hu"] = lung_texture_hu(hu, lung)
    samples = {"body": hu[body]}
    for name, mask in masks.items():
        values = hu[mask]
        samples[name] = values
        stats[f"{name}_fraction"] = float(values.size) / n_body
        empty = values.size == 0
        stats[f"{name}_mean_hu"] = float("nan") if empty else float(values.mean())
        stats[f"{name}_p10_hu"] = float("nan") if empty else float(np.percentile(values, 10))
        stats[f"{name}_p90_hu"] = float("nan") if empty else float(np.percentile(values, 90))
    return {"stats": stats, "samples": samples}


# --- poses and DRRs -------------------------------------------------------------------------
def _rotation(angles_rad: np.ndarray) -> np.ndarray:
    a, b, c = angles_rad
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def random_pose(rng: np.random.Generator, spacing_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """A random pose as the output-to-input voxel map ``(matrix, shift_voxels)`` about the cube's
    centre: rotation within +-5 degrees about each axis, shift within +-10 mm per axis, scale
    within +-5 %."""
    angles = np.deg2rad(rng.uniform(-POSE_DEG, POSE_DEG, 3))
    scale = 1.0 + rng.uniform(-POSE_SCALE, POSE_SCALE)
    shift = rng.uniform(-POSE_SHIFT_MM, POSE_SHIFT_MM, 3) / spacing_mm
    return _rotation(angles) / scale, shift


def apply_pose(hu: np.ndarray, pose: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Resamples ``hu`` (linear) under ``pose``; what comes from outside the cube is air."""
    matrix, shift = pose
    centre = (np.asarray(hu.shape, float) - 1.0) / 2.0
    offset = centre - matrix @ centre + shift
    return ndimage.affine_transform(
        hu, matrix, offset=offset, order=1, mode="constant", cval=AIR_HU
    ).astype(np.float32)


def drr_pairs(volumes: np.ndarray, spacing_mm: float, size: int) -> np.ndarray:
    """Frontal and lateral X2CT display DRRs of ``(N, s, s, s)`` HU volumes: ``(N, 2, size,
    size)`` in [0, 1]."""
    from xprospect.projection import display_unit, render_drr_batch

    out = []
    for i in range(0, len(volumes), 16):  # bounded memory at 128^3
        line = render_drr_batch(
            volumes[i : i + 16], spacing_mm, "x2ct", ("frontal", "lateral"), size
        ).numpy()
        out.append(display_unit(line))
    return np.concatenate(out).astype(np.float32)


# --- distances ------------------------------------------------------------------------------
def scalar_distance(phantom_values: Sequence[float], real_values: Sequence[float]) -> float:
    """Mean over the real values of ``|mean of the phantom values - real value|`` (NaNs left
    out; NaN if nothing is left)."""
    p = np.asarray(phantom_values, float)
    r = np.asarray(real_values, float)
    p, r = p[np.isfinite(p)], r[np.isfinite(r)]
    if p.size == 0 or r.size == 0:
        return float("nan")
    return float(np.mean(np.abs(p.mean() - r)))


def _drr_scores(
    drrs: np.ndarray, real_drrs: np.ndarray, *, seed: int, epochs: int
) -> tuple[dict[str, float], dict[str, Any]]:
    """DRR distances (per view) and the classifier two-sample test between ``(N, 2, s, s)``
    phantom and real display DRRs."""
    from xprospect.style.metrics import (
        classifier_two_sample_test,
        histogram_distances,
        spectrum_distance,
    )

    out: dict[str, float] = {}
    for v, view in enumerate(("frontal", "lateral")):
        hist = histogram_distances(drrs[:, v], real_drrs[:, v])
        out[f"drr_{view}_wasserstein"] = hist["wasserstein"]
        out[f"drr_{view}_jensen_shannon"] = hist["jensen_shannon"]
        out[f"drr_{view}_spectrum_decades"] = spectrum_distance(drrs[:, v], real_drrs[:, v])
    # Frontal and lateral side by side: one test sees both views of a volume (and at their
    # full resolution: image_size is the wider side).
    side = np.concatenate([drrs[:, 0], drrs[:, 1]], axis=-1)
    real_side = np.concatenate([real_drrs[:, 0], real_drrs[:, 1]], axis=-1)
    test = classifier_two_sample_test(
        side, real_side, seed=seed, epochs=epochs, image_size=side.shape[-1]
    ).to_dict()
    out["classifier_accuracy"] = abs(test["accuracy"] - 0.5)
    out["classifier_auc"] = abs(test["auc"] - 0.5)
    return out, test


def _load_real(path: Path, size: int) -> tuple[np.ndarray, np.ndarray, float]:
    from xprospect.io import read_volume
    from xprospect.preprocessing import ct_preprocessing, remove_couch, scan_mask

    # As ``prepare`` and ``score_real_ct`` see a real CT: no couch (a standing patient's
    # radiograph shows none, and the phantoms have none).
    raw = remove_couch(read_volume(path))
    ct, valid = ct_preprocessing(size=size)(raw, scan_mask(raw))
    hu = np.clip(ct.array, *STORED_HU_RANGE).astype(np.float32)
    return hu, np.asarray(valid.array) > 0, float(ct.spacing_mm[0])


def real_ct_paths() -> tuple[list[tuple[str, Path]], str | None]:
    """The real CTs by name (the shipped sample first) and a note when the validation folder
    holds none."""
    here = str(Path(__file__).parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    from bench_transfer import default_real_cts

    from xprospect.data.samples import sample_ct

    extra = default_real_cts()
    cts = [("LIDC (shipped sample)", Path(sample_ct().ct_path))]
    cts += [(p.name.split(".")[0], p) for p in extra]
    note = None if extra else "no validation CTs in ../shared/data/real_ct: the LIDC sample only"
    return cts, note


def measure(
    size: int = 64,
    n_phantoms: int = 40,
    seed: int = 0,
    *,
    n_poses: int | None = None,
    epochs: int = 20,
    real_cts: Sequence[tuple[str, Path]] | None = None,
    calibrations: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Measures every calibration's phantoms against the real CTs (see the module docstring).

    Args:
        size: Cube side in voxels (the field is 320 mm).
        n_phantoms: Phantoms per calibration (seeds ``1000 * seed`` on); each also gives one
            pose (whole and framed) for the DRR distances and the classifier.
        seed: Seed of the phantoms, the poses and the classifier.
        n_poses: Real-CT poses (spread over the real CTs); defaults to ``n_phantoms``.
        epochs: The classifier's training epochs.
        real_cts: ``(name, path)`` pairs; default: the LIDC sample and the validation folder.
        calibrations: Names in ``PHANTOM_CALIBRATIONS``; default: all.

    Returns:
        A JSON-ready dict: ``real`` (per real CT's statistics), ``calibrations`` (per calibration:
        the phantoms' mean and standard deviation of each statistic, ``distance`` by metric,
        ``classifier`` and ``framed_classifier``), ``note`` and the settings.
    """
    from xprospect.phantoms import PHANTOM_CALIBRATIONS, chest_phantom

    t0 = time.perf_counter()
    note = None
    if real_cts is None:
        real_cts, note = real_ct_paths()
    names = list(calibrations or PHANTOM_CALIBRATIONS)
    n_poses = n_phantoms if n_poses is None else n_poses
    rng = np.random.default_rng(seed)
    spacing = DEFAULT_FOV_MM / size

    real: dict[str, dict[str, float]] = {}
    real_samples: dict[str, dict[str, np.ndarray]] = {}
    real_hu: list[np.ndarray] = []
    real_valid: list[np.ndarray] = []
    for name, path in real_cts:
        hu, valid, spacing = _load_real(Path(path), size)
        measured = volume_stats(hu, valid, spacing)
        real[name] = measured["stats"]
        real_samples[name] = measured["samples"]
        real_hu.append(hu)
        real_valid.append(valid)
    posed = np.stack(
        [apply_pose(real_hu[i % len(real_hu)], random_pose(rng, spacing)) for i in range(n_poses)]
    )
    real_drrs = drr_pairs(posed, spacing, size)
    del posed
    # Phantom i takes the same pose (and framing) whatever its calibration.
    poses = [random_pose(rng, spacing) for _ in range(n_phantoms)]

    per_cal: dict[str, Any] = {}
    for cal in names:
        stats: list[dict[str, float]] = []
        pooled: dict[str, list[np.ndarray]] = {}
        whole, framed = [], []
        for i in range(n_phantoms):
            vol = chest_phantom(size, 1000 * seed + i, calibration=cal).volume.array
            measured = volume_stats(vol, np.ones(vol.shape, bool), spacing)
            stats.append(measured["stats"])
            for key, values in measured["samples"].items():
                pooled.setdefault(key, []).append(values)
            whole.append(apply_pose(vol, poses[i]))
            # Framed as real CT i's scan: air where that scan did not measure, so the
            # classifier cannot tell the sets apart by the field of view alone.
            outside = ~real_valid[i % len(real_valid)]
            framed.append(apply_pose(np.where(outside, np.float32(AIR_HU), vol), poses[i]))
        keys = list(stats[0])
        values = {k: np.array([s[k] for s in stats], float) for k in keys}
        record: dict[str, Any] = {
            "mean": {
                k: _nan_none(np.nanmean(v)) if np.isfinite(v).any() else None
                for k, v in values.items()
            },
            "std": {
                k: _nan_none(np.nanstd(v)) if np.isfinite(v).any() else None
                for k, v in values.items()
            },
            "distance": {
                k: _nan_none(scalar_distance(values[k], [r[k] for r in real.values()]))
                for k in keys
            },
        }
        for key, chunks in pooled.items():
            phantom_hu = np.concatenate(chunks)
            dists = [
                wasserstein_distance(phantom_hu, real_samples[r][key])
                for r in real
                if phantom_hu.size and real_samples[r][key].size
            ]
            record["distance"][f"{key}_wasserstein_hu"] = float(np.mean(dists)) if dists else None
        for prefix, volumes in (("", whole), ("framed_", framed)):
            drrs = drr_pairs(np.stack(volumes), spacing, size)
            distances, test = _drr_scores(drrs, real_drrs, seed=seed, epochs=epochs)
            record["distance"].update({prefix + k: v for k, v in distances.items()})
            record[prefix + "classifier"] = test
        del whole, framed
        per_cal[cal] = record

    return {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "settings": {
            "size": size,
            "spacing_mm": spacing,
            "n_phantoms": n_phantoms,
            "n_poses": n_poses,
            "seed": seed,
            "epochs": epochs,
        },
        "note": note,
        "real": {name: {k: _nan_none(v) for k, v in s.items()} for name, s in real.items()},
        "calibrations": per_cal,
        "wall_s": round(time.perf_counter() - t0, 1),
    }


def _nan_none(x: float) -> float | None:
    """JSON has no NaN: None instead."""
    x = float(x)
    return x if np.isfinite(x) else None


# --- table ----------------------------------------------------------------------------------
ROWS: tuple[tuple[str, str, str], ...] = (
    # (key, label, format); a key with a real value shows it, the others are distances only.
    # The framed DRR distances are in the JSON only (they differ from the whole ones in the
    # third decimal where the real scans fill the field).
    ("body_wasserstein_hu", "HU in the body, W1 (HU)", ".0f"),
    *((f"{t}_wasserstein_hu", f"HU of {t}, W1 (HU)", ".0f") for t in TISSUES),
    *((f"{t}_fraction", f"{t} fraction of body", ".3f") for t in TISSUES),
    *((f"{t}_mean_hu", f"{t} mean HU", ".0f") for t in TISSUES),
    *((f"{t}_{p}_hu", f"{t} {p} HU", ".0f") for t in TISSUES for p in ("p10", "p90")),
    ("lung_texture_hu", "lung texture SD (HU)", ".0f"),
    ("ap_mm", "body AP diameter (mm)", ".0f"),
    ("lr_mm", "body LR diameter (mm)", ".0f"),
    ("lung_ap_mm", "lung AP extent (mm)", ".0f"),
    ("lung_lr_mm", "lung LR extent (mm)", ".0f"),
    ("lung_ml", "lung volume (ml)", ".0f"),
    ("apex_mm", "lung apex below top (mm)", ".0f"),
    ("diaphragm_mm", "diaphragm level (mm)", ".0f"),
    *(
        (f"drr_{v}_{m}", f"DRR {v} {label}", ".3f")
        for v in ("frontal", "lateral")
        for m, label in (
            ("wasserstein", "histogram W1"),
            ("jensen_shannon", "histogram JS"),
            ("spectrum_decades", "spectrum (decades)"),
        )
    ),
    ("classifier_accuracy", "classifier accuracy", ".2f"),
    ("classifier_auc", "classifier AUC", ".2f"),
    ("framed_classifier_accuracy", "classifier accuracy, framed", ".2f"),
    ("framed_classifier_auc", "classifier AUC, framed", ".2f"),
)


def _fmt(x: float | None, spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


def markdown(result: dict[str, Any]) -> str:
    """The distance table: one row per metric, the real CTs' values, per calibration the
    phantoms' mean (or the classifier's score) and its distance to the real CTs, and which
    calibration is closer."""
    cals = list(result["calibrations"])
    reals = list(result["real"])
    s = result["settings"]
    lines = [
        f"Phantoms vs real CT at {s['size']}^3 ({s['spacing_mm']:.2f} mm voxels): "
        f"{s['n_phantoms']} phantoms per calibration, {s['n_poses']} real-CT poses, "
        f"seed {s['seed']}; real CTs: {', '.join(reals)}. "
        "Cells: phantom mean (distance to the real CTs: mean of |phantom mean - real|; "
        "W1 and DRR rows are distances; classifier rows: score (|score - 0.5|)).",
        "",
        "| metric | real | " + " | ".join(cals) + " | closer |",
        "|---|---|" + "---|" * len(cals) + "---|",
    ]
    for key, label, spec in ROWS:
        dists = {c: result["calibrations"][c]["distance"].get(key) for c in cals}
        if all(d is None for d in dists.values()):
            continue
        if key in result["real"][reals[0]]:
            real = " / ".join(_fmt(result["real"][r][key], spec) for r in reals)
            cells = [
                f"{_fmt(result['calibrations'][c]['mean'][key], spec)} ({_fmt(dists[c], spec)})"
                for c in cals
            ]
        elif "classifier_" in key:
            real = "0.5"
            test, field = key.split("_", 1) if key.startswith("framed_") else ("", key)
            test = f"{test}_classifier" if test else "classifier"
            field = field.removeprefix("classifier_")
            cells = [
                f"{_fmt(result['calibrations'][c][test][field], spec)} ({_fmt(dists[c], spec)})"
                for c in cals
            ]
        else:
            real = "-"
            cells = [_fmt(dists[c], spec) for c in cals]
        known = {c: d for c, d in dists.items() if d is not None}
        best = min(known, key=lambda c: known[c]) if known else "n/a"
        if len(known) > 1 and len(set(np.round(list(known.values()), 12))) == 1:
            best = "tie"
        lines.append(f"| {label} | {real} | " + " | ".join(cells) + f" | {best} |")
    tests = "; ".join(
        f"{c}: p = {result['calibrations'][c]['classifier']['p_value']:.2g}, framed "
        f"{result['calibrations'][c]['framed_classifier']['p_value']:.2g}"
        for c in cals
    )
    n_test = result["calibrations"][cals[0]]["classifier"]["n_test"]
    lines += [
        "",
        f"Classifier two-sample test, p-value of the accuracy against chance ({n_test} DRR "
        f"pairs held out): {tests}. Framed: each phantom is set to air outside a real CT's "
        "scan mask before posing, so the field of view is no tell.",
    ]
    if result.get("note"):
        lines += ["", f"Note: {result['note']}."]
    lines += ["", f"Wall time {result['wall_s']:.0f} s on {result['machine']}."]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--phantoms", type=int, default=40)
    parser.add_argument("--poses", type=int, default=None, help="default: --phantoms")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--real-ct", help="validation CT folder (default ../shared/data/real_ct)")
    parser.add_argument("--output", default=str(RESULTS / "bench_phantom_realism.json"))
    args = parser.parse_args(argv)
    if args.real_ct:
        os.environ["XPROSPECT_REAL_CT"] = args.real_ct
    result = measure(args.size, args.phantoms, args.seed, n_poses=args.poses)
    result["command"] = "python benchmarks/bench_phantom_realism.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    out.with_suffix(".md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
