"""Output checks, atomic writes (refusals, links, full disks) and seeding."""

from __future__ import annotations

import errno
import os
import stat

import numpy as np
import pytest
from faults import full_disk, leftovers

from xprospect.errors import OutputError, OutputExistsError
from xprospect.utils import atomic_dir, atomic_path, check_output, output_error, seed_everything


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


# === check_output: may a command write here? ===


def test_check_output_refuses_existing_files_and_links_unless_overwrite(tmp_path):
    assert check_output(tmp_path / "new.nii.gz") == tmp_path / "new.nii.gz"
    user = tmp_path / "mine.txt"
    user.write_text("precious")
    with pytest.raises(OutputExistsError, match="pass --overwrite to replace it") as exc:
        check_output(user)
    assert exc.value.path == str(user) and str(exc.value).startswith(str(user))
    assert check_output(user, overwrite=True) == user
    link = tmp_path / "link.nii.gz"
    link.symlink_to(user)
    with pytest.raises(OutputExistsError, match="symbolic link"):
        check_output(link)
    dangling = tmp_path / "dangling.png"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(OutputExistsError, match="symbolic link"):
        check_output(dangling)
    # A folder is never a file output, and a file never a folder output, --overwrite or not.
    (tmp_path / "dir.nii").mkdir()
    for overwrite in (False, True):
        with pytest.raises(OutputError, match="is a folder"):
            check_output(tmp_path / "dir.nii", overwrite)
        with pytest.raises(OutputError, match="not a folder"):
            check_output(user, overwrite, folder=True)
    with pytest.raises(OutputError, match="is a file, not a folder"):
        check_output(user / "below.nii")
    assert user.read_text() == "precious"


def test_check_output_folders_may_be_new_or_empty(tmp_path):
    assert check_output(tmp_path / "new", folder=True) == tmp_path / "new"
    (tmp_path / "empty").mkdir()
    check_output(tmp_path / "empty", folder=True)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "a.txt").write_text("a")
    with pytest.raises(OutputExistsError, match="not empty; pass --overwrite"):
        check_output(tmp_path / "full", folder=True)
    check_output(tmp_path / "full", True, folder=True)
    (tmp_path / "to_empty").symlink_to(tmp_path / "empty")
    with pytest.raises(OutputExistsError, match="symbolic link"):
        check_output(tmp_path / "to_empty", folder=True)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_check_output_refuses_a_folder_it_cannot_write(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="permission denied"):
            check_output(locked / "a.nii.gz")
    finally:
        locked.chmod(0o700)


# === Atomic writes never write through links, never clobber, name the user's path ===


def test_atomic_path_replaces_a_link_and_never_its_target(tmp_path):
    target = tmp_path / "user.txt"
    target.write_text("precious")
    link = tmp_path / "out.txt"
    link.symlink_to(target)
    with pytest.raises(OutputExistsError), atomic_path(link, overwrite=False) as tmp:
        tmp.write_text("new")
    assert link.is_symlink() and target.read_text() == "precious"
    with atomic_path(link, overwrite=True) as tmp:
        tmp.write_text("new")
    assert not link.is_symlink() and link.read_text() == "new"
    assert target.read_text() == "precious"
    assert leftovers(tmp_path) == []


def test_atomic_path_without_overwrite_never_clobbers_a_file_that_appears(tmp_path):
    dest = tmp_path / "out.txt"
    with pytest.raises(OutputExistsError), atomic_path(dest, overwrite=False) as tmp:
        tmp.write_text("mine")
        dest.write_text("theirs")  # another process got there first
    assert dest.read_text() == "theirs"
    assert leftovers(tmp_path) == []


def test_atomic_dir_takes_an_empty_folder_and_never_a_file(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with atomic_dir(empty) as tmp:
        (tmp / "a").write_text("1")
    assert (empty / "a").read_text() == "1"
    user = tmp_path / "user.dcm"
    user.write_text("precious")
    with pytest.raises(OutputError, match="not a folder"), atomic_dir(user, overwrite=True):
        pass
    target = tmp_path / "theirs"
    target.mkdir()
    (target / "x").write_text("x")
    link = tmp_path / "series"
    link.symlink_to(target)
    with pytest.raises(OutputExistsError), atomic_dir(link):
        pass
    with atomic_dir(link, overwrite=True) as tmp:
        (tmp / "b").write_text("2")
    assert not link.is_symlink() and sorted(p.name for p in link.iterdir()) == ["b"]
    assert sorted(p.name for p in target.iterdir()) == ["x"] and user.read_text() == "precious"
    assert leftovers(tmp_path) == []


def test_atomic_path_on_a_full_disk_names_the_path_and_keeps_the_old_file(tmp_path, monkeypatch):
    dest = tmp_path / "report.csv"
    dest.write_text("old")
    with (
        full_disk(monkeypatch, tmp_path, budget=3),
        pytest.raises(OutputError) as exc,
        atomic_path(dest) as tmp,
        tmp.open("w") as f,
    ):
        f.write("new and much longer")
        f.flush()
    msg = str(exc.value)
    assert msg.startswith(str(dest)) and "disk full" in msg and ".tmp" not in msg
    assert "existing file is unchanged" in msg
    assert isinstance(exc.value.__cause__, OSError)
    assert dest.read_text() == "old" and leftovers(tmp_path) == []
    with (
        full_disk(monkeypatch, tmp_path),
        pytest.raises(OutputError, match="nothing was written"),
        atomic_dir(tmp_path / "series") as tmp,
    ):
        (tmp / "IM1.dcm").write_bytes(b"x" * 10)
    assert not (tmp_path / "series").exists() and leftovers(tmp_path) == []


def test_output_error_reads_errno_and_the_text_of_tensorflow_errors(tmp_path):
    dest = tmp_path / "x"
    full = output_error(OSError(errno.ENOSPC, "No space left on device"), dest)
    assert isinstance(full, OutputError) and "disk full" in str(full)
    tf_like = RuntimeError("/run/ckpt-2_temp/part-0; No space left on device [Op:SaveV2]")
    assert "disk full" in str(output_error(tf_like, dest, "old checkpoint kept"))
    assert "read-only" in str(output_error(OSError(errno.EROFS, "Read-only file system"), dest))
    assert output_error(ValueError("bad shape"), dest) is None
    # Errors that are not the disk's pass through the atomic writers unchanged.
    with pytest.raises(ValueError, match="bad shape"), atomic_path(dest) as tmp:
        tmp.write_text("x")
        raise ValueError("bad shape")


def test_a_refused_write_names_the_users_path_never_the_temporary_file(tmp_path, monkeypatch):
    import tempfile

    def denied(*args, **kwargs):
        name = os.path.join(kwargs.get("dir", "."), ".out.nii.gz.k3j2.tmp.nii.gz")
        raise PermissionError(errno.EACCES, "Permission denied", name)

    dest = tmp_path / "out.nii.gz"
    monkeypatch.setattr(tempfile, "mkstemp", denied)
    with pytest.raises(OutputError) as exc, atomic_path(dest):
        pass
    assert str(exc.value) == f"{dest}: cannot write: permission denied; nothing was written"
    monkeypatch.setattr(tempfile, "mkdtemp", denied)
    with pytest.raises(OutputError, match="permission denied") as exc, atomic_dir(dest):
        pass
    assert ".tmp" not in str(exc.value) and list(tmp_path.iterdir()) == []
