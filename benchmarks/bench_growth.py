"""Cost as work grows: each preset's training step at 32^3, 64^3 and 128^3 and batch 1, 2 and 4.

Every cell (preset, size, batch) is one fresh process running the preset's step as ``xprospect
train`` runs it: a :class:`xprospect.training.Trainer` (float32, the preset's loss, optimiser and,
for the GAN family, its discriminator) on a four-phantom dataset prepared once per size. A step is
the time between two calls of the trainer's step hook (the input pipeline included, as in a real
run); the first step (tracing and Grappler) is left out and ``--steps`` steps after it are timed.
Peak memory is the process's ``ru_maxrss`` after the timed steps.

A watchdog polls each worker's resident memory: a cell that passes ``--max-rss-gib`` (default
16 GiB of this machine's 24) is stopped and recorded as ``over memory``, one that runs past
``--cell-timeout-s`` as ``over time``; a cell whose smaller neighbour already failed so is not
started. The growth exponents are least-squares slopes of log(cost) over log(size) at each batch
(about 3 when the cost follows the voxels) and over log(batch) at each size (1 when linear).

Cells are run cheapest first (batch 1 at 32^3 and 64^3 for every preset, then the batch axis,
then 128^3) and each finished cell is saved at once to ``--state`` (JSON lines): an interrupted
run resumes where it stopped, and cells measured before are kept, never repeated.

Run: ``.venv/bin/python benchmarks/bench_growth.py [--presets ...] [--sizes 32 64 128]
[--batches 1 2 4] [--steps 3]``. Writes ``benchmarks/results/bench_growth.json`` and ``.md``;
``--report-only`` writes them from the state file without running anything.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_x2ct_peer as peer_bench  # its clock, memory and machine helpers
from bench_models import PRESETS  # the families side by side, in bench_models' order

RESULTS = Path(__file__).parent / "results"
REPO = Path(__file__).resolve().parents[1]
SIZES = (32, 64, 128)
BATCHES = (1, 2, 4)
PHANTOMS = 4
"""Cases of each size's dataset: one batch of the largest batch size."""
READY = ".bench_growth_ready"
OVER_MEMORY = "over memory"
OVER_TIME = "over time"


# === Worker (one cell per process) ===


def prepare_worker(data: Path, size: int) -> dict[str, Any]:
    return peer_bench.prepare_worker(data, size, phantoms=PHANTOMS)


def step_worker(data: Path, preset: str, size: int, batch: int, steps: int) -> dict[str, Any]:
    """Times ``steps`` training steps of ``preset`` after its first one."""
    from xprospect.models.presets import preset_config

    out, trainer = peer_bench.timed_training_steps(
        data,
        preset=preset,
        size=size,
        batch=batch,
        views=preset_config(preset)["views"][0],
        steps=steps,
        # ImageNet weights cannot be downloaded here: a random VGG16 costs the same.
        extra={"perceptual": {"weights": None}},
    )
    disc = getattr(trainer, "discriminator", None)
    return {
        "first_step_s": out["first_step_s"],
        "peak_rss_gib": out["peak_rss_gib"],
        "step_s": out["step_s"],
        "params": int(trainer.model.count_params()) + (int(disc.count_params()) if disc else 0),
    }


# === Parent: cells, watchdog, state ===


def rss_gib(pid: int) -> float:
    """Resident memory of a running process (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024**2
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


def run_cell(
    argv: Sequence[str], *, max_rss_gib: float, timeout_s: float, poll_s: float = 0.5
) -> dict[str, Any]:
    """Runs one worker under the memory and time watchdog; its result or an ``error`` record."""
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", *argv]
    with tempfile.TemporaryFile("w+") as out:
        # cwd outside the repository: ``python file`` puts the file's folder first on sys.path,
        # and PYTHONPATH says which xprospect is measured.
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tempfile.gettempdir()
        )
        start, peak = time.monotonic(), 0.0
        verdict = None
        while proc.poll() is None:
            peak = max(peak, rss_gib(proc.pid))
            if peak > max_rss_gib:
                verdict = f"{OVER_MEMORY}: passed {max_rss_gib:g} GiB"
            elif time.monotonic() - start > timeout_s:
                verdict = f"{OVER_TIME}: still running after {timeout_s:.0f} s"
            if verdict:
                proc.kill()
                proc.wait()
                return {"error": verdict, "watchdog_peak_gib": round(peak, 2)}
            time.sleep(poll_s)
        out.seek(0)
        lines = out.read().splitlines()
    for line in reversed(lines):
        if line.startswith(peer_bench.RESULT_TAG):
            return dict(json.loads(line[len(peer_bench.RESULT_TAG) :]))
    return {"error": next((ln for ln in reversed(lines) if ln.strip()), f"exit {proc.returncode}")}


def cell_order(
    presets: Sequence[str], sizes: Sequence[int], batches: Sequence[int]
) -> list[tuple[str, int, int]]:
    """Cells cheapest first: batch 1 below the largest size for every preset, then the other
    batches below it, then the largest size (batch ascending)."""
    top = max(sizes)
    small = [s for s in sizes if s != top]
    first = min(batches)
    order = [(p, s, first) for s in small for p in presets]
    order += [(p, s, b) for s in small for b in batches if b != first for p in presets]
    order += [(p, top, b) for b in sorted(batches) for p in presets]
    return order


def blocked_by(cell: tuple[str, int, int], done: Mapping[tuple[str, int, int], Any]) -> str | None:
    """Why a cell is not started: a smaller one of the same preset (same size and a smaller
    batch, or a smaller size and the same batch) went over memory or time."""
    preset, size, batch = cell
    for (p, s, b), res in done.items():
        if p != preset or "error" not in res:
            continue
        err = str(res["error"])
        if not err.startswith((OVER_MEMORY, OVER_TIME)):
            continue
        if (s == size and b < batch) or (s < size and b == batch) or (s < size and b < batch):
            return f"{err.split(':')[0]} at {s}^3 batch {b}"
    return None


def read_state(path: Path) -> dict[tuple[str, int, int], dict[str, Any]]:
    """Cells measured before (JSON lines ``{"preset", "size", "batch", "result"}``); a torn last
    line (an interrupted write) is ignored."""
    done: dict[tuple[str, int, int], dict[str, Any]] = {}
    if not path.exists():
        return done
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        done[(rec["preset"], int(rec["size"]), int(rec["batch"]))] = rec["result"]
    return done


def append_state(path: Path, cell: tuple[str, int, int], result: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rec = {"preset": cell[0], "size": cell[1], "batch": cell[2], "result": result}
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(rec) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


# === Growth exponents and the table ===


def slope(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Least-squares slope of log(y) over log(x); None with fewer than two points."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys, strict=True) if x > 0 and y > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    if sxx == 0:
        return None
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx


def _median(values: Sequence[float]) -> float:
    vals = sorted(values)
    mid = len(vals) // 2
    return vals[mid] if len(vals) % 2 else (vals[mid - 1] + vals[mid]) / 2


def exponents(
    cells: Mapping[str, Mapping[str, Any]],
    sizes: Sequence[int],
    batches: Sequence[int],
    *,
    size: int | None = None,
    batch: int | None = None,
) -> dict[str, float | None]:
    """Growth exponents of the measured cells along size (``batch`` fixed) or along batch
    (``size`` fixed), fitted on the cells of one CPU: the one most of them were measured on (the
    latest of those tied), since a resumed run may have moved to another machine."""
    pts = [
        (float(s if batch is not None else b), cells[f"{s}x{b}"])
        for s, b in itertools.product(sizes, batches)
        if (b == batch if batch is not None else s == size) and "missing" not in cells[f"{s}x{b}"]
    ]
    cpus = [c.get("cpu") for _, c in pts]
    if cpus:
        cpu = max(reversed(cpus), key=cpus.count)  # reversed: a tie goes to the later cells
        pts = [(x, c) for x, c in pts if c.get("cpu") == cpu]
    xs = [x for x, _ in pts]
    return {m: slope(xs, [c[m] for _, c in pts]) for m in ("step_s", "peak_rss_gib")}


def summarise(
    done: Mapping[tuple[str, int, int], Mapping[str, Any]],
    presets: Sequence[str],
    sizes: Sequence[int],
    batches: Sequence[int],
) -> dict[str, Any]:
    """Per preset: each cell's median step time and peak RSS (or why it is missing), and the
    growth exponents over size (per batch) and over batch (per size)."""
    table: dict[str, Any] = {}
    for preset in presets:
        cells: dict[str, Any] = {}
        for size, batch in itertools.product(sizes, batches):
            res = done.get((preset, size, batch))
            if res is None:
                cells[f"{size}x{batch}"] = {"missing": "not measured"}
            elif "error" in res:
                cells[f"{size}x{batch}"] = {"missing": res["error"]}
            else:
                cells[f"{size}x{batch}"] = {
                    "step_s": _median(res["step_s"]),
                    "peak_rss_gib": res["peak_rss_gib"],
                    "first_step_s": res.get("first_step_s"),
                    "params": res.get("params"),
                    "cpu": res.get("cpu"),
                }

        table[preset] = {
            "cells": cells,
            "size_exponent": {str(b): exponents(cells, sizes, batches, batch=b) for b in batches},
            "batch_exponent": {str(s): exponents(cells, sizes, batches, size=s) for s in sizes},
        }
    return table


def batch_exponent_at_largest(
    row: Mapping[str, Any], sizes: Sequence[int], metric: str
) -> tuple[int | None, float | None]:
    """The batch exponent at the largest size that has one (most of the step is the network
    there, least the input pipeline and the per-step overhead)."""
    for size in sorted(sizes, reverse=True):
        value = row["batch_exponent"][str(size)][metric]
        if value is not None:
            return size, value
    return None, None


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _elsewhere(cell: Mapping[str, Any], machine: Mapping[str, Any]) -> bool:
    """A measured cell from another CPU than the report's machine (cells before the CPU was
    recorded count as this machine's)."""
    return "missing" not in cell and cell.get("cpu") not in (None, machine.get("cpu"))


def markdown(
    table: Mapping[str, Any],
    sizes: Sequence[int],
    batches: Sequence[int],
    machine: Mapping[str, Any],
    command: str,
) -> str:
    """Two tables (step time, peak RSS) with one column per (size, batch) and the exponents."""
    cols = [(s, b) for s in sizes for b in batches]
    head = "| preset | " + " | ".join(f"{s}^3 b{b}" for s, b in cols)
    lines = [
        "# Cost as work grows: one training step per preset, size and batch",
        "",
        f"Machine: {machine.get('cpu')}, {machine.get('cpu_count')} cores, "
        f"{machine.get('memory')}. Command: `{command}`. One fresh process per cell, float32; "
        "step: median of the timed steps after the first; peak RSS: the process's `ru_maxrss`. "
        "Exponents: least-squares slope of log(cost) over log(size) at batch "
        f"{min(batches)} (3 = proportional to the voxels) and over log(batch) at the largest "
        "size with two batches measured (1 = linear).",
        "",
    ]
    for metric, unit, digits in (("step_s", "s", 2), ("peak_rss_gib", "GiB", 2)):
        title = "Step time" if metric == "step_s" else "Peak RSS"
        lines += [
            f"## {title} ({unit})",
            "",
            head + " | size exponent | batch exponent |",
            "|---" * (len(cols) + 3) + "|",
        ]
        for preset, row in table.items():
            vals = []
            for s, b in cols:
                cell = row["cells"][f"{s}x{b}"]
                missing = cell.get("missing")
                if missing:
                    vals.append("n/m" if missing == "not measured" else missing.split(":")[0])
                else:
                    vals.append(
                        _num(cell[metric], digits) + (" *" if _elsewhere(cell, machine) else "")
                    )
            size_k = row["size_exponent"][str(min(batches))][metric]
            at, batch_k = batch_exponent_at_largest(row, sizes, metric)
            batch_txt = f"{_num(batch_k, 2)} ({at}^3)" if at else "-"
            cols_txt = " | ".join(vals)
            lines.append(f"| {preset} | {cols_txt} | {_num(size_k, 2)} | {batch_txt} |")
        lines.append("")
    lines.append(
        "n/m: not measured in this run (see the JSON's `state`: the run resumes). `over memory`: "
        "stopped by the watchdog above the RSS limit; `over time`: above the cell's time limit "
        "(or a smaller cell of the same preset already was)."
    )
    others = sorted(
        {
            str(cell["cpu"])
            for row in table.values()
            for cell in row["cells"].values()
            if _elsewhere(cell, machine)
        }
    )
    if others:
        lines += [
            "",
            f"\\* measured on another machine ({', '.join(others)}) when the run was resumed "
            "there; each exponent is fitted on the cells of one CPU, the one most of its cells "
            "were measured on.",
        ]
    return "\n".join(lines) + "\n"


# === Main ===


def worker_main(args: argparse.Namespace) -> None:
    if args.worker == "prepare":
        result = prepare_worker(Path(args.data), args.size)
    else:
        result = step_worker(Path(args.data), args.preset, args.size, args.batch, args.steps)
    peer_bench.emit(result)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=list(PRESETS))
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--batches", type=int, nargs="+", default=list(BATCHES))
    parser.add_argument("--steps", type=int, default=3, help="timed steps after the first")
    parser.add_argument("--max-rss-gib", type=float, default=16.0)
    parser.add_argument("--cell-timeout-s", type=float, default=900.0)
    parser.add_argument("--data-root", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--state", type=Path, default=RESULTS / "bench_growth.state.jsonl")
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    parser.add_argument(
        "--report-only", action="store_true", help="write the tables from --state, run nothing"
    )
    parser.add_argument("--worker", choices=("prepare", "step"), help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--preset", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker_main(args)
        return
    command = "python benchmarks/bench_growth.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    done = read_state(args.state)
    machine = {**peer_bench.machine_description()}
    for cell in cell_order(args.presets, args.sizes, args.batches):
        if cell in done or args.report_only:
            continue
        why = blocked_by(cell, done)
        if why:
            result: dict[str, Any] = {"error": f"{why.split(' at ')[0]}: skipped, {why}"}
        else:
            preset, size, batch = cell
            data = args.data_root / f"xprospect_growth_data{size}"
            if not (data / READY).exists():
                shutil.rmtree(data, ignore_errors=True)  # an interrupted prepare
                prep = run_cell(
                    ["prepare", "--data", str(data), "--size", str(size)],
                    max_rss_gib=args.max_rss_gib,
                    timeout_s=args.cell_timeout_s,
                )
                if "error" in prep:
                    raise SystemExit(f"bench_growth: preparing {size}^3 data: {prep['error']}")
                (data / READY).write_text("prepared by bench_growth\n")
            result = run_cell(
                [
                    "step",
                    "--data",
                    str(data),
                    "--preset",
                    preset,
                    "--size",
                    str(size),
                    "--batch",
                    str(batch),
                    "--steps",
                    str(args.steps),
                ],
                max_rss_gib=args.max_rss_gib,
                timeout_s=args.cell_timeout_s,
            )
        result["load"] = os.getloadavg()[0]
        # Resumed runs may span machines: each cell says which CPU it was measured on.
        result["cpu"] = machine.get("cpu")
        done[cell] = result
        append_state(args.state, cell, result)
        _print_cell(cell, result)
    table = summarise(done, args.presets, args.sizes, args.batches)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "command": command,
        "machine": machine,
        "state": str(args.state),
        "table": table,
    }
    (args.output_dir / "bench_growth.json").write_text(json.dumps(record, indent=2) + "\n")
    text = markdown(table, args.sizes, args.batches, machine, command)
    (args.output_dir / "bench_growth.md").write_text(text)
    print(text)


def _print_cell(cell: tuple[str, int, int], res: Mapping[str, Any]) -> None:
    head = f"{cell[0]:<12} {cell[1]:>4}^3 batch {cell[2]}"
    if "error" in res:
        print(f"{head}  {res['error']}", flush=True)
        return
    print(
        f"{head}  step {_median(res['step_s']):8.2f} s  peak RSS {res['peak_rss_gib']:6.2f} GiB  "
        f"first step {res.get('first_step_s', 0):6.1f} s  load {res['load']:.1f}",
        flush=True,
    )


if __name__ == "__main__":
    main()
