"""Real chest radiographs: domain B of the DRR <-> X-ray CycleGAN (NumPy, SciPy and Pillow only).

A collection of real radiographs is a folder with a CSV manifest naming each image and its view,
laid out like ``../shared/data/real_xrays`` (see its README)::

    folder/manifest.csv     file,view,patient,pair_id,...   (view: PA | AP | AP Supine | L)
    folder/images/*.png

:func:`read_real_manifest` reads and checks the manifest, :func:`split_by_patient` makes a
patient-disjoint train/validation split, and :func:`load_real_xrays` reads one view as a
``(N, size, size)`` float32 stack that looks like the display-mapped DRRs of domain A: square,
``size`` pixels, bright = dense, percentile-windowed to [0, 1] (``docs/conventions.md``).

Real images are messier than DRRs, so :func:`preprocess_real_xray` first removes burnt-in markers
and text (:func:`suppress_markers`), then cuts a square around the body (:func:`thorax_box`) so
that borders, collimation and off-centre framing matter less, resizes with anti-aliasing, and
windows last so the window sees only what the model will see.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy import ndimage as ndi

from xprospect.errors import (
    ConfigError,
    EmptyFileError,
    GeometryError,
    InvalidValuesError,
    MissingDataError,
)
from xprospect.image import Radiograph, View
from xprospect.io import read_radiograph
from xprospect.preprocessing import crop_to_square, pad_to_square, percentile_window, resize_image

__all__ = [
    "FRONTAL_VIEWS",
    "LATERAL_VIEWS",
    "REAL_XRAYS_ENV",
    "RealXray",
    "default_real_xray_dir",
    "load_real_xrays",
    "otsu_threshold",
    "preprocess_real_xray",
    "read_real_manifest",
    "split_by_patient",
    "suppress_markers",
    "thorax_box",
]

ViewKind = Literal["frontal", "lateral"]
CropMode = Literal["thorax", "pad", "center"]

REAL_XRAYS_ENV = "XPROSPECT_REAL_XRAYS"
"""Environment variable naming the real X-ray folder; overrides the default location."""

FRONTAL_VIEWS: frozenset[str] = frozenset(
    {
        "PA",
        "AP",
        "AP SUPINE",
        "AP ERECT",
        "AP UPRIGHT",
        "AP SEMI ERECT",
        "AP SEMIERECT",
        "AP SITTING",
        "AP PORTABLE",
        "AP SUPINE PORTABLE",
        "APS",
        "FRONTAL",
    }
)
"""Manifest view labels read as frontal, after normalisation (upper case, ``_``/``-`` as spaces,
single spaces). Any other label that starts with ``"AP "`` (an AP qualifier) is frontal too."""

LATERAL_VIEWS: frozenset[str] = frozenset(
    {"L", "LL", "RL", "LAT", "LATERAL", "LLAT", "RLAT", "LEFT LATERAL", "RIGHT LATERAL"}
)
"""Manifest view labels read as lateral, after the same normalisation as :data:`FRONTAL_VIEWS`."""

_REQUIRED_COLUMNS = ("file", "view")
_SPLITS = ("train", "val")


@dataclass(frozen=True)
class RealXray:
    """One row of a real X-ray manifest.

    Args:
        path: The image file (resolved against the folder's ``images/``).
        view: ``"frontal"`` or ``"lateral"``.
        raw_view: The manifest's label, as written (``"AP Supine"``, ``"L"``, ...).
        patient: Patient identifier (the file stem when the manifest has none).
        pair_id: Identifier shared by a frontal and a lateral of the same patient and day, if any.
    """

    path: Path
    view: ViewKind
    raw_view: str
    patient: str
    pair_id: str | None


# ---------------------------------------------------------------------------------------------
# Manifest
# ---------------------------------------------------------------------------------------------
def _normalise_label(raw: str) -> str:
    return " ".join(raw.upper().replace("_", " ").replace("-", " ").split())


def _view_kind(raw: str) -> ViewKind | None:
    label = _normalise_label(raw)
    if label in FRONTAL_VIEWS or label.startswith("AP "):
        return "frontal"
    if label in LATERAL_VIEWS:
        return "lateral"
    return None


def _check_view_kind(view: str) -> ViewKind:
    v = str(view).strip().lower()
    if v == "frontal":
        return "frontal"
    if v == "lateral":
        return "lateral"
    raise ConfigError(f"view must be 'frontal' or 'lateral', got {view!r}")


def default_real_xray_dir() -> Path | None:
    """Where the real X-rays are, if anywhere.

    ``$XPROSPECT_REAL_XRAYS`` wins when set (returned as given, unchecked, so a wrong setting fails
    loudly in :func:`read_real_manifest` instead of silently skipping); otherwise the first existing
    folder of ``../shared/data/real_xrays`` relative to the current directory and relative to the
    repository root (the parent of the ``xprospect`` package directory).

    Returns:
        The folder, or None when neither default location exists.
    """
    env = os.environ.get(REAL_XRAYS_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    repo_root = Path(__file__).resolve().parents[2]
    for base in (Path.cwd(), repo_root):
        candidate = base / ".." / "shared" / "data" / "real_xrays"
        if candidate.is_dir():
            return candidate.resolve()
    return None


def read_real_manifest(
    folder: str | os.PathLike[str], manifest: str | os.PathLike[str] | None = None
) -> list[RealXray]:
    """Reads and checks a real X-ray manifest.

    Column names are matched case-insensitively; ``file`` and ``view`` are required, ``patient``
    (default: the file stem) and ``pair_id`` (empty = unpaired) are optional, other columns
    (licence, source, ...) are ignored. Blank lines are skipped.

    Args:
        folder: The collection's folder.
        manifest: The CSV; defaults to ``folder/manifest.csv``. File names in it are resolved
            against ``folder/images/`` when that folder exists, else against ``folder``.

    Returns:
        The records in manifest order.

    Raises:
        MissingDataError: No folder, no manifest, a required column missing, an image file
            missing (the message gives the line and file), or a manifest without rows.
        EmptyFileError: A 0-byte manifest.
        ConfigError: A row with an empty ``file`` or a view label that is neither frontal nor
            lateral (the message gives the line).
    """
    root = Path(folder)
    if not root.is_dir():
        raise MissingDataError("real X-ray folder not found", root)
    path = root / "manifest.csv" if manifest is None else Path(manifest)
    if not path.is_file():
        raise MissingDataError("manifest not found", path)
    if path.stat().st_size == 0:
        raise EmptyFileError("manifest is empty (0 bytes)", path)
    image_dir = root / "images" if (root / "images").is_dir() else root

    records: list[RealXray] = []
    # utf-8-sig: spreadsheet exports often start with a byte-order mark glued to the first name.
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = [(name or "").strip().lower() for name in (reader.fieldnames or [])]
        missing = [c for c in _REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise MissingDataError(
                f"manifest lacks required column(s) {', '.join(missing)} "
                f"(has: {', '.join(columns) or 'none'})",
                path,
            )
        reader.fieldnames = columns
        for row in reader:
            values = {k: (v or "").strip() for k, v in row.items() if isinstance(k, str)}
            if not any(values.values()):
                continue
            line = reader.line_num
            name = values.get("file", "")
            if not name:
                raise ConfigError(f"line {line}: empty 'file'", path)
            raw_view = values.get("view", "")
            kind = _view_kind(raw_view)
            if kind is None:
                raise ConfigError(
                    f"line {line} ({name}): unknown view {raw_view!r}; expected a frontal label "
                    f"({', '.join(sorted(FRONTAL_VIEWS))}) or a lateral one "
                    f"({', '.join(sorted(LATERAL_VIEWS))})",
                    path,
                )
            image_path = image_dir / name
            if not image_path.is_file():
                raise MissingDataError(
                    f"line {line}: image {name!r} not found (looked for {image_path})", path
                )
            records.append(
                RealXray(
                    path=image_path,
                    view=kind,
                    raw_view=raw_view,
                    patient=values.get("patient") or Path(name).stem,
                    pair_id=values.get("pair_id") or None,
                )
            )
    if not records:
        raise MissingDataError("manifest lists no images", path)
    return records


# ---------------------------------------------------------------------------------------------
# Patient split
# ---------------------------------------------------------------------------------------------
def _linked_patient_groups(records: Sequence[RealXray]) -> list[list[str]]:
    """Patients that must stay together, in order of first appearance.

    Public collections list some images under two patient ids (the same case published twice) and
    give a pair id to films of one person under two ids; such patients are one person, so they are
    joined (union-find over shared files and shared pair ids) to keep an image out of both splits.
    """
    parent: dict[str, str] = {}

    def find(p: str) -> str:
        while parent[p] != p:
            parent[p] = parent[parent[p]]
            p = parent[p]
        return p

    first_owner: dict[tuple[str, str], str] = {}
    for r in records:
        parent.setdefault(r.patient, r.patient)
        keys = [("file", str(r.path.resolve()))]
        if r.pair_id is not None:
            keys.append(("pair", r.pair_id))
        for key in keys:
            other = first_owner.setdefault(key, r.patient)
            a, b = find(other), find(r.patient)
            if a != b:
                parent[b] = a
    groups: dict[str, list[str]] = {}
    for patient in parent:  # dicts keep insertion order: first appearance
        groups.setdefault(find(patient), []).append(patient)
    return list(groups.values())


def split_by_patient(
    records: Iterable[RealXray], val_fraction: float = 0.2, seed: int = 0
) -> dict[str, list[RealXray]]:
    """Splits records into train and validation sets with no patient in both.

    Patients are shuffled with ``np.random.default_rng(seed)`` and moved to validation first-fit
    while the validation set stays within ``val_fraction`` of the *records* (the first patient
    always goes, so validation is never empty). Patients that share an image file or a pair id are
    treated as one (see ``_linked_patient_groups``) unless that leaves a single group. Split the
    whole manifest, then select a view, so that a patient's frontal and lateral land together.

    Args:
        records: Manifest records (any views).
        val_fraction: Target share of records in validation, in (0, 1).
        seed: Seed of the shuffle; the split is a pure function of the records and the seed.

    Returns:
        ``{"train": [...], "val": [...]}``, each in the input order. With fewer than two patients
        everything is in ``"train"``.

    Raises:
        ConfigError: If ``val_fraction`` is not in (0, 1).
    """
    try:
        fraction = float(val_fraction)
    except (TypeError, ValueError):
        fraction = math.nan
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    items = list(records)
    patients = list(dict.fromkeys(r.patient for r in items))
    if len(patients) < 2:
        return {"train": items, "val": []}
    groups = _linked_patient_groups(items)
    if len(groups) < 2:
        groups = [[p] for p in patients]
    counts: dict[str, int] = {}
    for r in items:
        counts[r.patient] = counts.get(r.patient, 0) + 1
    sizes = [sum(counts[p] for p in g) for g in groups]

    target = fraction * len(items)
    rng = np.random.default_rng(seed)
    val_patients: set[str] = set()
    n_val = 0
    for gi in rng.permutation(len(groups)):
        # n_val + size <= target < len(items) after the first group, so train keeps >= 1 group.
        if not val_patients or n_val + sizes[gi] <= target:
            val_patients.update(groups[gi])
            n_val += sizes[gi]
    return {
        "train": [r for r in items if r.patient not in val_patients],
        "val": [r for r in items if r.patient in val_patients],
    }


# ---------------------------------------------------------------------------------------------
# Image analysis
# ---------------------------------------------------------------------------------------------
def _finite_array(image: Radiograph | np.ndarray) -> np.ndarray:
    """The image as float64 with non-finite pixels set to the finite minimum (= background)."""
    a = image.array if isinstance(image, Radiograph) else np.asarray(image)
    if a.ndim != 2:
        raise GeometryError(f"expected a 2D image, got shape {a.shape}")
    if min(a.shape) < 1:
        raise GeometryError(f"image has an empty axis: shape {a.shape}")
    if a.dtype.kind not in "fiub":
        raise InvalidValuesError(f"unsupported pixel type {a.dtype}")
    out = a.astype(np.float64)
    finite = np.isfinite(out)
    if not finite.any():
        raise InvalidValuesError("image has no finite pixel (all NaN/Inf)")
    if not finite.all():
        out[~finite] = out[finite].min()
    return out


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold (as ``skimage.filters.threshold_otsu``: bin centres, ``x > t`` is fg)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        return lo
    hist, edges = np.histogram(v, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2.0
    hist = hist.astype(np.float64)
    w0 = np.cumsum(hist)
    w1 = np.cumsum(hist[::-1])[::-1]
    m0 = np.cumsum(hist * centres) / np.maximum(w0, 1e-300)
    m1 = (np.cumsum((hist * centres)[::-1]) / np.maximum(w1[::-1], 1e-300))[::-1]
    # Between-class variance for a split after bin i (classes: bins <= i, bins > i).
    between = w0[:-1] * w1[1:] * (m0[:-1] - m1[1:]) ** 2
    return float(centres[int(np.argmax(between))])


def _flat_lines(a: np.ndarray, tol: float, axis: int) -> np.ndarray:
    """Whether each line along ``axis`` has >= 90 % of its pixels within ``tol`` of its median."""
    median = np.median(a, axis=axis, keepdims=True)
    return np.asarray((np.abs(a - median) <= tol).mean(axis=axis) >= 0.9)


def _uniform_border(a: np.ndarray, tol: float) -> tuple[int, int, int, int]:
    """Half-open ``(r0, r1, c0, c1)`` inside the flat rows/columns that frame the image.

    Exported radiographs are often framed by flat black or white bands (scanner borders,
    collimator shadows, letterboxing) that may hold a label or end short of the corner; a row or
    column counts as flat when 90 % of it lies within ``tol`` of its median. At most a third of
    each side is trimmed.
    """
    h, w = a.shape
    row_flat = _flat_lines(a, tol, axis=1)
    col_flat = _flat_lines(a, tol, axis=0)
    if row_flat.all() or col_flat.all():
        return 0, h, 0, w  # a flat image has no frame, only nothing in it

    def run(flags: np.ndarray) -> int:
        limit = len(flags) // 3
        n = 0
        while n < limit and flags[n]:
            n += 1
        return n

    return run(row_flat), h - run(row_flat[::-1]), run(col_flat), w - run(col_flat[::-1])


def thorax_box(
    image: Radiograph | np.ndarray,
    *,
    sigma_fraction: float = 0.01,
    air_fraction: float = 0.15,
    min_component_fraction: float = 0.01,
    min_area_fraction: float = 0.05,
) -> tuple[int, int, int, int]:
    """Bounding box of the body in a display-convention radiograph (bright = dense).

    Method (NumPy/SciPy only):

    1. Trim flat bands framing the image: rows/columns with 90 % of their pixels within 5 % of
       the robust range (0.5-99.5 percentiles) of their median, at most a third per side. This
       removes black letterboxing and bright collimator or scanner borders, which would
       otherwise join the body.
    2. Smooth with a Gaussian of sigma ``sigma_fraction * min(h, w)`` so that noise, wires and
       leftover text stop mattering.
    3. Threshold at the lower of Otsu's level and ``air_fraction`` of the way up the smoothed
       image's robust range. Where air surrounds the body both separate air from body; on a
       tightly cropped film (no air) Otsu would split lungs from bone and soft tissue and lose
       the apices, while the air level keeps every part of the chest above it.
    4. Open with a 3x3 square (cuts thin bridges), keep every 8-connected component of at least
       ``min_component_fraction`` of the trimmed image (the trunk, arms, shoulders; not labels),
       and return the bounding box of their union. If they cover less than ``min_area_fraction``
       the segmentation is not trusted and the trimmed image is returned.

    Args:
        image: A :class:`Radiograph` or 2D array ``(h, w)`` of any real dtype; non-finite pixels
            count as background.
        sigma_fraction: Smoothing sigma as a fraction of the shorter side.
        air_fraction: Highest threshold, as a fraction of the smoothed robust range.
        min_component_fraction: Smallest component kept, as a fraction of the trimmed image.
        min_area_fraction: Smallest believable body, as a fraction of the trimmed image.

    Returns:
        ``(r0, r1, c0, c1)``, half-open: the body is ``image[r0:r1, c0:c1]``.

    Raises:
        GeometryError: If the image is not 2D.
        InvalidValuesError: If it has no finite pixel.
    """
    a = _finite_array(image)
    lo, hi = np.percentile(a, [0.5, 99.5])
    r0, r1, c0, c1 = _uniform_border(a, tol=0.05 * max(float(hi - lo), 1e-12))
    inner = a[r0:r1, c0:c1]
    if inner.size < 4:
        return r0, r1, c0, c1
    sigma = max(1.0, float(sigma_fraction) * min(inner.shape))
    smooth = ndi.gaussian_filter(inner, sigma, mode="nearest")
    s_lo, s_hi = np.percentile(smooth, [0.5, 99.5])
    threshold = min(otsu_threshold(smooth), float(s_lo + air_fraction * (s_hi - s_lo)))
    mask = smooth > threshold
    mask = ndi.binary_opening(mask, structure=np.ones((3, 3), dtype=bool))
    labels, n = ndi.label(mask, structure=np.ones((3, 3), dtype=int))
    if n == 0:
        return r0, r1, c0, c1
    areas = np.bincount(labels.ravel())[1:]
    keep = areas >= min_component_fraction * inner.size
    if areas[keep].sum() < min_area_fraction * inner.size:
        return r0, r1, c0, c1
    body = np.concatenate([[False], keep])[labels]
    rows = np.flatnonzero(body.any(axis=1))
    cols = np.flatnonzero(body.any(axis=0))
    return r0 + int(rows[0]), r0 + int(rows[-1]) + 1, c0 + int(cols[0]), c0 + int(cols[-1]) + 1


def _marker_mask(
    a: np.ndarray,
    *,
    max_area_fraction: float,
    bright_fraction: float,
    contrast_fraction: float,
    edge_fraction: float,
    size_fraction: float,
    min_pixels: int,
    dilation: int,
) -> np.ndarray:
    """Pixels of burnt-in markers/text in a float64 image (see :func:`suppress_markers`)."""
    low = float(np.percentile(a, 1.0))
    span = float(a.max()) - low
    if span <= 0:
        return np.zeros(a.shape, dtype=bool)
    bright = a >= low + bright_fraction * span
    labels, n = ndi.label(bright, structure=np.ones((3, 3), dtype=int))
    if n == 0:
        return np.zeros(a.shape, dtype=bool)
    # A grey opening with a k x k square removes bright structures narrower than k: the top-hat
    # a - opening is large on letters and lead markers and ~0 inside wide anatomy.
    k = _opening_side(a.shape, size_fraction)
    sharp = (a - ndi.grey_opening(a, size=(k, k), mode="nearest")) >= contrast_fraction * span
    # Printed marks step from their value to the background within a pixel or two; bone edges
    # (rib crossings, clavicles), which the top-hat also flags, fall off over several pixels.
    drop = a - ndi.grey_erosion(a, size=(5, 5), mode="nearest")
    edge = bright & ~ndi.binary_erosion(bright, structure=np.ones((3, 3), dtype=bool))
    idx = np.arange(1, n + 1)
    area = ndi.sum_labels(np.ones_like(a), labels, idx)
    sharp_share = ndi.sum_labels(sharp.astype(np.float64), labels, idx) / area
    edge_count = ndi.sum_labels(edge.astype(np.float64), labels, idx)
    edge_drop = ndi.sum_labels(np.where(edge, drop, 0.0), labels, idx) / np.maximum(edge_count, 1)
    # A whole bright blob must be small and mostly "sharp": a large bright region (an overexposed
    # abdomen, the spine) has sharp pixels only at its tips and is kept as a whole.
    keep = (
        (area <= max_area_fraction * a.size)
        & (area >= min_pixels)
        & (sharp_share >= 0.5)
        & (edge_drop >= edge_fraction * span)
    )
    mask = np.concatenate([[False], keep])[labels]
    if dilation > 0 and mask.any():
        # Anti-aliased letter edges are bright too but below the threshold.
        mask = ndi.binary_dilation(mask, structure=np.ones((3, 3), dtype=bool), iterations=dilation)
    return mask


def _opening_side(shape: tuple[int, ...], size_fraction: float) -> int:
    return max(5, round(size_fraction * min(shape)) | 1)


def _fill_from_surroundings(a: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
    """Replaces ``mask`` pixels by a Gaussian-weighted mean of the unmasked pixels around them."""
    out = a.copy()
    known = (~mask).astype(np.float64)
    if not known.any():
        return out
    todo = mask.copy()
    s = sigma
    # Normalised convolution; a larger sigma reaches the centre of blobs wider than the kernel.
    while todo.any():
        weight = ndi.gaussian_filter(known, s, mode="nearest")
        value = ndi.gaussian_filter(a * known, s, mode="nearest")
        ok = todo & (weight > 1e-3)
        out[ok] = value[ok] / weight[ok]
        todo &= ~ok
        s *= 2.0
    return out


def suppress_markers(
    image: Radiograph | np.ndarray,
    *,
    max_area_fraction: float = 0.01,
    bright_fraction: float = 0.75,
    contrast_fraction: float = 0.4,
    edge_fraction: float = 0.5,
    size_fraction: float = 0.08,
    min_pixels: int = 4,
    dilation: int = 2,
    fill_sigma_fraction: float = 0.012,
) -> np.ndarray:
    """Removes burnt-in markers and text (side markers, labels, arrows) from a radiograph.

    With ``span`` the range from the 1st percentile to the maximum, a marker is an 8-connected
    region of pixels at least ``bright_fraction`` of the way up the span that

    - is small: between ``min_pixels`` and ``max_area_fraction`` of the image's pixels;
    - is thin: at least half of its pixels stand ``contrast_fraction * span`` above a grey opening
      with a square of side ``size_fraction * min(h, w)`` (a white top-hat);
    - is sharp-edged: on average its outline drops by ``edge_fraction * span`` within two pixels
      (the pixel minus the 5x5 minimum around it).

    Wide bright anatomy (spine, heart, diaphragm) fails the top-hat or the area test; the bright
    spots where ribs cross each other or the clavicles pass the top-hat but fade over several
    pixels and fail the edge test. The thresholds were set by eye on the 294 images of
    ``../shared/data/real_xrays``; faint or grey text, text over bright anatomy and large
    devices are left. Marker pixels, grown by ``dilation`` pixels to take their anti-aliased
    edges, are replaced by a Gaussian-weighted mean of the unmarked pixels around them
    (normalised convolution with sigma ``fill_sigma_fraction * min(h, w)``, at least 2 pixels,
    doubled until every hole is filled): a small sigma keeps air from bleeding into a marker that
    sits on the skin line.

    Args:
        image: A :class:`Radiograph` or 2D array ``(h, w)``, bright = dense; non-finite pixels are
            set to the finite minimum.
        max_area_fraction: Largest marker, as a fraction of the image's pixels.
        bright_fraction: Brightness of a marker pixel, as a fraction of the span.
        contrast_fraction: Top-hat a marker pixel reaches, as a fraction of the span.
        edge_fraction: Mean drop across a marker's outline, as a fraction of the span.
        size_fraction: Side of the opening square (the widest stroke found) over the shorter
            image side.
        min_pixels: Smallest marker in pixels (single bright pixels are noise or bone).
        dilation: Pixels added around each marker before filling.
        fill_sigma_fraction: Sigma of the fill's Gaussian over the shorter image side.

    Returns:
        float32 ``(h, w)``; unmarked pixels keep the input's values.

    Raises:
        GeometryError: If the image is not 2D.
        InvalidValuesError: If it has no finite pixel.
        ConfigError: If a fraction is outside (0, 1], or ``min_pixels`` or ``dilation`` is not a
            non-negative integer.
    """
    for name, value in (
        ("max_area_fraction", max_area_fraction),
        ("bright_fraction", bright_fraction),
        ("contrast_fraction", contrast_fraction),
        ("edge_fraction", edge_fraction),
        ("size_fraction", size_fraction),
        ("fill_sigma_fraction", fill_sigma_fraction),
    ):
        if not 0.0 < float(value) <= 1.0:
            raise ConfigError(f"{name} must be in (0, 1], got {value!r}")
    for name, count in (("min_pixels", min_pixels), ("dilation", dilation)):
        if int(count) != count or count < 0:
            raise ConfigError(f"{name} must be a non-negative integer, got {count!r}")
    a = _finite_array(image)
    mask = _marker_mask(
        a,
        max_area_fraction=float(max_area_fraction),
        bright_fraction=float(bright_fraction),
        contrast_fraction=float(contrast_fraction),
        edge_fraction=float(edge_fraction),
        size_fraction=float(size_fraction),
        min_pixels=int(min_pixels),
        dilation=int(dilation),
    )
    if not mask.any():
        return a.astype(np.float32)
    sigma = max(2.0, float(fill_sigma_fraction) * min(a.shape))
    return _fill_from_surroundings(a, mask, sigma).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Preprocessing and loading
# ---------------------------------------------------------------------------------------------
def _square_around(
    a: np.ndarray, box: tuple[int, int, int, int], margin: float, fill: float
) -> np.ndarray:
    """The square of side ``max(box height, box width) * (1 + 2 margin)`` centred on ``box``,
    padded with ``fill`` where it leaves the image."""
    r0, r1, c0, c1 = box
    n = max(1, math.ceil(max(r1 - r0, c1 - c0) * (1.0 + 2.0 * margin)))
    start_r = math.floor((r0 + r1 - n) / 2.0 + 0.5)
    start_c = math.floor((c0 + c1 - n) / 2.0 + 0.5)
    out = np.full((n, n), fill, dtype=a.dtype)
    src_r = slice(max(start_r, 0), min(start_r + n, a.shape[0]))
    src_c = slice(max(start_c, 0), min(start_c + n, a.shape[1]))
    dst_r = slice(src_r.start - start_r, src_r.stop - start_r)
    dst_c = slice(src_c.start - start_c, src_c.stop - start_c)
    out[dst_r, dst_c] = a[src_r, src_c]
    return out


def preprocess_real_xray(
    image: Radiograph | np.ndarray,
    size: int = 128,
    *,
    crop: CropMode = "thorax",
    percentiles: Sequence[float] = (0.5, 99.5),
    suppress: bool = True,
    margin: float = 0.02,
    **suppress_kwargs: Any,
) -> np.ndarray:
    """Turns a real radiograph into a model input like a display-mapped DRR.

    Steps: non-finite pixels to the finite minimum; :func:`suppress_markers` (if ``suppress``);
    a square window (``crop``); anti-aliased linear resize to ``size`` x ``size``
    (:func:`~xprospect.preprocessing.resize_image`); :func:`~xprospect.preprocessing.
    percentile_window` last, so the window is computed on exactly the pixels the model sees.

    Args:
        image: A :class:`Radiograph` or 2D array ``(h, w)`` of any real dtype and range, bright =
            dense.
        size: Output side in pixels.
        crop: ``"thorax"``: the :func:`thorax_box` grown to a square (plus ``margin`` per side),
            padded with the image minimum where it leaves the image; ``"pad"``: the whole image
            padded to a square with its minimum; ``"center"``: the central square.
        percentiles: ``(low, high)`` percentiles mapped to 0 and 1.
        suppress: Remove burnt-in markers first.
        margin: Extra border around the thorax box, as a fraction of its longer side
            (``crop="thorax"`` only).
        **suppress_kwargs: Passed to :func:`suppress_markers`.

    Returns:
        float32 ``(size, size)`` in [0, 1].

    Raises:
        GeometryError: If the image is not 2D or ``size`` is not positive.
        InvalidValuesError: If the image has no finite pixel.
        ConfigError: If ``crop``, ``percentiles`` or ``margin`` is invalid.
    """
    if isinstance(size, bool) or int(size) != size or size < 1:
        raise GeometryError(f"size must be a positive integer, got {size!r}")
    if crop not in ("thorax", "pad", "center"):
        raise ConfigError(f"crop must be 'thorax', 'pad' or 'center', got {crop!r}")
    if len(percentiles) != 2:
        raise ConfigError(f"percentiles must be (low, high), got {percentiles!r}")
    if not 0.0 <= float(margin) < 1.0:
        raise ConfigError(f"margin must be in [0, 1), got {margin!r}")
    a = _finite_array(image)
    if suppress:
        a = suppress_markers(a, **suppress_kwargs).astype(np.float64)
    if crop == "thorax":
        square = _square_around(a, thorax_box(a), float(margin), fill=float(a.min()))
    elif crop == "pad":
        square = pad_to_square(a, fill="min")
    else:
        square = crop_to_square(a)
    resized = resize_image(square, int(size), anti_aliasing=True)
    out = percentile_window(resized, float(percentiles[0]), float(percentiles[1]))
    return np.asarray(out, dtype=np.float32)


def _radiograph_view(record: RealXray) -> View:
    try:
        return View.parse(record.raw_view)
    except ValueError:
        # Labels this module accepts but View.parse does not ("LEFT LATERAL"); PA stands for any
        # frontal label since PA and AP display the same way.
        return View.PA if record.view == "frontal" else View.LATERAL


def load_real_xrays(
    folder: str | os.PathLike[str],
    view: ViewKind,
    size: int = 128,
    *,
    split: str | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    manifest: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    **preprocess_kwargs: Any,
) -> tuple[np.ndarray, list[RealXray]]:
    """Reads and preprocesses every real radiograph of one view.

    The split is made on the whole manifest (both views) before the view is selected, so the
    frontal and lateral stacks of a ``split`` hold the same patients.

    Args:
        folder: The collection's folder (see :func:`read_real_manifest`).
        view: ``"frontal"`` or ``"lateral"``.
        size: Output side in pixels.
        split: None for all records, else ``"train"`` or ``"val"`` of :func:`split_by_patient`.
        val_fraction: Passed to :func:`split_by_patient`.
        seed: Passed to :func:`split_by_patient`.
        manifest: The CSV, if not ``folder/manifest.csv``.
        limit: Read only the first ``limit`` images of the selection (None: all).
        **preprocess_kwargs: Passed to :func:`preprocess_real_xray` (``crop``, ``percentiles``,
            ``suppress``, ...).

    Returns:
        ``(images, records)``: float32 ``(N, size, size)`` in [0, 1], and the N records in the
        same (manifest) order.

    Raises:
        ConfigError: If ``view`` or ``split`` is unknown.
        MissingDataError: If the manifest or an image is missing, or no image of ``view`` is in
            the selection.
        XprospectError: Subclasses from the image reader for unreadable files.
    """
    kind = _check_view_kind(view)
    if split is not None and split not in _SPLITS:
        raise ConfigError(f"split must be None, 'train' or 'val', got {split!r}")
    records = read_real_manifest(folder, manifest)
    if split is not None:
        records = split_by_patient(records, val_fraction=val_fraction, seed=seed)[split]
    chosen = [r for r in records if r.view == kind][:limit]
    if not chosen:
        where = "" if split is None else f" in the {split!r} split"
        raise MissingDataError(f"no {kind} image in the manifest{where}", folder)
    images = np.empty((len(chosen), int(size), int(size)), dtype=np.float32)
    for i, record in enumerate(chosen):
        radiograph = read_radiograph(record.path, view=_radiograph_view(record))
        images[i] = preprocess_real_xray(radiograph, size, **preprocess_kwargs)
    return images, chosen
