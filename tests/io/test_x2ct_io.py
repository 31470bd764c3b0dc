"""X2CT's HDF5 case layout."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from xprospect.errors import ImageFormatError, MissingDataError
from xprospect.image import View
from xprospect.io import read_any, read_volume, read_x2ct_case, write_x2ct_case
from xprospect.io.x2ct import X2CT_FILENAME


def _write_raw_case(folder, keys=("ct", "xray1", "xray2"), ct_shape=(16, 16, 16)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    with h5py.File(folder / X2CT_FILENAME, "w") as f:
        if "ct" in keys:
            f["ct"] = rng.uniform(0, 2500, ct_shape).astype(np.float32)
        if "xray1" in keys:
            f["xray1"] = rng.integers(0, 256, (16, 16), dtype=np.uint8)
        if "xray2" in keys:
            f["xray2"] = rng.integers(0, 256, (1, 16, 16), dtype=np.uint8)
    return folder


def test_reads_hu_offset_views_and_default_spacing(tmp_path):
    case_dir = _write_raw_case(tmp_path / "LIDC-0001")
    with h5py.File(case_dir / X2CT_FILENAME) as f:
        stored = np.asarray(f["ct"])
        x1 = np.asarray(f["xray1"])
    case = read_x2ct_case(case_dir)
    np.testing.assert_allclose(case.volume.array, stored - 1024.0)
    # X2CT: 320 mm field of view over 16 voxels, orientation as ITK reads LIDC (S, P, L).
    np.testing.assert_allclose(case.volume.spacing_mm, (20.0, 20.0, 20.0))
    assert case.volume.orientation == ("S", "P", "L")
    assert case.frontal.view is View.PA and case.lateral.view is View.LATERAL
    np.testing.assert_allclose(case.frontal.array, x1 / 255.0, rtol=1e-6)
    assert case.lateral.shape == (16, 16)
    np.testing.assert_allclose(read_volume(case_dir / X2CT_FILENAME).array, case.volume.array)


def test_write_then_read_round_trip(tmp_path, phantom):
    frontal = phantom.volume.array.mean(axis=1)
    lateral = phantom.volume.array.mean(axis=2)
    norm = lambda a: (a - a.min()) / (a.max() - a.min())  # noqa: E731
    write_x2ct_case(tmp_path / "case", phantom.volume, norm(frontal), norm(lateral))
    case = read_any(tmp_path / "case")
    np.testing.assert_allclose(
        case.volume.array, np.clip(phantom.volume.array, -1024, 1476), atol=1e-3
    )
    np.testing.assert_allclose(case.volume.spacing_mm, phantom.volume.spacing_mm)
    np.testing.assert_allclose(case.frontal.array, np.rint(norm(frontal) * 255) / 255, atol=1e-6)


@pytest.mark.parametrize("missing", ["ct", "xray1", "xray2"])
def test_missing_key_is_named(tmp_path, missing):
    keys = tuple(k for k in ("ct", "xray1", "xray2") if k != missing)
    case_dir = _write_raw_case(tmp_path / "case", keys=keys)
    with pytest.raises(MissingDataError, match=f"lacks key.*{missing}") as err:
        read_x2ct_case(case_dir)
    assert X2CT_FILENAME in str(err.value)


def test_bad_shapes_and_non_hdf5(tmp_path):
    _write_raw_case(tmp_path / "flat", ct_shape=(16, 16))
    with pytest.raises(ImageFormatError, match="'ct' must be 3D"):
        read_x2ct_case(tmp_path / "flat")
    (tmp_path / "fake.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(ImageFormatError, match="not a readable HDF5"):
        read_x2ct_case(tmp_path / "fake.h5")
    (tmp_path / "empty_case").mkdir()
    with pytest.raises(MissingDataError, match=X2CT_FILENAME):
        read_x2ct_case(tmp_path / "empty_case")
