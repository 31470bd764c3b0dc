"""Tests of xprospect.style.radiographs: real X-ray manifests, patient splits, marker suppression,
thorax cropping and preprocessing.

References are analytic (the synthetic chest's ellipse, the marker's known position), NumPy
(``np.percentile``, ``np.pad``, slicing), scikit-image (``threshold_otsu``, ``resize``) and the
manifest's own CSV read with the standard library; never the code under test. The real-data test
reads ``../shared/data/real_xrays`` and skips when it is absent.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage as ndi
from PIL import Image
from skimage.filters import threshold_otsu
from skimage.transform import resize as sk_resize

from xprospect.errors import (
    ConfigError,
    EmptyFileError,
    GeometryError,
    InvalidValuesError,
    MissingDataError,
)
from xprospect.image import Radiograph, View
from xprospect.io import read_radiograph
from xprospect.style.radiographs import (
    FRONTAL_VIEWS,
    LATERAL_VIEWS,
    REAL_XRAYS_ENV,
    RealXray,
    default_real_xray_dir,
    load_real_xrays,
    otsu_threshold,
    preprocess_real_xray,
    read_real_manifest,
    split_by_patient,
    suppress_markers,
    thorax_box,
)

BACKGROUND = 0.05
SOFT_TISSUE = 0.45
SPINE = 0.9
MARKER = 1.0


# --- synthetic chest ------------------------------------------------------------------------------
def synthetic_chest(
    shape: tuple[int, int] = (256, 224),
    center: tuple[float, float] = (130.0, 112.0),
    semi_axes: tuple[float, float] = (100.0, 85.0),
    seed: int = 0,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A display-convention chest: an elliptic body with dark lungs, ribs and a bright spine on
    a dark, slightly noisy background. Returns the float64 image and boolean region masks."""
    rr, cc = np.mgrid[: shape[0], : shape[1]].astype(np.float64)
    (r0, c0), (ar, ac) = center, semi_axes
    body = ((rr - r0) / ar) ** 2 + ((cc - c0) / ac) ** 2 <= 1.0
    img = np.full(shape, BACKGROUND)
    img[body] = SOFT_TISSUE
    lungs = np.zeros(shape, dtype=bool)
    for side in (-1.0, 1.0):
        lung_c = c0 + side * 0.45 * ac
        lungs |= ((rr - (r0 - 0.1 * ar)) / (0.6 * ar)) ** 2 + ((cc - lung_c) / (0.3 * ac)) ** 2 <= 1
    img[lungs] = 0.22
    ribs = lungs & (np.sin(rr / 5.0 + 0.02 * (cc - c0) ** 2 / ac) > 0.6)
    img[ribs] = 0.34
    spine = body & (np.abs(cc - c0) <= 9) & (np.abs(rr - r0) <= 0.9 * ar)
    img[spine] = SPINE
    # Real films are slightly blurred by the detector; burnt-in marks are added after, sharp.
    img = ndi.gaussian_filter(img, 1.0)
    img += np.random.default_rng(seed).normal(0.0, 0.005, shape)
    return img, {"body": body, "lungs": lungs, "spine": spine}


def add_marker_r(img: np.ndarray, top: int, left: int, size: int = 14) -> np.ndarray:
    """A solid bright "R" (stroke 3 px) in a ``size`` x ``size`` cell; returns its mask."""
    cell = np.zeros((size, size), dtype=bool)
    s = 3
    cell[:, :s] = True  # stem
    cell[:s, : size - 2] = True  # top bar
    cell[size // 2 - 1 : size // 2 + 2, : size - 2] = True  # middle bar
    cell[:s, size - 4 : size - 1] = True
    cell[: size // 2 + 2, size - 4 : size - 1] = True  # bowl's right side
    for k in range(size // 2, size):  # leg
        c = s + (k - size // 2) * (size - s - 1) // (size - size // 2)
        cell[k, c : c + s] = True
    mask = np.zeros(img.shape, dtype=bool)
    mask[top : top + size, left : left + size] = cell
    img[mask] = MARKER
    return mask


@pytest.fixture(scope="module")
def chest():
    img, regions = synthetic_chest()
    marker = add_marker_r(img, 8, 6)
    return img, regions, marker


# --- thorax_box -----------------------------------------------------------------------------------
def _ellipse_box(center, semi_axes) -> np.ndarray:
    (r0, c0), (ar, ac) = center, semi_axes
    return np.array([r0 - ar, r0 + ar + 1, c0 - ac, c0 + ac + 1])


def test_thorax_box_recovers_the_body(chest):
    img, _, _ = chest
    box = thorax_box(img)
    np.testing.assert_allclose(box, _ellipse_box((130.0, 112.0), (100.0, 85.0)), atol=3)


def test_thorax_box_off_centre_body_bright_border_and_radiograph():
    img, _ = synthetic_chest((240, 320), center=(120.0, 100.0), semi_axes=(90.0, 70.0), seed=1)
    expected = _ellipse_box((120.0, 100.0), (90.0, 70.0))
    np.testing.assert_allclose(thorax_box(img), expected, atol=3)
    # A flat white collimator band on the right and a black letterbox at the top.
    framed = img.copy()
    framed[:, -20:] = 1.0
    framed[:12, :] = 0.0
    np.testing.assert_allclose(thorax_box(framed), expected, atol=3)
    as_radiograph = Radiograph(framed.astype(np.float32), View.PA)
    np.testing.assert_allclose(thorax_box(as_radiograph), expected, atol=3)


def test_thorax_box_tight_crop_spans_the_image(chest):
    """A film cropped inside the body (no air) must not lose the apices to the lung/bone split."""
    img, _, _ = chest
    tight = img[60:200, 50:175]
    assert thorax_box(tight) == (0, 140, 0, 125)


def test_thorax_box_constant_and_bad_input():
    assert thorax_box(np.full((20, 30), 3.0)) == (0, 20, 0, 30)
    with pytest.raises(GeometryError):
        thorax_box(np.zeros((4, 4, 4)))
    with pytest.raises(InvalidValuesError):
        thorax_box(np.full((8, 8), np.nan))


def test_otsu_threshold_matches_skimage():
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.normal(0.2, 0.05, 4000), rng.normal(0.7, 0.1, 6000)])
    t = otsu_threshold(values)
    assert t == pytest.approx(threshold_otsu(values, nbins=256), abs=1e-12)
    assert 0.35 < t < 0.55


# --- suppress_markers -----------------------------------------------------------------------------
def test_suppress_markers_removes_corner_marker_and_keeps_anatomy(chest):
    img, regions, marker = chest
    out = suppress_markers(img)
    assert out.shape == img.shape and out.dtype == np.float32
    # The marker sits on air: its pixels fall to the background level.
    np.testing.assert_allclose(out[marker], BACKGROUND, atol=0.03)
    assert out[marker].max() < 0.1
    # The spine is as bright and as sharp as a marker but far too large to be one: untouched, as
    # is everything farther than a few pixels from the marker.
    np.testing.assert_allclose(out[regions["spine"]], img[regions["spine"]], rtol=0, atol=1e-6)
    far = ~ndi.binary_dilation(marker, iterations=4)
    np.testing.assert_allclose(out[far], img[far], rtol=0, atol=1e-6)


def test_suppress_markers_marker_on_tissue_and_integer_input():
    img, regions = synthetic_chest()
    # An "R" on the soft tissue of the right shoulder, inside the body but off the lungs.
    marker = add_marker_r(img, 44, 80, size=12)
    assert regions["body"][marker].all() and not regions["lungs"][marker].any()
    local = np.median(img[ndi.binary_dilation(marker, iterations=6) & ~marker])
    u8 = np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)
    out = suppress_markers(u8) / 255.0
    np.testing.assert_allclose(out[marker], local, atol=0.03)
    spine = regions["spine"]
    np.testing.assert_allclose(out[spine], u8[spine] / 255.0, rtol=0, atol=1e-6)


def test_suppress_markers_leaves_a_clean_image_alone():
    img, _ = synthetic_chest(seed=2)
    np.testing.assert_allclose(suppress_markers(img), img.astype(np.float32), rtol=0, atol=0)
    with pytest.raises(ConfigError):
        suppress_markers(img, max_area_fraction=0.0)
    with pytest.raises(ConfigError):
        suppress_markers(img, dilation=-1)


# --- preprocess_real_xray -------------------------------------------------------------------------
@pytest.mark.parametrize("crop", ["thorax", "pad", "center"])
def test_preprocess_shape_dtype_range_and_percentiles(chest, crop):
    img, _, _ = chest
    out = preprocess_real_xray(img, 64, crop=crop, percentiles=(1.0, 99.0))
    assert out.shape == (64, 64) and out.dtype == np.float32
    assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0
    # The window maps exactly the requested percentiles of the output grid to 0 and 1.
    np.testing.assert_allclose(np.percentile(out, [1.0, 99.0]), [0.0, 1.0], atol=1e-5)


def test_preprocess_pad_matches_numpy_and_skimage(chest):
    img, _, _ = chest
    n = max(img.shape)
    pads = [((n - s) // 2, n - s - (n - s) // 2) for s in img.shape]
    square = np.pad(img, pads, constant_values=img.min())
    resized = sk_resize(square, (48, 48), order=1, mode="edge", anti_aliasing=True)
    lo, hi = np.percentile(resized, [0.5, 99.5])
    expected = np.clip((resized - lo) / (hi - lo), 0.0, 1.0)
    got = preprocess_real_xray(img, 48, crop="pad", suppress=False)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


def test_preprocess_thorax_centres_an_off_centre_body():
    img, _ = synthetic_chest((240, 320), center=(120.0, 100.0), semi_axes=(90.0, 70.0))
    out = preprocess_real_xray(img, 128, margin=0.0, suppress=False)
    # The square is the body's height (181 px) centred on the body: the body spans the rows, and
    # its 141 columns sit in the middle although the body is left of the image centre.
    body = out > 0.1
    rows = np.flatnonzero(body.any(axis=1))
    cols = np.flatnonzero(body.any(axis=0))
    np.testing.assert_allclose([rows[0], rows[-1]], [0, 127], atol=2)
    half_width = 70.5 * 128 / 181
    np.testing.assert_allclose([cols[0], cols[-1]], [63.5 - half_width, 63.5 + half_width], atol=2)
    # With a margin the body shrinks by 1 / (1 + 2 margin) about the centre.
    wide = preprocess_real_xray(img, 128, margin=0.1, suppress=False) > 0.1
    rows = np.flatnonzero(wide.any(axis=1))
    np.testing.assert_allclose([rows[0], rows[-1]], 63.5 + np.array([-64, 64]) / 1.2, atol=2)


def test_preprocess_inputs_and_errors(chest):
    img, _, _ = chest
    u16 = np.round(np.clip(img, 0, 1) * 65535).astype(np.uint16)
    a = preprocess_real_xray(u16, 32)
    b = preprocess_real_xray(Radiograph(img.astype(np.float32), View.AP), 32)
    np.testing.assert_allclose(a, b, rtol=0, atol=2e-3)
    holes = img.copy()
    holes[:5, :5] = np.nan
    assert np.isfinite(preprocess_real_xray(holes, 32)).all()
    np.testing.assert_array_equal(preprocess_real_xray(np.full((20, 30), 5.0), 16), 0.0)
    with pytest.raises(GeometryError):
        preprocess_real_xray(np.zeros((3, 8, 8)), 16)
    with pytest.raises(InvalidValuesError):
        preprocess_real_xray(np.full((16, 16), np.nan), 16)
    with pytest.raises(ConfigError):
        preprocess_real_xray(img, 16, crop="letterbox")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        preprocess_real_xray(img, 16, percentiles=(99.0, 1.0))
    with pytest.raises(GeometryError):
        preprocess_real_xray(img, 0)


# --- manifests ------------------------------------------------------------------------------------
HEADER = ["file", "view", "patient", "pair_id", "license", "source_url", "doi"]


def write_collection(root: Path, rows: list[list[str]], *, images: bool = True) -> Path:
    """A folder like ../shared/data/real_xrays with small synthetic PNGs for ``rows``."""
    image_dir = root / "images" if images else root
    image_dir.mkdir(parents=True, exist_ok=True)
    for i, row in enumerate(rows):
        img, _ = synthetic_chest((72, 64), center=(36.0, 32.0), semi_axes=(28.0, 24.0), seed=i)
        Image.fromarray(np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)).save(
            image_dir / row[0]
        )
    with (root / "manifest.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(HEADER)
        writer.writerows(rows)
    return root


ROWS = [
    ["a.png", "PA", "1", "7", "CC BY", "", ""],
    ["b.png", "L", "1", "7", "CC BY", "", ""],
    ["c.png", "AP Supine", "2", "", "CC BY", "", ""],
    ["d.png", "ap_supine", "3", "", "CC BY", "", ""],
    ["e.png", "LL", "3", "", "CC BY", "", ""],
    ["f.png", "AP", "", "", "CC BY", "", ""],
]


def test_read_real_manifest_maps_views_and_defaults(tmp_path):
    root = write_collection(tmp_path / "real", ROWS)
    records = read_real_manifest(root)
    assert [r.path for r in records] == [root / "images" / row[0] for row in ROWS]
    assert [r.view for r in records] == [
        "frontal",
        "lateral",
        "frontal",
        "frontal",
        "lateral",
        "frontal",
    ]
    assert [r.raw_view for r in records] == [row[1] for row in ROWS]
    assert [r.patient for r in records] == ["1", "1", "2", "3", "3", "f"]  # stem as default
    assert [r.pair_id for r in records] == ["7", "7", None, None, None, None]
    assert isinstance(records[0], RealXray)
    with pytest.raises(AttributeError):
        records[0].view = "lateral"  # type: ignore[misc]
    # Images beside the manifest when there is no images/ folder; an explicit manifest path.
    flat = write_collection(tmp_path / "flat", ROWS[:2], images=False)
    assert [r.path for r in read_real_manifest(flat)] == [flat / "a.png", flat / "b.png"]
    moved = tmp_path / "elsewhere.csv"
    moved.write_text((flat / "manifest.csv").read_text())
    assert len(read_real_manifest(flat, moved)) == 2


def test_view_label_sets():
    for label in ("PA", "AP", "AP SUPINE"):
        assert label in FRONTAL_VIEWS
    for label in ("L", "LL", "RL", "LATERAL"):
        assert label in LATERAL_VIEWS
    assert not FRONTAL_VIEWS & LATERAL_VIEWS


def _rewrite(root: Path, rows: list[list[str]], header: list[str] = HEADER) -> Path:
    path = root / "manifest.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_manifest_errors_name_the_file_and_line(tmp_path):
    root = write_collection(tmp_path / "real", ROWS)
    manifest = root / "manifest.csv"

    _rewrite(root, [[r[0], r[2]] for r in ROWS], header=["file", "patient"])
    with pytest.raises(MissingDataError, match="view") as err:
        read_real_manifest(root)
    assert str(manifest) in str(err.value)

    bad_view = [row[:] for row in ROWS]
    bad_view[1][1] = "oblique"
    _rewrite(root, bad_view)
    with pytest.raises(ConfigError, match=r"line 3 \(b\.png\).*'oblique'") as err:
        read_real_manifest(root)
    assert str(manifest) in str(err.value)

    missing_file = [*ROWS, ["nope.png", "PA", "9", "", "", "", ""]]
    _rewrite(root, missing_file)
    with pytest.raises(MissingDataError, match=r"line 8: image 'nope\.png' not found") as err:
        read_real_manifest(root)
    assert str(manifest) in str(err.value)

    _rewrite(root, [])
    with pytest.raises(MissingDataError, match="no images") as err:
        read_real_manifest(root)
    assert str(manifest) in str(err.value)

    manifest.write_bytes(b"")
    with pytest.raises(EmptyFileError):
        read_real_manifest(root)
    manifest.unlink()
    with pytest.raises(MissingDataError, match="manifest not found"):
        read_real_manifest(root)
    with pytest.raises(MissingDataError, match="folder not found"):
        read_real_manifest(tmp_path / "absent")


# --- split_by_patient -----------------------------------------------------------------------------
def _records(n_patients: int = 40, seed: int = 5) -> list[RealXray]:
    rng = np.random.default_rng(seed)
    out = []
    for p in range(n_patients):
        for k in range(int(rng.integers(1, 5))):
            view = "lateral" if k == 1 else "frontal"
            out.append(RealXray(Path(f"/x/{p}-{k}.png"), view, "PA", f"p{p}", None))
    return out


def test_split_by_patient_disjoint_stable_deterministic():
    records = _records()
    split = split_by_patient(records, val_fraction=0.25, seed=0)
    train, val = split["train"], split["val"]
    assert set(split) == {"train", "val"} and train and val
    assert not {r.patient for r in train} & {r.patient for r in val}
    assert len(train) + len(val) == len(records)
    # Each split keeps the input order.
    position = {id(r): i for i, r in enumerate(records)}
    for part in (train, val):
        idx = [position[id(r)] for r in part]
        assert idx == sorted(idx)
    assert 0 < len(val) <= 0.25 * len(records)
    again = split_by_patient(list(records), val_fraction=0.25, seed=0)
    assert again == split
    other = split_by_patient(records, val_fraction=0.25, seed=1)
    assert {r.patient for r in other["val"]} != {r.patient for r in val}


def test_split_by_patient_small_and_linked_cases():
    two = _records(2)
    split = split_by_patient(two, val_fraction=0.2)
    assert split["train"] and split["val"]
    one = [r for r in two if r.patient == "p0"]
    assert split_by_patient(one) == {"train": one, "val": []}
    # The same image listed under two patient ids, and a pair id shared across ids: one person.
    records = _records(30)
    dup = RealXray(records[0].path, "frontal", "PA", "alias", None)
    paired_a = RealXray(Path("/x/pa.png"), "frontal", "PA", "q1", "9")
    paired_b = RealXray(Path("/x/l.png"), "lateral", "L", "q2", "9")
    records += [dup, paired_a, paired_b]
    for seed in range(8):
        s = split_by_patient(records, seed=seed)
        side = {r.patient: name for name, part in s.items() for r in part}
        assert side["alias"] == side[records[0].patient]
        assert side["q1"] == side["q2"]
    with pytest.raises(ConfigError):
        split_by_patient(records, val_fraction=1.0)


# --- locations and loading ------------------------------------------------------------------------
def test_default_real_xray_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(REAL_XRAYS_ENV, str(tmp_path / "mine"))
    assert default_real_xray_dir() == tmp_path / "mine"
    monkeypatch.delenv(REAL_XRAYS_ENV)
    shared = tmp_path / "shared" / "data" / "real_xrays"
    shared.mkdir(parents=True)
    (tmp_path / "main").mkdir()
    monkeypatch.chdir(tmp_path / "main")
    assert default_real_xray_dir() == shared.resolve()


def test_load_real_xrays_views_splits_and_errors(tmp_path):
    rows = [
        [f"{p}-{k}.png", "L" if k else "PA", f"p{p}", "", "", "", ""]
        for p in range(6)
        for k in (0, 1)
    ]
    root = write_collection(tmp_path / "real", rows)
    frontal, recs = load_real_xrays(root, "frontal", 32, crop="pad")
    assert frontal.shape == (6, 32, 32) and frontal.dtype == np.float32
    assert [r.path.name for r in recs] == [f"{p}-0.png" for p in range(6)]
    expected = preprocess_real_xray(read_radiograph(recs[2].path), 32, crop="pad")
    np.testing.assert_array_equal(frontal[2], expected)
    val_f, rec_f = load_real_xrays(root, "frontal", 16, split="val", val_fraction=0.3, seed=4)
    val_l, rec_l = load_real_xrays(root, "Lateral", 16, split="val", val_fraction=0.3, seed=4)
    train_l, rec_tl = load_real_xrays(root, "lateral", 16, split="train", val_fraction=0.3, seed=4)
    assert {r.patient for r in rec_f} == {r.patient for r in rec_l}  # same patients per split
    assert not {r.patient for r in rec_l} & {r.patient for r in rec_tl}
    assert len(rec_l) + len(rec_tl) == 6 and val_l.shape == (len(rec_l), 16, 16)
    assert np.isfinite(val_f).all() and np.isfinite(train_l).all()
    _rewrite(root, [r for r in rows if r[1] == "PA"])
    with pytest.raises(MissingDataError, match="no lateral image"):
        load_real_xrays(root, "lateral", 16)
    with pytest.raises(ConfigError):
        load_real_xrays(root, "oblique", 16)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        load_real_xrays(root, "frontal", 16, split="test")


# --- the real collection --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_dir() -> Path:
    folder = default_real_xray_dir()
    if folder is None or not (folder / "manifest.csv").is_file():
        pytest.skip(f"real X-rays not found (../shared/data/real_xrays or ${REAL_XRAYS_ENV})")
    return folder


def test_real_collection_reads_preprocesses_and_splits(real_dir):
    records = read_real_manifest(real_dir)
    with (real_dir / "manifest.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(records) == len(rows) == 294
    assert Counter(r.view for r in records) == {"frontal": 273, "lateral": 21}
    assert Counter(r.raw_view for r in records) == Counter(row["view"] for row in rows)
    assert all(r.path.is_file() for r in records)

    for view in ("frontal", "lateral"):
        chosen = [r for r in records if r.view == view]
        for r in chosen[:: max(1, len(chosen) // 10)][:10]:
            radiograph = read_radiograph(r.path)
            out = preprocess_real_xray(radiograph, 128)
            assert out.shape == (128, 128) and out.dtype == np.float32
            assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0
            # Within a grey level: the neighbour above the 99.5th percentile is clipped to 1.
            np.testing.assert_allclose(np.percentile(out, [0.5, 99.5]), [0, 1], atol=2e-3)
            # Marker suppression touches a few labels, never a sizeable part of the film.
            cleaned = suppress_markers(radiograph)
            changed = np.abs(cleaned - radiograph.array) > 1e-6
            assert changed.mean() < 0.03, (r.path.name, changed.mean())
            r0, r1, c0, c1 = thorax_box(cleaned)
            h, w = radiograph.shape
            assert (r1 - r0) * (c1 - c0) >= 0.3 * h * w, (r.path.name, (r0, r1, c0, c1))

    split = split_by_patient(records, val_fraction=0.2, seed=0)
    train, val = split["train"], split["val"]
    assert len(train) + len(val) == 294 and 0 < len(val) <= 0.2 * 294
    assert not {r.patient for r in train} & {r.patient for r in val}
    # Some images are listed twice under different patient ids: still never on both sides.
    assert not {r.path for r in train} & {r.path for r in val}
    assert {r.view for r in val} == {"frontal", "lateral"}
    lateral, lateral_records = load_real_xrays(real_dir, "lateral", 64, split="val")
    assert lateral.shape == (len(lateral_records), 64, 64)
    assert {r.path for r in lateral_records} == {r.path for r in val if r.view == "lateral"}
