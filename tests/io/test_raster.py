"""PNG/JPEG radiographs: bit depths, colour conversion warnings, corrupt files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from xprospect.errors import EmptyFileError, ImageFormatError, UnsupportedFormatError
from xprospect.image import View
from xprospect.io import read_radiograph, write_png


def _gradient(h=20, w=30):
    return np.add.outer(np.arange(h), np.arange(w)).astype(np.float64) / (h + w - 2)


def test_8_bit_png_scales_by_255(tmp_path):
    a = np.rint(_gradient() * 255).astype(np.uint8)
    Image.fromarray(a).save(tmp_path / "x.png")
    r = read_radiograph(tmp_path / "x.png", view="PA")
    np.testing.assert_allclose(r.array, a / 255.0, rtol=1e-6)
    assert r.view is View.PA and r.pixel_spacing_mm is None


def test_16_bit_png_keeps_full_precision(tmp_path):
    a = np.random.default_rng(0).integers(0, 65536, (20, 30), dtype=np.uint16)
    Image.fromarray(a).save(tmp_path / "x16.png")
    r = read_radiograph(tmp_path / "x16.png", view="L")
    np.testing.assert_allclose(r.array, a / 65535.0, rtol=1e-6)
    assert r.view is View.LATERAL
    # Values between 8-bit steps survive: nothing was squeezed through 8 bits on the way.
    assert len(np.unique(np.rint(r.array * 65535))) > 256


def test_write_png_round_trips_8_and_16_bit(tmp_path):
    g = _gradient()
    for bits, step in ((8, 1 / 255), (16, 1 / 65535)):
        path = write_png(g, tmp_path / f"g{bits}.png", bits=bits)
        back = read_radiograph(path).array
        np.testing.assert_allclose(back, g, atol=step / 2 + 1e-7)


def test_jpeg_reads_close_to_source(tmp_path):
    a = np.rint(_gradient() * 255).astype(np.uint8)
    Image.fromarray(a).save(tmp_path / "x.jpg", quality=95)
    np.testing.assert_allclose(read_radiograph(tmp_path / "x.jpg").array, a / 255.0, atol=0.03)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "LA"])
def test_colour_images_convert_with_warning(tmp_path, mode):
    grey = np.rint(_gradient() * 255).astype(np.uint8)
    img = Image.fromarray(grey).convert(mode)
    img.save(tmp_path / f"c_{mode}.png")
    with pytest.warns(UserWarning, match=f"{mode} image converted to grayscale"):
        r = read_radiograph(tmp_path / f"c_{mode}.png")
    # Grey stored as colour must come back as the same grey (palette quantisation aside).
    np.testing.assert_allclose(r.array, grey / 255.0, atol=2 / 255 if mode == "P" else 1e-6)


def test_invert_flag(tmp_path):
    a = np.rint(_gradient() * 255).astype(np.uint8)
    Image.fromarray(a).save(tmp_path / "x.png")
    np.testing.assert_allclose(
        read_radiograph(tmp_path / "x.png", invert=True).array, 1 - a / 255.0, rtol=1e-6
    )


def test_corrupt_truncated_empty_and_unknown(tmp_path):
    a = np.rint(_gradient(64, 64) * 255).astype(np.uint8)
    Image.fromarray(a).save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageFormatError, match=r"cut\.png"):
        read_radiograph(tmp_path / "cut.png")
    (tmp_path / "junk.png").write_bytes(b"\x89PNG not really" * 10)
    with pytest.raises(ImageFormatError, match=r"junk\.png"):
        read_radiograph(tmp_path / "junk.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(EmptyFileError):
        read_radiograph(tmp_path / "empty.png")
    (tmp_path / "x.xyz").write_bytes(b"abc")
    with pytest.raises(UnsupportedFormatError, match=r"x\.xyz"):
        read_radiograph(tmp_path / "x.xyz")
