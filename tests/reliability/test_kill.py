"""Fault injection: ``kill -9`` (and ``SIGTERM``/``SIGINT``) at seeded points of ``prepare``,
``train``, ``style train``, ``export`` and ``tune``, then the same command again.

Every command runs as ``python -m kill_points ARGS`` (the xprospect CLI with one fault armed, see
``kill_points.py``) in a subprocess. Each command has a chain: run 1 is killed at its first point,
the rerun (which resumes) at the next, and so on; the last run completes. The result must equal
an uninterrupted run's (same manifest and shard bytes for ``prepare``; same weights, best model
and metrics for training, with ``training.deterministic``), and nothing may be half-written: after
each kill every JSON file parses and every shard reads to its end, and at the end no temporary
file or folder is left anywhere. The kill points are drawn from ``random.Random(SEED)``.

To fit a few minutes on two cores: 16^3 phantoms, a tiny model (``XPROSPECT_TINY_MODEL``), a few
steps, the reference runs in one process, and two chains at a time.
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from faults import subprocess_env

import xprospect
from xprospect.data.prepare import PrepareConfig, prepare_dataset

pytestmark = pytest.mark.slow

SEED = 15
HERE = Path(__file__).resolve().parent
REPO = Path(xprospect.__file__).resolve().parent.parent
TEMPORARY = re.compile(r"\.tmp|_temp$|\.tempstate|\.old$|\.lock\.json$")
"""Names a finished command may not leave: atomic-write temporaries (ours and TensorFlow's), the
lock's holder record."""

PREPARE_ARGS = ["--phantoms", "6", "--size", "16", "--geometry", "parallel", "--shard-size", "1"]
PREPARE_ARGS += ["--val-fraction", "0.2", "--test-fraction", "0.2"]
PREPARE_CFG = PrepareConfig(
    size=16, geometry="parallel", shard_size=1, val_fraction=0.2, test_fraction=0.2
)


# === Running commands ===


@dataclass
class Killed:
    """One run of a chain: the fault armed and how the process ended."""

    fault: dict[str, Any] | None
    code: int
    stderr: str


@dataclass
class Chain:
    runs: list[Killed] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)


def _env(fault: dict[str, Any] | None = None, **extra: str) -> dict[str, str]:
    path = os.pathsep.join([str(REPO), str(HERE)])
    env = subprocess_env(XPROSPECT_TINY_MODEL="1", **extra)
    env["PYTHONPATH"] = os.pathsep.join([path, env["PYTHONPATH"]])
    # Two chains share two cores: one thread each is faster than both fighting over two.
    env.update(TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1")
    env.pop("XPROSPECT_FAULT", None)
    if fault is not None:
        env["XPROSPECT_FAULT"] = json.dumps(fault)
    return env


def _run(cwd: Path, args: list[str], fault: dict[str, Any] | None = None, **env: str) -> Killed:
    proc = subprocess.run(
        [sys.executable, "-m", "kill_points", *args],
        cwd=cwd,
        env=_env(fault, **env),
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    return Killed(fault, proc.returncode, proc.stderr)


def _chain(cwd: Path, args: list[str], faults: list[dict[str, Any]], check=None) -> Chain:
    """Runs ``args`` once per fault (each must end by that fault), ``check``-ing the folder after
    each, then once more to completion."""
    chain = Chain()
    for fault in faults:
        run = _run(cwd, args, fault)
        chain.runs.append(run)
        sig = fault.get("signal", "KILL")
        if sig == "KILL":
            assert run.code == -signal.SIGKILL, (fault, run.code, run.stderr[-3000:])
        else:  # a handled stop: non-zero exit, one line saying what was saved
            last = run.stderr.strip().splitlines()[-1]
            assert run.code != 0 and f"interrupted: SIG{sig}" in last, (fault, run.stderr[-3000:])
            assert "run the same command again" in last, last
        if check is not None:
            check()
    final = _run(cwd, args)
    assert final.code == 0, final.stderr[-4000:]
    chain.runs.append(final)
    return chain


def _no_half_written(root: Path) -> None:
    """Every JSON file parses and every TFRecord shard reads to its end."""
    import tensorflow as tf

    for path in root.rglob("*.json"):
        if not TEMPORARY.search(path.name):
            json.loads(path.read_text())
    for path in root.rglob("*.tfrecord"):
        for _ in tf.data.TFRecordDataset(str(path)):
            pass


def _leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if TEMPORARY.search(p.name))


# === The chains ===


def _tag_alive(tag: str) -> list[int]:
    """PIDs of processes whose environment holds ``XPROSPECT_TEST_TAG=tag``."""
    alive = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if f"XPROSPECT_TEST_TAG={tag}".encode() in environ.split(b"\0") and state != "Z":
            alive.append(int(proc.name))
    return alive


def prepare_chain(root: Path, rng: random.Random) -> Chain:
    out = root / "prepare"
    args = ["prepare", *PREPARE_ARGS, "--output", str(out)]
    faults: list[dict[str, Any]] = [
        # Right after the journal's first write: before any shard, before any manifest.
        {"at": "replace", "n": 2, "when": "after"},
        # Midway through writing the first shard (with two worker processes: see below).
        {"at": "call", "target": "tensorflow.io.TFRecordWriter.write", "n": 1, "workers": 2},
        # The journal lists a new shard, the manifest does not yet.
        {"at": "call", "target": "xprospect.data.prepare._publish", "n": 2},
        # While reading a case.
        {"at": "call", "target": "xprospect.data.prepare.load_case", "n": rng.randint(1, 2)},
        # Repairing the manifest at the start (3), or between a shard file's rename and the
        # journal (4: the shard is on disk, unrecorded).
        {"at": "call", "target": "xprospect.data.prepare._write_json", "n": rng.randint(3, 4)},
        {"at": "call", "target": "tensorflow.io.TFRecordWriter.write", "n": 1},
        {"at": "replace", "n": rng.randint(2, 4), "when": rng.choice(["before", "after"])},
    ]
    chain = Chain()
    tag = f"r2-kill-{os.getpid()}-{rng.random()}"
    for fault in faults:
        extra = ["--workers", str(fault.pop("workers"))] if "workers" in fault else []
        run = _run(root, [*args, *extra], fault, XPROSPECT_TEST_TAG=tag)
        assert run.code == -signal.SIGKILL, (fault, run.code, run.stderr[-3000:])
        chain.runs.append(run)
        if extra:
            # The workers die with their parent (PR_SET_PDEATHSIG), at once.
            deadline = time.monotonic() + 10
            while _tag_alive(tag) and time.monotonic() < deadline:
                time.sleep(0.2)
            chain.notes["orphans"] = _tag_alive(tag)
        _no_half_written(out)
    final = _run(root, args)
    assert final.code == 0, final.stderr[-4000:]
    chain.runs.append(final)
    return chain


def _experiment(data: Path, out: Path) -> dict[str, Any]:
    return {
        "name": "tiny",
        "data": {"dir": str(data), "batch_size": 1, "shuffle_buffer": 2},
        "model": {"preset": "512-Dense"},  # built as the tiny model (XPROSPECT_TINY_MODEL)
        "training": {
            "steps": 8,
            "validation_every": 4,
            "checkpoint_every": 2,
            "log_every": 1,
            "deterministic": True,
            "output_dir": str(out),
        },
    }


def train_chain(root: Path, rng: random.Random) -> Chain:
    out = root / "train"
    config = root / "train.yaml"
    args = ["train", "--config", str(config), "--no-progress"]
    faults: list[dict[str, Any]] = [
        {"at": "step", "n": rng.randint(1, 3)},
        {"at": "checkpoint", "n": 1},  # checkpoint files written, TensorFlow's pointer not
        {"at": "step", "n": 1, "signal": "TERM"},  # preempted: saves at this (odd) step
        {"at": "step", "n": rng.randint(1, 2)},
        {"at": "checkpoint", "n": 2},
        {"at": "call", "target": "keras.Model.save", "n": 1},  # while writing model.keras
    ]
    return _chain(root, args, faults, check=lambda: _no_half_written(out))


def style_chain(root: Path, rng: random.Random) -> Chain:
    out = root / "style"
    args = ["style", "train", "--config", str(root / "style.yaml"), "--no-progress"]
    args += ["--output-dir", str(out)]
    faults: list[dict[str, Any]] = [
        {"at": "step", "n": rng.choice([1, 2, 4])},
        {"at": "checkpoint", "n": 1},
        {"at": "step", "n": 1, "signal": "INT"},  # Ctrl-C
    ]
    return _chain(root, args, faults, check=lambda: _no_half_written(out))


def export_chain(root: Path, rng: random.Random) -> Chain:
    args = ["export", str(root / "ref" / "train"), "--name", "tiny"]
    args += ["--output-dir", str(root / "export")]
    faults: list[dict[str, Any]] = [
        {"at": "call", "target": "tensorflow.saved_model.save", "n": 1},
        # Variables written, saved_model.pb not.
        {"at": "call", "target": "tensorflow.python.lib.io.file_io.atomic_write_string_to_file"},
        {"at": "replace", "n": 1},  # the version folder complete, not yet moved into place
    ]
    faults[1]["n"] = rng.randint(1, 2)
    rng.shuffle(faults)
    return _chain(root, args, faults)


def tune_chain(root: Path, rng: random.Random) -> Chain:
    args = ["tune", "--config", str(root / "tune.yaml"), "--no-progress"]
    first = rng.randint(1, 2)  # trial 0 dies after this step (saved at every step)
    faults: list[dict[str, Any]] = [
        {"at": "step", "n": first},
        # In trial 1: its first or second checkpoint (trial 0 saves 3 - first more before).
        {"at": "checkpoint", "n": 3 - first + rng.randint(1, 2)},
        {"at": "step", "n": 1, "signal": "TERM"},
        # Trial 1 trained, its weights not yet copied to KerasTuner's checkpoint.
        {"at": "call", "target": "xprospect.tuning.search.copy_weights", "n": 1},
    ]
    return _chain(root, args, faults, check=lambda: _no_half_written(root / "tuning"))


def _write_configs(root: Path, data: Path, ref: Path) -> None:
    for where, base in ((root, root), (ref, ref)):
        where.mkdir(parents=True, exist_ok=True)
        (where / "train.yaml").write_text(yaml.safe_dump(_experiment(data, base / "train")))
        style = {
            "name": "style-tiny",
            "data": {
                "dir": str(data),
                "real_dir": str(root / "real"),
                "size": 16,
                "batch_size": 1,
                "val_images": 2,
                "crop": "pad",
                "suppress_markers": False,
            },
            "model": {
                "generator": {"filters": 4, "n_blocks": 1},
                "discriminator": {"filters": 4, "n_layers": 2},
            },
            "history_size": 3,
            "training": {
                "steps": 6,
                "validation_every": 6,
                "checkpoint_every": 3,
                "log_every": 1,
                "deterministic": True,
                "output_dir": str(base / "style"),
            },
        }
        (where / "style.yaml").write_text(yaml.safe_dump(style))
        experiment = _experiment(data, base / "unused")
        experiment["training"].update(checkpoint_every=1, validation_every=50)
        tune = {
            "experiment": experiment,
            "tuner": {
                "kind": "random",
                "max_trials": 2,
                "steps_per_trial": 3,
                "directory": str(base / "tuning"),
                "seed": 3,
            },
        }
        (where / "tune.yaml").write_text(yaml.safe_dump(tune))


def _real_xrays(root: Path, n: int = 12, size: int = 32) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    yy, xx = np.mgrid[:size, :size]
    body = np.exp(-(((yy - size / 2) / (0.3 * size)) ** 2 + ((xx - size / 2) / 0.22 / size) ** 2))
    rows = []
    for i in range(n):
        img = 40 + 150 * body + rng.normal(0, 12, (size, size))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / "images" / f"r{i}.png")
        rows.append({"file": f"r{i}.png", "view": "PA", "patient": i // 2})
    with open(root / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["file", "view", "patient"])
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture(scope="module")
def outcome(tmp_path_factory) -> dict[str, Any]:
    """Runs the reference commands and every chain (two at a time); each chain's result or the
    exception it raised, by name."""
    root = tmp_path_factory.mktemp("kill")
    ref = root / "ref"
    data = ref / "ds"
    prepare_dataset([], data, PREPARE_CFG, phantoms=6, progress=False)  # also prepare's reference
    _real_xrays(root / "real")
    _write_configs(root, data, ref)
    rng = random.Random(SEED)
    draws = {name: random.Random(rng.random()) for name in ("prepare", "train", "style", "tune")}
    draws["export"] = random.Random(rng.random())

    def references() -> Chain:
        each = [
            ["train", "--config", str(ref / "train.yaml"), "--no-progress"],
            ["export", str(ref / "train"), "--name", "tiny", "--output-dir", str(ref / "export")],
            ["style", "train", "--config", str(ref / "style.yaml"), "--no-progress"],
            ["tune", "--config", str(ref / "tune.yaml"), "--no-progress"],
        ]
        run = _run(ref, ["--each", *(json.dumps(a) for a in each)])
        assert run.code == 0, run.stderr[-4000:]
        return Chain([run])

    lanes = [
        [("refs", references), ("export", export_chain), ("style", style_chain)],
        [("prepare", prepare_chain), ("train", train_chain), ("tune", tune_chain)],
    ]
    results: dict[str, Any] = {"root": root, "ref": ref}

    def lane(jobs: list[tuple[str, Any]]) -> None:
        for name, job in jobs:
            t0 = time.perf_counter()
            try:
                results[name] = job() if name == "refs" else job(root, draws[name])
            except BaseException as exc:  # reported by the test of that chain
                results[name] = exc
            results[f"{name}_seconds"] = time.perf_counter() - t0

    with cf.ThreadPoolExecutor(2) as pool:
        for future in [pool.submit(lane, jobs) for jobs in lanes]:
            future.result()
    return results


def _chain_of(outcome: dict[str, Any], name: str) -> Chain:
    for key in ("refs", name):
        if isinstance(outcome[key], BaseException):
            raise outcome[key]
    chain: Chain = outcome[name]
    return chain


# === Comparisons ===


def _weights(path: Path) -> list[np.ndarray]:
    import keras

    import xprospect.models.cyclegan  # noqa: F401 - registers the style generators' classes

    return [np.asarray(w) for w in keras.saving.load_model(path, compile=False).get_weights()]


def _same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert len(wa) == len(wb)
    for x, y in zip(wa, wb, strict=True):
        np.testing.assert_array_equal(x, y, err_msg=f"{a} vs {b}")


def _metrics(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return [{k: v for k, v in row.items() if k != "elapsed_s"} for row in csv.DictReader(f)]


def _dataset_bytes(folder: Path) -> dict[str, bytes]:
    skip = {"journal.json", ".xprospect.lock"}
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name not in skip}


# === Tests ===


def test_prepare_killed_anywhere_resumes_to_the_same_dataset(outcome):
    chain = _chain_of(outcome, "prepare")
    out, ref = outcome["root"] / "prepare", outcome["ref"] / "ds"
    assert _dataset_bytes(out) == _dataset_bytes(ref)
    assert json.loads((out / "journal.json").read_text()) == json.loads(
        (ref / "journal.json").read_text()
    )
    assert _leftovers(out) == []
    assert chain.notes["orphans"] == [], "prepare workers outlived their killed parent"


def test_train_killed_or_preempted_resumes_to_the_same_weights(outcome):
    chain = _chain_of(outcome, "train")
    out, ref = outcome["root"] / "train", outcome["ref"] / "train"
    _same_weights(out / "model.keras", ref / "model.keras")
    assert json.loads((out / "best.json").read_text()) == json.loads(
        (ref / "best.json").read_text()
    )
    assert _metrics(out / "metrics.csv") == _metrics(ref / "metrics.csv")
    assert _leftovers(out) == []
    term = next(r for r in chain.runs if (r.fault or {}).get("signal") == "TERM")
    assert "stopped at step" in term.stderr and "checkpoint ckpt-" in term.stderr


def test_style_train_killed_or_interrupted_resumes_to_the_same_weights(outcome):
    _chain_of(outcome, "style")
    out, ref = outcome["root"] / "style", outcome["ref"] / "style"
    for name in ("drr2real.keras", "real2drr.keras"):
        _same_weights(out / name, ref / name)
    assert _metrics(out / "metrics.csv") == _metrics(ref / "metrics.csv")
    assert _leftovers(out) == []


def test_export_killed_anywhere_leaves_nothing_and_reruns_to_the_same_model(outcome):
    _chain_of(outcome, "export")
    out, ref = outcome["root"] / "export" / "tiny", outcome["ref"] / "export" / "tiny"
    assert sorted(p.name for p in out.iterdir()) == ["1"]
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == sorted(str(p.relative_to(ref)) for p in ref.rglob("*") if p.is_file())
    # The weights, byte for byte (saved_model.pb names its functions with per-process ids, and the
    # warm-up requests list their inputs in a per-process order).
    for rel in files:
        if rel.startswith("1/variables/"):
            assert (out / rel).read_bytes() == (ref / rel).read_bytes(), rel
    card, ref_card = (json.loads((d / "1" / "model_card.json").read_text()) for d in (out, ref))
    for c in (card, ref_card):  # the time, and the sizes of the per-process saved_model.pb
        c.pop("exported_utc", None)
        for key in ("saved_model_pb_bytes", "total_bytes"):
            c["sizes"].pop(key, None)
    assert card == ref_card
    assert _leftovers(outcome["root"] / "export") == []


def test_tune_killed_or_preempted_resumes_to_the_same_trials(outcome):
    _chain_of(outcome, "tune")
    out, ref = outcome["root"] / "tuning" / "tiny", outcome["ref"] / "tuning" / "tiny"

    def trials(project: Path) -> list[tuple[Any, ...]]:
        rows = []
        for path in sorted(project.glob("trial_*/trial.json")):
            t = json.loads(path.read_text())
            rows.append((t["trial_id"], t["status"], t["hyperparameters"]["values"], t["score"]))
        return rows

    assert trials(out) == trials(ref) and len(trials(ref)) == 2
    assert [t[1] for t in trials(out)] == ["COMPLETED", "COMPLETED"]
    data = str(outcome["ref"] / "ds")  # both searches' dataset

    def best(project: Path, base: Path) -> str:
        return (project / "best.yaml").read_text().replace(data, "DATA").replace(str(base), "ROOT")

    assert best(out, outcome["root"]) == best(ref, outcome["ref"])
    assert _leftovers(outcome["root"] / "tuning") == []


def test_at_least_twenty_kill_points(outcome):
    kills = 0
    for name in ("prepare", "train", "style", "export", "tune"):
        chain = _chain_of(outcome, name)
        kills += sum(r.code == -signal.SIGKILL for r in chain.runs)
    assert kills >= 20
    seconds = {k: round(v) for k, v in outcome.items() if k.endswith("_seconds")}
    print(f"kill -9 points: {kills}; seconds per chain: {seconds}")
