"""Plausibility: valid files that cannot be what the user says they are are refused with a clear
message, and accepted with force=True (--force) and a warning."""

from __future__ import annotations

import numpy as np
import pytest
from hostile_inputs import cr_dicom, ct_series

from xprospect.errors import ImplausibleInputError, ModalityError
from xprospect.image import Radiograph, View, Volume
from xprospect.io import check_ct, check_radiograph, read_radiograph, read_volume
from xprospect.io.plausibility import (
    MAX_ASPECT_RATIO,
    MIN_CT_SLICES,
    MIN_HU_SPREAD,
    MIN_RADIOGRAPH_SIDE,
    PlausibilityWarning,
)


def _ct(shape=(32, 32, 32), lo=-1000.0, hi=400.0) -> Volume:
    a = np.linspace(lo, hi, int(np.prod(shape)), dtype=np.float32).reshape(shape)
    return Volume.from_spacing(a, 1.0, source="ct.nii.gz")


def _xray(shape=(256, 256), **metadata) -> Radiograph:
    return Radiograph(np.zeros(shape, np.float32), source="x.dcm", metadata=metadata)


def test_thresholds_are_the_documented_ones():
    assert MIN_CT_SLICES == 8 and MIN_HU_SPREAD == 100
    assert MIN_RADIOGRAPH_SIDE == 64 and MAX_ASPECT_RATIO == 3


def test_a_real_looking_ct_passes(phantom):
    assert check_ct(phantom.volume) is phantom.volume
    assert check_ct(_ct((8, 512, 512))).shape == (8, 512, 512)


@pytest.mark.parametrize("shape", [(1, 64, 64), (64, 64, 7), (64, 2, 64)])
def test_too_few_slices_is_refused_naming_the_file(shape):
    with pytest.raises(ImplausibleInputError) as info:
        check_ct(_ct(shape))
    text = str(info.value)
    assert text.startswith("ct.nii.gz: only ") and "at least 8" in text and "--force" in text


@pytest.mark.parametrize("lo_hi", [(0.0, 0.0), (-1000.0, -1000.0), (20.0, 80.0)])
def test_a_constant_ct_is_refused(lo_hi):
    with pytest.raises(ImplausibleInputError, match=r"values span only .* HU"):
        check_ct(_ct(lo=lo_hi[0], hi=lo_hi[1]))


def test_force_accepts_with_a_warning():
    flat = _ct((1, 64, 64))
    with pytest.warns(PlausibilityWarning, match=r"ct.nii.gz: only 1 slice.*accepted \(--force\)"):
        assert check_ct(flat, force=True) is flat


@pytest.mark.parametrize("shape", [(1, 1), (63, 512), (512, 40)])
def test_a_tiny_radiograph_is_refused(shape):
    with pytest.raises(ImplausibleInputError, match="at least 64 a side"):
        check_radiograph(_xray(shape))


@pytest.mark.parametrize("shape", [(64, 200), (700, 200)])
def test_an_elongated_radiograph_is_refused(shape):
    with pytest.raises(ImplausibleInputError, match="aspect ratio"):
        check_radiograph(_xray(shape))


@pytest.mark.parametrize("shape", [(64, 64), (64, 192), (2048, 2500)])
def test_plausible_radiograph_sizes_pass(shape):
    check_radiograph(_xray(shape), "frontal")


@pytest.mark.parametrize("tag", ["LL", "RL", "LATERAL", "lat"])
def test_a_lateral_view_position_given_as_frontal_is_refused(tag):
    with pytest.raises(
        ImplausibleInputError, match=f"frontal view, but its ViewPosition is '{tag}'"
    ):
        check_radiograph(_xray(view_position=tag), "frontal")
    check_radiograph(_xray(view_position=tag), "lateral")


@pytest.mark.parametrize("tag", ["PA", "AP", "AP SUPINE"])
def test_a_frontal_view_position_given_as_lateral_is_refused(tag):
    with pytest.raises(ImplausibleInputError, match="lateral view, but its ViewPosition"):
        check_radiograph(_xray(view_position=tag), "lateral")
    check_radiograph(_xray(view_position=tag), "frontal")


def test_patient_orientation_decides_when_view_position_is_silent():
    lateral = _xray(view_position="", patient_orientation=["A", "F"])
    frontal = _xray(view_position="", patient_orientation=["L", "F"])
    transposed_lateral = _xray(patient_orientation=["F", "P"])
    with pytest.raises(ImplausibleInputError, match="anterior-posterior"):
        check_radiograph(lateral, "frontal")
    with pytest.raises(ImplausibleInputError, match="anterior-posterior"):
        check_radiograph(transposed_lateral, "frontal")
    with pytest.raises(ImplausibleInputError, match="left-right"):
        check_radiograph(frontal, "lateral")
    check_radiograph(lateral, "lateral")
    check_radiograph(frontal, "frontal")


def test_unknown_tags_say_nothing():
    check_radiograph(_xray(view_position="LLD", patient_orientation=["X", "Y"]), "frontal")
    check_radiograph(_xray(patient_orientation="junk"), "lateral")
    check_radiograph(_xray(), "lateral")  # a PNG carries no tags


def test_force_accepts_a_contradicting_view_with_a_warning():
    lateral = _xray(view_position="LL")
    with pytest.warns(PlausibilityWarning, match="frontal view"):
        check_radiograph(lateral, "frontal", force=True)


def test_a_bad_role_is_a_programming_error():
    with pytest.raises(ValueError, match="role"):
        check_radiograph(_xray(), "oblique")  # type: ignore[arg-type]


def test_dicom_tags_survive_a_view_override(tmp_path):
    """predict reads the frontal file with view="PA": the file's own tags still decide."""
    path = cr_dicom(tmp_path / "lat.dcm", view="LL", orientation=["P", "F"])
    image = read_radiograph(path, view="PA")
    assert image.view is View.PA and image.metadata["view_position"] == "LL"
    with pytest.raises(ImplausibleInputError, match=r"lat\.dcm: given as the frontal view"):
        check_radiograph(image, "frontal")
    check_radiograph(read_radiograph(path, view="LATERAL"), "lateral")


def test_modality_is_the_readers_check(tmp_path):
    ct_folder = ct_series(tmp_path / "ct", n=3)
    with pytest.raises(ModalityError, match="not a projection radiograph"):
        read_radiograph(next(iter(sorted(ct_folder.iterdir()))))
    cr = cr_dicom(tmp_path / "cr" / "x.dcm")
    with pytest.raises(ModalityError, match="modality 'CR', expected CT"):
        read_volume(cr.parent)
    dx = cr_dicom(tmp_path / "dx.dcm", modality="DX")
    assert read_radiograph(dx).shape == (96, 80)
