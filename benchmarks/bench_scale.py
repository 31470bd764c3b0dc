"""Cost as work grows: prepare, input pipeline, training and evaluate on 20 and 400 cases.

Issue 16's target: the peak RSS of prepare, training and evaluate at 400 cases is within 10 % of
the same stage at 20 cases (the data work streams: nothing keeps all cases, or all results, in
memory), and the time grows linearly with the cases (the seconds per case at 400 are those at
20).

Every measurement is a fresh Python process (``ru_maxrss`` is per process and only grows), run
from the system's temporary folder with ``PYTHONPATH`` naming the checkout under test (a
``python -c`` puts its working folder first on ``sys.path``, which would import whatever package
sits there). Each reports ``ru_maxrss`` of itself (``RUSAGE_SELF``) and of its largest reaped
child (``RUSAGE_CHILDREN``: the worker processes of ``prepare --workers N``; Linux reports the
largest child, not a sum). Stages, each on N phantom cases (X2CT cone-beam geometry, frontal and
lateral DRRs, ``--size`` voxels a side, the default 10 % / 10 % val / test split):

- **prepare**: :func:`xprospect.data.prepare.prepare_dataset` with ``phantoms=N`` and
  ``--workers`` processes (default 1: in the measured process). Unit: a case.
- **pipeline**: one epoch of the train split through :func:`xprospect.data.load_dataset` with
  the arguments the trainer gives it for the shipped ``512-dense`` experiment (its augmentation,
  which re-renders the DRRs, shuffle buffer ``data.shuffle_buffer``, batch ``--batch``,
  ``drop_remainder``). Unit: a case read.
- **train**: :class:`xprospect.training.Trainer` of the shipped ``512-dense`` experiment with
  ``model.overrides.base_filters=8`` (the demo's CPU width), batch ``--batch``, ``--steps``
  steps, float32, its validation and checkpoint settings (so validation, the checkpoint, the best
  model and the export at the last step run as in a real run). Unit: a step (the steps are the
  same at every N: the step time must not depend on N). The **validation** row is the same
  process' validation at the last step (all val cases). Unit: a val case.
- **evaluate**: ``xprospect evaluate`` (``xprospect.cli.main``) of that run's model on the test
  split, with both baselines (which read the train split, also N-proportional). Unit: a test
  case.

Per row: the stage's seconds (from its call, not the process start), seconds per unit, seconds per
unit once started (the first unit or shard, which carries the traces and compilations, left
out), the peak RSS, the process wall time, and the ratios of the largest N to the smallest.
Medians over ``--rounds`` processes per cell.

Run: ``.venv/bin/python benchmarks/bench_scale.py [--rounds 2] [--size 32] [--cases 20 400]``;
writes ``benchmarks/results/bench_scale.{json,md}`` only when every cell was measured; a run with
a failed cell writes ``bench_scale.partial.{json,md}`` instead and exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RSS_TOLERANCE = 0.10
"""Issue 16: peak RSS at 400 cases within 10 % of 20 cases."""
CONFIG = "512-dense"
BASE_FILTERS = 8
STAGES = ("prepare", "pipeline", "train", "validation", "evaluate")
UNITS = {
    "prepare": "case",
    "pipeline": "case",
    "train": "step",
    "validation": "val case",
    "evaluate": "test case",
}

_WORKER = r"""
import json, resource, sys, time
stage, args = sys.argv[1], json.loads(sys.argv[2])

def rss():
    return {
        "rss_self_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_children_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }

def experiment():
    from xprospect.config import apply_overrides, load_config
    return apply_overrides(load_config(args["config"]), [
        f"data.dir={args['data']}",
        f"data.batch_size={args['batch']}",
        f"model.overrides={{base_filters: {args['base_filters']}}}",
        f"training.steps={args['steps']}",
        f"training.output_dir={args['run']}",
        *args.get("set", []),
    ])

rows = {}
if stage == "prepare":
    from xprospect.data.manifest import read_manifest
    from xprospect.data.prepare import PrepareConfig, prepare_dataset
    marks = []
    t0 = time.perf_counter()
    prepare_dataset(
        [], args["data"], PrepareConfig(size=args["size"], geometry="x2ct"),
        phantoms=args["n"], workers=args["workers"], progress=False,
        on_shard=lambda name: marks.append((time.perf_counter() - t0, name)),
    )
    shards = read_manifest(args["data"])["shards"]
    cases = sum(int(s["cases"]) for s in shards.values())
    rows["prepare"] = dict(seconds=marks[-1][0], units=cases, first_s=marks[0][0],
                           first_units=int(shards[marks[0][1]]["cases"]))
elif stage == "pipeline":
    from xprospect.data import augmentation_from_dict, load_dataset
    from xprospect.training.loop import target_window
    cfg = experiment()
    t0 = time.perf_counter()
    ds = load_dataset(
        cfg.data.dir, "train", batch_size=cfg.data.batch_size, hu_window=target_window(cfg),
        views=tuple(cfg.data.views), xray_mapping=cfg.data.xray_mapping, shuffle=True,
        shuffle_buffer=cfg.data.shuffle_buffer, seed=cfg.training.seed, cache=cfg.data.cache,
        augment=augmentation_from_dict(cfg.data.augmentation), drop_remainder=True,
    )
    n, first = 0, None
    for x, y in ds:
        n += int(y.shape[0])
        if first is None:
            first = (time.perf_counter() - t0, n)
    rows["pipeline"] = dict(seconds=time.perf_counter() - t0, units=n, first_s=first[0],
                            first_units=first[1])
elif stage == "train":
    from xprospect.data.manifest import read_manifest, split_cases
    from xprospect.training import Trainer
    from xprospect.training import loop
    validate = loop.TrainingRun._validate
    val_s = []
    def timed_validate(self):
        t = time.perf_counter()
        out = validate(self)
        val_s.append(time.perf_counter() - t)
        return out
    loop.TrainingRun._validate = timed_validate
    hooks = []
    t0 = time.perf_counter()
    result = Trainer(experiment(), step_hook=lambda step, logs: hooks.append(
        time.perf_counter() - t0), progress=False).fit()
    fit_s = time.perf_counter() - t0
    if result.status != "completed":
        raise SystemExit(f"training {result.status}")
    # The last step also validates, saves and exports: the steps are the ones before it.
    rows["train"] = dict(seconds=fit_s, units=len(hooks), first_s=hooks[0], first_units=1,
                         end_s=hooks[-2], end_units=len(hooks) - 1)
    rows["validation"] = dict(seconds=sum(val_s), first_s=0.0, first_units=0,
                              units=split_cases(read_manifest(args["data"]), "val") * len(val_s))
elif stage == "evaluate":
    import xprospect.evaluation as evaluation
    from xprospect.cli.main import main
    cases = evaluation.dataset_cases
    marks = []
    def timed_cases(data_dir, split, hu_window):
        if split != "test":
            yield from cases(data_dir, split, hu_window)
            return
        for item in cases(data_dir, split, hu_window):
            marks.append(time.perf_counter() - t0)  # the previous case is scored
            yield item
        marks.append(time.perf_counter() - t0)
    evaluation.dataset_cases = timed_cases
    t0 = time.perf_counter()
    code = main(["evaluate", "--model", args["run"], "--data", args["data"],
                 "--split", "test", "--output", args["out"]])
    if code != 0:
        raise SystemExit(f"evaluate exit {code}")
    units = len(marks) - 1
    rows["evaluate"] = dict(seconds=time.perf_counter() - t0, units=units, first_s=marks[1],
                            first_units=1, end_s=marks[-1])
else:
    raise SystemExit(f"unknown stage {stage}")
extra = rss()
print("RESULT " + json.dumps({k: {**v, **extra} for k, v in rows.items()}), flush=True)
"""


# === Measuring ===


def _env(pythonpath: Path) -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(pythonpath)}


def spawn(stage: str, args: Mapping[str, Any], pythonpath: Path) -> dict[str, Any]:
    """Runs one stage in a fresh process; its rows, or ``{"error": ...}``."""
    t0 = time.perf_counter()
    # Not from the repository: ``-c`` puts the working folder first on the path.
    proc = subprocess.run(
        [sys.executable, "-c", _WORKER, stage, json.dumps(dict(args))],
        capture_output=True,
        text=True,
        env=_env(pythonpath),
        cwd=tempfile.gettempdir(),
    )
    wall = time.perf_counter() - t0
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
        print(proc.stderr[-3000:], file=sys.stderr)
        return {"error": f"exit {proc.returncode}: {tail[0][:300]}"}
    rows: dict[str, Any] = json.loads(line[len("RESULT ") :])
    for row in rows.values():
        row["wall_s"] = wall
    return rows


def measure(
    cases: Sequence[int],
    rounds: int,
    size: int,
    workers: int,
    steps: int,
    batch: int,
    pythonpath: Path,
    work: Path,
    overrides: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Every stage at every N, ``rounds`` times, N interleaved within a round."""
    runs: list[dict[str, Any]] = []
    data = {n: work / f"ds{n}" for n in cases}
    trained: dict[int, Path] = {}

    def record(stage: str, n: int, r: int, rows: dict[str, Any]) -> None:
        names = [stage] if "error" in rows else list(rows)
        for name in names:
            result = rows if "error" in rows else rows[name]
            runs.append({"stage": name, "n": n, "round": r, "result": result})
            print(f"{name} N={n} round {r}: {json.dumps(result)}", flush=True)

    for r in range(rounds):
        for n in cases:
            # Round 0 builds the dataset the other stages read; later rounds build a copy.
            target = data[n] if r == 0 else work / f"ds{n}-r{r}"
            args = {"n": n, "size": size, "workers": workers, "data": str(target)}
            record("prepare", n, r, spawn("prepare", args, pythonpath))
            if r:
                shutil.rmtree(target, ignore_errors=True)
        for n in cases:
            run = work / f"run{n}-r{r}"
            args = {
                "data": str(data[n]),
                "config": CONFIG,
                "batch": batch,
                "base_filters": BASE_FILTERS,
                "steps": steps,
                "run": str(run),
                "set": list(overrides),
            }
            record("pipeline", n, r, spawn("pipeline", args, pythonpath))
            rows = spawn("train", args, pythonpath)
            record("train", n, r, rows)
            if "error" not in rows:
                trained[n] = run
            if n in trained:
                out = work / f"eval{n}-r{r}"
                ev = {"data": str(data[n]), "run": str(trained[n]), "out": str(out)}
                record("evaluate", n, r, spawn("evaluate", ev, pythonpath))
            else:
                record("evaluate", n, r, {"error": "no trained model"})
    return runs


# === Aggregation ===


def per_unit(result: Mapping[str, Any]) -> tuple[float, float | None]:
    """(seconds per unit, seconds per unit after the first unit or shard; None if no more)."""
    units = result["units"]
    total = result["seconds"] / units if units else float("nan")
    # The steady part ends at the last unit (``end_s``), before any closing work of the stage
    # (training's last step, which also validates and exports; evaluate's report files).
    rest = result.get("end_units", units) - result["first_units"]
    end = result.get("end_s", result["seconds"])
    steady = (end - result["first_s"]) / rest if rest > 0 else None
    return total, steady


def _stats(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def case_mb(size: int) -> float:
    """MB of one case as the input pipeline holds it: float32 volume and two float32 DRRs."""
    return (size**3 + 2 * size**2) * 4 / 2**20


def aggregate(runs: Sequence[Mapping[str, Any]], cases: Sequence[int], size: int) -> dict[str, Any]:
    """Medians per stage and N, and the ratios of the largest N to the smallest.

    Beside the RSS ratio, ``rss_growth_mb`` (largest N's median minus smallest's) and
    ``all_cases_mb``, what keeping every additional case would add (:func:`case_mb` each): at
    small sizes a stage that keeps every case can stay within the 10 % tolerance, so the growth
    is to be read against that.

    Returns:
        ``{stage: {"cells": {str(N): cell}, "ratio": {...}}}``; a cell holds the medians
        (``seconds``, ``s_per_unit``, ``steady_s_per_unit``, ``rss_mb`` (the process' own peak),
        ``rss_children_mb``, ``wall_s``, ``units``), ``processes`` and ``errors``; a stage or
        cell with no measurement is ``None`` there (``missing`` lists them).
    """
    table: dict[str, Any] = {}
    missing: list[str] = []
    for stage in STAGES:
        cells: dict[str, Any] = {}
        for n in cases:
            mine = [x["result"] for x in runs if x["stage"] == stage and x["n"] == n]
            ok = [x for x in mine if "error" not in x]
            errors = [x["error"] for x in mine if "error" in x]
            if not ok:
                cells[str(n)] = None
                missing.append(f"{stage} N={n}")
                continue
            units = [per_unit(x) for x in ok]
            steady = [s for _, s in units if s is not None]
            cells[str(n)] = {
                "units": _stats([x["units"] for x in ok]),
                "seconds": _stats([x["seconds"] for x in ok]),
                "s_per_unit": _stats([t for t, _ in units]),
                "steady_s_per_unit": _stats(steady),
                "rss_mb": _stats([x["rss_self_mb"] for x in ok]),
                "rss_children_mb": _stats([x["rss_children_mb"] for x in ok]),
                "wall_s": _stats([x["wall_s"] for x in ok]),
                "processes": len(ok),
                "errors": errors,
            }
        lo, hi = cells.get(str(min(cases))), cells.get(str(max(cases)))
        ratio = None
        if lo is not None and hi is not None and min(cases) != max(cases):
            ratio = {
                "rss": _ratio(hi["rss_mb"], lo["rss_mb"]),
                "s_per_unit": _ratio(hi["s_per_unit"], lo["s_per_unit"]),
                "steady_s_per_unit": _ratio(hi["steady_s_per_unit"], lo["steady_s_per_unit"]),
            }
            ratio["rss_within_tolerance"] = abs(ratio["rss"] - 1.0) <= RSS_TOLERANCE
            ratio["rss_growth_mb"] = hi["rss_mb"]["median"] - lo["rss_mb"]["median"]
            ratio["all_cases_mb"] = (max(cases) - min(cases)) * case_mb(size)
        table[stage] = {"unit": UNITS[stage], "cells": cells, "ratio": ratio}
    return {"stages": table, "missing": missing}


def _ratio(a: Mapping[str, float] | None, b: Mapping[str, float] | None) -> float | None:
    if a is None or b is None or not b["median"]:
        return None
    return a["median"] / b["median"]


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _median(cell: Mapping[str, Any] | None, key: str) -> float | None:
    stats = None if cell is None else cell.get(key)
    return None if stats is None else stats["median"]


def markdown(table: Mapping[str, Any], cases: Sequence[int], meta: Mapping[str, Any]) -> str:
    """The result table (one row per stage and N, ratios on the largest N's row)."""
    lo, hi = min(cases), max(cases)
    lines = [
        "# Cost as work grows (`bench_scale.py`)",
        "",
        f"Command: `{meta['command']}`",
        "",
        f"Machine: {meta['machine']}. {meta['when']}. Size {meta['size']}^3, X2CT geometry, "
        f"{meta['config']} with base_filters {BASE_FILTERS}, batch {meta['batch']}, "
        f"{meta['steps']} steps, prepare workers {meta['workers']}. Medians of "
        f"{meta['rounds']} processes per cell. s/unit once started leaves out the first unit "
        "(the first shard for prepare), which carries the traces and compilations. Ratios are "
        f"N={hi} over N={lo}; RSS flat means within {RSS_TOLERANCE:.0%}. Beside the growth "
        f"of the peak RSS, in brackets what keeping the {hi - lo} extra cases (float32 volume "
        "and DRRs) would add. Peak RSS is the process' own (`RUSAGE_SELF`); the JSON also "
        "holds its largest child's (`RUSAGE_CHILDREN`), which with prepare's workers at 1 is "
        "only a `uname` that TensorFlow's import forks (Linux counts the parent's pages at the "
        "fork) and with more workers the largest worker.",
        "",
        "| stage | unit | N | units | stage s | s/unit | s/unit once started | peak RSS MB "
        "| process wall s | RSS ratio | flat | RSS growth MB (all cases: MB) | s/unit ratio "
        "| once-started ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for stage, entry in table["stages"].items():
        ratio = entry["ratio"]
        for n in cases:
            cell = entry["cells"][str(n)]
            units = _median(cell, "units")
            row = [
                stage,
                entry["unit"],
                str(n),
                "missing" if cell is None else _fmt(units, ".0f"),
                _fmt(_median(cell, "seconds"), ".2f"),
                _fmt(_median(cell, "s_per_unit"), ".4f"),
                _fmt(_median(cell, "steady_s_per_unit"), ".4f"),
                _fmt(_median(cell, "rss_mb"), ".0f"),
                _fmt(_median(cell, "wall_s"), ".1f"),
            ]
            if n == hi and ratio is not None:
                row += [
                    _fmt(ratio["rss"], ".3f"),
                    "yes" if ratio["rss_within_tolerance"] else "**no**",
                    f"{ratio['rss_growth_mb']:+.0f} ({ratio['all_cases_mb']:.0f})",
                    _fmt(ratio["s_per_unit"], ".2f"),
                    _fmt(ratio["steady_s_per_unit"], ".2f"),
                ]
            else:
                row += ["", "", "", "", ""]
            lines.append("| " + " | ".join(row) + " |")
    if table["missing"]:
        lines += ["", "Missing (failed) cells: " + ", ".join(table["missing"]) + "."]
    return "\n".join(lines) + "\n"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kib / 2**20:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return f"{cpu}, {os.cpu_count()} cores{mem}, Python {platform.python_version()}"


def write(
    table: Mapping[str, Any],
    runs: Sequence[Mapping[str, Any]],
    cases: Sequence[int],
    meta: Mapping[str, Any],
    tag: str,
) -> Path:
    """Writes the JSON and Markdown; with a missing cell, under ``.partial`` names only."""
    name = tag + (".partial" if table["missing"] else "")
    RESULTS.mkdir(parents=True, exist_ok=True)
    report = {**meta, "cases": list(cases), "table": table, "runs": list(runs)}
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    md = RESULTS / f"{name}.md"
    md.write_text(markdown(table, cases, meta))
    return md


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, nargs="+", default=[20, 400])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--workers", type=int, default=1, help="prepare's worker processes")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--pythonpath", type=Path, default=ROOT, help="the checkout to measure")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="experiment override for the pipeline and train stages (data.shuffle_buffer=16)",
    )
    p.add_argument("--tag", default="bench_scale", help="result file name")
    p.add_argument("--keep", type=Path, help="work folder to keep (default: a temporary one)")
    args = p.parse_args(argv)
    cases = sorted(set(args.cases))
    meta = {
        "command": " ".join(["python", "benchmarks/bench_scale.py", *sys.argv[1:]]),
        "machine": machine(),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "pythonpath": str(args.pythonpath.resolve()),
        "size": args.size,
        "rounds": args.rounds,
        "workers": args.workers,
        "steps": args.steps,
        "batch": args.batch,
        "config": CONFIG,
        "base_filters": BASE_FILTERS,
        "overrides": args.set,
        "rss_tolerance": RSS_TOLERANCE,
    }
    with tempfile.TemporaryDirectory(prefix="bench_scale-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        runs = measure(
            cases,
            args.rounds,
            args.size,
            args.workers,
            args.steps,
            args.batch,
            args.pythonpath.resolve(),
            work,
            args.set,
        )
    table = aggregate(runs, cases, args.size)
    md = write(table, runs, cases, meta, args.tag)
    print(md.read_text())
    if table["missing"]:
        print(f"not every cell was measured: wrote {md.name} and its JSON only", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
