"""benchmarks/bench_phantom_realism.py: the measurements on synthetic volumes against NumPy and
analytic references, the poses, and one tiny end-to-end run (32^3, four phantoms)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from bench_loader import load_benchmark
from scipy import ndimage

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SPACING = 5.0


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCHMARKS))  # it imports bench_transfer for the real-CT folder
    return load_benchmark("bench_phantom_realism")


def _ball(shape, centre, radius):
    grid = np.indices(shape, dtype=float)
    return sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) <= radius**2


def _chest(n=64):
    """A box of soft tissue (rows 12..51, columns 4..59, all slices) holding two air balls of
    radius 9 voxels (lungs) and one of radius 2 (too small for a lung), with a fat layer and a
    bone rod."""
    hu = np.full((n, n, n), -1000.0, np.float32)
    hu[:, 12:52, 4:60] = 40.0
    hu[:, 12:15, 4:60] = -100.0  # fat in front
    hu[:, 40:44, 30:34] = 700.0  # spine
    right = _ball(hu.shape, (30, 30, 18), 9)
    left = _ball(hu.shape, (30, 30, 46), 9)
    pocket = _ball(hu.shape, (55, 45, 32), 2)
    hu[right | left] = -850.0
    hu[pocket] = -900.0
    return hu, right | left


def test_lung_mask_keeps_the_two_large_air_components(bench):
    hu, lungs = _chest()
    body = hu > -500
    body = ndimage.binary_fill_holes(body)
    np.testing.assert_array_equal(bench.lung_mask(hu, body, SPACING), lungs)
    # A lung under 200 ml is dropped: at 10 mm voxels a ball of 9 voxels holds ~3 l, at
    # 1 mm ~3 ml.
    assert not bench.lung_mask(hu, body, 1.0).any()


def test_geometry_of_a_box_with_two_ball_lungs(bench):
    hu, lungs = _chest()
    body = ndimage.binary_fill_holes(hu > -500)
    g = bench.geometry(body, lungs, SPACING)
    np.testing.assert_allclose(g["ap_mm"], 40 * SPACING)  # rows 12..51
    np.testing.assert_allclose(g["lr_mm"], 56 * SPACING)  # columns 4..59
    # The lungs on the widest slice (30, the balls' centre): rows 30 +- 9, columns 18 - 9 to 46 + 9.
    np.testing.assert_allclose(g["lung_ap_mm"], 19 * SPACING)
    np.testing.assert_allclose(g["lung_lr_mm"], 47 * SPACING)
    np.testing.assert_allclose(g["lung_ml"], lungs.sum() * SPACING**3 / 1000)
    # Two balls of radius 9 voxels: 2 * 4/3 pi r^3 within the voxelisation error.
    np.testing.assert_allclose(
        g["lung_ml"], 2 * 4 / 3 * np.pi * (9 * SPACING) ** 3 / 1000, rtol=0.03
    )
    np.testing.assert_allclose(g["apex_mm"], (30 - 9) * SPACING)
    # The cross-section pi (r^2 - dz^2) halves at dz = r / sqrt(2) below the centre.
    np.testing.assert_allclose(g["diaphragm_mm"], (30 + 9 / np.sqrt(2)) * SPACING, atol=SPACING)


def test_geometry_without_lungs_is_nan(bench):
    body = np.ones((16, 16, 16), bool)
    g = bench.geometry(body, np.zeros_like(body), SPACING)
    assert g["lung_ml"] == 0.0
    keys = ("ap_mm", "lr_mm", "lung_ap_mm", "lung_lr_mm", "apex_mm", "diaphragm_mm")
    assert all(np.isnan(g[k]) for k in keys)


def test_volume_stats_against_numpy(bench):
    hu, lungs = _chest()
    hu = hu + np.random.default_rng(0).normal(0, 5, hu.shape).astype(np.float32)
    valid = np.ones(hu.shape, bool)
    valid[:4] = False  # statistics only inside the scan mask
    out = bench.volume_stats(hu, valid, SPACING)
    body = ndimage.binary_fill_holes(hu > -500) & valid
    lung = lungs & valid
    fat = body & (hu >= -190) & (hu < -30)
    bone = body & (hu >= 200)
    s = out["stats"]
    np.testing.assert_allclose(s["lung_fraction"], lung.sum() / body.sum(), rtol=1e-12)
    np.testing.assert_allclose(s["fat_fraction"], fat.sum() / body.sum(), rtol=1e-12)
    np.testing.assert_allclose(s["bone_mean_hu"], hu[bone].mean(), rtol=1e-5)
    np.testing.assert_allclose(s["lung_p10_hu"], np.percentile(hu[lung], 10), rtol=1e-5)
    np.testing.assert_allclose(s["fat_p90_hu"], np.percentile(hu[fat], 90), rtol=1e-5)
    np.testing.assert_array_equal(np.sort(out["samples"]["body"]), np.sort(hu[body]))


def test_lung_texture_of_white_noise(bench):
    # x - G x for white noise of SD s has variance s^2 sum((delta - g)^2)
    # = s^2 (1 - 2 g[0] + sum(g^2)), g the separable sigma-1 kernel (SciPy's: radius 4).
    g = np.exp(-0.5 * np.arange(-4, 5) ** 2)
    g /= g.sum()
    expected = 5.0 * np.sqrt(1 - 2 * g[4] ** 3 + np.sum(g**2) ** 3)
    hu = (-850 + np.random.default_rng(0).normal(0, 5, (40, 40, 40))).astype(np.float32)
    lung = _ball(hu.shape, (20, 20, 20), 12)
    np.testing.assert_allclose(bench.lung_texture_hu(hu, lung), expected, rtol=0.04)
    assert np.isnan(bench.lung_texture_hu(hu, np.zeros_like(lung)))


def test_scalar_distance(bench):
    np.testing.assert_allclose(bench.scalar_distance([1.0, 3.0], [0.0, 5.0]), (2 + 3) / 2)
    np.testing.assert_allclose(bench.scalar_distance([1.0, np.nan], [4.0]), 3.0)
    assert np.isnan(bench.scalar_distance([np.nan], [1.0]))


def test_poses_stay_in_range_and_a_pure_shift_moves_by_whole_voxels(bench):
    rng = np.random.default_rng(3)
    for _ in range(50):
        matrix, shift = bench.random_pose(rng, SPACING)
        sv = np.linalg.svd(matrix, compute_uv=False)
        np.testing.assert_allclose(sv, sv[0], rtol=1e-9)  # rotation times a scale
        assert 1 / 1.05 - 1e-9 <= sv[0] <= 1 / 0.95 + 1e-9
        assert np.all(np.abs(shift) <= 10.0 / SPACING)
    hu = np.random.default_rng(1).normal(size=(12, 12, 12)).astype(np.float32)
    np.testing.assert_allclose(bench.apply_pose(hu, (np.eye(3), np.zeros(3))), hu, atol=1e-6)
    moved = bench.apply_pose(hu, (np.eye(3), np.array([2.0, 0.0, -1.0])))
    expected = np.full_like(hu, bench.AIR_HU)
    expected[:-2, :, 1:] = hu[2:, :, :-1]
    np.testing.assert_allclose(moved, expected, atol=1e-6)


def test_measure_and_markdown_tiny(bench):
    from xprospect.data.samples import sample_ct

    result = bench.measure(
        32,
        4,
        n_poses=4,
        epochs=1,
        real_cts=[("LIDC", Path(sample_ct().ct_path))],
    )
    json.dumps(result, allow_nan=False)
    from xprospect.phantoms import PHANTOM_CALIBRATIONS

    cals = result["calibrations"]
    assert set(cals) == set(PHANTOM_CALIBRATIONS)  # every shipped population
    for record in cals.values():
        for prefix in ("", "framed_"):
            test = record[prefix + "classifier"]
            assert 0.0 <= test["accuracy"] <= 1.0
            np.testing.assert_allclose(
                record["distance"][prefix + "classifier_auc"], abs(test["auc"] - 0.5)
            )
        np.testing.assert_allclose(
            record["distance"]["ap_mm"],
            abs(record["mean"]["ap_mm"] - result["real"]["LIDC"]["ap_mm"]),
        )
    table = bench.markdown(result)
    assert f"| metric | real | {' | '.join(cals)} | closer |" in table
    assert "| body AP diameter (mm) |" in table
    assert "| classifier AUC, framed | 0.5 |" in table
