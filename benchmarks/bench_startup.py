"""Start-up: from process start to the first training step, and to a prediction on disk.

Issue 16's targets: ``xprospect train`` reaches its first finished step at 128^3 within 30 s
(X2CT-GAN and 512-Dense); ``xprospect predict`` with the demo model writes one real pair's volume
within 6 s at a peak RSS of at most 800 MB, and a batch costs at most 1 s per case once loaded.

Every measurement is a fresh process (``ru_maxrss`` of that process, from ``os.wait4``):

- **train**: a worker builds the run as ``xprospect train`` does (:class:`Trainer` of the
  shipped config with ``--set`` overrides) on a small phantom dataset at the size measured, and
  stops after the first step. It reports the time from process start to ``import tensorflow``
  done, to the package imported, and to the first step done, and splits the run's start into
  build (networks, optimizers, input, checkpoint: ``TrainingRun._build``), trace of the step
  function, and its first call (Grappler's graph optimisation and the step itself), by wrapping
  those two (the same wrapping works on older checkouts).
- **predict**: ``python -m xprospect predict`` on one real pair of ``../shared/data/real_xrays``
  (its frontal and lateral of the first ``pair_id``), wall time from spawn to exit.
- **batch**: ``predict --batch`` on a CSV of the first 1 and of N pairs; the cost per case once
  loaded is the difference divided by N - 1.

``--pythonpath DIR`` measures another checkout (e.g. the commit before a change) with the same
worker, so before/after tables come from one script. Medians over ``--rounds`` processes.

Run: ``.venv/bin/python benchmarks/bench_startup.py [--rounds 3] [--sizes 128]``; writes
``benchmarks/results/bench_startup.{json,md}`` (``--tag`` names another result file).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from xprospect.constants import NUMPY_ENVIRONMENT

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
REAL_XRAYS = ROOT.parent / "shared" / "data" / "real_xrays"
DEMO_MODEL = ROOT / "saved_models" / "demo" / "1"
PRESETS = {"X2CT-GAN": "x2ct-gan", "512-Dense": "512-dense"}
TRAIN_TARGET_S = 30.0
PREDICT_TARGET_S, PREDICT_TARGET_MB, BATCH_TARGET_S = 6.0, 800.0, 1.0

_WORKER = r"""
import sys, time, json
T0 = float(sys.argv[1])
marks = {}
def mark(name):
    marks[name] = time.time() - T0
import tensorflow as tf
mark("import_tensorflow")
from xprospect.config import apply_overrides, load_config
from xprospect.training import Trainer
from xprospect.training import loop
mark("import_xprospect")
build = loop.TrainingRun._build
def timed_build(self):
    t = time.time()
    build(self)
    marks["build"] = time.time() - t
    make = self.logic.make_train_step
    def timed_make():
        fn = make()
        def step(iterator):
            if "trace" not in marks:
                t = time.time()
                fn.get_concrete_function(iterator)
                marks["trace"] = time.time() - t
                t = time.time()
                out = fn(iterator)
                marks["first_step"] = time.time() - t
                return out
            return fn(iterator)
        return step
    self.logic.make_train_step = timed_make
loop.TrainingRun._build = timed_build
class Stop(Exception):
    pass
def hook(step, logs):
    mark("first_step_done")
    raise Stop
cfg = apply_overrides(load_config(sys.argv[2]), sys.argv[3:])
try:
    Trainer(cfg, step_hook=hook, progress=False).fit()
except Stop:
    pass
print("RESULT " + json.dumps(marks))
"""


def _spawn(argv: list[str], env: dict[str, str]) -> tuple[float, float, str, int]:
    """Runs ``argv``; returns (wall s, peak RSS MB, stdout, exit code)."""
    t0 = time.time()
    # Not from the repository root: ``-c`` and ``-m`` put the working folder first on the path,
    # which would import this checkout's package whatever ``--pythonpath`` names.
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tempfile.gettempdir()
    )
    out = proc.stdout.read().decode() if proc.stdout else ""
    err = proc.stderr.read().decode() if proc.stderr else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.time() - t0
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        print(err[-2000:], file=sys.stderr)
    return wall, usage.ru_maxrss / 1024, out, code


def _env(pythonpath: str | None) -> dict[str, str]:
    # The train worker builds the run as `xprospect train` does, so it gets the process
    # environment the command line sets (xprospect.cli); `predict` runs the command line itself.
    env = {**NUMPY_ENVIRONMENT, **os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return env


def _median(xs: list[float]) -> dict[str, float]:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def bench_train(size: int, rounds: int, pythonpath: str | None, work: Path) -> dict[str, Any]:
    data = work / f"ds{size}"
    if not data.exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "xprospect",
                "prepare",
                "--phantoms",
                "3",
                "--size",
                str(size),
                "--workers",
                "1",
                "--val-fraction",
                "0",
                "--test-fraction",
                "0",
                "--output",
                str(data),
            ],
            check=True,
            env=_env(pythonpath),
            cwd=work,
            capture_output=True,
        )
    out: dict[str, Any] = {}
    for preset, config in PRESETS.items():
        runs: list[dict[str, Any]] = []
        for r in range(rounds):
            run_dir = work / f"run-{config}-{size}-{r}-{time.time_ns()}"
            argv = [
                sys.executable,
                "-c",
                _WORKER,
                repr(time.time()),
                config,
                f"data.dir={data}",
                f"model.size={size}",
                f"training.output_dir={run_dir}",
            ]
            wall, rss, text, code = _spawn(argv, _env(pythonpath))
            line = next((x for x in text.splitlines() if x.startswith("RESULT ")), None)
            if code != 0 or line is None:
                runs.append({"error": f"exit {code}"})
                continue
            marks = json.loads(line[7:])
            runs.append({**marks, "peak_rss_mb": rss, "wall_s": wall})
            print(f"train {preset} {size}^3 round {r}: {runs[-1]}", flush=True)
        ok = [x for x in runs if "error" not in x]
        keys = (
            "import_tensorflow",
            "import_xprospect",
            "build",
            "trace",
            "first_step",
            "first_step_done",
            "peak_rss_mb",
        )
        out[preset] = {
            "runs": runs,
            **{k: _median([x[k] for x in ok]) for k in keys if ok and all(k in x for x in ok)},
        }
    return out


def _pairs(n: int) -> list[tuple[str, Path, Path]]:
    with open(REAL_XRAYS / "manifest.csv", newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["pair_id"]]
    by: dict[str, dict[str, Path]] = {}
    for r in rows:
        role = "lateral" if r["view"].upper().startswith("L") else "frontal"
        by.setdefault(r["pair_id"], {}).setdefault(role, REAL_XRAYS / "images" / r["file"])
    pairs = [(k, v["frontal"], v["lateral"]) for k, v in by.items() if len(v) == 2]
    return pairs[:n]


def bench_predict(rounds: int, batch: int, pythonpath: str | None, work: Path) -> dict[str, Any]:
    pairs = _pairs(batch)
    if not pairs:
        return {"skipped": f"no real pairs in {REAL_XRAYS}"}
    env = _env(pythonpath)
    single: list[dict[str, float]] = []
    for r in range(rounds):
        out = work / f"pred-{r}-{time.time_ns()}.nii.gz"
        argv = [
            sys.executable,
            "-m",
            "xprospect",
            "predict",
            "--model",
            str(DEMO_MODEL),
            "--frontal",
            str(pairs[0][1]),
            "--lateral",
            str(pairs[0][2]),
            "--out",
            str(out),
        ]
        wall, rss, _, code = _spawn(argv, env)
        if code == 0 and out.exists():
            single.append({"wall_s": wall, "peak_rss_mb": rss})
        print(f"predict round {r}: {wall:.2f} s, {rss:.0f} MB, exit {code}", flush=True)
    batches: dict[int, list[float]] = {1: [], len(pairs): []}
    for r in range(rounds):
        for n in batches:
            table = work / f"cases-{n}.csv"
            with open(table, "w", newline="", encoding="utf-8") as fh:
                w = csv.writer(fh)
                w.writerow(["case_id", "frontal", "lateral"])
                w.writerows([(c, f, lat) for c, f, lat in pairs[:n]])
            argv = [
                sys.executable,
                "-m",
                "xprospect",
                "predict",
                "--model",
                str(DEMO_MODEL),
                "--batch",
                str(table),
                "--no-progress",
                "--out-dir",
                str(work / f"batch-{n}-{r}-{time.time_ns()}"),
            ]
            wall, rss, _, code = _spawn(argv, env)
            if code == 0:
                batches[n].append(wall)
            print(f"batch {n} round {r}: {wall:.2f} s, {rss:.0f} MB, exit {code}", flush=True)
    n = len(pairs)
    per_case = [(b - a) / (n - 1) for a, b in zip(batches[1], batches[n], strict=False) if n > 1]
    return {
        "pair": pairs[0][0],
        "single": single,
        "wall_s": _median([x["wall_s"] for x in single]) if single else None,
        "peak_rss_mb": _median([x["peak_rss_mb"] for x in single]) if single else None,
        "batch_cases": n,
        "batch_wall_s": {str(k): v for k, v in batches.items()},
        "per_case_s": _median(per_case) if per_case else None,
    }


def _markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Start-up: process start to the first training step, and to a prediction on disk",
        "",
        f"Machine: {result['machine']}. Command: `{result['command']}`. "
        f"Medians of {result['rounds']} fresh processes (min-max in brackets).",
        "",
    ]

    def cell(d: dict[str, float] | None, fmt: str = "{:.1f}") -> str:
        if not d:
            return "n/a"
        return f"{fmt.format(d['median'])} [{fmt.format(d['min'])}-{fmt.format(d['max'])}]"

    for size, rows in result.get("train", {}).items():
        lines += [
            f"## train at {size}^3 (target: first step done <= {TRAIN_TARGET_S:.0f} s)",
            "",
            "| preset | import TF s | build s | trace s | first call s | first step done s |"
            " peak RSS MB |",
            "|---|---|---|---|---|---|---|",
        ]
        for preset, r in rows.items():
            lines.append(
                f"| {preset} | {cell(r.get('import_tensorflow'))} | {cell(r.get('build'))} | "
                f"{cell(r.get('trace'))} | {cell(r.get('first_step'))} | "
                f"{cell(r.get('first_step_done'))} | {cell(r.get('peak_rss_mb'), '{:.0f}')} |"
            )
        lines.append("")
    p = result.get("predict")
    if p and "skipped" not in p:
        lines += [
            f"## predict with `saved_models/demo/1` (targets: <= {PREDICT_TARGET_S:.0f} s, "
            f"<= {PREDICT_TARGET_MB:.0f} MB; batch <= {BATCH_TARGET_S:.0f} s per case)",
            "",
            "| one pair: spawn to exit s | peak RSS MB | batch: s per case once loaded |",
            "|---|---|---|",
            f"| {cell(p['wall_s'], '{:.2f}')} | {cell(p['peak_rss_mb'], '{:.0f}')} | "
            f"{cell(p['per_case_s'], '{:.2f}')} ({p['batch_cases']} pairs) |",
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sizes", type=int, nargs="*", default=[128])
    ap.add_argument("--batch", type=int, default=10, help="pairs in the batch measurement")
    ap.add_argument("--pythonpath", default=None, help="measure another checkout's package")
    ap.add_argument("--tag", default="", help="result file suffix, e.g. 'before'")
    ap.add_argument("--skip-predict", action="store_true")
    args = ap.parse_args(argv)
    result: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "command": "python benchmarks/bench_startup.py " + " ".join(argv or sys.argv[1:]),
        "rounds": args.rounds,
        "pythonpath": args.pythonpath,
        "train": {},
    }
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        work = Path(tmp)
        for size in args.sizes:
            result["train"][str(size)] = bench_train(size, args.rounds, args.pythonpath, work)
        if not args.skip_predict:
            result["predict"] = bench_predict(args.rounds, args.batch, args.pythonpath, work)
    name = "bench_startup" + (f"_{args.tag}" if args.tag else "")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    text = _markdown(result)
    (RESULTS / f"{name}.md").write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
