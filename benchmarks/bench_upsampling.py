"""Issue 17's upsampling modes side by side: parameters, training-step time and checkerboard.

For each preset (default ``512-Dense``) and each ``upsampling`` mode (``transpose``, the papers';
``resize_conv``; ``subpixel``) the generator is built at ``--size`` (default 32^3) with the
preset's own widths, each mode in its own process (so one mode's compiled graphs and memory do
not weigh on the next). Reported: parameters; the median time of ``--steps`` training steps
(forward, MSE against a random target, backward, Adam update; one ``tf.function``, batch 1,
float32) after two warm-up steps; and the checkerboard of the untrained prediction: the fraction
of the energy (mean removed) at the Nyquist frequency along each axis, averaged over the three
axes (0 for a volume with no period-2 component), on phantom-like smooth X-rays.

The step times are wall-clock on whatever machine runs this; say which when quoting them.

Run: ``.venv/bin/python benchmarks/bench_upsampling.py [--presets 512-Dense] [--size 32]
[--steps 5]``. Prints a table and writes ``benchmarks/results/bench_upsampling.json`` and
``bench_upsampling.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parent.parent
MODES = ("transpose", "resize_conv", "subpixel")


def nyquist_fraction(volume: Any) -> float:
    """Mean over the three spatial axes of the energy fraction at Nyquist (mean removed)."""
    import numpy as np

    y = np.asarray(volume, np.float64)[0, ..., 0]
    y = y - y.mean()
    total = float(np.sum(y**2))
    fractions = []
    for axis in range(3):
        n = y.shape[axis]
        nyquist = np.take(np.fft.fft(y, axis=axis), n // 2, axis=axis)
        fractions.append(float(np.sum(np.abs(nyquist) ** 2)) / (n * total))
    return float(np.mean(fractions))


def worker(preset: str, mode: str, size: int, steps: int) -> dict[str, Any]:
    """One preset and mode in this process: parameters, step times, checkerboard at init."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np
    import tensorflow as tf

    from xprospect.models import build_model

    keras.utils.set_random_seed(0)
    model = build_model(preset, size=size, upsampling=mode)
    grid = np.linspace(0.0, 1.0, size, dtype=np.float32)
    image = 0.5 + 0.4 * np.sin(3 * grid[:, None]) * np.cos(2 * grid[None, :])
    x = {name: image[None, :, :, None] for name in model.input}
    target = np.random.default_rng(1).random((1, size, size, size, 1), dtype=np.float32)
    checkerboard = nyquist_fraction(model(x, training=False))
    optimizer = keras.optimizers.Adam(1e-4)

    @tf.function
    def step() -> Any:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x, training=True) - target))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return loss

    for _ in range(2):
        step().numpy()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step().numpy()
        times.append(time.perf_counter() - start)
    return {
        "preset": preset,
        "mode": mode,
        "size": size,
        "params": int(model.count_params()),
        "step_s_median": float(np.median(times)),
        "step_s": times,
        "nyquist_fraction_at_init": checkerboard,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["512-Dense"])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--worker", nargs=2, metavar=("PRESET", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.size, args.steps)))
        return
    rows = []
    for preset in args.presets:
        for mode in MODES:
            cmd = [sys.executable, __file__, "--worker", preset, mode]
            cmd += ["--size", str(args.size), "--steps", str(args.steps)]
            # The worker imports this checkout's package, not an installed one.
            env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
            if done.returncode:
                sys.exit(f"{preset} {mode}: worker failed\n{done.stderr[-2000:]}")
            out = done.stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(rows[-1])
    meta = {"machine": platform.node(), "cpus": os.cpu_count(), "date": time.strftime("%F")}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_upsampling.json").write_text(
        json.dumps({"meta": meta, "rows": rows}, indent=1)
    )
    lines = [
        f"Upsampling modes at {args.size}^3, batch 1, float32, median of {args.steps} steps "
        f"({meta['cpus']} CPUs, {meta['date']}; `benchmarks/bench_upsampling.py`).",
        "",
        "| preset | upsampling | parameters | step (s) | Nyquist energy at init |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['preset']} | {r['mode']} | {r['params']:,} | {r['step_s_median']:.3f} | "
            f"{r['nyquist_fraction_at_init']:.2e} |"
        )
    (RESULTS / "bench_upsampling.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
