"""Tests of the classical lung segmentation against ground truth it never sees.

References: the procedural chest phantom's own lung mask (parenchyma, vessels, airways), and on
real data the union of the five lobe labels of the LIDC sample CT's TotalSegmentator label map.
"""

from __future__ import annotations

import numpy as np
import pytest

from xprospect.errors import GeometryError
from xprospect.image import Volume
from xprospect.phantoms import chest_phantom
from xprospect.segmentation import dice, lung_mask


def ref_dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return 2.0 * np.sum(a & b) / (np.sum(a) + np.sum(b))


def test_dice_definition() -> None:
    a = np.zeros((2, 2, 2), bool)
    b = np.zeros((2, 2, 2), bool)
    assert dice(a, b) == 1.0  # both empty: they agree
    a[0, 0, :] = True  # 2 voxels
    b[0, :, 0] = True  # 2 voxels, 1 shared
    np.testing.assert_allclose(dice(a, b), 2 * 1 / (2 + 2))
    np.testing.assert_allclose(dice(a, b), ref_dice(a, b))
    with pytest.raises(GeometryError, match="shape"):
        dice(a, b[0])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_phantom_lungs(seed: int) -> None:
    ph = chest_phantom(64, seed=seed)
    mask = lung_mask(ph.volume)
    assert mask.dtype == bool and mask.shape == ph.volume.shape
    truth = ph.lung_mask.array.astype(bool)
    assert ref_dice(mask, truth) >= 0.9
    np.testing.assert_allclose(dice(mask, truth), ref_dice(mask, truth), rtol=1e-12)
    # The trachea is not lung (the phantom labels it apart); the airway step removes it.
    trachea = ph.mask("trachea")
    assert np.count_nonzero(mask & trachea) <= 0.1 * np.count_nonzero(trachea)
    # Both lungs, one on each side of the midline.
    half = ph.volume.shape[2] // 2
    assert mask[:, :, :half].sum() > 0.3 * mask.sum() and mask[:, :, half:].sum() > 0.3 * mask.sum()


def test_bare_array_and_orientation() -> None:
    ph = chest_phantom(48, seed=4)
    canonical = lung_mask(ph.volume)
    # A bare canonical array with its spacing gives the same mask.
    same = lung_mask(ph.volume.array, spacing_mm=ph.volume.spacing_mm)
    np.testing.assert_array_equal(same, canonical)
    # Stored feet-first and left-to-right (axes 0 and 2 flipped): the mask comes back in that
    # array order.
    flipped = Volume.from_spacing(
        ph.volume.array[::-1, :, ::-1], ph.volume.spacing_mm, axcodes=("S", "P", "R")
    )
    np.testing.assert_array_equal(lung_mask(flipped), canonical[::-1, :, ::-1])
    # Axes stored as (P, I, L): transposed.
    transposed = Volume.from_spacing(
        ph.volume.array.transpose(1, 0, 2), ph.volume.spacing_mm, axcodes=("P", "I", "L")
    )
    np.testing.assert_array_equal(lung_mask(transposed), canonical.transpose(1, 0, 2))


def test_no_lungs() -> None:
    air = np.full((20, 20, 20), -1000.0, np.float32)
    assert not lung_mask(air).any()
    block = air.copy()
    block[4:16, 4:16, 4:16] = 40.0  # a body without air inside
    assert not lung_mask(block).any()


def test_bad_arguments() -> None:
    ph = chest_phantom(32, seed=0)
    with pytest.raises(GeometryError, match="Volume carries its own"):
        lung_mask(ph.volume, spacing_mm=2.0)
    with pytest.raises(GeometryError, match="3D"):
        lung_mask(ph.volume.array[0])
    with pytest.raises(GeometryError, match="spacing_mm"):
        lung_mask(ph.volume.array, spacing_mm=(1.0, -1.0, 1.0))


@pytest.mark.realdata
def test_real_ct_lungs_match_lobe_labels(sample_ct_paths) -> None:
    from xprospect.io import read_volume
    from xprospect.preprocessing import ct_preprocessing

    ct = read_volume(sample_ct_paths.ct_path)
    labels = read_volume(sample_ct_paths.mask_path)
    ct128, labels128 = ct_preprocessing(size=128)(ct, labels)
    lobes = np.isin(labels128.array, sample_ct_paths.lung_labels())
    mask = lung_mask(ct128)
    score = ref_dice(mask, lobes)
    assert score >= 0.9, f"Dice {score:.3f}"
    # The trachea (label "trachea") is mostly left out.
    trachea = labels128.array == sample_ct_paths.structure_labels()["trachea"]
    assert np.count_nonzero(mask & trachea) <= 0.1 * np.count_nonzero(trachea)
