"""Each preset's train step under the JAX backend on a GPU: step time and device memory, float32
against bfloat16.

For a machine with a GPU, JAX and no TensorFlow (the trainer is TensorFlow; the models and losses
are ``keras.ops`` and run on JAX). Each (preset, precision) runs in a fresh process with
``KERAS_BACKEND=jax``, so that its peak device memory is its own and an out-of-memory error ends
only that row: the preset's generator is built at ``--size`` (128: X-rays 128^2, volumes 128^3),
batch ``--batch``, with its training defaults (``xprospect.config.presets``: loss weights,
optimizer, learning rate and betas). One step is forward + backward + optimizer update, one
jitted function: for a GAN preset, the generator's step with the adversarial term through its
discriminator and then the discriminator's step (LSGAN or BCE, its loss weight), as the trainer
does. The masked terms get a random lung mask; the perceptual term (S-XR2CT) a randomly
initialised VGG16 (the cost of ImageNet weights, nothing downloaded). Not included: gradient
accumulation (DuoLift accumulates 4 steps: a row is one of them) and learning-rate schedules.
XctDiff has a row per training stage: ``vqgan`` (the autoencoder, MAE + Eq. 2's codebook term;
without its GAN term), ``encoder`` (the progressive encoder against the frozen VQ-GAN encoder)
and ``ldm`` (the latent UNet, Eq. 7).

After ``--warmup`` steps (the first compiles) the median and range of ``--steps`` steps are
reported, with the device's peak memory (``jax.Device.memory_stats()["peak_bytes_in_use"]``,
where the platform reports it: GPUs do, CPUs do not). bf16 is Keras' ``mixed_bfloat16`` policy
(float32 weights, bfloat16 computation; no loss scaling needed). A configuration that runs out
of memory is an ``OOM`` row, not a crash.

Run on the GPU machine::

    python benchmarks/gpu_check.py                      # every preset, 128^3, fp32 and bf16
    python benchmarks/gpu_check.py --presets X2CT-GAN 512-Dense --size 64 --steps 10

It writes ``benchmarks/results/gpu_check.json`` and ``.md`` (``--out PATH`` writes ``PATH.json``
and ``PATH.md``). On a CPU it runs too (``--size 32``), to check that it works.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "gpu_check"
PRECISIONS = ("fp32", "bf16")
XCTDIFF_STAGES = ("vqgan", "encoder", "ldm")
_OOM_MARKERS = ("RESOURCE_EXHAUSTED", "Out of memory", "out of memory", "OOM")
_ROW_PREFIX = "GPU_CHECK_ROW "


# === One configuration (runs in its own process) ===


def _optimizer(defaults: dict[str, Any]) -> Any:
    import keras

    cls = {"adam": keras.optimizers.Adam, "nadam": keras.optimizers.Nadam}[defaults["optimizer"]]
    return cls(
        learning_rate=defaults["learning_rate"],
        beta_1=defaults.get("beta_1", 0.9),
        beta_2=defaults.get("beta_2", 0.999),
    )


def _random_inputs(model: Any, batch: int, seed: int = 0) -> dict[str, Any]:
    import numpy as np

    rng = np.random.default_rng(seed)
    return {
        spec.name: rng.random((batch, *spec.shape[1:]), dtype=np.float32) for spec in model.inputs
    }


class _Optimized:
    """A network's variables and optimizer state as the arrays a jitted step passes around."""

    def __init__(self, model: Any, defaults: dict[str, Any]) -> None:
        self.model = model
        self.optimizer = _optimizer(defaults)
        self.optimizer.build(model.trainable_variables)

    def state(self) -> tuple[list[Any], list[Any], list[Any]]:
        return (
            [v.value for v in self.model.trainable_variables],
            [v.value for v in self.model.non_trainable_variables],
            [v.value for v in self.optimizer.variables],
        )

    def params(self) -> int:
        return int(self.model.count_params())


def _reconstruction(weights: dict[str, float], size: int) -> Any:
    """``loss(y, pred, mask) -> scalar``: the preset's weighted terms but the adversarial one."""
    from keras import ops

    from xprospect import losses

    perceptual = None
    if "perceptual" in weights:
        from xprospect.perceptual import PerceptualLoss

        perceptual = PerceptualLoss(weights=None)

    def loss(y: Any, pred: Any, mask: Any) -> Any:
        total = 0.0
        for term, w in weights.items():
            if term in losses.LOSS_TERMS:
                total = total + w * ops.mean(losses.LOSS_TERMS[term](y, pred))
            elif term in losses.MASKED_TERMS:
                total = total + w * ops.mean(losses.MASKED_TERMS[term](y, pred, mask))
            elif term == "perceptual" and perceptual is not None:
                total = total + w * ops.mean(perceptual.call(y, pred))
        return total

    return loss


def _gan_step(preset: str, size: int, batch: int) -> tuple[Any, tuple[Any, ...], dict[str, int]]:
    """The jitted step of a generator (and its discriminator) preset, its arguments, params."""
    import jax
    import numpy as np
    from keras import ops

    from xprospect import losses
    from xprospect.config.presets import preset_training_defaults
    from xprospect.models import build_discriminator, build_model

    defaults = preset_training_defaults(preset)
    weights = dict(defaults["loss_weights"])
    w_adv = weights.pop("adversarial", 0.0)
    recon = _reconstruction(weights, size)
    g = _Optimized(build_model(preset, size=size), defaults)
    disc = build_discriminator(preset, size=size)
    d = _Optimized(disc, defaults) if disc is not None else None
    kind, d_weight = defaults.get("adversarial", "lsgan"), defaults.get("d_loss_weight", 0.5)
    x = _random_inputs(g.model, batch)
    rng = np.random.default_rng(1)
    y = rng.random((batch, size, size, size, 1), dtype=np.float32)
    mask = (rng.random(y.shape) > 0.5).astype(np.float32)

    def g_loss(gtv: Any, gntv: Any, dtv: Any, dntv: Any, x: Any, y: Any, mask: Any) -> Any:
        fake, gntv = g.model.stateless_call(gtv, gntv, x, training=True)
        total = recon(y, fake, mask)
        if d is not None:
            logits, _ = d.model.stateless_call(dtv, dntv, {"volume": fake, **x}, training=True)
            adv = ops.mean(losses.generator_adversarial_per_example(logits, kind))
            total = total + w_adv * adv
        return total, (gntv, fake)

    def d_loss(dtv: Any, dntv: Any, x: Any, y: Any, fake: Any) -> Any:
        real, dntv = d.model.stateless_call(dtv, dntv, {"volume": y, **x}, training=True)  # type: ignore[union-attr]
        fake, dntv = d.model.stateless_call(dtv, dntv, {"volume": fake, **x}, training=True)  # type: ignore[union-attr]
        value = losses.discriminator_loss_per_example(real, fake, kind, d_weight)
        return ops.mean(value), dntv

    def step(gs: Any, ds: Any, x: Any, y: Any, mask: Any) -> Any:
        (gtv, gntv, gov), (dtv, dntv, dov) = gs, ds
        grad_g = jax.value_and_grad(g_loss, has_aux=True)
        (loss, (gntv, fake)), grads = grad_g(gtv, gntv, dtv, dntv, x, y, mask)
        gtv, gov = g.optimizer.stateless_apply(gov, grads, gtv)
        if d is not None:
            fake = jax.lax.stop_gradient(fake)
            (d_value, dntv), d_grads = jax.value_and_grad(d_loss, has_aux=True)(
                dtv, dntv, x, y, fake
            )
            dtv, dov = d.optimizer.stateless_apply(dov, d_grads, dtv)
            loss = loss + d_value
        return loss, (gtv, gntv, gov), (dtv, dntv, dov)

    d_state = d.state() if d is not None else ([], [], [])
    params = {"params_g": g.params(), "params_d": d.params() if d is not None else 0}
    return jax.jit(step, donate_argnums=(0, 1)), (g.state(), d_state, x, y, mask), params


def _stateless(variables: list[Any], fn: Any) -> Any:
    """``fn(*args)`` as a function of the values of ``variables`` (for jax transformations)."""
    import keras

    def wrapped(values: list[Any], *args: Any) -> Any:
        with keras.StatelessScope(state_mapping=list(zip(variables, values, strict=True))):
            return fn(*args)

    return wrapped


def _xctdiff_step(stage: str, size: int, batch: int) -> tuple[Any, tuple[Any, ...], dict[str, int]]:
    """The jitted step of one of XctDiff's training stages (trainable: that stage's network)."""
    import jax
    import numpy as np
    from keras import ops

    from xprospect.config.presets import preset_training_defaults
    from xprospect.models import build_model
    from xprospect.models.xctdiff import diffusion_loss_per_example, zscore

    pipe = build_model("XctDiff", size=size)
    ae, pe, unet = pipe.autoencoder, pipe.prior_encoder, pipe.unet
    rng = np.random.default_rng(1)
    x = {"frontal": rng.random((batch, size, size, 1), dtype=np.float32)}
    y = rng.random((batch, size, size, size, 1), dtype=np.float32)
    schedule = pipe.noise_schedule

    def vqgan(y: Any) -> Any:
        z = ae.encoder(y, training=True)
        zq, idx = ae.quantizer(z)
        recon = ae.decoder(zq, training=True)
        err = ops.mean(ops.abs(ops.cast(recon, "float32") - y))
        return err + ops.mean(ae.quantizer.codebook_loss(z, idx))

    def encoder(x: Any, y: Any) -> Any:
        target = ops.stop_gradient(zscore(ae.encoder(y, training=False)))
        z = pe.features(x, training=True)
        latent = ops.mean(ops.square(zscore(z) - target))
        return latent + ops.mean(pe.quantizer.codebook_loss(z, pe.quantizer.nearest(z)))

    def ldm(x: Any, y: Any, t: Any, noise: Any) -> Any:
        prior = ops.stop_gradient(pe(x, training=False))
        x0, _ = ae.quantizer(ae.encoder(y, training=False))
        x0 = ops.stop_gradient(ops.cast(x0, "float32"))

        def eps_fn(x_t: Any, tt: Any) -> Any:
            return unet({"latent": x_t, "timestep": tt, "prior": prior}, training=True)

        return ops.mean(diffusion_loss_per_example(eps_fn, schedule, x0, t, noise))

    network, fn, args = {
        "vqgan": (ae, vqgan, (y,)),
        "encoder": (pe.features, encoder, (x, y)),
        "ldm": (
            unet,
            ldm,
            (
                x,
                y,
                rng.integers(0, schedule.timesteps, size=(batch,)).astype(np.int32),
                rng.standard_normal((batch, *(pipe.latent_size,) * 3, pipe.code_dim)).astype(
                    np.float32
                ),
            ),
        ),
    }[stage]
    opt = _Optimized(network, preset_training_defaults("XctDiff"))
    loss_fn = _stateless(network.trainable_variables, fn)

    def step(state: Any, *args: Any) -> Any:
        tv, ntv, ov = state
        loss, grads = jax.value_and_grad(loss_fn)(tv, *args)
        tv, ov = opt.optimizer.stateless_apply(ov, grads, tv)
        return loss, (tv, ntv, ov)

    return jax.jit(step, donate_argnums=(0,)), (opt.state(), *args), {"params_g": opt.params()}


def _run_one(preset: str, precision: str, size: int, batch: int, steps: int, warmup: int) -> dict:
    """One configuration's row (in this process, on the JAX backend)."""
    import jax
    import keras

    if keras.backend.backend() != "jax":
        raise RuntimeError(f"needs KERAS_BACKEND=jax, got {keras.backend.backend()}")
    if precision == "bf16":
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    name, _, stage = preset.partition(":")
    start = time.perf_counter()
    if name == "XctDiff":
        step, args, params = _xctdiff_step(stage, size, batch)
    else:
        step, args, params = _gan_step(name, size, batch)
    built = time.perf_counter() - start
    times = []
    first = None
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        loss, *state = step(*args)
        args = (*state, *args[len(state) :])
        jax.block_until_ready(loss)
        took = time.perf_counter() - t0
        if i == 0:
            first = took
        if i >= warmup:
            times.append(took)
        if not bool(jax.numpy.isfinite(loss)):
            raise FloatingPointError(f"loss is {float(loss)} at step {i}")
    device = jax.devices()[0]
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    peak = (stats or {}).get("peak_bytes_in_use")
    return {
        **params,
        "status": "ok",
        "build_s": built,
        "first_step_s": first,
        "step_s": times,
        "median_step_s": statistics.median(times),
        "peak_device_bytes": peak,
        "device_bytes_limit": (stats or {}).get("bytes_limit"),
        "device": f"{device.platform}:{getattr(device, 'device_kind', '')}",
    }


def _worker(argv: list[str]) -> None:
    preset, precision, size, batch, steps, warmup = argv
    try:
        row = _run_one(preset, precision, int(size), int(batch), int(steps), int(warmup))
    except Exception as exc:  # a row, not a crash: out of memory and any other failure
        text = f"{type(exc).__name__}: {exc}"
        status = "OOM" if any(m in text for m in _OOM_MARKERS) else "error"
        row = {"status": status, "message": text.splitlines()[0][:300] if text else ""}
    print(_ROW_PREFIX + json.dumps(row), flush=True)


# === The table ===


def configurations(presets: list[str]) -> list[str]:
    """Rows to run: presets, XctDiff expanded into ``XctDiff:<stage>``."""
    rows = []
    for name in presets:
        rows.extend(f"XctDiff:{s}" for s in XCTDIFF_STAGES) if name == "XctDiff" else rows.append(
            name
        )
    return rows


def run_configuration(preset: str, precision: str, args: argparse.Namespace) -> dict[str, Any]:
    """One row, in a fresh process with ``KERAS_BACKEND=jax``."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        preset,
        precision,
        str(args.size),
        str(args.batch),
        str(args.steps),
        str(args.warmup),
    ]
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=env, timeout=args.timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "message": f"over {args.timeout} s"}
    for line in proc.stdout.splitlines():
        if line.startswith(_ROW_PREFIX):
            return dict(json.loads(line[len(_ROW_PREFIX) :]))
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
    # Killed by the system (out of host or device memory) or crashed without a row.
    status = (
        "OOM"
        if proc.returncode in (-9, 137) or any(m in tail[0] for m in _OOM_MARKERS)
        else "error"
    )
    return {"status": status, "message": f"exit {proc.returncode}: {tail[0][:300]}"}


def _gib(value: Any) -> str:
    return "" if value is None else f"{value / 1024**3:.2f}"


def markdown(result: dict[str, Any]) -> str:
    """The Markdown table of a result (one row per preset and precision)."""
    lines = [
        f"# gpu_check: one train step per preset under JAX, {result['size']}^3, batch "
        f"{result['batch']}",
        "",
        f"Device: {result['device']}; jax {result['jax']}, keras {result['keras']}; "
        f"{result['date']}. Command: `{result['command']}`",
        "",
        "| preset | precision | status | params G / D | first step (compile) | median step | "
        "range | peak device memory GiB | bf16 speed-up |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    by_key = {(r["preset"], r["precision"]): r for r in result["rows"]}
    for row in result["rows"]:
        if row["status"] != "ok":
            lines.append(
                f"| {row['preset']} | {row['precision']} | {row['status']} | | | | | | "
                f"{row.get('message', '')} |"
            )
            continue
        fp32 = by_key.get((row["preset"], "fp32"), {})
        speedup = ""
        if row["precision"] == "bf16" and fp32.get("status") == "ok":
            speedup = f"{fp32['median_step_s'] / row['median_step_s']:.2f}x"
        params = f"{row['params_g'] / 1e6:.2f} M"
        if row.get("params_d"):
            params += f" / {row['params_d'] / 1e6:.2f} M"
        lines.append(
            f"| {row['preset']} | {row['precision']} | ok | {params} | "
            f"{row['first_step_s']:.2f} s | {row['median_step_s'] * 1e3:.1f} ms | "
            f"{min(row['step_s']) * 1e3:.1f}-{max(row['step_s']) * 1e3:.1f} ms | "
            f"{_gib(row['peak_device_bytes'])} | {speedup} |"
        )
    return "\n".join(lines) + "\n"


def _versions() -> dict[str, str]:
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    code = (
        "import json, jax, keras; d = jax.devices()[0]; print(json.dumps({'jax': jax.__version__,"
        " 'keras': keras.__version__, 'device': f\"{d.platform}:{getattr(d, 'device_kind', '')}"
        ' x{len(jax.devices())}"}))'
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        _worker(argv[1:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="cube edge (default 128)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--presets", nargs="+", default=None, help="default: every preset")
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    parser.add_argument("--steps", type=int, default=5, help="timed steps (median)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (compile)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per configuration")
    parser.add_argument("--out", type=Path, default=RESULTS, help="writes OUT.json and OUT.md")
    args = parser.parse_args(argv)
    os.environ["KERAS_BACKEND"] = "jax"
    from xprospect.models import PRESETS, canonical_preset

    presets = list(PRESETS) if args.presets is None else [canonical_preset(p) for p in args.presets]
    result: dict[str, Any] = {
        "command": "python benchmarks/gpu_check.py " + " ".join(argv),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "size": args.size,
        "batch": args.batch,
        **_versions(),
        "rows": [],
    }
    for preset in configurations(presets):
        for precision in args.precisions:
            row = {"preset": preset, "precision": precision}
            row.update(run_configuration(preset, precision, args))
            result["rows"].append(row)
            took = row.get("median_step_s")
            print(
                f"{preset:18s} {precision}: {row['status']}"
                + (f", median step {took * 1e3:.1f} ms" if took is not None else "")
                + (
                    f", peak {_gib(row.get('peak_device_bytes'))} GiB"
                    if row.get("peak_device_bytes")
                    else ""
                ),
                flush=True,
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
