"""The conventions of docs/conventions.md, checked on the asymmetric phantom and the real CT."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from xprospect.image import CANONICAL_AXCODES, Volume
from xprospect.preprocessing import reorient


def _image_half(image: np.ndarray, rc: tuple[float, float]) -> tuple[str, str]:
    r, c = rc
    h, w = image.shape
    return ("top" if r < h / 2 else "bottom", "left" if c < w / 2 else "right")


def test_display_conventions_on_the_phantom(phantom):
    a, lm = phantom.volume.array, phantom.landmarks
    frontal = a.sum(axis=1)  # (I, L): rows head->feet, columns patient's right->left
    lateral = a.sum(axis=2)  # (I, P): rows head->feet, columns anterior->posterior
    heart, apex, spine = lm["heart"], lm["apex_marker"], lm["spine"]
    # Frontal, radiological: heart (patient's left) on the image right, apex marker near the top.
    assert _image_half(frontal, (heart[0], heart[2])) == ("top", "right")
    assert _image_half(frontal, (apex[0], apex[2])) == ("top", "left")
    # Lateral, patient facing the viewer's left: heart (anterior) left, spine right.
    assert _image_half(lateral, (heart[0], heart[1]))[1] == "left"
    assert _image_half(lateral, (spine[0], spine[1]))[1] == "right"
    # World coordinates agree with the words: heart on the patient's left = negative RAS x.
    hx, hy, hz = phantom.landmark_world_mm("heart")
    assert hx < 0 and hy > 0 and hz > 0


@pytest.mark.parametrize(
    "codes", [("R", "A", "S"), ("L", "P", "S"), ("S", "P", "L"), ("A", "R", "I"), ("P", "S", "R")]
)
def test_any_orientation_comes_back_to_the_same_canonical_array(phantom, codes):
    v = phantom.volume
    ornt = nib.orientations.ornt_transform(
        nib.orientations.axcodes2ornt(CANONICAL_AXCODES), nib.orientations.axcodes2ornt(codes)
    )
    moved = Volume(
        nib.orientations.apply_orientation(v.array, ornt),
        v.affine @ nib.orientations.inv_ornt_aff(ornt, v.shape),
    )
    assert moved.orientation == codes
    for name in phantom.landmarks:  # same anatomy at the same world position
        ijk = np.rint(moved.world_to_index(phantom.landmark_world_mm(name))).astype(int)
        assert moved.array[tuple(ijk)] == v.array[phantom.landmarks[name]]
    back = reorient(moved)
    assert back.orientation == CANONICAL_AXCODES
    np.testing.assert_array_equal(back.array, v.array)
    np.testing.assert_allclose(back.affine, v.affine, atol=1e-9)


@pytest.mark.realdata
def test_real_ct_in_canonical_orientation_shows_heart_on_image_right(sample_ct_paths):
    from xprospect.io import read_nifti

    ct = reorient(read_nifti(sample_ct_paths.ct_path))
    labels = reorient(read_nifti(sample_ct_paths.mask_path))
    names = sample_ct_paths.structure_labels()
    heart = np.argwhere(labels.array == names["heart"]).mean(axis=0)
    spine = np.argwhere(labels.array == names["vertebrae_T8"]).mean(axis=0)
    lungs = np.argwhere(np.isin(labels.array, sample_ct_paths.lung_labels())).mean(axis=0)
    assert ct.orientation == CANONICAL_AXCODES
    assert heart[2] > spine[2]  # frontal image column: heart right of the spine (patient's left)
    assert heart[1] < spine[1]  # lateral image column: heart anterior (left) of the spine
    assert lungs[0] < np.argwhere(labels.array == names["liver"]).mean(axis=0)[0]  # lungs above
