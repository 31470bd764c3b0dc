"""Every model family side by side: same phantom split, same training budget, same metrics.

One procedural-phantom dataset at ``--size`` (default 64^3, X2CT cone-beam DRRs) is built once.
Each preset then trains in its own process for the same wall-clock budget on this machine
(``--budget-s``; the number of steps is the budget divided by the step time measured over the
calibration steps, so cheap models take more steps, as they would in any fixed-compute
comparison), with its preset's loss, optimizer and schedule, float32, batch 1 (DuoLift
accumulates 4 batches per step, as its paper does). Each trained generator is then scored on
the test split and on the DRRs of the real LIDC chest CT (``xprospect.data.samples.sample_ct``),
together with the two baselines a learned model must beat: the mean training volume and the
calibrated unfiltered back-projection. S-XR2CT is single-view (frontal only); its perceptual term
uses a randomly initialised VGG16 (ImageNet weights cannot be downloaded here), which makes it a
random-feature perceptual loss.

The budget is tiny next to the papers' (days on a GPU): the table ranks what each architecture
learns in a few CPU minutes, not what it can reach.

The parameter columns: the trained generator + discriminator at ``--size``; the same presets
built at 128^3, the papers' size; and the count the paper (or, for X2CT, its official code)
states (:data:`PAPER_PARAMS`; most papers give none).

Each run is validated :data:`VALIDATIONS` times (5 validation phantoms) and scored with the
weights of its best validation PSNR-3D: early stopping by selection, the same rule for every
preset. A finished preset's record (``WORKDIR/runs/PRESET/result.json``) is reused by a later
call with the same budget and dataset, so a long budget can be run in parts (``--presets``).

Run: ``.venv/bin/python benchmarks/bench_models.py [--budget-s 120] [--presets ...]``. Prints a
table and writes ``benchmarks/results/bench_models.json`` and ``bench_models.md`` (``--output``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
PRESETS = (
    "512-Dense",
    "512-ProjInj",
    "X2CT-CNN+B",
    "X2CT-CNN+S",
    "X2CT-GAN",
    "CVAA-GAN",
    "DuoLift-CNN",
    "DuoLift-GAN",
    "S-XR2CT",
)
METRICS = ("psnr_3d", "psnr_2d", "ssim_3d", "ssim_2d", "mae", "lung_dice")
PAPER_PARAMS: dict[str, str] = {
    "512-Dense": "not given",
    "512-ProjInj": "not given",
    # The official kylekma/X2CT code's models (the paper gives no count): G 61.74 M, D 11.06 M.
    "X2CT-CNN+B": "61.74 M (official code)",
    "X2CT-CNN+S": "not given",
    "X2CT-GAN": "61.74 + 11.06 M (official code)",
    "CVAA-GAN": "not given",
    # Only the encoders are determined by the text: two ResNet-34 (21.28 M each without fc).
    "DuoLift-CNN": "not given (encoders 2 x 21.28 M)",
    "DuoLift-GAN": "not given (encoders 2 x 21.28 M)",
    "S-XR2CT": "not given",
}
"""Parameters each paper (or its official code) states, at its 128^3 size, for the table."""

_WORKER = r"""
import json, resource, statistics, sys, time
from pathlib import Path
import numpy as np
preset, data, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
budget, views = float(sys.argv[4]), sys.argv[5].split(",")
VALIDATIONS = int(sys.argv[6])
from xprospect.config import config_from_dict
from xprospect.training import Trainer

def config(steps, folder, every):
    return config_from_dict({
        "data": {"dir": data, "batch_size": 1, "views": views, "shuffle_buffer": 64},
        "model": {"preset": preset},
        "perceptual": {"weights": None, "num_slices": 4},
        "training": {"steps": steps, "validation_every": every, "checkpoint_every": every,
                     "log_every": 10, "output_dir": str(folder), "seed": 0},
    })

times = []
def hook(step, logs):
    times.append(time.perf_counter())
# Calibration: no validation or checkpoint inside the timed steps; the first includes tracing.
calib = Trainer(config(5, out / "calibration", 1000), step_hook=hook, progress=False)
calib.fit()
step_s = statistics.median(np.diff(times[:-1]) if len(times) > 3 else np.diff(times))
steps = max(5, int(budget / step_s))
# Validation VALIDATIONS times in the run: the weights with the best validation PSNR-3D are the
# ones scored (early stopping by selection; validation time is outside the step budget).
every = max(1, steps // VALIDATIONS)
t0 = time.perf_counter()
trainer = Trainer(config(steps, out / "run", every), progress=False)
result = trainer.fit()
train_s = time.perf_counter() - t0
params_g = int(trainer.model.count_params())
params_d = int(trainer.discriminator.count_params()) if trainer.discriminator is not None else 0

from xprospect.evaluation import evaluate_dataset
from xprospect.inference import load_predictor
from xprospect.data.samples import sample_ct
from xprospect.evaluation import score_real_ct
predictor = load_predictor(out / "run")
best = out / "run" / "best.weights.h5"
best_step = None
if best.exists():
    predictor.model.load_weights(best)
    best_step = json.loads((out / "run" / "best.json").read_text()).get("step")
ev = evaluate_dataset(predictor, data, out / "eval", split="test", baselines=False, panels=2)
# Inside the real CT's validity mask; the baselines' rows come from the parent (fitted once).
real = score_real_ct(predictor, sample_ct().ct_path, data, baselines={}).metrics["model"]
print("RESULT " + json.dumps({
    "status": result.status, "steps": steps, "best_step": best_step, "step_s": step_s,
    "train_s": train_s,
    "params_generator": params_g, "params_discriminator": params_d,
    "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
    "test": {k: v for k, v in ev.summary["model"].items()},
    "real_ct": {k: float(v) for k, v in real.items()},
}))
"""


def build_dataset(folder: Path, size: int, train: int, val: int, test: int) -> None:
    from xprospect.data.prepare import PrepareConfig, prepare_dataset

    if (folder / "manifest.json").exists():
        return
    n = train + val + test
    prepare_dataset(
        [],
        folder,
        PrepareConfig(
            size=size,
            geometry="x2ct",
            val_fraction=val / n,
            test_fraction=test / n,
            split_seed=0,
            shard_size=16,
        ),
        phantoms=n,
        workers=2,
        progress=False,
    )


def baselines(data: Path, out: Path) -> dict:
    """Test-split and real-CT scores of the mean-volume and back-projection baselines."""
    import numpy as np

    from xprospect.data.samples import sample_ct
    from xprospect.evaluation import evaluate_dataset, real_ct_case
    from xprospect.metrics import evaluate_case
    from xprospect.preprocessing import resolve_hu_window, window_hu

    ev = evaluate_dataset(None, data, out, split="test", panels=0)
    window = resolve_hu_window("xprospect")
    size = int(json.loads((data / "manifest.json").read_text())["config"]["size"])
    real_ct = real_ct_case(sample_ct().ct_path, size)
    truth = np.asarray(window_hu(real_ct.hu, window))
    rows = {}
    for name, method in ev.baselines.items():  # fitted once, by evaluate_dataset
        real = evaluate_case(
            truth,
            method(real_ct.case),
            hu_window=window,
            spacing_mm=real_ct.spacing_mm,
            mask=real_ct.mask,
        )
        rows[name] = {
            "test": ev.summary[name],
            "real_ct": {k: float(v) for k, v in real.items()},
        }
    return rows


VALIDATIONS = 6
"""Validations per run; the best of them (validation PSNR-3D) is the model scored."""


def run_preset(preset: str, data: Path, out: Path, budget_s: float) -> dict:
    """Trains and scores one preset in a fresh process; a finished preset's record in
    ``out/PRESET/result.json`` is reused when its budget and dataset match (a long benchmark
    can be run in parts)."""
    from xprospect.models import PRESETS

    record = out / preset / "result.json"
    key = {"budget_s": budget_s, "data": str(data), "validations": VALIDATIONS}
    if record.exists():
        cached = json.loads(record.read_text())
        if cached.get("key") == key and "error" not in cached["result"]:
            print(f"{preset}: reusing {record}", flush=True)
            return dict(cached["result"], reused=True)
    shutil.rmtree(out / preset, ignore_errors=True)  # a run of other settings, or unfinished
    views = ",".join(PRESETS[preset]["views"][0])
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _WORKER,
            preset,
            str(data),
            str(out / preset),
            str(budget_s),
            views,
            str(VALIDATIONS),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT ") :])
            record.parent.mkdir(parents=True, exist_ok=True)
            record.write_text(json.dumps({"key": key, "result": result}, indent=2) + "\n")
            return result
    lines = (proc.stderr or proc.stdout).strip().splitlines()
    return {"error": lines[-1] if lines else f"exit {proc.returncode}"}


def _mean(block: dict, key: str) -> float:
    value = block.get(key)
    if isinstance(value, dict):
        return float(value.get("mean", float("nan")))
    return float("nan") if value is None else float(value)


def params_128(presets: list[str]) -> dict[str, str]:
    """Each preset's generator + discriminator parameters at 128^3 (the papers' size), built
    once on the CPU (:func:`xprospect.models.presets.list_presets`)."""
    from xprospect.models.presets import list_presets

    return {
        info.name: (
            f"{info.params / 1e6:.2f} + {info.discriminator_params / 1e6:.2f} M"
            if info.discriminator_params
            else f"{info.params / 1e6:.2f} M"
        )
        for info in list_presets(sizes=(128,), names=presets)
    }


def table(rows: dict, at_128: dict[str, str] | None = None) -> str:
    at_128 = at_128 or {}
    head = (
        "| model | params G + D | at 128^3 | paper's | steps | step s | peak RSS GiB | PSNR-3D "
        "| PSNR-2D | SSIM-3D | SSIM-2D | MAE | lung Dice | real CT PSNR-3D | real CT SSIM-3D |"
    )
    lines = [head, "|" + "---|" * 15]
    for name, r in rows.items():
        paper = f"{at_128.get(name, '-')} | {PAPER_PARAMS.get(name, '-')}"
        if "error" in r:
            lines.append(f"| {name} | error: {r['error']} | {paper} |" + " |" * 11)
            continue
        test, real = r["test"], r["real_ct"]
        params = (
            f"{(r['params_generator'] + r['params_discriminator']) / 1e6:.1f} M"
            if "params_generator" in r
            else "-"
        )
        steps = r.get("steps", "-")
        if r.get("best_step") is not None:
            steps = f"{steps} (best {r['best_step']})"
        step_s = f"{r['step_s']:.2f}" if "step_s" in r else "-"
        rss = f"{r['peak_rss_gib']:.2f}" if "peak_rss_gib" in r else "-"
        cells = [f"{_mean(test, m):.4f}" for m in METRICS]
        lines.append(
            f"| {name} | {params} | {paper} | {steps} | {step_s} | {rss} | "
            + " | ".join(cells)
            + f" | {_mean(real, 'psnr_3d'):.2f} | {_mean(real, 'ssim_3d'):.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--budget-s", type=float, default=120.0, help="training seconds per model")
    parser.add_argument("--train-cases", type=int, default=100)
    parser.add_argument("--val-cases", type=int, default=5)
    parser.add_argument("--test-cases", type=int, default=10)
    parser.add_argument("--presets", nargs="+", default=list(PRESETS))
    parser.add_argument("--workdir", default="/tmp/xprospect_bench_models")
    parser.add_argument(
        "--output",
        default=str(RESULTS / "bench_models.json"),
        help="JSON path (the Markdown table beside it)",
    )
    args = parser.parse_args()

    work = Path(args.workdir)
    data = work / f"data{args.size}"
    t0 = time.perf_counter()
    build_dataset(data, args.size, args.train_cases, args.val_cases, args.test_cases)
    print(f"dataset {data} ready ({time.perf_counter() - t0:.0f} s)", flush=True)
    rows: dict = {}
    for preset in args.presets:
        r = run_preset(preset, data, work / "runs", args.budget_s)
        rows[preset] = r
        if "error" in r:
            print(f"{preset}: error: {r['error']}", flush=True)
        else:
            print(
                f"{preset:<12} {r['steps']:>5} steps x {r['step_s']:.2f} s  test PSNR-3D "
                f"{_mean(r['test'], 'psnr_3d'):.2f}  SSIM-3D {_mean(r['test'], 'ssim_3d'):.3f}  "
                f"real CT PSNR-3D {r['real_ct']['psnr_3d']:.2f}  peak RSS "
                f"{r['peak_rss_gib']:.2f} GiB",
                flush=True,
            )
    at_128 = params_128([p for p in args.presets if p in PAPER_PARAMS])
    rows.update(baselines(data, work / "baselines"))
    text = table(rows, at_128)
    print(text)
    command = (
        f"python benchmarks/bench_models.py --size {args.size} --budget-s {args.budget_s:g} "
        f"--train-cases {args.train_cases} --val-cases {args.val_cases} "
        f"--test-cases {args.test_cases}"
        + (f" --presets {' '.join(args.presets)}" if list(args.presets) != list(PRESETS) else "")
    )
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    missing = [p for p in PRESETS if p not in args.presets]
    out.write_text(
        json.dumps(
            {
                "command": command,
                "rows": rows,
                "params_at_128": at_128,
                "paper_params": PAPER_PARAMS,
                "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version()},
                "total_s": time.perf_counter() - t0,
                "validations": VALIDATIONS,
                "not_run": missing,
            },
            indent=2,
        )
        + "\n"
    )
    out.with_suffix(".md").write_text(
        f"# Model families side by side ({args.size}^3 phantoms, {args.budget_s:g} s of CPU "
        f"training each)\n\nCommand: `{command}`\n\n{text}\n\nReal CT columns: the LIDC chest "
        "CT reconstructed from its own X2CT DRRs, every row (model or baseline) scored inside "
        "its validity mask (`xprospect.evaluation.real_ct_case`). Each model is validated "
        f"{VALIDATIONS} times in its run and scored with the weights of its best validation "
        "PSNR-3D (steps: run (best)).\n"
        + (f"\nNot run with this budget yet: {', '.join(missing)}.\n" if missing else "")
    )
    print(f"wrote {out} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
