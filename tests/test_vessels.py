"""Classical pulmonary-vessel masks and their Dice (DuoLift-GAN Table 3's DICE(VesselSeg))."""

from __future__ import annotations

import numpy as np
import pytest

from xprospect.errors import GeometryError
from xprospect.metrics import vessel_dice
from xprospect.phantoms import chest_phantom
from xprospect.segmentation import lung_mask, vessel_mask


@pytest.fixture(scope="module")
def phantom():
    return chest_phantom(64, seed=1)


@pytest.mark.parametrize("seed", [0, 1])
def test_vessel_mask_finds_the_phantoms_known_vessels(seed):
    ph = chest_phantom(64, seed=seed)
    mask = vessel_mask(ph.volume)
    truth = ph.mask("pulmonary_vessel")
    both = np.count_nonzero(mask & truth)
    dice = 2 * both / (np.count_nonzero(mask) + np.count_nonzero(truth))
    assert dice > 0.9
    # What it takes beyond the vessels are bronchial walls (also above -600 HU inside the lungs).
    extra = ph.labels.array[mask & ~truth]
    walls = np.isin(extra, [ph.LABELS["airway_wall"]])
    assert np.count_nonzero(walls) >= 0.6 * extra.size


def test_vessel_mask_is_threshold_inside_the_eroded_lungs():
    # A box of lung at -850 HU with a rod of blood through it, in 2.5 mm voxels.
    hu = np.full((20, 20, 20), -850.0)
    hu[:, 9:11, 9:11] = 40.0
    lungs = np.zeros(hu.shape, bool)
    lungs[2:18, 2:18, 2:18] = True
    mask = vessel_mask(hu, lungs=lungs)
    expected = np.zeros(hu.shape, bool)
    expected[3:17, 9:11, 9:11] = True  # the lung's outer voxel layer is the excluded rim
    np.testing.assert_array_equal(mask, expected)
    assert not vessel_mask(hu, lungs=np.zeros(hu.shape, bool)).any()
    with pytest.raises(GeometryError, match="lungs mask"):
        vessel_mask(hu, lungs=lungs[0])


def test_vessel_dice_drops_when_the_vessels_are_erased(phantom):
    hu = phantom.volume.array.astype(np.float64)
    spacing = phantom.volume.spacing_mm
    assert vessel_dice(hu, hu, spacing_mm=spacing) == 1.0
    lungs = lung_mask(hu, spacing_mm=spacing)
    blurred = hu.copy()
    blurred[lungs] = -850.0  # a reconstruction with the lungs but none of their vessels
    value = vessel_dice(hu, blurred, spacing_mm=spacing, truth_lungs=lungs, pred_lungs=lungs)
    assert value == 0.0
    half = hu.copy()
    vessels = vessel_mask(hu, spacing_mm=spacing, lungs=lungs)
    drop = vessels & (np.arange(hu.shape[2]) < hu.shape[2] // 2)[None, None, :]
    half[drop] = -850.0  # the right lung's vessels erased
    n, k = np.count_nonzero(vessels), np.count_nonzero(vessels & ~drop)
    np.testing.assert_allclose(
        vessel_dice(hu, half, spacing_mm=spacing, truth_lungs=lungs, pred_lungs=lungs),
        2 * k / (n + k),
    )
