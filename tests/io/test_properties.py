"""Property-based tests (hypothesis): readers and the config loader given mutated bytes of valid
files either succeed or raise a typed :class:`~xprospect.errors.XprospectError`, never a raw
exception, and never allocate beyond the limits.

Runs are seeded (``derandomize=True``) and bounded in examples, so the file takes about a minute
and fails the same way every time; ``XPROSPECT_PROPERTY_SCALE=20`` explores 20 times as many
examples with random seeds.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
import tracemalloc
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hostile_inputs import cr_dicom, ct_series, nifti_volume
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xprospect.config import load_config
from xprospect.errors import XprospectError
from xprospect.io import read_nifti, read_radiograph, read_volume
from xprospect.io.dicom import read_dicom_radiograph
from xprospect.io.raster import read_raster_radiograph

LIMITS = {
    "XPROSPECT_MAX_VOXELS": str(4 << 20),
    "XPROSPECT_MAX_BYTES": str(32 << 20),
    "XPROSPECT_MAX_PIXELS": str(1 << 20),
}
PEAK_BYTES = 256 << 20
"""Most memory (traced by tracemalloc) one read may take under LIMITS."""


SCALE = float(os.environ.get("XPROSPECT_PROPERTY_SCALE", "0") or 0)
"""Set (e.g. to 20) for a longer exploratory run with random seeds; unset, runs are seeded."""


def _settings(examples: int) -> Any:
    return settings(
        max_examples=int(examples * SCALE) if SCALE else examples,
        derandomize=not SCALE,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@pytest.fixture(scope="module", autouse=True)
def small_limits() -> Iterator[None]:
    mp = pytest.MonkeyPatch()
    for key, value in LIMITS.items():
        mp.setenv(key, value)
    yield
    mp.undo()


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="xprospect-props-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


# === Mutations ===


@st.composite
def mutated(draw: st.DrawFn, base: bytes) -> bytes:
    """``base`` with 1-4 edits: byte flips and overwrites (biased to the first 512 bytes, where
    headers live), truncation, insertion, deletion, or a copied range."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        n = len(data)
        if n == 0:
            data += draw(st.binary(min_size=1, max_size=16))
            continue
        head = draw(st.booleans())
        pos = draw(st.integers(0, min(n, 512) - 1 if head else n - 1))
        kind = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete", "dup", "max"]))
        if kind == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            data[pos] = draw(st.integers(0, 255))
        elif kind == "max":  # the extreme values that break size arithmetic
            width = draw(st.sampled_from([1, 2, 4, 8]))
            data[pos : pos + width] = draw(st.sampled_from([b"\xff", b"\x7f", b"\x80"])) * width
        elif kind == "truncate":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 64))]
        else:
            length = draw(st.integers(1, 256))
            data[pos:pos] = data[draw(st.integers(0, n - 1)) :][:length]
    return bytes(data)


def _contract(read: Callable[[], object]) -> None:
    """Runs ``read``: it may succeed or raise an XprospectError; anything else fails the test,
    and so does tracing more than PEAK_BYTES."""
    tracemalloc.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                read()
            except XprospectError as exc:
                text = str(exc)
                assert text and "\n" not in text.strip(), text
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < PEAK_BYTES, f"peak {peak / 2**20:.0f} MiB"


# === Valid bases ===


def _ct_array() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(-1000, 1500, (12, 10, 9), dtype=np.int16)


@pytest.fixture(scope="module")
def nifti_bytes(workdir: Path) -> bytes:
    return nifti_volume(workdir / "base.nii", _ct_array()).read_bytes()


@pytest.fixture(scope="module")
def cr_bytes(workdir: Path) -> bytes:
    return cr_dicom(workdir / "base_cr.dcm", orientation=["L", "F"]).read_bytes()


@pytest.fixture(scope="module")
def ct_folder(workdir: Path) -> Path:
    return ct_series(workdir / "base_ct", n=3)


@pytest.fixture(scope="module")
def png_bytes(workdir: Path) -> bytes:
    from xprospect.io import write_png

    rng = np.random.default_rng(1)
    write_png(rng.random((40, 30)), workdir / "base8.png")
    return (workdir / "base8.png").read_bytes()


@pytest.fixture(scope="module")
def png16_bytes(workdir: Path) -> bytes:
    from xprospect.io import write_png

    rng = np.random.default_rng(2)
    write_png(rng.random((20, 24)), workdir / "base16.png", bits=16)
    return (workdir / "base16.png").read_bytes()


CONFIG = b"""name: fuzz
data:
  dir: data/ds16
  hu_window: [-1000, 1000]
  augmentation: {gamma: 0.2}
  batch_size: 2
model:
  preset: 512-Dense
  overrides: {base_filters: 8}
loss: {mae: 1.0, projection: 0.1}
optimizer:
  name: nadam
  learning_rate: 2e-4
  schedule: {name: cosine, warmup_steps: 10}
training:
  steps: 100
"""


# === Properties ===


def test_the_bases_are_valid(workdir, nifti_bytes, cr_bytes, ct_folder, png_bytes):
    assert read_nifti(workdir / "base.nii").shape == (12, 10, 9)
    assert read_radiograph(workdir / "base_cr.dcm").shape == (96, 80)
    assert read_volume(ct_folder).shape == (3, 16, 16)
    assert read_radiograph(workdir / "base8.png").shape == (40, 30)
    (workdir / "base.yaml").write_bytes(CONFIG)
    assert load_config(workdir / "base.yaml").name == "fuzz"


@_settings(300)
@given(data=st.data())
def test_mutated_nifti(workdir, nifti_bytes, data):
    path = workdir / "m.nii"
    path.write_bytes(data.draw(mutated(nifti_bytes)))
    _contract(lambda: read_nifti(path))


@_settings(200)
@given(data=st.data())
def test_mutated_nifti_gz_content(workdir, nifti_bytes, data):
    path = workdir / "m.nii.gz"
    path.write_bytes(gzip.compress(data.draw(mutated(nifti_bytes)), compresslevel=1))
    _contract(lambda: read_nifti(path))


@_settings(150)
@given(data=st.data())
def test_mutated_nifti_gz_stream(workdir, nifti_bytes, data):
    path = workdir / "s.nii.gz"
    path.write_bytes(data.draw(mutated(gzip.compress(nifti_bytes, compresslevel=1))))
    _contract(lambda: read_nifti(path))


@_settings(400)
@given(data=st.data())
def test_mutated_dicom_radiograph(workdir, cr_bytes, data):
    path = workdir / "m.dcm"
    path.write_bytes(data.draw(mutated(cr_bytes)))
    _contract(lambda: read_dicom_radiograph(path))
    _contract(lambda: read_radiograph(path, view="PA"))


@_settings(200)
@given(data=st.data())
def test_mutated_dicom_series_slice(workdir, ct_folder, data):
    folder = workdir / "series"
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(ct_folder, folder)
    victim = sorted(folder.iterdir())[data.draw(st.integers(0, 2))]
    victim.write_bytes(data.draw(mutated(victim.read_bytes())))
    _contract(lambda: read_volume(folder))


@_settings(300)
@given(data=st.data())
def test_mutated_png(workdir, png_bytes, png16_bytes, data):
    base = png16_bytes if data.draw(st.booleans()) else png_bytes
    path = workdir / "m.png"
    path.write_bytes(data.draw(mutated(base)))
    _contract(lambda: read_raster_radiograph(path))


@_settings(300)
@given(data=st.data())
def test_mutated_config_yaml(workdir, data):
    path = workdir / "m.yaml"
    path.write_bytes(data.draw(mutated(CONFIG)))
    _contract(lambda: load_config(path))


@_settings(150)
@given(
    text=st.text(
        alphabet=st.sampled_from([*"[]{}:,-&*!|>'\"#\n abc01.", "\t", "\x00", "\u00e9"]),
        max_size=200,
    )
)
def test_arbitrary_yaml_text(workdir, text):
    path = workdir / "t.yaml"
    path.write_text(text, encoding="utf-8")
    _contract(lambda: load_config(path))


def test_limits_were_in_force():
    assert all(os.environ[k] == v for k, v in LIMITS.items())
