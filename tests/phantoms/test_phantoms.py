"""The procedural chest phantom: determinism, HU levels, anatomy and orientation, lung mask,
nodules and geometry (docs/conventions.md). Small grids (32^3, 64^3) and a single 128^3."""

from __future__ import annotations

import numpy as np
import pytest

from xprospect.constants import DEFAULT_FOV_MM
from xprospect.image import CANONICAL_AXCODES
from xprospect.phantoms import (
    BONE_LABELS,
    LABELS,
    LUNG_LABELS,
    ChestPhantom,
    chest_phantom,
    chest_phantoms,
)


@pytest.fixture(scope="module")
def ph64() -> ChestPhantom:
    return chest_phantom(64, seed=3)


@pytest.fixture(scope="module")
def ph64_nodules() -> ChestPhantom:
    return chest_phantom(64, seed=3, nodules=6)


def _centroid(ph: ChestPhantom, *names: str) -> np.ndarray:
    idx = np.argwhere(ph.mask(*names))
    assert len(idx), f"no voxels labelled {names}"
    return idx.mean(axis=0)


def _midline(ph: ChestPhantom) -> float:
    """Axis-2 index of the body's midline (the body outline is left-right symmetric)."""
    return float(np.argwhere(ph.labels.array != LABELS["background"])[:, 2].mean())


# --- determinism ------------------------------------------------------------------------------


def test_same_seed_same_phantom_and_different_seed_different():
    a, b, c = chest_phantom(32, seed=11), chest_phantom(32, seed=11), chest_phantom(32, seed=12)
    np.testing.assert_array_equal(a.volume.array, b.volume.array)
    np.testing.assert_array_equal(a.labels.array, b.labels.array)
    np.testing.assert_array_equal(a.lung_mask.array, b.lung_mask.array)
    assert dict(a.params) == dict(b.params)
    assert not np.array_equal(a.volume.array, c.volume.array)
    assert not np.array_equal(a.labels.array, c.labels.array)
    assert dict(a.params) != dict(c.params)


def test_the_global_random_state_is_left_alone():
    # The legacy global generator is exactly what must not be touched, so look at it directly.
    np.random.seed(1234)  # noqa: NPY002
    before = np.random.get_state()[1].copy()  # noqa: NPY002
    chest_phantom(32, seed=0, nodules=2)
    np.testing.assert_array_equal(np.random.get_state()[1], before)  # noqa: NPY002


def test_series_uses_spawned_seeds_that_rebuild_each_case():
    cases = list(chest_phantoms(3, 32, seed=5, noise_hu=0.0))
    assert len(cases) == 3
    assert len({p.seed for p in cases}) == 3
    assert [p.seed for p in chest_phantoms(2, 32, seed=5, noise_hu=0.0)] == [
        p.seed for p in cases[:2]
    ]  # case i does not depend on how many are asked for
    again = chest_phantom(32, cases[1].seed, noise_hu=0.0)
    np.testing.assert_array_equal(again.volume.array, cases[1].volume.array)
    assert not np.array_equal(cases[0].labels.array, cases[1].labels.array)


def test_anatomy_does_not_depend_on_the_grid():
    small, large = chest_phantom(32, seed=4), chest_phantom(64, seed=4)
    assert dict(small.params) == dict(large.params)
    assert small.lung_volume_ml == pytest.approx(large.lung_volume_ml, rel=0.08)
    for name in ("heart", "liver", "vertebra"):
        mm_small = small.volume.index_to_world(_centroid(small, name))
        mm_large = large.volume.index_to_world(_centroid(large, name))
        np.testing.assert_allclose(mm_small, mm_large, atol=10.0)


# --- HU levels --------------------------------------------------------------------------------


def test_hu_levels_per_structure(ph64):
    a = ph64.volume.array

    def median(*names: str) -> float:
        return float(np.median(a[ph64.mask(*names)]))

    assert -900.0 <= median("lung") <= -700.0
    # Bone as a whole is dense; each bone has a cancellous core (~+250) inside a dense cortex.
    assert median(*BONE_LABELS) > 300.0
    for name in BONE_LABELS:
        assert median(name) > 200.0, name
        assert np.percentile(a[ph64.mask(name)], 90) > 500.0, name
    for name in ("skin", "fat", "muscle", "mediastinum", "heart", "aorta", "liver", "spleen"):
        assert -150.0 <= median(name) <= 100.0, name
    assert median("fat") < -50.0 < 20.0 < median("muscle")
    assert median("liver") > median("fat") + 100.0
    assert median("disc") == pytest.approx(80.0, abs=40.0)
    for name in ("trachea", "airway", "stomach_gas"):
        assert median(name) < -900.0, name
    air = a[ph64.mask("background")]
    assert median("background") == pytest.approx(-1000.0, abs=3.0)
    assert 0.8 * 15.0 < float(air.std()) < 1.1 * 15.0  # the default noise_hu


def test_noise_free_air_is_exactly_air():
    ph = chest_phantom(32, seed=2, noise_hu=0.0)
    outside = ph.volume.array[ph.mask("background")]
    assert outside.size and np.all(outside == -1000.0)


# --- anatomy and orientation ------------------------------------------------------------------


def test_anatomy_sits_where_the_conventions_say(ph64):
    n0 = ph64.volume.shape[0]
    mid = _midline(ph64)
    heart, liver = _centroid(ph64, "heart"), _centroid(ph64, "liver")
    spine = _centroid(ph64, "vertebra")
    body = np.argwhere(ph64.labels.array != LABELS["background"]).mean(axis=0)
    # Heart: patient's left (higher axis 2) and anterior of the spine (lower axis 1).
    assert heart[2] > mid + 2
    assert heart[1] < spine[1] - 3
    # Liver: patient's right, below the heart.
    assert liver[2] < mid - 2
    assert liver[0] > heart[0]
    # Spine: posterior midline.
    assert spine[1] > body[1] + 3
    assert abs(spine[2] - mid) < 1.0
    # Lungs: apices near the top, both sides of the midline.
    lungs = np.argwhere(ph64.lung_mask.array > 0)
    assert lungs[:, 0].min() < 0.25 * n0
    assert (lungs[:, 2] < mid).any() and (lungs[:, 2] > mid).any()
    # Trachea: midline, above the heart and anterior of the spine.
    trachea = _centroid(ph64, "trachea")
    assert abs(trachea[2] - mid) < 2.0
    assert trachea[0] < heart[0] and trachea[1] < spine[1]
    # Descending aorta left of the spine (its lower half).
    aorta = np.argwhere(ph64.mask("aorta"))
    low = aorta[aorta[:, 0] > np.median(aorta[:, 0])]
    assert low[:, 2].mean() > mid


def test_right_hemidiaphragm_is_higher_than_the_left(ph64):
    mid = _midline(ph64)
    dia = np.argwhere(ph64.mask("diaphragm"))
    half = 20.0 / ph64.volume.spacing_mm[2]  # leave out the central tendon
    right_top = dia[dia[:, 2] < mid - half, 0].min()
    left_top = dia[dia[:, 2] > mid + half, 0].min()
    assert right_top < left_top
    liver_top = np.argwhere(ph64.mask("liver"))[:, 0].min()
    assert liver_top <= left_top


def test_frontal_projection_shows_the_heart_on_the_image_right(ph64):
    frontal = (ph64.volume.array + 1000.0).clip(0).sum(axis=1)  # (I, L)
    heart_cols = np.argwhere(ph64.mask("heart").any(axis=1))[:, 1]
    assert heart_cols.mean() > frontal.shape[1] / 2


# --- lung mask --------------------------------------------------------------------------------


def test_lung_mask_matches_the_labels(ph64_nodules):
    ph = ph64_nodules
    mask = ph.lung_mask.array
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
    inside = np.unique(ph.labels.array[mask > 0])
    assert set(inside) <= {LABELS[n] for n in LUNG_LABELS}
    assert np.all(mask[ph.mask("lung", "nodule")] == 1)
    assert np.mean(ph.labels.array[mask > 0] == LABELS["lung"]) > 0.8
    assert ph.lung_volume_ml == pytest.approx(mask.sum() * ph.volume.voxel_volume_ml)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_lung_volume_is_adult_at_64(seed):
    ph = chest_phantom(64, seed=seed, noise_hu=0.0)
    assert 2500.0 <= ph.lung_volume_ml <= 6500.0


def test_full_size_phantom_is_adult_sized():
    ph = chest_phantom(128, seed=0)
    assert ph.volume.shape == (128, 128, 128)
    assert ph.volume.spacing_mm == pytest.approx((2.5, 2.5, 2.5))
    assert 2500.0 <= ph.lung_volume_ml <= 6500.0
    body = ph.labels.array != LABELS["background"]
    width_mm = body.any(axis=(0, 1)).sum() * 2.5  # patient's right to left
    depth_mm = body[64:].any(axis=(0, 2)).sum() * 2.5  # front to back, chest and below
    assert 280.0 <= width_mm <= 320.0  # at most the field of view
    assert 190.0 <= depth_mm <= 270.0
    assert 280.0 <= ph.params["chest_width_mm"] <= 360.0
    assert set(np.unique(ph.labels.array)) == set(LABELS.values()) - {LABELS["nodule"]}


# --- nodules ----------------------------------------------------------------------------------


def test_nodules_lie_inside_the_lungs(ph64_nodules):
    ph = ph64_nodules
    assert len(ph.nodules) == 6
    mid = _midline(ph)
    labelled = ph.mask("nodule")
    assert labelled.any() and np.all(ph.lung_mask.array[labelled] == 1)
    for nod in ph.nodules:
        assert ph.lung_mask.array[nod.index] == 1
        assert ph.labels.array[nod.index] == LABELS["nodule"]
        assert 3.0 <= nod.diameter_mm <= 15.0
        assert -100.0 <= nod.hu <= 100.0
        np.testing.assert_allclose(nod.center_mm, ph.volume.index_to_world(nod.index))
        assert nod.side == ("right" if nod.index[2] < mid else "left")


def test_nodules_leave_the_rest_of_the_phantom_alone(ph64, ph64_nodules):
    assert not ph64.nodules and not ph64.mask("nodule").any()
    outside = ~ph64_nodules.mask("nodule")
    np.testing.assert_array_equal(ph64.labels.array[outside], ph64_nodules.labels.array[outside])
    np.testing.assert_array_equal(ph64.volume.array[outside], ph64_nodules.volume.array[outside])


# --- geometry and arguments -------------------------------------------------------------------


def test_volumes_are_canonical_with_the_expected_spacing(ph64):
    for v in (ph64.volume, ph64.lung_mask, ph64.labels):
        assert v.is_canonical and v.orientation == CANONICAL_AXCODES
        assert v.shape == (64, 64, 64)
        assert v.spacing_mm == pytest.approx((5.0, 5.0, 5.0))
        np.testing.assert_array_equal(v.affine, ph64.volume.affine)
    np.testing.assert_allclose(ph64.volume.center_mm, 0.0, atol=1e-9)
    assert ph64.volume.extent_mm == pytest.approx((DEFAULT_FOV_MM,) * 3)
    assert ph64.volume.array.dtype == np.float32
    assert ph64.labels.array.dtype == np.uint8
    assert ph64.LABELS["heart"] == LABELS["heart"]


def test_shape_and_spacing_options():
    ph = chest_phantom((24, 32, 40), seed=1, spacing_mm=8.0)
    assert ph.volume.shape == (24, 32, 40)
    assert ph.volume.spacing_mm == pytest.approx((8.0, 8.0, 8.0))
    assert ph.volume.is_canonical
    assert chest_phantom((20, 32, 32), seed=1).volume.spacing_mm == pytest.approx((10.0,) * 3)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"size": 8},
        {"size": (32, 32)},
        {"spacing_mm": 0.0},
        {"nodules": -1},
        {"noise_hu": -1.0},
    ],
)
def test_bad_arguments_are_refused(kwargs):
    args = {"size": 32, **kwargs}
    with pytest.raises(ValueError):
        chest_phantom(**args)


def test_unknown_label_names_are_refused(ph64):
    with pytest.raises(KeyError, match="kidney"):
        ph64.mask("kidney")


# --- calibration (issue 17: phantoms measured against real chest CT) ---------------------------


def test_original_calibration_is_the_default_phantom():
    a = chest_phantom(32, seed=5)
    b = chest_phantom(32, seed=5, calibration="original")
    np.testing.assert_array_equal(a.volume.array, b.volume.array)
    assert b.volume.metadata["calibration"] == "original"


def test_calibration_knobs_do_what_they_say():
    """Cortical HU scale exactly, the PSF as SciPy's Gaussian, the framing shift as a shift."""
    from dataclasses import replace

    from scipy import ndimage

    from xprospect.phantoms import PHANTOM_CALIBRATIONS

    orig = PHANTOM_CALIBRATIONS["original"]
    sharp = chest_phantom(48, seed=2, noise_hu=0.0)
    # The same draws with every cortex at 0.5x: the brightest rib voxel (cortex) halves.
    half = chest_phantom(
        48, seed=2, noise_hu=0.0, calibration=replace(orig, cortical_bone_scale=0.5)
    )
    ribs = sharp.mask("rib")
    np.testing.assert_allclose(
        half.volume.array[ribs].max(), 0.5 * sharp.volume.array[ribs].max(), rtol=1e-6
    )
    # Non-cortical tissue keeps its level.
    liver = sharp.mask("liver")
    np.testing.assert_allclose(half.volume.array[liver], sharp.volume.array[liver])
    # The point-spread function is a Gaussian blur of the sharp phantom (before the noise).
    blurred = chest_phantom(48, seed=2, noise_hu=0.0, calibration=replace(orig, psf_sigma_mm=2.0))
    spacing = sharp.volume.spacing_mm[0]
    expected = ndimage.gaussian_filter(sharp.volume.array, 2.0 / spacing, mode="nearest")
    np.testing.assert_allclose(blurred.volume.array, expected, atol=1e-3)
    # Moving the z shift range by a whole number of voxels moves the anatomy by that much.
    step = 2 * spacing
    lo, hi = orig.shift_z_mm
    up = chest_phantom(
        48, seed=2, noise_hu=0.0, calibration=replace(orig, shift_z_mm=(lo - step, hi - step))
    )
    np.testing.assert_array_equal(up.labels.array[:-4], sharp.labels.array[2:-2])


def test_chest_wall_sets_where_the_lungs_reach():
    """Thinning the chest wall's muscle by d mm at the front and back (each side) moves the
    pleura out by d where the cage has its full size, a little less where it tapers towards the
    apices: the lungs' front-to-back (left-to-right) extent around their widest level grows by
    up to 2 d; the body stays as it was."""
    from dataclasses import replace

    from xprospect.phantoms import PHANTOM_CALIBRATIONS

    orig = PHANTOM_CALIBRATIONS["original"]
    assert orig.chest_wall_mm == (18.0, 16.0, 30.0)  # the phantom as first built

    def extents(ph, widest=None):
        lung = ph.lung_mask.array > 0
        if widest is None:
            widest = int(np.argmax(lung.sum(axis=(1, 2))))
        near = lung[widest - 3 : widest + 4]
        ap = np.mean([np.ptp(np.flatnonzero(s.any(axis=1))) for s in near])
        lr = np.mean([np.ptp(np.flatnonzero(s.any(axis=0))) for s in near])
        return widest, ap * ph.volume.spacing_mm[0], lr * ph.volume.spacing_mm[0]

    for seed in (3, 4):
        base = chest_phantom(64, seed=seed, noise_hu=0.0)
        thin = chest_phantom(
            64, seed=seed, noise_hu=0.0, calibration=replace(orig, chest_wall_mm=(8.0, 11.0, 20.0))
        )
        widest, ap0, lr0 = extents(base)
        _, ap1, lr1 = extents(thin, widest)
        half_voxel = base.volume.spacing_mm[0] / 2
        assert 0.75 * 20.0 <= ap1 - ap0 <= 20.0 + half_voxel  # front 10 + back 10 mm
        assert 0.75 * 10.0 <= lr1 - lr0 <= 10.0 + half_voxel  # 5 mm each side
        np.testing.assert_array_equal(thin.labels.array > 0, base.labels.array > 0)
        assert thin.lung_volume_ml > 1.1 * base.lung_volume_ml


def test_real_ct_calibration_matches_the_measured_real_chest():
    """The targets measured on the LIDC CT (``PHANTOM_CALIBRATIONS`` comments): a framing from
    the lung apices, a deeper body, partial-volume bone and a wider lung HU spread."""
    from xprospect.preprocessing import body_mask

    for seed in (0, 1):
        orig = chest_phantom(64, seed=seed)
        cal = chest_phantom(64, seed=seed, calibration="real_ct")
        spacing = cal.volume.spacing_mm[0]
        top = np.argwhere(cal.lung_mask.array.any(axis=(1, 2)))[0, 0] * spacing
        top_orig = np.argwhere(orig.lung_mask.array.any(axis=(1, 2)))[0, 0] * spacing
        assert top <= 10.0 < top_orig  # LIDC: the apices reach the top of the field
        ap = [
            np.ptp(np.argwhere(body_mask(p.volume.array).any(axis=(0, 2)))) * spacing
            for p in (orig, cal)
        ]
        assert ap[0] < 240.0 <= ap[1] <= 270.0  # LIDC 248 mm, RICORD 253 mm
        bone = [p.volume.array[p.volume.array >= 200] for p in (orig, cal)]
        assert np.percentile(bone[1], 90) < 620.0 < np.percentile(bone[0], 90)  # real: 540
        lung = [p.volume.array[p.mask("lung")] for p in (orig, cal)]
        spread = [np.percentile(v, 90) - np.percentile(v, 10) for v in lung]
        assert spread[0] < spread[1]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"chest_wall_mm": (8.0, -1.0, 14.0)}, r"chest_wall_mm needs three thicknesses >= 0"),
        ({"chest_wall_mm": (8.0, 14.0)}, r"chest_wall_mm needs three thicknesses"),
        ({"chest_wall_mm": (8.0, float("nan"), 14.0)}, r"chest_wall_mm needs three"),
        ({"chest_wall_mm": (100.0, 14.0, 100.0)}, r"leave no room for the lungs"),
        ({"fat_mm": (30.0, 10.0)}, r"fat_mm \(30.0, 10.0\) is not a range"),
    ],
)
def test_a_calibration_that_cannot_build_a_chest_is_refused(change, message):
    from dataclasses import replace

    from xprospect.errors import ConfigError
    from xprospect.phantoms import PHANTOM_CALIBRATIONS

    with pytest.raises(ConfigError, match=r"'mine': .*" + message):
        replace(PHANTOM_CALIBRATIONS["real_ct"], name="mine", **change)


def test_real_ct_lungs_is_real_ct_with_the_real_lungs_depth_and_volume():
    """``PHANTOM_CALIBRATIONS``' comment: lungs 165-185 mm deep at their widest level on the
    two real CTs, against real_ct's ~155 mm, in bodies of the same size; more lung than
    real_ct (phantoms 0 and 1: 2.9 l with real_ct's wall)."""
    from dataclasses import replace

    from xprospect.phantoms import PHANTOM_CALIBRATIONS

    lungs, base = PHANTOM_CALIBRATIONS["real_ct_lungs"], PHANTOM_CALIBRATIONS["real_ct"]
    assert replace(lungs, name="real_ct", chest_wall_mm=base.chest_wall_mm) == base
    for seed in (0, 1):
        deep = chest_phantom(64, seed=seed, calibration=replace(lungs, supersample=1))
        thick = chest_phantom(64, seed=seed, calibration=replace(base, supersample=1))
        depth = []
        for ph in (deep, thick):
            lung = ph.lung_mask.array > 0
            widest = lung[int(np.argmax(lung.sum(axis=(1, 2))))]
            depth.append((np.ptp(np.flatnonzero(widest.any(axis=1))) + 1) * 5.0)
        assert depth[1] < 160.0 <= depth[0] <= 200.0
        assert thick.lung_volume_ml < 3600.0 and 3300.0 <= deep.lung_volume_ml <= 5000.0
        np.testing.assert_array_equal(deep.labels.array > 0, thick.labels.array > 0)


def test_size_factor_sets_the_spread_of_body_sizes():
    """``size_factor`` is the range of the stature, width and depth factors: a constant factor
    reproduces the phantom whose draws land on it, and the population calibration spreads
    the chest widths as wide as an adult population (coefficient of variation near 10 %)."""
    from dataclasses import replace

    from xprospect.phantoms import PHANTOM_CALIBRATIONS

    pop = PHANTOM_CALIBRATIONS["real_ct_population"]
    base = PHANTOM_CALIBRATIONS["real_ct"]
    # Everything but the spread of sizes, framing, fat and breathing is real_ct's.
    assert (
        replace(
            pop,
            name="real_ct",
            size_factor=base.size_factor,
            fat_mm=base.fat_mm,
            shift_z_mm=base.shift_z_mm,
            inspiration=base.inspiration,
        )
        == base
    )
    widths = np.array(
        [
            chest_phantom(16, seed=s, calibration=replace(pop, supersample=1)).params[
                "chest_width_mm"
            ]
            for s in range(40)
        ]
    )
    narrow = np.array(
        [
            chest_phantom(16, seed=s, calibration=replace(base, supersample=1)).params[
                "chest_width_mm"
            ]
            for s in range(40)
        ]
    )
    # chest_width_mm = 2 * half_width * width factor * stature: two draws from size_factor.
    factors = widths / (2 * pop.half_width_mm)
    assert factors.min() >= 0.88**2 - 1e-3 and factors.max() <= 1.12**2 + 1e-3
    # Two independent uniform +-12 % factors: CV 9.8 %; two +-5 %: 4.1 %.
    assert 0.07 < np.std(factors) / np.mean(factors) < 0.13
    assert np.std(narrow) / np.mean(narrow) < 0.055


def test_unknown_calibration_is_refused():
    from xprospect.demo import DemoSettings, check_settings
    from xprospect.errors import ConfigError

    # The phantom generator and the demo share one check (phantom_calibration).
    with pytest.raises(
        ConfigError, match=r"unknown phantom calibration 'cadaver'; known: .*real_ct"
    ):
        chest_phantom(32, seed=0, calibration="cadaver")
    with pytest.raises(ConfigError, match="unknown phantom calibration 'cadaver'"):
        check_settings(DemoSettings(phantom_calibration="cadaver"))


def test_supersampling_is_the_block_mean_of_the_finer_phantom():
    """Partial volume: each voxel is the mean of the 2^3 finer voxels it covers, so the mean HU
    of the whole cube is kept, and labels are the finer grid's at each block's centre."""
    from dataclasses import replace

    from xprospect.phantoms import PHANTOM_CALIBRATIONS

    cal = replace(PHANTOM_CALIBRATIONS["original"], supersample=2)
    coarse = chest_phantom(24, seed=4, noise_hu=0.0, calibration=cal)
    fine = chest_phantom(48, seed=4, noise_hu=0.0, spacing_mm=DEFAULT_FOV_MM / 48)
    expected = fine.volume.array.reshape(24, 2, 24, 2, 24, 2).mean(axis=(1, 3, 5))
    np.testing.assert_allclose(coarse.volume.array, expected, rtol=1e-6, atol=1e-3)
    np.testing.assert_allclose(coarse.volume.array.mean(), fine.volume.array.mean(), rtol=1e-5)
    np.testing.assert_array_equal(coarse.labels.array, fine.labels.array[1::2, 1::2, 1::2])
    assert coarse.volume.spacing_mm == pytest.approx((DEFAULT_FOV_MM / 24,) * 3)
    assert coarse.volume.metadata["supersample"] == 2
