"""Atomic writes and seeding."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from xprospect.errors import OutputExistsError
from xprospect.utils import atomic_dir, atomic_path, seed_everything


def test_atomic_path_keeps_old_file_on_failure(tmp_path):
    dest = tmp_path / "out.txt"
    dest.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(dest) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert dest.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
    with atomic_path(dest) as tmp:
        tmp.write_text("new")
    assert dest.read_text() == "new"
    with pytest.raises(OutputExistsError), atomic_path(dest, overwrite=False):
        pass


def test_atomic_dir_swaps_only_when_complete(tmp_path):
    dest = tmp_path / "series"
    with atomic_dir(dest) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(OutputExistsError), atomic_dir(dest):
        pass
    with pytest.raises(RuntimeError), atomic_dir(dest, overwrite=True) as tmp:
        (tmp / "b").write_text("2")
        raise RuntimeError("crash")
    assert sorted(p.name for p in dest.iterdir()) == ["a"]
    with atomic_dir(dest, overwrite=True) as tmp:
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in dest.iterdir()) == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["series"]


def test_atomic_outputs_respect_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        with atomic_path(tmp_path / "f.txt") as tmp:
            tmp.write_text("x")
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "a").write_text("1")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o750


def test_seed_everything_reproduces_numpy_and_keras():
    import keras

    g1 = seed_everything(123)
    a = (g1.random(3), np.random.random(3), keras.random.uniform((3,)).numpy())  # noqa: NPY002
    g2 = seed_everything(123)
    b = (g2.random(3), np.random.random(3), keras.random.uniform((3,)).numpy())  # noqa: NPY002
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
