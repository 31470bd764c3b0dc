"""Train-step time per preset (64^3, 128^3; float32 vs bfloat16), peak memory, predict latency.

Each (preset, size, precision) runs in a fresh Python process, so its peak resident memory
(``ru_maxrss``) is its own: the model is built with the preset's defaults, compiled with its
training loss and optimizer (no XLA: it slows Conv3D on this CPU), warmed up, then timed over
``--steps`` train steps on random inputs of the right shapes (batch 1); medians are reported.
Predict latency is timed at 128^3 (float32, batch 1). Two probes show how much bf16 can give on
this CPU at all: single Keras layers (Conv3D at 16, 32 and 64 channels, SELU) timed in float32 and
bfloat16, and a TF-profiler breakdown of one 512-Dense train step at 64^3 by op group (3D
convolution forward, backprop to the input, backprop to the filter, SELU, everything else). The
whole step cannot gain more than its convolutions do (``conv_only_speedup``).

Targets (issue 4): bf16 >= 2x faster than float32 per train step; peak RSS at 128^3, batch 1
<= 6 GiB for 512-Dense and 512-ProjInj (the paper reports about 25 and 32 GiB on its GPU).

Run: ``.venv/bin/python benchmarks/bench_train.py [--steps 5] [--sizes 64 128]``. Prints a table
and writes ``benchmarks/results/bench_train.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "bench_train.json"
PRESETS = ("64-Dense", "512-Dense", "512-Dense-MAE", "512-ProjInj")
BF16_TARGET_X = 2.0
RSS_TARGET_GIB = 6.0

_WORKER = r"""
import json, resource, statistics, sys, time
import numpy as np
preset, size, precision = sys.argv[1], int(sys.argv[2]), sys.argv[3]
steps, predict = int(sys.argv[4]), sys.argv[5] == "1"
import keras
from xprospect.config.presets import preset_training_defaults
from xprospect.models import build_model
from xprospect.losses import build_loss
if precision == "bf16":
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
model = build_model(preset, size=size)
train_cfg = preset_training_defaults(preset)
opt = {"adam": keras.optimizers.Adam, "nadam": keras.optimizers.Nadam}[train_cfg["optimizer"]](
    learning_rate=train_cfg["learning_rate"])
model.compile(optimizer=opt, loss=build_loss(train_cfg["loss_weights"]), jit_compile=False)
rng = np.random.default_rng(0)
x = {i.name.split(":")[0]: rng.random((1, *i.shape[1:]), dtype=np.float32) for i in model.inputs}
y = rng.random((1, size, size, size, 1), dtype=np.float32)
for _ in range(2):
    model.train_on_batch(x, y)
times = []
for _ in range(steps):
    t0 = time.perf_counter(); model.train_on_batch(x, y); times.append(time.perf_counter() - t0)
out = {"step_s": times, "median_step_s": statistics.median(times), "params": model.count_params()}
if predict:
    keras.mixed_precision.set_global_policy("float32")
    m = build_model(preset, size=size)
    m.predict_on_batch(x)
    lat = []
    for _ in range(steps):
        t0 = time.perf_counter(); m.predict_on_batch(x); lat.append(time.perf_counter() - t0)
    out["predict_s"] = lat
    out["median_predict_s"] = statistics.median(lat)
out["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
print("RESULT " + json.dumps(out))
"""


_PROBE = r"""
import json, statistics, sys, time
import numpy as np, keras
def bench(make, shape, policy, n=5):
    keras.mixed_precision.set_global_policy(policy)
    inp = keras.Input(shape[1:])
    out = keras.layers.Activation("linear", dtype="float32")(make()(inp))
    m = keras.Model(inp, out)
    m.compile(optimizer="adam", loss="mae", jit_compile=False)
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    y = np.asarray(m(x)).astype("float32")
    for _ in range(2):
        m.train_on_batch(x, y)
    ts = []
    for _ in range(n):
        t0 = time.perf_counter(); m.train_on_batch(x, y); ts.append(time.perf_counter() - t0)
    keras.mixed_precision.set_global_policy("float32")
    return statistics.median(ts)
conv = lambda c, act=None: (lambda: keras.layers.Conv3D(c, 3, padding="same", activation=act))
cases = {"conv3d 16ch selu 64^3": (conv(16, "selu"), (1, 64, 64, 64, 16)),
         "conv3d 32ch relu 64^3": (conv(32, "relu"), (1, 64, 64, 64, 32)),
         "conv3d 64ch 32^3": (conv(64), (1, 32, 32, 32, 64))}
out = {}
for name, (mk, shape) in cases.items():
    a, b = bench(mk, shape, "float32"), bench(mk, shape, "mixed_bfloat16")
    out[name] = {"fp32_s": a, "bf16_s": b, "speedup": a / b}
print("RESULT " + json.dumps(out))
"""


def conv_probe() -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env, check=False
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    lines = (proc.stderr or proc.stdout).strip().splitlines()
    return {"error": lines[-1] if lines else f"exit {proc.returncode}"}


def run_one(preset: str, size: int, precision: str, steps: int, predict: bool) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _WORKER,
            preset,
            str(size),
            precision,
            str(steps),
            "1" if predict else "0",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    lines = (proc.stderr or proc.stdout).strip().splitlines()
    return {"error": lines[-1] if lines else f"exit {proc.returncode}"}


_PROFILE = r"""
import collections, glob, json, os, sys, tempfile
import numpy as np, keras, tensorflow as tf
from tensorflow.tsl.profiler.protobuf import xplane_pb2
from xprospect.config.presets import preset_training_defaults
from xprospect.models import build_model
from xprospect.losses import build_loss
preset, size, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
GROUPS = {"Conv3DBackpropFilter": "conv3d backprop filter", "Conv3DBackpropInput":
          "conv3d backprop input", "Conv3D": "conv3d forward", "Selu": "selu (+grad)"}
out = {}
for precision in ("fp32", "bf16"):
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if precision == "bf16" else "float32")
    model = build_model(preset, size=size)
    tc = preset_training_defaults(preset)
    model.compile(optimizer=keras.optimizers.Nadam(tc["learning_rate"]),
                  loss=build_loss(tc["loss_weights"]), jit_compile=False)
    rng = np.random.default_rng(0)
    x = {i.name.split(":")[0]: rng.random((1, *i.shape[1:]), dtype=np.float32)
         for i in model.inputs}
    y = rng.random((1, size, size, size, 1), dtype=np.float32)
    for _ in range(2):
        model.train_on_batch(x, y)
    logdir = tempfile.mkdtemp()
    tf.profiler.experimental.start(logdir)
    for _ in range(steps):
        model.train_on_batch(x, y)
    tf.profiler.experimental.stop()
    space = xplane_pb2.XSpace()
    trace = glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True)[0]
    space.ParseFromString(open(trace, "rb").read())
    agg = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for ev in line.events:
                op = plane.event_metadata[ev.metadata_id].name.split(":")[-1]
                if op == "Process":
                    continue
                group = next((g for k, g in GROUPS.items() if k in op), "everything else")
                agg[group] += ev.duration_ps / 1e9 / steps
    out[precision] = dict(agg)
print("RESULT " + json.dumps(out))
"""


def op_profile(preset: str = "512-Dense", size: int = 64, steps: int = 3) -> dict:
    """Thread-milliseconds per train step by op group (TF profiler), float32 and bfloat16."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, "-c", _PROFILE, preset, str(size), str(steps)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            prof = json.loads(line[len("RESULT ") :])
            groups = sorted(set(prof["fp32"]) | set(prof["bf16"]))
            table = {
                g: {
                    "fp32_ms": prof["fp32"].get(g, 0.0),
                    "bf16_ms": prof["bf16"].get(g, 0.0),
                }
                for g in groups
            }
            conv = [g for g in groups if g.startswith("conv3d")]
            f32 = sum(table[g]["fp32_ms"] for g in conv)
            b16 = sum(table[g]["bf16_ms"] for g in conv)
            return {
                "preset": preset,
                "size": size,
                "groups": table,
                # The best a step could gain if everything but the 3D convolutions were free.
                "conv_only_speedup": f32 / b16 if b16 else None,
            }
    lines = (proc.stderr or proc.stdout).strip().splitlines()
    return {"error": lines[-1] if lines else f"exit {proc.returncode}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--presets", nargs="+", default=list(PRESETS))
    parser.add_argument("--probe-only", action="store_true", help="only the single-layer probe")
    parser.add_argument("--skip-probes", action="store_true", help="no layer probe or op profile")
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON file to write")
    args = parser.parse_args()
    probe = {} if args.skip_probes else conv_probe()
    for name, r in probe.items():
        if isinstance(r, dict):
            print(
                f"probe {name:24} fp32 {r['fp32_s'] * 1000:7.1f} ms  bf16 "
                f"{r['bf16_s'] * 1000:7.1f} ms  x{r['speedup']:.2f}",
                flush=True,
            )
    profile = {} if args.skip_probes else op_profile()
    if "groups" in profile:
        print(f"op profile {profile['preset']} {profile['size']}^3, thread-ms per train step:")
        for g, r in profile["groups"].items():
            sp = r["fp32_ms"] / r["bf16_ms"] if r["bf16_ms"] else float("nan")
            print(f"  {g:24} fp32 {r['fp32_ms']:8.1f}  bf16 {r['bf16_ms']:8.1f}  x{sp:.2f}")
        print(f"  3D convolutions alone: x{profile['conv_only_speedup']:.2f}", flush=True)
    elif profile:
        print(f"op profile error: {profile.get('error')}")
    rows = []
    for size in [] if args.probe_only else args.sizes:
        for preset in args.presets:
            row = {"preset": preset, "size": size}
            for precision in ("fp32", "bf16"):
                predict = size == 128 and precision == "fp32"
                row[precision] = run_one(preset, size, precision, args.steps, predict)
            rows.append(row)
            f32, b16 = row["fp32"], row["bf16"]
            if "error" in f32 or "error" in b16:
                print(f"{preset:<14} {size:>4}  error: {f32.get('error') or b16.get('error')}")
                continue
            row["bf16_speedup"] = f32["median_step_s"] / b16["median_step_s"]
            lat = f"{f32['median_predict_s'] * 1000:8.0f} ms" if "median_predict_s" in f32 else ""
            print(
                f"{preset:<14} {size:>4}  params {f32['params']:>11,}  step fp32 "
                f"{f32['median_step_s']:7.3f} s  bf16 {b16['median_step_s']:7.3f} s  "
                f"x{row['bf16_speedup']:.2f}  peak RSS fp32 {f32['peak_rss_gib']:.2f} GiB "
                f"bf16 {b16['peak_rss_gib']:.2f} GiB  {lat}",
                flush=True,
            )
    ok = [r for r in rows if "bf16_speedup" in r]
    speedups = [r["bf16_speedup"] for r in ok]
    rss = {
        f"{r['preset']}@{r['size']}": max(r["fp32"]["peak_rss_gib"], r["bf16"]["peak_rss_gib"])
        for r in ok
        if r["size"] == 128 and r["preset"] in ("512-Dense", "512-ProjInj")
    }
    if speedups:
        print(
            f"bf16 speed-up: median {statistics.median(speedups):.2f}x, min {min(speedups):.2f}x "
            f"(target >= {BF16_TARGET_X}x)"
        )
    for k, v in rss.items():
        print(
            f"peak RSS {k}: {v:.2f} GiB (target <= {RSS_TARGET_GIB} GiB: "
            f"{'met' if v <= RSS_TARGET_GIB else 'MISSED'})"
        )
    if args.probe_only:
        return
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "layer_probe": probe,
                "op_profile": profile,
                "command": "python benchmarks/bench_train.py " + " ".join(sys.argv[1:]),
                "rows": rows,
                "bf16_speedup_median": statistics.median(speedups) if speedups else None,
                "peak_rss_gib_128": rss,
                "targets": {"bf16_speedup_x": BF16_TARGET_X, "peak_rss_gib": RSS_TARGET_GIB},
                "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version()},
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
