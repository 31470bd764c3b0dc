"""Checkpoints on a full disk: a typed error naming the run folder, the previous checkpoint intact
and loadable (the run resumes from it), no ``ckpt-N_temp`` folder or temporary file left.

In-process, the disk fills inside TensorFlow's SaveV2 op: the real op writes its shard under
``ckpt-N_temp/`` and then fails the way it does on a full disk (``ResourceExhaustedError``
carrying the system's "No space left on device"). A last test, where the machine allows it,
fills a real 1 MB tmpfs in a user namespace.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from faults import full_disk, leftovers, subprocess_env
from tensorflow.python.ops import io_ops
from test_train import tiny_config, tiny_loss, tiny_model

from xprospect.data.prepare import PrepareConfig, prepare_dataset
from xprospect.errors import OutputError
from xprospect.training import Trainer
from xprospect.training.checkpoints import CheckpointStore, atomic_keras_file


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "ds16"
    cfg = PrepareConfig(
        size=16, geometry="parallel", shard_size=2, val_fraction=0.25, test_fraction=0.25
    )
    prepare_dataset([], out, cfg, phantoms=8, progress=False)
    return out


def _disk_full_at(monkeypatch, step: int) -> None:
    """SaveV2 of checkpoint ``step`` writes its shard, then fails as on a full disk."""
    real = io_ops.save_v2

    def save_v2(prefix, *args, **kwargs):
        result = real(prefix, *args, **kwargs)
        where = prefix.numpy().decode() if hasattr(prefix, "numpy") else str(prefix)
        if f"ckpt-{step}_temp" in where:
            raise tf.errors.ResourceExhaustedError(
                None, None, f"{where}.tempstate42; No space left on device [Op:SaveV2]"
            )
        return result

    monkeypatch.setattr(io_ops, "save_v2", save_v2)


def test_full_disk_during_a_checkpoint_keeps_the_previous_one(dataset, tmp_path, monkeypatch):
    run = tmp_path / "run"
    cfg = tiny_config(dataset, run)  # checkpoints at steps 2, 4, 6
    with monkeypatch.context() as m:
        _disk_full_at(m, 4)
        with pytest.raises(OutputError) as exc:
            Trainer(cfg, model_fn=tiny_model, loss_fn=tiny_loss, progress=False).fit()
    msg = str(exc.value)
    assert msg.startswith(f"{run}: ") and "disk full" in msg and "\n" not in msg
    assert "step 4" in msg and "ckpt-2 is intact" in msg and "_temp" not in msg
    ckpts = run / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == [
        "checkpoint", "ckpt-2.data-00000-of-00001", "ckpt-2.index",
    ]  # fmt: skip
    assert leftovers(run) == []
    store = CheckpointStore(run, chief=True, keep=3)
    assert store.latest() == str(ckpts / "ckpt-2") and store.saved_step(store.latest()) == 2
    assert json.loads((run / "state.json").read_text())["step"] == 2
    # Space freed: the same command resumes from step 2 and finishes.
    trainer = Trainer(cfg, model_fn=tiny_model, loss_fn=tiny_loss, progress=False)
    result = trainer.fit()
    assert result.ok and store.saved_step(store.latest()) == 6
    assert (run / "model.keras").exists() and leftovers(run) == []


def test_failed_save_that_is_not_the_disks_passes_through_and_cleans_up(tmp_path, monkeypatch):
    store = CheckpointStore(tmp_path, chief=True, keep=2)
    store.attach(tf.train.Checkpoint(v=tf.Variable(1.0), step=tf.Variable(0, dtype=tf.int64)))
    store.save(1, {})
    real = io_ops.save_v2

    def broken(prefix, *args, **kwargs):
        real(prefix, *args, **kwargs)
        raise tf.errors.InternalError(None, None, "something else broke")

    monkeypatch.setattr(io_ops, "save_v2", broken)
    with pytest.raises(tf.errors.InternalError):
        store.save(2, {})
    assert Path(store.latest()).name == "ckpt-1" and leftovers(tmp_path) == []


def test_full_disk_on_a_workers_temporary_checkpoint_is_typed(tmp_path, monkeypatch):
    """A non-chief worker writes its share to TMPDIR: a full disk there names that folder."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "worker_tmp"))
    (tmp_path / "worker_tmp").mkdir()
    store = CheckpointStore(tmp_path / "run", chief=False, keep=2)
    store.attach(tf.train.Checkpoint(v=tf.Variable(1.0), step=tf.Variable(0, dtype=tf.int64)))
    real = io_ops.save_v2

    def full(prefix, *args, **kwargs):
        real(prefix, *args, **kwargs)
        raise tf.errors.ResourceExhaustedError(None, None, "No space left on device [Op:SaveV2]")

    monkeypatch.setattr(io_ops, "save_v2", full)
    with pytest.raises(OutputError) as exc:
        store.save(1, {})
    msg = str(exc.value)
    assert msg.startswith(f"{tmp_path / 'worker_tmp'}: ") and "disk full" in msg and "step 1" in msg
    assert list((tmp_path / "worker_tmp").iterdir()) == []  # the private folder is removed
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_full_disk_on_the_tensorboard_log_is_typed(tmp_path, monkeypatch):
    from xprospect.training.logs import TensorBoardLog

    tb = TensorBoardLog(tmp_path / "tensorboard")
    tb.scalars("train", {"loss": 1.0}, step=1)

    def full() -> None:
        raise tf.errors.ResourceExhaustedError(None, None, "events: No space left on device")

    monkeypatch.setattr(tb.train, "flush", full)
    with pytest.raises(OutputError) as exc:
        tb.scalars("train", {"loss": 0.5}, step=2)
    assert str(exc.value).startswith(f"{tmp_path / 'tensorboard'}: ")
    assert "disk full" in str(exc.value)
    monkeypatch.setattr(tb.train, "flush", lambda: (_ for _ in ()).throw(ValueError("a bug")))
    with pytest.raises(ValueError, match="a bug"):  # not the disk's: passes through
        tb.scalars("train", {"loss": 0.25}, step=3)
    monkeypatch.undo()
    tb.close()


def test_full_disk_while_saving_a_keras_file_keeps_the_previous_one(tmp_path, monkeypatch):
    x = keras.Input((4,))
    model = keras.Model(x, keras.layers.Dense(2)(x))
    path = tmp_path / "model.keras"
    with atomic_keras_file(path) as tmp:
        model.save(tmp)
    before = path.read_bytes()
    model.layers[-1].kernel.assign(np.ones((4, 2), np.float32))
    with (
        full_disk(monkeypatch, tmp_path, budget=500),
        pytest.raises(OutputError) as exc,
        atomic_keras_file(path) as tmp,
    ):
        model.save(tmp)
    assert str(exc.value).startswith(f"{path}: ") and "disk full" in str(exc.value)
    assert path.read_bytes() == before and leftovers(tmp_path) == []
    assert keras.saving.load_model(path).count_params() == model.count_params()
    # h5py reports a full disk as OSError(errno 28) with its own long text.
    weights = tmp_path / "best.weights.h5"
    model.save_weights(weights)
    before = weights.read_bytes()
    with pytest.raises(OutputError, match="disk full"), atomic_keras_file(weights) as tmp:
        tmp.write_bytes(b"half")
        raise OSError(28, "Can't synchronously write data (file write failed: errno = 28, ...)")
    assert weights.read_bytes() == before and leftovers(tmp_path) == []


_TMPFS_SCRIPT = r"""
import os, sys
import numpy as np
import tensorflow as tf
from xprospect.errors import OutputError
from xprospect.image import Volume
from xprospect.io import read_nifti, write_nifti
from xprospect.training.checkpoints import CheckpointStore
root = sys.argv[1]
store = CheckpointStore(root + "/run", chief=True, keep=3)
v = tf.Variable(tf.zeros([1000]))
store.attach(tf.train.Checkpoint(v=v, step=tf.Variable(0, dtype=tf.int64)))
store.save(1, {})
store.attach(tf.train.Checkpoint(v=v, big=tf.Variable(tf.zeros([400_000])),
                                 step=tf.Variable(0, dtype=tf.int64)))
try:
    store.save(2, {})
except OutputError as exc:
    assert "disk full" in str(exc) and "ckpt-1 is intact" in str(exc), exc
else:
    raise AssertionError("no OutputError")
names = sorted(os.listdir(root + "/run/checkpoints"))
assert names == ["checkpoint", "ckpt-1.data-00000-of-00001", "ckpt-1.index"], names
assert CheckpointStore.saved_step(store.latest()) == 0
small = Volume(np.zeros((8, 8, 8), np.float32), np.eye(4))
path = write_nifti(small, root + "/ct.nii.gz")
before = open(path, "rb").read()
noise = np.random.default_rng(0).normal(0, 500, (96, 96, 96)).astype(np.float32)
try:
    write_nifti(Volume(noise, np.eye(4)), path)
except OutputError as exc:
    assert str(exc).startswith(f"{path}: cannot write: disk full"), exc
else:
    raise AssertionError("no OutputError")
assert open(path, "rb").read() == before and read_nifti(path).shape == (8, 8, 8)
left = [n for _, ds, fs in os.walk(root) for n in fs + ds if "tmp" in n or n.endswith("_temp")]
assert left == [], left
print("OK")
"""


def _can_mount_tmpfs() -> bool:
    if not shutil.which("unshare") or sys.platform != "linux":
        return False
    probe = "d=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs $d && umount $d"
    try:
        proc = subprocess.run(
            ["unshare", "-rm", "sh", "-c", probe], capture_output=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not _can_mount_tmpfs(), reason="needs user namespaces to mount a tmpfs")
def test_a_real_full_disk_on_a_tmpfs(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    script = tmp_path / "fill.py"
    script.write_text(_TMPFS_SCRIPT)
    cmd = f"mount -t tmpfs -o size=1m tmpfs {mnt} && exec {sys.executable} {script} {mnt}"
    proc = subprocess.run(
        ["unshare", "-rm", "sh", "-c", cmd],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=subprocess_env(PYTHONPATH=os.getcwd()),
    )
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stderr[-3000:]
