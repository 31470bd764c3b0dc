"""Tests of xprospect.preprocessing against independent references.

References are explicit formulas, nibabel's own reorientation, scikit-image's ``resize``, NumPy
(``np.percentile``, ``np.pad``, slicing) and the analytic geometry of the phantoms, never the code
under test.
"""

from __future__ import annotations

import subprocess
import sys
import warnings

import nibabel as nib
import numpy as np
import pytest
import scipy.ndimage as ndi
from skimage.transform import resize as sk_resize

from xprospect.errors import ConfigError, GeometryError
from xprospect.image import CANONICAL_AXCODES, Radiograph, View, Volume
from xprospect.phantoms.asymmetric import asymmetric_phantom
from xprospect.preprocessing import (
    HU_WINDOWS,
    ClipHU,
    Compose,
    CropOrPad,
    CropToSquare,
    PadToSquare,
    PercentileWindow,
    Reorient,
    Resample,
    Resize,
    ResizeImage,
    WindowHU,
    axial_axis,
    body_mask,
    clip_hu,
    crop_or_pad,
    crop_to_square,
    ct_preprocessing,
    pad_to_square,
    percentile_window,
    radiograph_preprocessing,
    remove_couch,
    reorient,
    resample,
    resize,
    resize_array,
    resize_image,
    resolve_hu_window,
    scan_mask,
    unwindow_hu,
    window_hu,
)

LANDMARK_HU = {"heart": 400.0, "spine": 1000.0, "liver": 150.0, "apex_marker": 1000.0}


@pytest.fixture(scope="module")
def phantom():
    return asymmetric_phantom()


def _rotation_z(deg: float) -> np.ndarray:
    t = np.radians(deg)
    r = np.eye(4)
    r[:2, :2] = [[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]
    return r


# --- HU windows ---------------------------------------------------------------------------------
def test_named_windows_match_the_conventions_table():
    assert HU_WINDOWS == {
        "xprospect": (-1000, 1000),
        "x2ct": (-1024, 1476),
        "lung": (-1350, 150),
        "mediastinum": (-160, 240),
    }
    assert resolve_hu_window("LUNG") == (-1350.0, 150.0)
    assert resolve_hu_window((-100, 300)) == (-100.0, 300.0)


@pytest.mark.parametrize("name", sorted(HU_WINDOWS))
def test_window_hu_matches_formula(name):
    low, high = HU_WINDOWS[name]
    hu = np.random.default_rng(0).uniform(-2000, 3000, size=(7, 11, 13))
    expected = np.clip((hu - low) / (high - low), 0.0, 1.0)
    got = window_hu(hu, name)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    # the window ends map exactly
    np.testing.assert_allclose(window_hu(np.array([low, high]), name), [0.0, 1.0], atol=1e-7)


def test_window_and_unwindow_on_volume(phantom):
    vol = phantom.volume
    w = window_hu(vol, "x2ct")
    assert isinstance(w, Volume)
    np.testing.assert_array_equal(w.affine, vol.affine)
    np.testing.assert_allclose(w.array, np.clip((vol.array + 1024.0) / 2500.0, 0, 1), atol=1e-6)
    back = unwindow_hu(w, "x2ct")
    np.testing.assert_allclose(back.array, np.clip(vol.array, -1024, 1476), atol=1e-3)


def test_unwindow_matches_formula_and_inverts_inside_window():
    w = np.linspace(0.0, 1.0, 101)
    np.testing.assert_allclose(unwindow_hu(w, "lung"), w * 1500.0 - 1350.0, rtol=0, atol=1e-3)
    hu = np.random.default_rng(1).uniform(-160, 240, size=1000)
    np.testing.assert_allclose(
        unwindow_hu(window_hu(hu, "mediastinum"), "mediastinum"), hu, rtol=0, atol=1e-3
    )


def test_clip_hu_keeps_dtype_and_matches_np_clip():
    hu = np.random.default_rng(2).integers(-3000, 3000, size=(5, 6, 7)).astype(np.int16)
    got = clip_hu(hu, "xprospect")
    assert got.dtype == np.int16
    np.testing.assert_array_equal(got, np.clip(hu.astype(int), -1000, 1000))
    f = hu.astype(np.float32)
    np.testing.assert_allclose(clip_hu(f, (-10.5, 20.25)), np.clip(f, -10.5, 20.25), atol=0)


@pytest.mark.parametrize("bad", ["bone", (100, 100), (200.0, 100.0), (1, 2, 3), ("a", "b"), 5])
def test_bad_window_raises_config_error(bad):
    with pytest.raises(ConfigError) as info:
        window_hu(np.zeros(3), bad)
    if bad == "bone":
        for name in HU_WINDOWS:
            assert name in str(info.value)


# --- reorient -----------------------------------------------------------------------------------
def test_reorient_matches_nibabel_and_manual_flips(phantom):
    vol = phantom.volume
    nib_ras = nib.as_closest_canonical(nib.Nifti1Image(vol.array, vol.affine))
    ras = reorient(vol, ("R", "A", "S"))
    np.testing.assert_array_equal(ras.array, np.asanyarray(nib_ras.dataobj))
    np.testing.assert_allclose(ras.affine, nib_ras.affine, atol=1e-12)
    # By hand: canonical (I, P, L) axis 0 reversed is S, axis 1 reversed is A, axis 2 reversed R.
    np.testing.assert_array_equal(ras.array, vol.array[::-1, ::-1, ::-1].transpose(2, 1, 0))
    # ... and back to canonical from nibabel's RAS image.
    back = reorient(Volume(np.asanyarray(nib_ras.dataobj), nib_ras.affine))
    assert back.orientation == CANONICAL_AXCODES
    np.testing.assert_array_equal(back.array, vol.array)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-12)


AXCODES = [
    ("R", "A", "S"),
    ("L", "P", "S"),
    ("S", "P", "L"),
    ("A", "S", "L"),
    ("P", "I", "R"),
    ("I", "L", "A"),
]


@pytest.mark.parametrize("axcodes", AXCODES)
def test_reorient_keeps_landmarks_in_world(phantom, axcodes):
    out = reorient(phantom.volume, axcodes)
    assert out.orientation == axcodes
    for name, hu in LANDMARK_HU.items():
        idx = out.world_to_index(phantom.landmark_world_mm(name))
        np.testing.assert_allclose(idx, np.round(idx), rtol=0, atol=1e-9)
        assert out.array[tuple(np.round(idx).astype(int))] == hu, name
    # every voxel: the value found at its world position in the original is the same
    grid = np.indices(out.shape).reshape(3, -1).T
    src = np.round(phantom.volume.world_to_index(out.index_to_world(grid))).astype(int)
    np.testing.assert_array_equal(out.array[tuple(grid.T)], phantom.volume.array[tuple(src.T)])


@pytest.mark.parametrize("axcodes", AXCODES)
def test_reorient_round_trip_is_identity(phantom, axcodes):
    vol = phantom.volume
    back = reorient(reorient(vol, axcodes))
    np.testing.assert_array_equal(back.array, vol.array)
    np.testing.assert_allclose(back.affine, vol.affine, rtol=0, atol=1e-12)


def test_reorient_oblique_closest_axes_and_warning(phantom):
    vol = phantom.volume
    ras = reorient(vol, ("R", "A", "S"))
    tilted = Volume(ras.array, _rotation_z(5.0) @ ras.affine)
    with pytest.warns(UserWarning, match="oblique"):
        out = reorient(tilted)
    assert out.orientation == CANONICAL_AXCODES
    assert out.is_oblique
    np.testing.assert_array_equal(out.array, vol.array)  # the same flips as without the tilt
    grid = np.indices(out.shape).reshape(3, -1).T[::97]
    src = tilted.world_to_index(out.index_to_world(grid))
    np.testing.assert_allclose(src, np.round(src), atol=1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reorient(Volume(ras.array, _rotation_z(0.5) @ ras.affine))


def test_reorient_rejects_bad_axcodes(phantom):
    with pytest.raises(GeometryError):
        reorient(phantom.volume, ("R", "L", "S"))


# --- resample / resize --------------------------------------------------------------------------
RESIZE_CASES = [
    ((37, 50), (20, 64)),  # down one axis, up the other
    ((40, 40), (97, 13)),
    ((20, 31, 17), (9, 40, 17)),
    ((64, 48, 33), (16, 97, 8)),
    ((12, 9, 30), (12, 9, 30)),  # identity
]


@pytest.mark.parametrize(("shape_in", "shape_out"), RESIZE_CASES)
@pytest.mark.parametrize("anti_aliasing", [False, True])
def test_resize_array_matches_skimage(shape_in, shape_out, anti_aliasing):
    a = np.random.default_rng(3).random(shape_in).astype(np.float32)
    expected = sk_resize(a, shape_out, order=1, mode="edge", anti_aliasing=anti_aliasing)
    got = resize_array(a, shape_out, anti_aliasing=anti_aliasing)
    assert got.shape == shape_out and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_resize_array_constant_fill_matches_skimage():
    a = np.random.default_rng(4).random((21, 30, 18)).astype(np.float32)
    expected = sk_resize(a, (40, 11, 18), order=1, mode="constant", cval=-0.5, clip=False)
    got = resize_array(a, (40, 11, 18), fill_value=-0.5)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_resize_array_int16_input_matches_float_reference():
    a = np.random.default_rng(5).integers(-1024, 3000, size=(50, 40, 30)).astype(np.int16)
    expected = sk_resize(a.astype(np.float64), (20, 17, 64), order=1, mode="edge")
    np.testing.assert_allclose(resize_array(a, (20, 17, 64)), expected, rtol=0, atol=2e-3)


def test_nearest_keeps_labels_and_dtype():
    labels = np.random.default_rng(6).choice(np.array([0, 1, 2, 5], dtype=np.uint8), (30, 41, 22))
    got = resize_array(labels, (17, 80, 11), interpolation="nearest")
    assert got.dtype == np.uint8
    assert set(np.unique(got)) <= {0, 1, 2, 5}
    expected = sk_resize(labels, (17, 80, 11), order=0, mode="edge", preserve_range=True)
    np.testing.assert_array_equal(got, expected)
    up = resize_array(labels, (60, 82, 44), interpolation="nearest")
    np.testing.assert_array_equal(np.unique(up), [0, 1, 2, 5])


def test_resample_with_exact_factor_matches_skimage(phantom):
    vol = phantom.volume  # (32, 32, 32) at (4, 3, 2.5) mm
    out = resample(vol, (8.0, 6.0, 5.0))
    assert out.shape == (16, 16, 16)
    expected = sk_resize(vol.array, (16, 16, 16), order=1, mode="edge", anti_aliasing=True)
    np.testing.assert_allclose(out.array, expected, rtol=0, atol=1e-3)


@pytest.mark.parametrize("spacing", [(2.0, 2.0, 2.0), (3.0, 3.5, 3.0), (5.0, 2.0, 4.0)])
def test_resample_geometry(phantom, spacing):
    vol = phantom.volume
    out = resample(vol, spacing)
    extent = np.asarray(vol.shape) * np.asarray(vol.spacing_mm)
    np.testing.assert_array_equal(out.shape, np.floor(extent / np.asarray(spacing) + 0.5))
    np.testing.assert_allclose(out.spacing_mm, spacing, rtol=1e-12)
    np.testing.assert_allclose(out.center_mm, vol.center_mm, atol=1e-9)
    assert out.orientation == vol.orientation


def _component_centroid_index(vol: Volume, world_mm: np.ndarray, threshold: float) -> np.ndarray:
    """Centroid (array index) of the thresholded component that contains ``world_mm``."""
    labels, _ = ndi.label(vol.array > threshold)
    seed = tuple(np.round(vol.world_to_index(world_mm)).astype(int))
    assert labels[seed] > 0
    return np.asarray(ndi.center_of_mass(labels == labels[seed]))


@pytest.mark.parametrize("spacing", [(2.0, 2.0, 2.0), (3.0, 3.5, 3.0), (5.0, 2.0, 4.0)])
def test_resample_keeps_landmarks_in_world(phantom, spacing):
    out = resample(phantom.volume, spacing)
    nearest = resample(phantom.volume, spacing, interpolation="nearest")
    for name, threshold in [("heart", 200.0), ("liver", 75.0), ("apex_marker", 500.0)]:
        world = phantom.landmark_world_mm(name)
        expected = out.world_to_index(world)
        np.testing.assert_allclose(
            _component_centroid_index(out, world, threshold), expected, rtol=0, atol=0.5
        )
        idx = tuple(np.round(nearest.world_to_index(world)).astype(int))
        assert nearest.array[idx] == LANDMARK_HU[name]


def test_resample_preserves_mean_of_uniform_region():
    rng = np.random.default_rng(7)
    a = rng.normal(40.0, 15.0, size=(40, 60, 50)).astype(np.float32)
    vol = Volume.from_spacing(a, (2.5, 0.8, 0.8))
    for spacing in [(1.0, 1.0, 1.0), (2.5, 2.5, 2.5), (4.0, 3.0, 1.7)]:
        out = resample(vol, spacing)
        np.testing.assert_allclose(out.array.mean(), a.mean(), rtol=0, atol=0.5)


def test_resize_volume_keeps_field_of_view(phantom):
    vol = phantom.volume
    out = resize(vol, (20, 45, 32))
    assert out.shape == (20, 45, 32)
    np.testing.assert_allclose(out.extent_mm, vol.extent_mm, rtol=1e-12)
    np.testing.assert_allclose(out.center_mm, vol.center_mm, atol=1e-9)
    expected = sk_resize(vol.array, (20, 45, 32), order=1, mode="edge", anti_aliasing=True)
    np.testing.assert_allclose(out.array, expected, rtol=0, atol=1e-3)
    # world position of the first voxel's outer corner is the original's
    np.testing.assert_allclose(
        out.index_to_world([-0.5, -0.5, -0.5]), vol.index_to_world([-0.5, -0.5, -0.5]), atol=1e-9
    )


def test_resample_bad_arguments(phantom):
    with pytest.raises(GeometryError):
        resample(phantom.volume, (1.0, 0.0, 1.0))
    with pytest.raises(ConfigError):
        resample(phantom.volume, 2.0, interpolation="cubic")  # type: ignore[arg-type]
    with pytest.raises(GeometryError):
        resize_array(np.zeros((4, 4)), (3, 3, 3))


# --- body mask and crop_or_pad ------------------------------------------------------------------
def test_body_mask_is_the_analytic_ellipse():
    shape = (40, 64, 64)
    vol = asymmetric_phantom(shape).volume
    a = vol.array.copy()
    _, n1, n2 = shape
    i, j, k = np.indices(shape, dtype=np.float64)
    # lungs: air pockets inside the body that the mask must fill
    for kc in (0.3 * n2, 0.7 * n2):
        a[((j - 0.45 * n1) / 8) ** 2 + ((k - kc) / 6) ** 2 + ((i - 20) / 15) ** 2 <= 1] = -850.0
    a[:, 61:63, 8:56] = 300.0  # table, apart from the body
    a[0, 0, 0] = 500.0  # noise speck
    ellipse = ((j - (n1 - 1) / 2) / (0.42 * n1)) ** 2 + ((k - (n2 - 1) / 2) / (0.45 * n2)) ** 2 <= 1
    got = body_mask(vol.replace(array=a))
    iou = (got & ellipse).sum() / (got | ellipse).sum()
    np.testing.assert_allclose(iou, 1.0, rtol=0, atol=0.02)
    assert got.dtype == bool and got.shape == shape


def test_remove_couch_sets_the_table_to_air_and_keeps_the_patient_and_the_padding():
    shape = (40, 64, 64)
    vol = asymmetric_phantom(shape).volume
    a = vol.array.astype(np.float32).copy()
    a[:, 61:63, 8:56] = 300.0  # the couch, apart from the body
    a[:, :3, :3] = -2048.0  # the scanner's padding outside its reconstruction circle
    body = body_mask(a)
    out = remove_couch(vol.replace(array=a))
    assert isinstance(out, Volume) and np.array_equal(out.affine, vol.affine)
    b = out.array
    np.testing.assert_array_equal(b[body], a[body])  # the patient, bit for bit
    np.testing.assert_array_equal(b[:, 61:63, 8:56], -1000.0)
    np.testing.assert_array_equal(b[:, :3, :3], -2048.0)
    np.testing.assert_array_equal(scan_mask(b), scan_mask(a))
    outside = ~body & (a >= -1024.0)
    np.testing.assert_array_equal(b[outside], -1000.0)
    with pytest.raises(GeometryError, match="3D"):
        remove_couch(a[0])


def _bbox_centre(mask: np.ndarray) -> np.ndarray:
    idx = np.nonzero(mask)
    return np.array([(ax.min() + ax.max()) / 2.0 for ax in idx])


def test_crop_or_pad_keeps_world_positions_and_pads_with_fill():
    a = np.random.default_rng(8).normal(0, 100, size=(30, 20, 25)).astype(np.float32)
    vol = Volume.from_spacing(a, (2.0, 1.5, 1.0), axcodes=("S", "A", "R"))
    out = crop_or_pad(vol, (24, 32, 25), center=(10.0, 9.0, 20.0), fill_value=-1024.0)
    assert out.shape == (24, 32, 25)
    grid = np.indices(out.shape).reshape(3, -1).T
    src = vol.world_to_index(out.index_to_world(grid))
    np.testing.assert_allclose(src, np.round(src), rtol=0, atol=1e-9)
    src = np.round(src).astype(int)
    inside = np.all((src >= 0) & (src < np.asarray(vol.shape)), axis=1)
    values = out.array[tuple(grid.T)]
    np.testing.assert_array_equal(values[inside], a[tuple(src[inside].T)])
    np.testing.assert_array_equal(values[~inside], -1024.0)
    assert inside.any() and (~inside).any()
    # the window is centred on the requested index (within one voxel)
    centre_world = out.index_to_world((np.asarray(out.shape) - 1) / 2)
    np.testing.assert_allclose(vol.world_to_index(centre_world), [10.0, 9.0, 20.0], atol=1.0)


def test_crop_or_pad_centres_on_body_bbox():
    shape = (50, 70, 90)
    i, j, k = np.indices(shape, dtype=np.float64)
    body = ((i - 30) / 12) ** 2 + ((j - 20) / 10) ** 2 + ((k - 60) / 20) ** 2 <= 1
    a = np.where(body, 40, -1000).astype(np.int16)
    vol = Volume.from_spacing(a, 1.0)
    out = crop_or_pad(vol, (32, 40, 48), center="body")
    assert out.array.dtype == np.int16
    np.testing.assert_allclose(
        _bbox_centre(out.array > -500), (np.asarray(out.shape) - 1) / 2, rtol=0, atol=1.0
    )
    # world coordinates of the body's centre are unchanged
    np.testing.assert_allclose(
        out.index_to_world(_bbox_centre(out.array > -500)),
        vol.index_to_world(_bbox_centre(body)),
        atol=1e-9,
    )
    centred = crop_or_pad(vol, (50, 70, 100), center="center")
    np.testing.assert_array_equal(centred.array[:, :, 5:95], a)
    np.testing.assert_array_equal(centred.array[:, :, :5], -1024)


def test_crop_or_pad_transform_gives_labels_the_image_window():
    shape = (40, 50, 60)
    i, j, k = np.indices(shape, dtype=np.float64)
    a = np.where(((i - 25) / 10) ** 2 + ((j - 30) / 12) ** 2 + ((k - 20) / 15) ** 2 <= 1, 50, -1000)
    a = a.astype(np.float32)
    vol = Volume.from_spacing(a, (2.0, 1.0, 1.0))
    label_vol = vol.replace(array=(a > 0).astype(np.uint8))
    label_arr = (a > 0).astype(np.uint8) * 3
    img, lab_v, lab_a = CropOrPad((32, 64, 48))(vol, label_vol, label_arr)
    assert isinstance(lab_v, Volume) and isinstance(lab_a, np.ndarray)
    assert lab_v.array.dtype == np.uint8 and lab_a.dtype == np.uint8
    np.testing.assert_array_equal(lab_v.array, (img.array > 0).astype(np.uint8))
    np.testing.assert_array_equal(lab_a, (img.array > 0).astype(np.uint8) * 3)
    np.testing.assert_allclose(lab_v.affine, img.affine, atol=0)
    with pytest.raises(GeometryError):
        CropOrPad((8, 8, 8))(vol, np.zeros((3, 3, 3)))


# --- radiographs ----------------------------------------------------------------------------------
def _radiograph(shape=(300, 200), seed=9) -> Radiograph:
    a = np.random.default_rng(seed).random(shape).astype(np.float32)
    return Radiograph(a, View.PA, pixel_spacing_mm=(0.2, 0.15), source="test.dcm")


def test_percentile_window_matches_numpy():
    r = _radiograph()
    lo, hi = np.percentile(r.array, [2.0, 97.0])
    expected = np.clip((r.array - lo) / (hi - lo), 0, 1)
    got = percentile_window(r, 2.0, 97.0)
    assert isinstance(got, Radiograph) and got.array.dtype == np.float32
    np.testing.assert_allclose(got.array, expected, rtol=0, atol=1e-6)
    assert got.pixel_spacing_mm == r.pixel_spacing_mm
    flat = percentile_window(np.full((10, 12), 7.0))
    np.testing.assert_array_equal(flat, np.zeros((10, 12)))
    with pytest.raises(ConfigError):
        percentile_window(r, 50.0, 50.0)


@pytest.mark.parametrize("shape", [(300, 200), (201, 300), (64, 64)])
def test_pad_to_square_matches_np_pad(shape):
    r = _radiograph(shape)
    n = max(shape)
    pads = [((n - s) // 2, n - s - (n - s) // 2) for s in shape]
    expected = np.pad(r.array, pads, constant_values=r.array.min())
    got = pad_to_square(r)
    np.testing.assert_array_equal(got.array, expected)
    assert got.pixel_spacing_mm == r.pixel_spacing_mm
    np.testing.assert_array_equal(
        pad_to_square(r.array, -1.0), np.pad(r.array, pads, constant_values=-1.0)
    )


def test_crop_to_square_matches_slicing():
    r = _radiograph((300, 200))
    np.testing.assert_array_equal(crop_to_square(r).array, r.array[50:250, :])
    wide = r.array.T
    np.testing.assert_array_equal(crop_to_square(wide), wide[:, 50:250])
    np.testing.assert_array_equal(crop_to_square(r, center=(120.5, 0)).array, r.array[21:221])
    np.testing.assert_array_equal(crop_to_square(r, center=(5, 0)).array, r.array[:200])


def test_resize_image_matches_skimage_and_updates_spacing():
    r = _radiograph((300, 200))
    got = resize_image(r, 100)
    expected = sk_resize(r.array, (100, 100), order=1, mode="edge", anti_aliasing=True)
    np.testing.assert_allclose(got.array, expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(got.pixel_spacing_mm, (0.6, 0.3), rtol=1e-12)
    up = resize_image(r.array, (450, 500), anti_aliasing=False)
    expected_up = sk_resize(r.array, (450, 500), order=1, mode="edge", anti_aliasing=False)
    np.testing.assert_allclose(up, expected_up, rtol=0, atol=1e-5)
    assert resize_image(r.replace(pixel_spacing_mm=None), 64).pixel_spacing_mm is None


def test_radiograph_pipeline_with_label():
    r = _radiograph((300, 200))
    mask = (r.array > 0.5).astype(np.uint8)
    for square in ("pad", "crop"):
        img, lab = radiograph_preprocessing(64, square=square)(r, mask)
        assert isinstance(img, Radiograph) and img.shape == (64, 64)
        assert img.array.dtype == np.float32
        assert img.array.min() >= 0.0 and img.array.max() <= 1.0
        assert lab.shape == (64, 64) and lab.dtype == np.uint8
        assert set(np.unique(lab)) <= {0, 1}
    np.testing.assert_allclose(img.pixel_spacing_mm, (0.2 * 200 / 64, 0.15 * 200 / 64))


# --- transforms ---------------------------------------------------------------------------------
def test_transform_reprs_and_call_contract(phantom):
    assert repr(Resample(2.5)) == (
        "Resample(spacing_mm=2.5, interpolation='linear', anti_aliasing=True, fill_value=None)"
    )
    assert repr(WindowHU("lung")) == "WindowHU(hu_window='lung')"
    assert repr(Reorient()) == "Reorient(axcodes=('I', 'P', 'L'))"
    pipe = Compose([Reorient(("R", "A", "S")), ClipHU("mediastinum"), Resize((16, 16, 16))])
    assert repr(pipe).splitlines()[0] == "Compose(["
    assert "    ClipHU(hu_window='mediastinum')," in repr(pipe)
    assert len(pipe) == 3
    out = pipe(phantom.volume)
    assert isinstance(out, Volume) and out.shape == (16, 16, 16)
    out, lab = pipe(phantom.volume, phantom.volume.replace(array=phantom.volume.array > 200))
    assert lab.array.dtype == bool  # nearest keeps the dtype; ClipHU leaves labels alone
    with pytest.raises(ConfigError):
        WindowHU("nope")
    with pytest.raises(ConfigError):
        PercentileWindow(90, 10)
    assert isinstance(PadToSquare(), PadToSquare) and isinstance(CropToSquare(), CropToSquare)
    assert ResizeImage(32).size == 32


def test_ct_pipeline_labels_follow_image(phantom):
    vol = reorient(phantom.volume, ("L", "A", "S"))
    label = vol.replace(array=(vol.array >= 400).astype(np.uint8))  # heart, spine, apex
    img, lab = ct_preprocessing(size=24, fov_mm=120.0)(vol, label)
    assert img.shape == lab.shape == (24, 24, 24) and lab.orientation == CANONICAL_AXCODES
    np.testing.assert_allclose(lab.affine, img.affine, atol=0)
    bright = img.array >= 400 * 0.5
    iou = (bright & (lab.array == 1)).sum() / (bright | (lab.array == 1)).sum()
    np.testing.assert_allclose(iou, 1.0, rtol=0, atol=0.12)


def _synthetic_chest(marker_index=(40, 300, 170)) -> tuple[Volume, np.ndarray]:
    """A 512x512x133 int16 body stored like a NIfTI (axes L, P, S) with a bone marker."""
    n_l, n_p, n_s = 512, 512, 133
    x = np.arange(n_l)[:, None]
    y = np.arange(n_p)[None, :]
    body = ((x - 256) / 215.0) ** 2 + ((y - 280) / 170.0) ** 2 <= 1
    lungs = ((np.abs(x - 256) - 90) / 60.0) ** 2 + ((y - 260) / 90.0) ** 2 <= 1
    sl = np.where(body, 30, -1000).astype(np.int16)
    sl[lungs & body] = -850
    a = np.repeat(sl[:, :, None], n_s, axis=2)
    a[:, 475:485, :] = 250  # table
    s_idx, p_idx, l_idx = marker_index
    a[l_idx - 4 : l_idx + 5, p_idx - 4 : p_idx + 5, s_idx - 2 : s_idx + 3] = 1500
    vol = Volume.from_spacing(a, (0.703125, 0.703125, 2.5), axcodes=("L", "P", "S"))
    return vol, vol.index_to_world([l_idx, p_idx, s_idx])


def test_ct_preprocessing_on_full_size_chest():
    vol, marker_world = _synthetic_chest()
    out = ct_preprocessing()(vol)
    assert out.shape == (128, 128, 128)
    np.testing.assert_allclose(out.spacing_mm, (2.5, 2.5, 2.5), rtol=1e-12)
    assert out.orientation == CANONICAL_AXCODES and not out.is_oblique
    # the body (without the table) is centred in-plane
    np.testing.assert_allclose(_bbox_centre(body_mask(out)[64]), [63.5, 63.5], atol=1.0)
    # the bone marker is where it was in the world, within half a voxel
    found = _component_centroid_index(out, marker_world, 700.0)
    np.testing.assert_allclose(found, out.world_to_index(marker_world), rtol=0, atol=0.5)
    windowed = ct_preprocessing(hu_window="xprospect")(vol)
    np.testing.assert_allclose(
        windowed.array, np.clip((out.array + 1000.0) / 2000.0, 0, 1), rtol=0, atol=1e-6
    )


def test_module_imports_without_tensorflow():
    code = (
        "import sys, xprospect.preprocessing\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'torch')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_resize_images_area_averages_when_shrinking() -> None:
    from xprospect.preprocessing import resize_images

    x = np.random.default_rng(5).random((2, 64, 48)).astype(np.float32)
    shrunk = resize_images(x, 32)
    assert shrunk.shape == (2, 32, 32)
    # An integer factor (2) is the block mean; area averaging keeps the mean and constants.
    rows_only = resize_images(x[:, :, :32], 32)
    np.testing.assert_allclose(rows_only, x[:, :, :32].reshape(2, 32, 2, 32).mean(2), rtol=1e-5)
    np.testing.assert_allclose(shrunk.mean(axis=(1, 2)), x.mean(axis=(1, 2)), rtol=1e-5)
    np.testing.assert_allclose(resize_images(np.full((1, 50, 70), 0.3), 32), 0.3, rtol=1e-6)


@pytest.mark.parametrize(
    ("shape", "size", "method"),
    [((3, 40, 40), 16, "area"), ((3, 24, 24), 37, "bilinear"), ((2, 50, 35), (20, 30), "area")],
)
def test_resize_images_matches_tensorflow(shape, size, method) -> None:
    """Independent reference: TensorFlow's area and bilinear (half-pixel centres) resizes."""
    import tensorflow as tf

    from xprospect.preprocessing import resize_images

    x = np.random.default_rng(1).random(shape).astype(np.float32)
    dims = (size, size) if isinstance(size, int) else size
    expected = tf.image.resize(x[..., None], dims, method=method).numpy()[..., 0]
    np.testing.assert_allclose(resize_images(x, size), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(GeometryError):
        resize_images(x[0], 8)


# ---------------------------------------------------------------------------------------------
# The scan's validity mask through the CT pipeline
# ---------------------------------------------------------------------------------------------
def _short_scan() -> tuple[Volume, dict[str, float]]:
    """A non-canonical scan, short in z, narrow front-back, wide left-right (every voxel tissue).

    Array axis 0 runs towards patient right (2 mm, 100 voxels = 200 mm), axis 1 towards
    superior (3 mm, 13 slices = 39 mm), axis 2 towards posterior (4 mm, 20 voxels = 80 mm).
    """
    rng = np.random.default_rng(0)
    array = rng.uniform(0.0, 200.0, size=(100, 13, 20)).astype(np.float32)
    affine = np.zeros((4, 4))
    affine[0, 0] = -2.0  # axis 0 -> -x (R)
    affine[2, 1] = 3.0  # axis 1 -> +z (S)
    affine[1, 2] = -4.0  # axis 2 -> -y (P)
    affine[:3, 3] = (11.0, -7.0, 30.0)
    affine[3, 3] = 1.0
    return Volume(array, affine), {"I": 39.0, "P": 80.0, "L": 200.0}


def _expected_range(extent_mm: float, size: int, voxel_mm: float) -> tuple[int, int]:
    """Cube voxels whose centres lie strictly inside a scan extent centred in the cube.

    The body fills the scan, so the crop is centred on the scan's centre: cube voxel ``k`` sits
    ``(k - (size - 1) / 2) * voxel_mm`` from it.
    """
    k = np.arange(size)
    inside = np.flatnonzero(np.abs((k - (size - 1) / 2.0) * voxel_mm) < extent_mm / 2.0)
    return (int(inside[0]), int(inside[-1]))


def test_scan_mask_follows_the_scan_extent_through_the_pipeline() -> None:
    volume, extent = _short_scan()
    assert volume.orientation != CANONICAL_AXCODES
    size, fov_mm = 32, 160.0
    ct, valid = ct_preprocessing(size=size, fov_mm=fov_mm)(volume, scan_mask(volume))
    assert valid.shape == ct.shape == (size, size, size)
    assert valid.array.dtype == np.uint8
    np.testing.assert_allclose(valid.affine, ct.affine)
    voxel_mm = fov_mm / size
    for ax, code in enumerate(CANONICAL_AXCODES):
        hit = np.flatnonzero(valid.array.any(axis=tuple(a for a in range(3) if a != ax)))
        lo, hi = _expected_range(extent[code], size, voxel_mm)
        assert (int(hit[0]), int(hit[-1])) == (lo, hi), code
    # z (axis 0): 39 mm at 5 mm voxels -> 8 slices, 12..19; P: 80 mm -> 8..23; L: all of it.
    assert _expected_range(39.0, size, voxel_mm) == (12, 19)
    # The mask is the box of those ranges, and the image holds air exactly outside it.
    box = np.zeros((size,) * 3, dtype=bool)
    box[12:20, 8:24, :] = True
    np.testing.assert_array_equal(valid.array.astype(bool), box)
    assert np.all(ct.array[~box] == -1024.0)
    assert np.all(ct.array[box] > -1024.0)


def test_scan_mask_marks_scanner_padding() -> None:
    hu = np.zeros((16, 16, 16), dtype=np.int16)
    hu[:, :3, :3] = -2048  # a corner outside the reconstruction circle
    hu[0, 8, 8] = -1024  # air at the bottom of the CT range is scanned
    mask = scan_mask(hu)
    np.testing.assert_array_equal(mask, (hu > -2000).astype(np.uint8))
    np.testing.assert_array_equal(scan_mask(hu, padding_below_hu=None), np.ones_like(mask))
    vol = scan_mask(Volume(hu, np.diag([2.0, 2.0, 2.0, 1.0])))
    assert isinstance(vol, Volume)
    np.testing.assert_allclose(vol.affine, np.diag([2.0, 2.0, 2.0, 1.0]))
    with pytest.raises(GeometryError):
        scan_mask(np.zeros((4, 4)))


def test_remove_couch_fills_axial_slices_of_a_volume_in_scanner_order():
    # A CT as a NIfTI stores it (L, A, S: axial slices along axis 2) whose "lungs" run out of the
    # scan at its top and bottom slices. In every axial slice they are holes in the body and
    # stay; in sagittal slices (axis 0 of this array) they touch the slice border, and filling
    # those would have set the lungs to air.
    nx, ny, nz = 48, 40, 24
    x, y = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
    body2d = ((x - 23.5) / 20) ** 2 + ((y - 19.5) / 15) ** 2 <= 1
    lung2d = ((x - 14) / 5) ** 2 + ((y - 19.5) / 8) ** 2 <= 1
    a = np.full((nx, ny, nz), -1000, np.int16)
    a[body2d] = 40
    a[lung2d] = -850
    a[:, 37:39, :] = 300  # the couch, posterior and apart from the body
    vol = Volume.from_spacing(a, (1.0, 1.0, 2.5), axcodes=("L", "A", "S"))
    assert axial_axis(vol) == 2 and axial_axis(a) == 0
    out = remove_couch(vol).array
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out[lung2d], -850.0)  # every slice, the cut ends included
    np.testing.assert_array_equal(out[body2d & ~lung2d], 40.0)
    np.testing.assert_array_equal(out[:, 37:39, :], -1000.0)
    # The same CT reoriented to canonical order (axial slices along axis 0), as a bare array:
    # the same voxels come out, reoriented.
    canon = reorient(vol)
    np.testing.assert_array_equal(remove_couch(canon.array), reorient(vol.replace(array=out)).array)


# Smoothed noise above -500 HU: 8-11 components with holes, and (seed 1 at -800) the three
# largest within 25 % of each other, where counting only the largest boxes must still pick right.
@pytest.mark.parametrize(("seed", "offset"), [(0, -700.0), (1, -700.0), (2, -700.0), (1, -800.0)])
def test_body_mask_equals_largest_component_and_slicewise_fill_holes_of_scipy(seed, offset):
    import scipy.ndimage as ndi

    rng = np.random.default_rng(seed)
    a = ndi.gaussian_filter(rng.normal(size=(12, 30, 40)), 1.5) * 4000.0 + offset
    tissue = a > -500.0
    labels, _ = ndi.label(tissue)
    largest = labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1
    expected = np.stack([ndi.binary_fill_holes(s) for s in largest])
    np.testing.assert_array_equal(body_mask(a), expected)
    # Any axis order of the same volume (a Volume says which axis is axial): the same mask.
    vol = Volume.from_spacing(a.transpose(2, 0, 1), 1.0, axcodes=("L", "I", "P"))
    np.testing.assert_array_equal(body_mask(vol), expected.transpose(2, 0, 1))
