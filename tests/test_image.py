"""Volume and Radiograph: geometry derived from the affine, validation, views."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from xprospect.errors import GeometryError, ImageFormatError, InvalidValuesError
from xprospect.image import CANONICAL_AXCODES, Radiograph, View, Volume, affine_from_spacing


def test_from_spacing_is_canonical_and_centred():
    v = Volume.from_spacing(np.zeros((10, 20, 30), np.float32), (1.0, 2.0, 3.0))
    assert v.orientation == CANONICAL_AXCODES and v.is_canonical
    np.testing.assert_allclose(v.spacing_mm, (1.0, 2.0, 3.0))
    np.testing.assert_allclose(v.center_mm, (0.0, 0.0, 0.0), atol=1e-12)
    np.testing.assert_allclose(v.extent_mm, (10.0, 40.0, 90.0))
    np.testing.assert_allclose(v.voxel_volume_ml, 6.0 / 1000.0)
    # Axis 0 runs towards the feet: world z (superior) falls as i grows; axis 2 towards the
    # patient's left: world x (towards the right in RAS) falls as k grows.
    step = v.index_to_world([[1, 0, 0], [0, 1, 0], [0, 0, 1]]) - v.index_to_world([0, 0, 0])
    np.testing.assert_allclose(step, [[0, 0, -1], [0, -2, 0], [-3, 0, 0]], atol=1e-12)


@pytest.mark.parametrize(
    "codes", [("R", "A", "S"), ("L", "P", "S"), ("S", "P", "L"), ("A", "S", "R")]
)
def test_affine_from_spacing_matches_nibabel_axis_codes(codes):
    aff = affine_from_spacing((0.5, 1.5, 2.5), (10, 20, 30), codes)
    assert nib.aff2axcodes(aff) == codes
    np.testing.assert_allclose(np.linalg.norm(aff[:3, :3], axis=0), (0.5, 1.5, 2.5))
    np.testing.assert_allclose(aff[:3, 3], (10, 20, 30))


def test_world_index_round_trip_on_oblique_affine():
    theta = np.deg2rad(20)
    rot = np.array(
        [[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]]
    )
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([0.7, 0.7, 2.5])
    aff[:3, 3] = [-100, 50, 12]
    v = Volume(np.zeros((5, 6, 7), np.int16), aff)
    assert v.is_oblique
    np.testing.assert_allclose(v.spacing_mm, (0.7, 0.7, 2.5))
    pts = np.array([[0, 0, 0], [4, 5, 6], [1.5, 2.25, 3.0]])
    np.testing.assert_allclose(v.world_to_index(v.index_to_world(pts)), pts, atol=1e-9)


def test_invalid_geometry_and_arrays_are_refused():
    with pytest.raises(ImageFormatError, match="3D"):
        Volume(np.zeros((4, 4)), np.eye(4))
    with pytest.raises(GeometryError, match="singular"):
        Volume(np.zeros((2, 2, 2)), np.diag([1.0, 0.0, 1.0, 1.0]))
    with pytest.raises(GeometryError, match="NaN"):
        Volume(np.zeros((2, 2, 2)), np.full((4, 4), np.nan))
    with pytest.raises(GeometryError, match="positive"):
        affine_from_spacing((1.0, -1.0, 1.0))
    with pytest.raises(GeometryError, match="once"):
        affine_from_spacing((1, 1, 1), axcodes=("L", "R", "S"))
    with pytest.raises(InvalidValuesError, match="1 of 8 voxels"):
        Volume.from_spacing(np.array([np.nan] + [0.0] * 7).reshape(2, 2, 2)).check_finite()
    with pytest.raises(ImageFormatError, match="2D"):
        Radiograph(np.zeros((2, 2, 2)))
    with pytest.raises(GeometryError, match="pixel_spacing_mm"):
        Radiograph(np.zeros((2, 2)), pixel_spacing_mm=(0.0, 0.0))


@pytest.mark.parametrize(
    ("text", "view"),
    [
        ("PA", View.PA),
        ("AP Supine", View.AP),
        ("ap", View.AP),
        ("L", View.LATERAL),
        ("LL", View.LATERAL),
        ("RL", View.LATERAL),
        ("lateral", View.LATERAL),
        ("frontal", View.PA),
        (None, View.UNKNOWN),
        ("", View.UNKNOWN),
    ],
)
def test_view_parse(text, view):
    assert View.parse(text) is view


def test_view_parse_rejects_unknown_and_flags():
    with pytest.raises(ValueError, match="unknown view"):
        View.parse("oblique")
    assert View.PA.is_frontal and View.AP.is_frontal and View.LATERAL.is_lateral
    assert not View.UNKNOWN.is_frontal


def test_describe_hides_patient_metadata(phantom):
    v = phantom.volume.replace(metadata={"patient": {"PatientName": "Doe^J"}, "modality": "CT"})
    d = v.describe()
    assert "patient" not in d and d["modality"] == "CT"
    assert d["orientation"] == "IPL" and d["shape"] == [32, 32, 32]
    assert d["value_range"] == [-1000.0, 1000.0]
