"""Compute per preset at a size: FLOPs of a training step, activation memory, GPU estimates.

For each preset a fresh process builds the generator (and the discriminator of a GAN) at
``--size`` and traces one forward pass at batch 1 into a TensorFlow graph, whose floating-point
operations the TF profiler counts (Conv3D, MatMul, ... as TF registers them; transposed 3D
convolutions, which TF does not register, as ``2 x |input| x |filter| / C_in``). A training step
costs about ``3 F_G`` (forward + backward) for a CNN and ``3 F_G + 9 F_D`` for a GAN (the G step
runs D forward and backward on the fake, the D step on real and fake), times the preset's gradient
accumulation. Loss networks (S-XR2CT's VGG16 perceptual term) are not counted.

Memory: parameters with their gradients and Adam's two moments (16 bytes each), plus the
activations a backward pass keeps, estimated by the float32 outputs of every op of the forward
graph (an upper estimate: some are views or freed early). Time per epoch on a GPU is the epoch's
FLOPs at an assumed sustained ``--gpu-tflops`` (default 30: about a fifth of an A100's TF32 peak,
what batch-1 3D convolutions reach); the measured CPU step times of this machine are in
``docs/reproducing.md``.

Cost per FLOP: at the size ``bench_models.py`` trains at (64), the table adds each preset's
measured CPU step time from ``benchmarks/results/bench_models.json`` divided by the step's FLOPs
(cases per step x TFLOP per case), so presets of very different sizes compare by how well this
machine runs their work (issue 16: DuoLift's step should cost no more per GFLOP than X2CT-CNN+B's).

Run: ``.venv/bin/python benchmarks/bench_compute.py [--size 128] [--presets ...]``. Prints a table
and writes ``benchmarks/results/bench_compute.json`` and ``bench_compute.md`` (at another size than
128: ``bench_compute_<size>.{json,md}``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
PRESETS = (
    "64-Dense",
    "512-Dense",
    "512-ProjInj",
    "X2CT-CNN+B",
    "X2CT-GAN",
    "CVAA-GAN",
    "DuoLift-CNN",
    "DuoLift-GAN",
    "S-XR2CT",
)
# Training cases of the data set each preset's paper trained on (one epoch = this many cases).
EPOCH_CASES = {
    "64-Dense": 2904,  # XprospeCT: 80 % of 3,630 Rad-ChestCT scans
    "512-Dense": 2904,
    "512-ProjInj": 2904,
    "X2CT-CNN+B": 916,  # X2CT-GAN: LIDC-IDRI 916 train
    "X2CT-GAN": 916,
    "CVAA-GAN": 212,  # CVAA-GAN: 212 lumbar CTs
    "DuoLift-CNN": 816,  # DuoLift-GAN: 816 train of X2CT's 916
    "DuoLift-GAN": 816,
    "S-XR2CT": 868,  # S-XR2CT: 868 train
}

_WORKER = r"""
import json, sys
import numpy as np, tensorflow as tf
from tensorflow.python.framework import graph_util, ops as tfops
from tensorflow.python.profiler.model_analyzer import profile
from tensorflow.python.profiler.option_builder import ProfileOptionBuilder
from xprospect.config.presets import preset_training_defaults
from xprospect.models import build_discriminator, build_model

@tfops.RegisterStatistics("Conv3DBackpropInputV2", "flops")
def _transposed(graph, node):
    filt = graph_util.tensor_shape_from_node_def_name(graph, node.input[1])
    grad = graph_util.tensor_shape_from_node_def_name(graph, node.input[2])
    return tfops.OpStats("flops", 2 * grad.num_elements() * int(np.prod(filt.as_list()[:-1])))

SKIP = {"Const", "ReadVariableOp", "VarHandleOp", "Placeholder", "Identity", "NoOp"}

def measure(m):
    specs = [tf.TensorSpec((1, *i.shape[1:]), tf.float32) for i in m.inputs]
    names = [i.name.split(":")[0] for i in m.inputs]
    as_dict = isinstance(m.input, dict) or len(specs) > 1
    @tf.function
    def fwd(*xs):
        return m(dict(zip(names, xs)) if as_dict else xs[0], training=False)
    graph = fwd.get_concrete_function(*specs).graph
    opts = ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    flops = profile(graph, options=opts).total_float_ops
    act = 0
    for op in graph.get_operations():
        if op.type in SKIP:
            continue
        for t in op.outputs:
            if t.dtype.is_floating and t.shape.is_fully_defined():
                act += t.shape.num_elements() * t.dtype.size
    return flops, act, m.count_params()

preset, size = sys.argv[1], int(sys.argv[2])
out = {"preset": preset, "size": size}
out["g_flops"], out["g_activation_bytes"], out["g_params"] = measure(build_model(preset, size=size))
d = build_discriminator(preset, size=size)
if d is not None:
    out["d_flops"], out["d_activation_bytes"], out["d_params"] = measure(d)
out["grad_accum_steps"] = int(preset_training_defaults(preset).get("grad_accum_steps") or 1)
print("RESULT " + json.dumps(out))
"""


def run_one(preset: str, size: int) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, "-c", _WORKER, preset, str(size)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    lines = (proc.stderr or proc.stdout).strip().splitlines()
    return {"preset": preset, "error": lines[-1] if lines else f"exit {proc.returncode}"}


def derive(row: dict, gpu_tflops: float) -> dict:
    """Step FLOPs, memory and GPU time per epoch from one worker's counts."""
    f_g, f_d = row["g_flops"], row.get("d_flops", 0)
    per_case = 3 * f_g + 9 * f_d
    params = row["g_params"] + row.get("d_params", 0)
    memory = 16 * params + row["g_activation_bytes"] + row.get("d_activation_bytes", 0)
    cases = EPOCH_CASES.get(row["preset"], 0)
    return {
        "train_tflop_per_case": per_case / 1e12,
        "train_tflop_per_step": per_case * row["grad_accum_steps"] / 1e12,
        "memory_gib": memory / 1024**3,
        "epoch_cases": cases,
        "gpu_min_per_epoch": cases * per_case / (gpu_tflops * 1e12) / 60,
    }


def markdown(rows: list[dict], size: int, gpu_tflops: float, command: str) -> str:
    lines = [
        f"# Training compute per preset at {size}^3 (batch 1, float32)",
        "",
        f"Command: `{command}`. GPU time assumes {gpu_tflops:g} TFLOP/s sustained.",
        "",
        "| preset | params G + D | forward GFLOP G / D | TFLOP per case | accum | "
        "memory GiB (est.) | epoch cases | GPU min / epoch (est.) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['preset']} | error: {r['error']} |")
            continue
        params = (r["g_params"] + r.get("d_params", 0)) / 1e6
        fwd = f"{r['g_flops'] / 1e9:.0f} / " + (
            f"{r['d_flops'] / 1e9:.0f}" if "d_flops" in r else "-"
        )
        lines.append(
            f"| {r['preset']} | {params:.1f} M | {fwd} | {r['train_tflop_per_case']:.2f} | "
            f"{r['grad_accum_steps']} | {r['memory_gib']:.1f} | {r['epoch_cases']} | "
            f"{r['gpu_min_per_epoch']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def per_tflop(rows: list[dict], size: int, models_json: Path) -> str:
    """Measured step time per TFLOP of the step, from ``bench_models.json`` at ``size``."""
    if not models_json.exists():
        return ""
    models = json.loads(models_json.read_text())
    measured = models.get("rows", {})
    if f"--size {size} " not in models.get("command", "") + " ":
        return ""
    lines = [
        "",
        f"## Cost per TFLOP on this CPU at {size}^3 (step times: `bench_models.json`, "
        f"`{models.get('command', '')}`)",
        "",
        "| preset | cases per step | TFLOP per step | step s | s per TFLOP | vs X2CT-CNN+B |",
        "|---|---|---|---|---|---|",
    ]
    cost: dict[str, float] = {}
    for r in rows:
        m = measured.get(r["preset"], {})
        if "error" in r or "step_s" not in m:
            continue
        cost[r["preset"]] = m["step_s"] / r["train_tflop_per_step"]
    ref = cost.get("X2CT-CNN+B")
    for r in rows:
        if r["preset"] not in cost:
            continue
        c = cost[r["preset"]]
        rel = f"{c / ref:.2f}x" if ref else "n/a"
        lines.append(
            f"| {r['preset']} | {r['grad_accum_steps']} | {r['train_tflop_per_step']:.3f} | "
            f"{measured[r['preset']]['step_s']:.2f} | {c:.1f} | {rel} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--presets", nargs="+", default=list(PRESETS))
    parser.add_argument("--gpu-tflops", type=float, default=30.0)
    args = parser.parse_args()
    command = "python benchmarks/bench_compute.py " + " ".join(sys.argv[1:])
    rows = []
    for preset in args.presets:
        row = run_one(preset, args.size)
        if "error" not in row:
            row.update(derive(row, args.gpu_tflops))
        rows.append(row)
        print(json.dumps(row), flush=True)
    RESULTS.mkdir(exist_ok=True)
    machine = {"cpu_count": os.cpu_count(), "python": platform.python_version()}
    name = "bench_compute" if args.size == 128 else f"bench_compute_{args.size}"
    (RESULTS / f"{name}.json").write_text(
        json.dumps({"command": command, "machine": machine, "rows": rows}, indent=2) + "\n"
    )
    table = markdown(rows, args.size, args.gpu_tflops, command)
    table += per_tflop(rows, args.size, RESULTS / "bench_models.json")
    (RESULTS / f"{name}.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
