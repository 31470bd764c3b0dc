"""Real-CT augmentation (`xprospect.augmentation`): seeds, HU range, labels following the volume,
identity at zero magnitude, the affine and the deformation against SciPy references."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from xprospect.augmentation import (
    AIR_HU,
    RandomAffine,
    RandomElasticDeformation,
    RandomHUPerturbation,
    augment_volume,
    augmentation_seed,
)
from xprospect.errors import ConfigError, GeometryError
from xprospect.image import Volume

LOW, HIGH = -1024.0, 3071.0


def _body(n: int = 24, spacing_mm=(10.0, 10.0, 10.0)) -> Volume:
    """Air (-1000) around an off-centre ellipsoid of soft tissue with a dense core, smoothed so a
    threshold has a clean boundary; one bright voxel near the top of the HU range."""
    idx = np.indices((n, n, n), dtype=np.float64)
    centre = np.array([0.45, 0.55, 0.5])[:, None, None, None] * n
    radii = np.array([0.25, 0.2, 0.3])[:, None, None, None] * n
    r = np.sqrt((((idx - centre) / radii) ** 2).sum(axis=0))
    vol = np.where(r < 1.0, 40.0, AIR_HU) + np.where(r < 0.4, 960.0, 0.0)
    vol = ndimage.gaussian_filter(vol, 1.0)
    vol[int(n * 0.45), int(n * 0.55), int(n * 0.5)] = 3000.0
    return Volume.from_spacing(vol.astype(np.float32), spacing_mm)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


TRANSFORMS = [
    lambda seed: RandomAffine(seed=seed),
    lambda seed: RandomElasticDeformation(max_displacement_mm=20.0, control_points=5, seed=seed),
    lambda seed: RandomHUPerturbation(seed=seed),
]


@pytest.mark.parametrize("make", TRANSFORMS, ids=["affine", "elastic", "hu"])
def test_a_seed_gives_the_same_output_and_parameters_and_another_seed_does_not(make):
    vol = _body()
    label = vol.array > -500
    a_img, a_lab = make(3)(vol, label)
    b_img, b_lab = make(3)(vol, label)
    np.testing.assert_array_equal(a_img.array, b_img.array)
    np.testing.assert_array_equal(a_lab, b_lab)
    assert make(3).draw(vol) == make(3).draw(vol)
    c_img = make(4)(vol)
    assert make(4).draw(vol) != make(3).draw(vol)
    assert np.abs(c_img.array - a_img.array).max() > 1.0


def test_augment_volume_is_reproducible_from_its_recorded_seed():
    vol = _body()
    one, _, rec_one = augment_volume(vol, 11)
    two, _, rec_two = augment_volume(vol, rec_one["seed"])
    np.testing.assert_array_equal(one.array, two.array)
    assert rec_one == rec_two
    assert [t["name"] for t in rec_one["transforms"]] == [
        "RandomAffine",
        "RandomElasticDeformation",
        "RandomHUPerturbation",
    ]
    other, _, rec_other = augment_volume(vol, 12)
    assert rec_other != rec_one and np.abs(other.array - one.array).max() > 1.0


def test_variant_seeds_depend_on_the_case_and_index_only():
    seeds = {augmentation_seed(0, case, k) for case in ("a", "b") for k in (1, 2, 3)}
    assert len(seeds) == 6 and all(0 <= s < 2**63 for s in seeds)
    assert augmentation_seed(0, "a", 1) == augmentation_seed(0, "a", 1)
    assert augmentation_seed(1, "a", 1) != augmentation_seed(0, "a", 1)


def test_hu_range_is_kept_and_air_stays_air():
    vol = _body()
    strong = RandomHUPerturbation(scale=(1.5, 1.5), offset_hu=200.0, noise_hu=50.0, seed=0)
    out = strong(vol).array
    assert out.min() >= LOW and out.max() <= HIGH
    assert out.max() == HIGH  # the 3000 HU voxel scaled by 1.5 is clipped, not kept above range
    air = vol.array <= AIR_HU
    assert air.sum() > 1000
    np.testing.assert_array_equal(out[air], vol.array[air])  # air and padding untouched
    # Without noise, each voxel follows the documented formula: tissue stretched about air and
    # offset, the ramp between, clipped to the stored range.
    clean = RandomHUPerturbation(scale=(1.5, 1.5), offset_hu=200.0, noise_hu=0.0, seed=0)
    p = clean.draw()
    assert p["scale"] == 1.5 and p["offset_hu"] == strong.draw()["offset_hu"]
    x = vol.array.astype(np.float64)
    w = np.clip((x + 1000.0) / 100.0, 0.0, 1.0)
    expected = np.clip(x + w * (0.5 * (x + 1000.0) + p["offset_hu"]), LOW, HIGH)
    np.testing.assert_allclose(clean(vol).array, expected, rtol=1e-6, atol=1e-3)
    # The noise is Gaussian of the given standard deviation where tissue is fully changed.
    tissue = (w == 1.0) & (expected < HIGH - 300)
    noise = out[tissue] - clean(vol).array[tissue]
    assert tissue.sum() > 500 and abs(noise.std() - 50.0) < 5.0 and abs(noise.mean()) < 5.0

    full, _, _ = augment_volume(vol, 5)
    assert full.array.min() >= LOW and full.array.max() <= HIGH
    # Far from the body (outside it grown by more than shift + deformation) it is still air.
    far = ~ndimage.binary_dilation(vol.array > -900, iterations=4)
    assert far.sum() > 1000 and full.array[far].max() <= AIR_HU + 10.0  # lung is ~-850


def test_zero_magnitude_is_the_identity():
    vol = _body(spacing_mm=(2.0, 1.5, 1.0))
    label = (vol.array > -500).astype(np.uint8)
    for t in (
        RandomAffine(degrees=0.0, scales=(1.0, 1.0), translation_mm=0.0, seed=7),
        RandomElasticDeformation(max_displacement_mm=0.0, seed=7),
        RandomHUPerturbation(scale=(1.0, 1.0), offset_hu=0.0, noise_hu=0.0, seed=7),
    ):
        img, lab = t(vol, Volume(label, vol.affine))
        np.testing.assert_allclose(img.array, vol.array, atol=1e-3)
        np.testing.assert_array_equal(lab.array, label)
        np.testing.assert_array_equal(img.affine, vol.affine)


def _rotation(angles_deg):
    """Rotation about array axes 0, 1, 2 applied in that order (extrinsic), by hand."""
    a, b, c = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def test_affine_matches_scipy_affine_transform_with_the_same_matrix():
    spacing = np.array([2.0, 1.5, 1.0])
    vol = _body(20, tuple(spacing))
    t = RandomAffine(degrees=10.0, scales=(0.8, 1.2), translation_mm=6.0, seed=2)
    p = t.draw(vol)
    # The inverse of x -> R S x + t in mm about the centre, in index units.
    forward = _rotation(p["rotation_deg"]) @ np.diag(p["scales"])
    inv = np.linalg.inv(forward)
    matrix = np.diag(1 / spacing) @ inv @ np.diag(spacing)
    centre = (np.array(vol.shape) - 1) / 2
    offset = centre - matrix @ centre - (inv @ np.array(p["translation_mm"])) / spacing
    a = vol.array
    ref = ndimage.affine_transform(a, matrix, offset, order=3, mode="constant", cval=LOW)
    ref = np.clip(ref, LOW, a.max())
    label = (a > -500).astype(np.uint8)
    img, lab = t(vol, label)
    np.testing.assert_allclose(img.array, ref, atol=0.05)
    ref_lab = ndimage.affine_transform(label, matrix, offset, order=0, mode="constant", cval=0)
    assert (lab != ref_lab).mean() < 0.002  # ties at exactly half a voxel may round either way
    assert np.abs(img.array - a).max() > 100  # it really moved


def test_elastic_field_and_warp_match_a_direct_scipy_reference():
    spacing = np.array([2.0, 1.5, 1.0])
    vol = _body(18, tuple(spacing))
    t = RandomElasticDeformation(max_displacement_mm=5.0, control_points=5, seed=1)
    control = t.control_displacement_mm()
    assert np.all(control[:, 0] == 0) and np.all(control[:, :, -1] == 0)  # borders locked
    assert np.abs(control).max() <= 5.0 and np.abs(control).max() > 2.0
    where = np.stack(
        np.meshgrid(*[np.linspace(0, 4, n) for n in vol.shape], indexing="ij")
    )  # control point j at voxel j * (n - 1) / 4
    field = np.stack([ndimage.map_coordinates(g, where, order=3, mode="nearest") for g in control])
    np.testing.assert_allclose(t.displacement_mm(vol), field, atol=1e-9)
    coords = np.indices(vol.shape) + field / spacing[:, None, None, None]
    ref = ndimage.map_coordinates(vol.array, coords, order=3, mode="constant", cval=LOW)
    ref = np.clip(ref, LOW, vol.array.max())
    out = t(vol).array
    inner = (slice(1, -1),) * 3  # the reference's rounding may put a border voxel outside
    np.testing.assert_allclose(out[inner], ref[inner], atol=0.05)
    border = np.ones(vol.shape, bool)
    border[inner] = False
    np.testing.assert_allclose(out[border], vol.array[border], atol=0.05)  # locked borders
    assert np.abs(out - vol.array).max() > 50  # it really moved


@pytest.mark.parametrize(
    "make",
    [
        lambda: RandomAffine(degrees=12.0, scales=(0.85, 1.15), translation_mm=5.0, seed=1),
        lambda: RandomElasticDeformation(max_displacement_mm=4.0, control_points=5, seed=1),
    ],
    ids=["affine", "elastic"],
)
def test_labels_stay_aligned_with_the_volume(make):
    vol = _body(32, (1.0, 1.0, 1.0))
    label = vol.array > -500
    img, lab = make()(vol, Volume(label.astype(np.uint8), vol.affine))
    moved = img.array > -500
    assert _dice(lab.array > 0, moved) >= 0.95
    # Two-sided: the change is large enough that keeping the old label would not pass.
    assert _dice(label, moved) < 0.9


def test_bad_arguments_and_labels_are_typed_errors():
    with pytest.raises(ConfigError, match="scales"):
        RandomAffine(scales=(1.1, 0.9))
    with pytest.raises(ConfigError, match="degrees"):
        RandomAffine(degrees=-1.0)
    with pytest.raises(ConfigError, match="control_points"):
        RandomElasticDeformation(control_points=3)
    with pytest.raises(ConfigError, match="seed"):
        RandomHUPerturbation(seed=-1)
    with pytest.raises(ConfigError, match="offset_hu"):
        RandomHUPerturbation(offset_hu=float("nan"))
    with pytest.raises(GeometryError, match="shape"):
        RandomAffine()(_body(), np.zeros((3, 3, 3)))
