"""Tests of xprospect.metrics against independent references.

References: scikit-image (``peak_signal_noise_ratio``, ``structural_similarity`` in 2D and 3D,
and with ``channel_axis`` as X2CT-GAN's ``compare_ssim(..., multichannel=True)`` called it),
SciPy's cosine distance, NumPy formulas written here, and X2CT-GAN's published definitions
(``3DGAN/test.py``, ``3DGAN/lib/utils/metrics_np.py``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from keras_contract import check_metric
from scipy.spatial.distance import cosine as cosine_distance
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from xprospect.errors import ConfigError, GeometryError, InvalidValuesError
from xprospect.image import Volume
from xprospect.metrics import (
    PSNR3D,
    SSIM3D,
    cosine_similarity,
    evaluate_case,
    lung_dice,
    mae,
    mse,
    psnr_2d,
    psnr_3d,
    ssim_2d,
    ssim_3d,
)
from xprospect.phantoms import chest_phantom
from xprospect.segmentation import lung_mask

AXES = {"axial": 0, "coronal": 1, "sagittal": 2}


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    t = rng.random((14, 16, 18))
    p = np.clip(t + 0.1 * rng.standard_normal(t.shape), 0, 1)
    return t, p


def sk_ssim(a: np.ndarray, b: np.ndarray, **kw: object) -> float:
    return float(structural_similarity(a, b, data_range=1.0, **kw))  # type: ignore[arg-type]


GAUSS = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False}


# --- voxel-wise ------------------------------------------------------------------------------
def test_mae_mse_cosine_match_references(pair) -> None:
    t, p = pair
    np.testing.assert_allclose(mae(t, p), np.sum(np.abs(t - p)) / t.size, rtol=1e-12)
    np.testing.assert_allclose(mse(t, p), np.sum((t - p) ** 2) / t.size, rtol=1e-12)
    np.testing.assert_allclose(
        cosine_similarity(t, p), 1.0 - cosine_distance(t.ravel(), p.ravel()), rtol=1e-12
    )


def test_cosine_similarity_edge_cases() -> None:
    z = np.zeros((4, 4, 4))
    c = np.full((4, 4, 4), 0.3)
    np.testing.assert_allclose(cosine_similarity(z, z), 1.0)  # identical, undefined: 1
    np.testing.assert_allclose(cosine_similarity(z, c), 0.0)  # one all-zero volume: 0
    np.testing.assert_allclose(cosine_similarity(c, 2 * c), 1.0)  # parallel constants
    np.testing.assert_allclose(cosine_similarity(c, -c), -1.0)


def test_shape_mismatch_is_geometry_error(pair) -> None:
    t, p = pair
    with pytest.raises(GeometryError, match="shape"):
        mae(t, p[:-1])
    with pytest.raises(GeometryError, match="3D"):
        mse(t[0], p[0])


# --- PSNR ------------------------------------------------------------------------------------
def test_psnr_3d_matches_skimage_and_identity(pair) -> None:
    t, p = pair
    value = psnr_3d(t, p)
    np.testing.assert_allclose(value, peak_signal_noise_ratio(t, p, data_range=1.0), rtol=1e-12)
    np.testing.assert_allclose(value, 20 * np.log10(1 / np.sqrt(np.mean((t - p) ** 2))), 1e-12)
    np.testing.assert_allclose(
        psnr_3d(t * 7, p * 7, data_range=7.0), peak_signal_noise_ratio(t, p, data_range=1.0), 1e-12
    )


def test_psnr_3d_identical_volumes() -> None:
    v = np.random.default_rng(0).random((5, 5, 5))
    assert psnr_3d(v, v) == math.inf
    assert psnr_3d(v, v, zero_mse_db=100.0) == 100.0


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_psnr_2d_is_mean_of_slice_psnr(pair, axis: int) -> None:
    t, p = pair
    ref = np.mean(
        [
            peak_signal_noise_ratio(np.take(t, i, axis), np.take(p, i, axis), data_range=1.0)
            for i in range(t.shape[axis])
        ]
    )
    np.testing.assert_allclose(psnr_2d(t, p, axis), ref, rtol=1e-12)


def test_psnr_2d_zero_mse_slices(pair) -> None:
    t, p = pair
    p = p.copy()
    p[:3] = t[:3]  # three exact axial slices
    per_slice = [
        20 * np.log10(1.0 / np.sqrt(np.mean((t[i] - p[i]) ** 2))) for i in range(3, t.shape[0])
    ]
    # Default: left out of the mean.
    np.testing.assert_allclose(psnr_2d(t, p, 0), np.mean(per_slice), rtol=1e-12)
    # X2CT-GAN's convention: they count as 100 dB.
    np.testing.assert_allclose(
        psnr_2d(t, p, 0, zero_mse_db=100.0), np.mean([100.0] * 3 + per_slice), rtol=1e-12
    )
    assert psnr_2d(t, t, 1) == math.inf
    # Coronal slices all contain some error, so they are unaffected by the rule.
    assert math.isfinite(psnr_2d(t, p, 1))


def test_psnr_2d_all_axes(pair) -> None:
    t, p = pair
    out = psnr_2d(t, p)
    assert set(out) == {"axial", "coronal", "sagittal", "mean"}
    for name, axis in AXES.items():
        np.testing.assert_allclose(out[name], psnr_2d(t, p, axis), rtol=1e-15)
    np.testing.assert_allclose(out["mean"], np.mean([out[n] for n in AXES]), rtol=1e-15)
    with pytest.raises(ConfigError, match="axis"):
        psnr_2d(t, p, 3)


# --- SSIM ------------------------------------------------------------------------------------
def test_ssim_3d_matches_skimage_3d(pair) -> None:
    t, p = pair
    ref = sk_ssim(t, p, channel_axis=None, **GAUSS)
    np.testing.assert_allclose(ssim_3d(t, p), ref, rtol=1e-10)
    assert ssim_3d(t, t) == pytest.approx(1.0, abs=1e-12)


def test_ssim_constant_volumes() -> None:
    a = np.full((12, 12, 12), 0.25)
    b = np.full((12, 12, 12), 0.75)
    np.testing.assert_allclose(ssim_3d(a, a), 1.0, rtol=1e-12)
    np.testing.assert_allclose(ssim_3d(a, b), sk_ssim(a, b, **GAUSS), rtol=1e-10)
    # Luminance term only: (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1), C1 = 0.01^2.
    c1 = 1e-4
    np.testing.assert_allclose(ssim_3d(a, b), (2 * 0.25 * 0.75 + c1) / (0.25**2 + 0.75**2 + c1))
    np.testing.assert_allclose(ssim_2d(a, b, 0), sk_ssim(a[0], b[0], **GAUSS), rtol=1e-10)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_ssim_2d_matches_skimage_per_slice(pair, axis: int) -> None:
    t, p = pair
    slices = range(t.shape[axis])
    ref = np.mean([sk_ssim(np.take(t, i, axis), np.take(p, i, axis), **GAUSS) for i in slices])
    np.testing.assert_allclose(ssim_2d(t, p, axis), ref, rtol=1e-10)
    # scikit-image's defaults (X2CT-GAN's): uniform 7x7 window, sample covariance.
    ref7 = np.mean([sk_ssim(np.take(t, i, axis), np.take(p, i, axis)) for i in slices])
    got7 = ssim_2d(t, p, axis, gaussian_weights=False, win_size=7, use_sample_covariance=True)
    np.testing.assert_allclose(got7, ref7, rtol=1e-10)


def test_ssim_window_larger_than_volume() -> None:
    v = np.zeros((8, 20, 20))
    with pytest.raises(GeometryError, match="window"):
        ssim_3d(v, v)
    assert ssim_2d(v, v, 0) == pytest.approx(1.0)  # axial slices are 20 x 20
    with pytest.raises(GeometryError, match="window"):
        ssim_2d(v, v, 1)


# --- evaluate_case ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hu_case() -> tuple[Volume, np.ndarray]:
    """A phantom CT and a noisy "reconstruction" of it, both in HU."""
    ph = chest_phantom(48, seed=3)
    truth = ph.volume
    rng = np.random.default_rng(5)
    pred = truth.array + rng.normal(0.0, 60.0, truth.shape).astype(np.float32)
    pred[:2] = truth.array[:2]  # two exact axial slices
    pred[10, 10, 10] = 3000.0  # overshoots every window: clipped
    return truth, pred


def window(hu: np.ndarray, low: float, high: float) -> np.ndarray:
    return np.clip((np.asarray(hu, np.float64) - low) / (high - low), 0.0, 1.0)


def test_evaluate_case_xprospect_mode(hu_case) -> None:
    truth, pred = hu_case
    t, p = window(truth.array, -1000, 1000), window(pred, -1000, 1000)
    out = evaluate_case(truth.replace(array=t), p)
    np.testing.assert_allclose(out["mae"], np.mean(np.abs(t - p)), rtol=1e-12)
    np.testing.assert_allclose(out["mae_hu"], 2000.0 * np.mean(np.abs(t - p)), rtol=1e-12)
    np.testing.assert_allclose(out["mse"], np.mean((t - p) ** 2), rtol=1e-12)
    np.testing.assert_allclose(
        out["cosine_similarity"], 1 - cosine_distance(t.ravel(), p.ravel()), rtol=1e-12
    )
    np.testing.assert_allclose(out["psnr_3d"], peak_signal_noise_ratio(t, p, data_range=1), 1e-12)
    np.testing.assert_allclose(out["ssim_3d"], sk_ssim(t, p, **GAUSS), rtol=1e-10)
    for name, axis in AXES.items():
        slices = [i for i in range(t.shape[axis]) if np.any(np.take(t - p, i, axis))]
        ref = np.mean(
            [
                peak_signal_noise_ratio(np.take(t, i, axis), np.take(p, i, axis), data_range=1)
                for i in slices
            ]
        )
        np.testing.assert_allclose(out[f"psnr_{name}"], ref, rtol=1e-12)
        ref_ssim = np.mean(
            [sk_ssim(np.take(t, i, axis), np.take(p, i, axis), **GAUSS) for i in range(48)]
        )
        np.testing.assert_allclose(out[f"ssim_{name}"], ref_ssim, rtol=1e-10)
    np.testing.assert_allclose(
        out["psnr_2d"], np.mean([out[f"psnr_{n}"] for n in AXES]), rtol=1e-12
    )
    np.testing.assert_allclose(
        out["ssim_2d"], np.mean([out[f"ssim_{n}"] for n in AXES]), rtol=1e-12
    )
    # Lungs from the HU the window gives back; volumes with the Volume's voxel size.
    hu_back = t * 2000.0 - 1000.0
    mask_t = lung_mask(truth.replace(array=hu_back))
    mask_p = lung_mask(truth.replace(array=p * 2000.0 - 1000.0))
    np.testing.assert_allclose(
        out["lung_dice"], 2 * np.sum(mask_t & mask_p) / (mask_t.sum() + mask_p.sum()), 1e-12
    )
    assert out["lung_dice"] > 0.9
    np.testing.assert_allclose(
        out["lung_volume_ml_truth"], mask_t.sum() * truth.voxel_volume_ml, rtol=1e-12
    )
    assert all(isinstance(v, float) for v in out.values())


def test_evaluate_case_hu_window(hu_case) -> None:
    truth, pred = hu_case
    t, p = window(truth.array, -1350, 150), window(pred, -1350, 150)
    out = evaluate_case(t, p, hu_window="lung", spacing_mm=truth.spacing_mm)
    np.testing.assert_allclose(out["mae"], np.mean(np.abs(t - p)), rtol=1e-12)
    np.testing.assert_allclose(out["mae_hu"], 1500.0 * np.mean(np.abs(t - p)), rtol=1e-12)
    mask_t = lung_mask(t * 1500.0 - 1350.0, spacing_mm=truth.spacing_mm)
    np.testing.assert_allclose(
        out["lung_volume_ml_truth"], mask_t.sum() * truth.voxel_volume_ml, rtol=1e-12
    )


def test_x2ct_pixel_max_offset_is_4_29_db() -> None:
    offset = 20 * math.log10(4095 / 2500)
    np.testing.assert_allclose(offset, 4.29, atol=0.005)
    np.testing.assert_allclose(offset, 4.2863, atol=1e-4)


def test_evaluate_case_x2ct_compatible_mode(hu_case) -> None:
    truth, pred = hu_case
    # X2CT-GAN's data: HU + 1024 clipped to [0, 2500], divided by 2500 (the "x2ct" window).
    t = np.clip(truth.array.astype(np.float64) + 1024.0, 0, 2500) / 2500
    p = np.clip(pred.astype(np.float64) + 1024.0, 0, 2500) / 2500
    out = evaluate_case(t, p, hu_window="x2ct", mode="x2ct_compatible")
    np.testing.assert_allclose(out["mae"], np.mean(np.abs(t - p)), rtol=1e-9)
    np.testing.assert_allclose(out["mse"], np.mean((t - p) ** 2), rtol=1e-9)
    np.testing.assert_allclose(
        out["cosine_similarity"], 1 - cosine_distance(t.ravel(), p.ravel()), rtol=1e-9
    )
    # PSNR on integer CT (astype(int32)) with PIXEL_MAX 4095: the true-range PSNR + 4.29 dB.
    ti, pi = (t * 2500 + 1e-6).astype(np.int32), (p * 2500 + 1e-6).astype(np.int32)
    psnr_2500 = peak_signal_noise_ratio(ti, pi, data_range=2500)
    np.testing.assert_allclose(out["psnr_3d"] - psnr_2500, 20 * np.log10(4095 / 2500), rtol=1e-9)
    np.testing.assert_allclose(out["psnr_3d"], psnr_2500 + 4.2863, atol=1e-4)
    np.testing.assert_allclose(out["mae_hu"], np.mean(np.abs(ti - pi)), rtol=1e-9)
    for name, axis in AXES.items():
        per_slice = []
        for i in range(t.shape[axis]):
            a, b = np.take(ti, i, axis), np.take(pi, i, axis)
            same = np.array_equal(a, b)
            per_slice.append(100.0 if same else peak_signal_noise_ratio(a, b, data_range=4095))
        np.testing.assert_allclose(out[f"psnr_{name}"], np.mean(per_slice), rtol=1e-9)
        # compare_ssim(..., multichannel=True) with the slices as channels, data_range 1.
        ref = structural_similarity(
            np.moveaxis(t, axis, -1), np.moveaxis(p, axis, -1), data_range=1.0, channel_axis=-1
        )
        np.testing.assert_allclose(out[f"ssim_{name}"], ref, rtol=1e-9)
    assert "ssim_3d" not in out
    # The same case in xprospect mode scores a lower PSNR: the modes are not comparable.
    xp = evaluate_case(window(truth.array, -1000, 1000), window(pred, -1000, 1000))
    assert out["psnr_3d"] > xp["psnr_3d"] + 4.0


def test_evaluate_case_rejects_bad_arguments(hu_case) -> None:
    truth, pred = hu_case
    t, p = window(truth.array, -1000, 1000), window(pred, -1000, 1000)
    with pytest.raises(ConfigError, match="mode"):
        evaluate_case(t, p, mode="x2ct")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="window"):
        evaluate_case(t, p, hu_window="bone")
    with pytest.raises(InvalidValuesError, match="window-normalised"):
        evaluate_case(truth.array, pred)  # HU
    with pytest.raises(GeometryError, match="shape"):
        evaluate_case(t, p[1:])


def test_evaluate_case_identical_volumes(hu_case) -> None:
    truth, _ = hu_case
    t = window(truth.array, -1000, 1000)
    out = evaluate_case(t, t)
    assert out["psnr_3d"] == math.inf and out["psnr_2d"] == math.inf
    np.testing.assert_allclose([out["ssim_3d"], out["ssim_2d"], out["lung_dice"]], 1.0)
    np.testing.assert_allclose([out["mae"], out["mse"]], 0.0)
    x2ct = evaluate_case(t, t, mode="x2ct_compatible")
    np.testing.assert_allclose([x2ct["psnr_3d"], x2ct["psnr_2d"]], 100.0)


# --- lungs -----------------------------------------------------------------------------------
def test_lung_dice(hu_case) -> None:
    truth, _ = hu_case
    assert lung_dice(truth, truth) == 1.0
    # Fill the patient's left lung (array axis 2 > the middle) with soft tissue.
    mask = lung_mask(truth)
    pred = truth.array.copy()
    left = mask.copy()
    left[:, :, : truth.shape[2] // 2] = False
    pred[left] = 40.0
    expected = 2 * np.count_nonzero(mask & ~left) / (np.count_nonzero(mask) * 2 - np.sum(left))
    got = lung_dice(truth.array, pred, spacing_mm=truth.spacing_mm)
    np.testing.assert_allclose(got, expected, atol=0.02)


# --- Keras metrics ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def batch() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(2)
    t = rng.random((3, 12, 13, 14, 1)).astype(np.float32)
    noise = np.array([0.05, 0.1, 0.2], np.float32)[:, None, None, None, None]
    p = np.clip(t + noise * rng.standard_normal(t.shape), 0, 1).astype(np.float32)
    return t, p


def test_psnr3d_metric_is_mean_of_case_psnr(batch) -> None:
    t, p = batch
    per_case = [
        peak_signal_noise_ratio(t[i].astype(np.float64), p[i].astype(np.float64), data_range=1)
        for i in range(3)
    ]
    m = PSNR3D()
    m.update_state(t[:2], p[:2])
    m.update_state(t[2:], p[2:])
    np.testing.assert_allclose(float(m.result()), np.mean(per_case), rtol=1e-5)
    m.reset_state()
    w = np.array([1.0, 0.0, 3.0], np.float32)
    m.update_state(t, p, sample_weight=w)
    np.testing.assert_allclose(float(m.result()), np.dot(w, per_case) / w.sum(), rtol=1e-5)
    # A perfect case adds max_db, not inf.
    m = PSNR3D(max_db=80.0)
    m.update_state(t, t)
    np.testing.assert_allclose(float(m.result()), 80.0, rtol=1e-5)
    # Mixed-precision predictions are scored in float32.
    m = PSNR3D()
    p16 = tf.cast(p, tf.bfloat16)
    m.update_state(t, p16)
    p_seen = tf.cast(p16, tf.float32).numpy().astype(np.float64)
    ref = np.mean([peak_signal_noise_ratio(t[i], p_seen[i], data_range=1) for i in range(3)])
    np.testing.assert_allclose(float(m.result()), ref, rtol=1e-5)


def test_ssim3d_metric_matches_skimage(batch) -> None:
    t, p = batch
    per_case = [
        sk_ssim(t[i, ..., 0].astype(np.float64), p[i, ..., 0].astype(np.float64), **GAUSS)
        for i in range(3)
    ]
    m = SSIM3D()
    m.update_state(t, p)
    np.testing.assert_allclose(float(m.result()), np.mean(per_case), rtol=1e-5)
    np.testing.assert_allclose(
        float(m.result()), np.mean([ssim_3d(t[i, ..., 0], p[i, ..., 0]) for i in range(3)]), 1e-5
    )


def _scan_masks(shape: tuple[int, ...]) -> np.ndarray:
    """Per case a different scanned slab in z (a partly scanned CT); the last case is empty."""
    m = np.zeros(shape[:4], np.float32)
    m[0, 2:10] = 1.0
    m[1, 0:7] = 1.0
    return m


def test_keras_metrics_with_a_voxel_mask_score_inside_it(batch) -> None:
    t, p = batch
    p = p.copy()
    p[0, 10:] = 1.0 - t[0, 10:]  # outside case 0's scan: large errors the mask must ignore
    m = _scan_masks(t.shape)
    scored = [0, 1]  # case 2's mask is empty: it is left out, not averaged in as NaN
    psnr_ref = [psnr_3d(t[i, ..., 0], p[i, ..., 0], mask=m[i]) for i in scored]
    ssim_ref = [ssim_3d(t[i, ..., 0], p[i, ..., 0], mask=m[i]) for i in scored]
    for mask in (m, m[..., None]):  # with or without the channel axis
        metric = PSNR3D()
        metric.update_state(t, p, sample_weight=mask)
        np.testing.assert_allclose(float(metric.result()), np.mean(psnr_ref), rtol=1e-5)
        metric = SSIM3D()
        metric.update_state(t, p, sample_weight=mask)
        np.testing.assert_allclose(float(metric.result()), np.mean(ssim_ref), rtol=1e-4)
    # Masked != unmasked here (the error differs between slabs), and a full mask is unmasked.
    assert np.mean(psnr_ref) > np.mean([psnr_3d(t[i, ..., 0], p[i, ..., 0]) for i in scored]) + 1.0
    for cls in (PSNR3D, SSIM3D):
        full, plain = cls(), cls()
        full.update_state(t, p, sample_weight=np.ones(t.shape, np.float32))
        plain.update_state(t, p)
        np.testing.assert_allclose(float(full.result()), float(plain.result()), rtol=1e-6)


@pytest.mark.parametrize(
    ("metric", "init_kwargs"),
    [
        (PSNR3D(max_db=90.0, name="psnr"), {"data_range": 1.0, "max_db": 90.0, "name": "psnr"}),
        (
            SSIM3D(sigma=1.0, k1=0.02),
            {"data_range": 1.0, "sigma": 1.0, "k1": 0.02, "k2": 0.03, "name": "ssim_3d"},
        ),
    ],
    ids=["psnr3d", "ssim3d"],
)
def test_keras_contract(metric, init_kwargs, batch, tmp_path: Path) -> None:
    t, p = batch
    check_metric(metric, init_kwargs, t, p, tmp_path)


# --- inside a validity mask (the scanned region) ----------------------------------------------
@pytest.fixture(scope="module")
def scanned() -> np.ndarray:
    """A mask like a short scan's: a slab of axial slices, minus a corner of padding."""
    m = np.zeros((14, 16, 18), dtype=bool)
    m[3:11] = True
    m[:, :4, :5] = False
    return m


def test_masked_voxel_metrics_match_numpy_on_the_selected_voxels(pair, scanned) -> None:
    t, p = pair
    ts, ps = t[scanned], p[scanned]
    np.testing.assert_allclose(mae(t, p, mask=scanned), np.mean(np.abs(ps - ts)), rtol=1e-12)
    np.testing.assert_allclose(mse(t, p, mask=scanned), np.mean((ps - ts) ** 2), rtol=1e-12)
    ref_psnr = 10 * np.log10(1.0 / np.mean((ps - ts) ** 2))
    np.testing.assert_allclose(psnr_3d(t, p, mask=scanned), ref_psnr, rtol=1e-12)
    np.testing.assert_allclose(
        cosine_similarity(t, p, mask=scanned), 1.0 - cosine_distance(ts, ps), rtol=1e-12
    )
    # An all-ones mask is no mask; an empty one scores nothing.
    ones = np.ones(t.shape, dtype=np.uint8)
    assert mae(t, p, mask=ones) == pytest.approx(mae(t, p), rel=1e-12)
    assert psnr_3d(t, p, mask=ones) == pytest.approx(psnr_3d(t, p), rel=1e-12)
    assert math.isnan(mae(t, p, mask=np.zeros(t.shape)))
    with pytest.raises(GeometryError):
        mae(t, p, mask=ones[:-1])


def test_masked_psnr_2d_scores_only_slices_with_scanned_pixels(pair, scanned) -> None:
    t, p = pair
    ref = []
    for k in range(t.shape[0]):
        sel = scanned[k]
        if sel.any():
            ref.append(10 * np.log10(1.0 / np.mean((p[k][sel] - t[k][sel]) ** 2)))
    assert len(ref) == 8
    np.testing.assert_allclose(psnr_2d(t, p, 0, mask=scanned), np.mean(ref), rtol=1e-12)


def test_masked_ssim_is_the_skimage_map_averaged_inside_the_mask(pair, scanned) -> None:
    t, p = pair
    _, smap = structural_similarity(t, p, data_range=1.0, full=True, **GAUSS)
    # Averaged over the mask within the region the unmasked mean uses (5 voxels from each face).
    inner = np.zeros(t.shape, dtype=bool)
    inner[5:-5, 5:-5, 5:-5] = True
    np.testing.assert_allclose(
        ssim_3d(t, p, mask=scanned), np.mean(smap[scanned & inner]), rtol=1e-10
    )
    np.testing.assert_allclose(ssim_3d(t, p, mask=np.ones(t.shape)), ssim_3d(t, p), rtol=1e-12)
    # Slice-wise: each axial slice's 2D map averaged inside its masked pixels, then over slices.
    ref = []
    for k in range(t.shape[0]):
        _, m2 = structural_similarity(t[k], p[k], data_range=1.0, full=True, **GAUSS)
        sel = scanned[k, 5:-5, 5:-5]
        if sel.any():
            ref.append(np.mean(m2[5:-5, 5:-5][sel]))
    np.testing.assert_allclose(ssim_2d(t, p, 0, mask=scanned), np.mean(ref), rtol=1e-10)


def test_evaluate_case_inside_a_mask_scores_only_the_scanned_voxels(pair, scanned) -> None:
    t, p = pair
    out = evaluate_case(t, p, mask=scanned)
    np.testing.assert_allclose(out["mae"], np.mean(np.abs(p - t)[scanned]), rtol=1e-12)
    np.testing.assert_allclose(out["ssim_3d"], ssim_3d(t, p, mask=scanned), rtol=1e-12)
    assert out["psnr_3d"] != pytest.approx(evaluate_case(t, p)["psnr_3d"])
    full = evaluate_case(t, p, mask=np.ones(t.shape, dtype=np.uint8))
    assert full == evaluate_case(t, p)
