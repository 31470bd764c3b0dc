"""Folder locks (``xprospect.utils.folder_lock``) on datasets, run folders and tune projects, and
the sweeping of temporaries that killed writers leave behind."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from faults import subprocess_env

import xprospect
from xprospect.errors import LockedError
from xprospect.utils import (
    LOCK_FILE,
    atomic_dir,
    atomic_path,
    folder_lock,
    sweep_temporaries,
    temp_prefix,
)

REPO = Path(xprospect.__file__).resolve().parent.parent

_HOLD = """
import sys, time
from xprospect.utils import folder_lock
with folder_lock(sys.argv[1]):
    open(sys.argv[2], "w").close()
    time.sleep(120)
"""


def _holder(folder: Path, ready: Path) -> subprocess.Popen:
    env = subprocess_env(PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder), str(ready)], env=env)
    for _ in range(600):
        if ready.exists():
            return proc
        assert proc.poll() is None, "the lock holder ended early"
        import time

        time.sleep(0.05)
    raise AssertionError("the lock holder did not start")


def test_second_holder_is_refused_naming_pid_and_host(tmp_path):
    run = tmp_path / "run"
    with folder_lock(run):
        info = json.loads((run / (LOCK_FILE + ".json")).read_text())
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
        with pytest.raises(LockedError) as err, folder_lock(run):
            pass
    message = str(err.value)
    assert message.startswith(f"{run}: is in use by PID {os.getpid()} on host ")
    assert socket.gethostname() in message and "\n" not in message
    # Released: the holder record is gone and the folder can be locked again.
    assert not (run / (LOCK_FILE + ".json")).exists()
    with folder_lock(run):
        pass


def test_lock_of_a_killed_process_is_taken_over(tmp_path):
    run = tmp_path / "run"
    proc = _holder(run, tmp_path / "ready")
    try:
        with pytest.raises(LockedError, match=f"PID {proc.pid} on host"), folder_lock(run):
            pass
    finally:
        proc.kill()  # kill -9: no clean-up runs, the holder record stays behind
        proc.wait()
    assert json.loads((run / (LOCK_FILE + ".json")).read_text())["pid"] == proc.pid
    with folder_lock(run):
        assert json.loads((run / (LOCK_FILE + ".json")).read_text())["pid"] == os.getpid()


def test_temporaries_of_dead_writers_are_swept_and_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                          capture_output=True, text=True)  # fmt: skip
    dead_pid = int(dead.stdout)
    mine = temp_prefix(tmp_path / "out.nii.gz")
    theirs = mine.replace(f".p{os.getpid()}h", f".p{dead_pid}h")
    (tmp_path / f"{theirs}abcd1234.tmp.nii.gz").write_text("half")
    (tmp_path / f"{theirs}abcd1234.tmp").mkdir()  # an atomic_dir folder
    (tmp_path / f"{mine}live0000.tmp.nii.gz").write_text("being written")
    (tmp_path / ".other.p1h00000000.abcd1234.tmp").write_text("another host's")
    (tmp_path / "out.nii.gz.tmp").write_text("not ours")
    with atomic_path(tmp_path / "out.nii.gz") as tmp:
        tmp.write_text("done")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(
        [".other.p1h00000000.abcd1234.tmp", f"{mine}live0000.tmp.nii.gz", "out.nii.gz",
         "out.nii.gz.tmp"]
    )  # fmt: skip
    assert sweep_temporaries(tmp_path) == []
    (tmp_path / f".v1.p{dead_pid}h{mine.split('h')[-1]}zz.tmp").mkdir()
    with atomic_dir(tmp_path / "v1") as folder:
        (folder / "x").write_text("x")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".v1.")]


def test_training_run_folder_is_locked(tmp_path):
    from kill_points import tiny_model

    from xprospect.data.prepare import PrepareConfig, prepare_dataset
    from xprospect.training import Trainer

    data = tmp_path / "ds"
    cfg = PrepareConfig(size=16, geometry="parallel", shard_size=4, val_fraction=0.25)
    prepare_dataset([], data, cfg, phantoms=4, progress=False)
    from xprospect.config import config_from_dict

    config = config_from_dict(
        {
            "data": {"dir": str(data), "batch_size": 1},
            "model": {"preset": "tiny"},
            "loss": {"mae": 1.0},
            "optimizer": {"name": "adam", "learning_rate": 1e-3},
            "training": {"steps": 2, "output_dir": str(tmp_path / "run")},
        }
    )
    # A TensorFlow temp folder of a save killed midway, and our own temporaries: swept at start.
    (tmp_path / "run" / "checkpoints" / "ckpt-9_temp").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "checkpoint.tmp0123abcd").write_text("")
    with folder_lock(tmp_path / "run"), pytest.raises(LockedError, match="is in use by PID"):
        Trainer(config, model_fn=tiny_model, progress=False).fit()
    result = Trainer(config, model_fn=tiny_model, progress=False).fit()
    assert result.ok and result.steps == 2
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == [
        "checkpoint",
        "ckpt-2.data-00000-of-00001",
        "ckpt-2.index",
    ]
    assert not (tmp_path / "run" / (LOCK_FILE + ".json")).exists()  # released at the end
