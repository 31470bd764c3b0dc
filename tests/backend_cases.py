"""Every network, loss and metric of the package at a tiny size, run the same way on any Keras
backend: ``tests/test_jax_backend.py`` runs them under TensorFlow (its own process) and under
JAX (one child interpreter, TensorFlow blocked, started first and taking each case as soon as
TensorFlow has saved its weights) and compares the two.

Nothing here imports TensorFlow or JAX at module level: the backend-specific parts (the
gradient) import them inside :func:`value_and_grads` and :func:`loss_grads`, for the backend
that runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import ops

SIZE = 16
"""Cube edge of the 3D networks (XLA's CPU 3D convolution is ~8x slower per voxel than oneDNN's
at 32^3, and every case runs on both backends)."""
STYLE_SIZE = 32
"""Image edge of the style CycleGAN (its 70x70 PatchGAN needs more than 16^2)."""
BATCH = 2

# Narrow widths; the same as the families' own tests (tests/models/, tests/training/test_gan.py).
TINY: dict[str, dict[str, Any]] = {
    "dualunet": {"base_filters": 2, "max_filters": 8},
    # Dropout draws differ between backends: off, so the two runs can be compared.
    "x2ct": {
        "dropout": 0.0,
        "stem_filters": 4,
        "growth_rate": 2,
        "block_layers": (1, 1, 1),
        "bottleneck": 2,
        "grid_filters": 4,
        "decoder_filters": 2,
    },
    "cvaa": {"base_filters": 2, "max_filters": 4, "growth_rate": 2, "dense_layers": 2},
    "duolift": {
        "dropout": 0.0,
        "encoder_filters": 4,
        "encoder_blocks": (1, 1),
        "base_filters": 2,
        "lift_filters": (4, 4, 2),
        "type1_filters": 2,
        "xray_filters": 2,
        "unetpp_filters": 2,
        "unet_filters": 2,
        "max_filters": 8,
        "unet_depth": 2,
        "unetpp_depth": 2,
    },
    "sxr2ct": {
        "base_filters": 2,
        "base_filters_2d": 4,
        "max_filters": 8,
        "depths": (1, 1, 1),
        "num_heads": 2,
        "attention_blocks": 1,
    },
    "xctdiff": {
        "code_dim": 4,
        "num_codes": 64,
        "timesteps": 50,
        "sampling_steps": 2,
        "autoencoder_args": {
            "base_filters": 4,
            "channel_mult": (1, 2),
            "num_res_blocks": 1,
            "groups": 2,
        },
        "prior_encoder_args": {
            "base_filters_2d": 4,
            "base_filters": 4,
            "mlp_hidden": 8,
            "num_res_blocks": 1,
            "groups": 2,
        },
        "unet_args": {
            "base_filters": 8,
            "channel_mult": (1, 2),
            "num_res_blocks": 1,
            "attention_levels": (1,),
            "num_heads": 2,
            "context_dim": 8,
            "groups": 2,
        },
    },
}
TINY_D: dict[str, Any] = {"filters": (2, 3, 4, 4)}


@dataclass(frozen=True)
class Case:
    """One network: how to build it and which scalar its gradient is taken of.

    Attributes:
        name: Case name (a preset, ``<preset>/D`` for its discriminator, or a part's name).
        build: Builds the network (the same weights shapes on every backend).
        loss: ``"volume"`` (the weighted MAE + MSE + projection loss against a random target),
            ``"lsgan"`` / ``"bce"`` (the discriminator loss of its logits), ``"mse"`` (mean
            squared error of every output against random targets) or ``"none"`` (forward only).
        covers: The presets whose network this is.
        zero_grad_ok: Trainable weights (by path) that get no gradient from this scalar, and
            why (every other weight must get one).
        tolerance: How far the two backends may differ: outputs by ``tolerance`` times their
            largest magnitude, gradients by ten times that of the largest gradient. None: the
            outputs are not compared (random sampling, drawn differently per backend).
    """

    name: str
    build: Callable[[], Any]
    loss: str
    covers: tuple[str, ...] = ()
    zero_grad_ok: dict[str, str] = field(default_factory=dict)
    tolerance: float | None = 1e-4


def _preset(name: str, family: str, **extra: Any) -> Callable[[], Any]:
    def build() -> Any:
        from xprospect.models import build_model

        return build_model(name, size=SIZE, **TINY[family], **extra)

    return build


def _discriminator(name: str) -> Callable[[], Any]:
    def build() -> Any:
        from xprospect.models import build_discriminator

        return build_discriminator(name, size=SIZE, **TINY_D)

    return build


def _xctdiff(part: str) -> Callable[[], Any]:
    def build() -> Any:
        from xprospect.models import xctdiff

        t = TINY["xctdiff"]
        book = {"code_dim": t["code_dim"], "num_codes": t["num_codes"]}
        s = SIZE
        if part == "pipeline":
            return xctdiff.XctDiff(size=s, **t)
        if part == "autoencoder":
            return xctdiff.XctDiffAutoencoder(s, **book, **t["autoencoder_args"])
        if part == "prior_encoder":
            return xctdiff.XctDiffPriorEncoder(s, s // 2, **book, **t["prior_encoder_args"])
        if part == "unet":
            return xctdiff.XctDiffUNet(s // 2, t["code_dim"], **t["unet_args"])
        rank = 3 if part == "discriminator3d" else 2
        return xctdiff.XctDiffDiscriminator(s, rank=rank, base_filters=2, num_layers=2, groups=2)

    return build


def _style(part: str, **extra: Any) -> Callable[[], Any]:
    def build() -> Any:
        from xprospect.models import cyclegan

        if part == "generator":
            return cyclegan.build_style_generator(STYLE_SIZE, filters=2, n_blocks=1, **extra)
        return cyclegan.build_style_discriminator(STYLE_SIZE, filters=2, n_layers=2)

    return build


_CODEBOOK = {
    "quantizer/codebook": "the codebook learns from Eq. 2's term only (straight-through here)"
}
# TensorFlow's MaxPool3D gradient passes the whole gradient to every tied maximum of a window
# (XLA's to one); DuoLift's pools see exact ties where an X-ray was repeated along the depth
# axis, and its deep instance-normalised stack amplifies float32 rounding (1e-5 at the output).
_DUOLIFT_TOLERANCE = 5e-3


def cases() -> list[Case]:
    """Every preset's generator and discriminator, XctDiff's networks and the style CycleGAN's."""
    return [
        Case("64-Dense", _preset("64-Dense", "dualunet"), "volume", ("64-Dense",)),
        Case(
            "512-Dense",
            _preset("512-Dense", "dualunet"),
            "volume",
            ("512-Dense", "512-Dense-MAE"),
        ),
        Case("512-ProjInj", _preset("512-ProjInj", "dualunet"), "volume", ("512-ProjInj",)),
        Case("X2CT-GAN", _preset("X2CT-GAN", "x2ct"), "volume", ("X2CT-GAN", "X2CT-CNN+B")),
        Case("X2CT-CNN+S", _preset("X2CT-CNN+S", "x2ct"), "volume", ("X2CT-CNN+S",)),
        Case("CVAA-GAN", _preset("CVAA-GAN", "cvaa"), "volume", ("CVAA-GAN",)),
        Case(
            "DuoLift-GAN",
            _preset("DuoLift-GAN", "duolift"),
            "volume",
            ("DuoLift-GAN", "DuoLift-CNN"),
            tolerance=_DUOLIFT_TOLERANCE,
        ),
        Case("S-XR2CT", _preset("S-XR2CT", "sxr2ct"), "volume", ("S-XR2CT",)),
        Case("X2CT-GAN/D", _discriminator("X2CT-GAN"), "lsgan"),
        Case("CVAA-GAN/D", _discriminator("CVAA-GAN"), "lsgan"),
        Case("DuoLift-GAN/D", _discriminator("DuoLift-GAN"), "bce"),
        Case("S-XR2CT/D", _discriminator("S-XR2CT"), "lsgan"),
        Case("XctDiff", _xctdiff("pipeline"), "none", ("XctDiff",), tolerance=None),
        Case("XctDiff/autoencoder", _xctdiff("autoencoder"), "volume", (), _CODEBOOK),
        Case("XctDiff/prior_encoder", _xctdiff("prior_encoder"), "mse"),
        Case("XctDiff/unet", _xctdiff("unet"), "mse"),
        Case("XctDiff/D3", _xctdiff("discriminator3d"), "lsgan"),
        Case("XctDiff/D2", _xctdiff("discriminator2d"), "bce"),
        Case("style/G", _style("generator"), "mse"),
        # Issue 17's upsampling option: the 3D depth-to-space (sub-pixel) and the 2D resize.
        Case(
            "64-Dense/subpixel",
            _preset("64-Dense", "dualunet", upsampling="subpixel"),
            "volume",
        ),
        Case("style/G/resize_conv", _style("generator", upsampling="resize_conv"), "mse"),
        Case("style/D", _style("discriminator"), "lsgan"),
    ]


def file_name(case: str) -> str:
    """``case`` as a file name."""
    return case.replace("/", "__").replace("+", "p")


# === Inputs ===


def inputs_of(model: Any, seed: int = 0) -> Any:
    """Random inputs in [0, 1] for ``model``'s inputs (time steps: integers below 50)."""
    rng = np.random.default_rng(seed)

    def one(spec: Any) -> np.ndarray:
        shape = (BATCH, *spec.shape[1:])
        if "timestep" in spec.name:
            return rng.integers(0, 50, size=shape).astype(np.float32)
        return rng.random(shape, dtype=np.float32)

    from xprospect.models.xctdiff import XctDiff

    if isinstance(model, XctDiff):  # a pipeline, not a functional model
        return {"frontal": rng.random((BATCH, model.size, model.size, 1), dtype=np.float32)}
    return keras.tree.map_structure(one, model.input)


def targets_of(model: Any, seed: int = 1) -> Any:
    """Random targets in [0, 1] shaped as ``model``'s outputs."""
    rng = np.random.default_rng(seed)
    return keras.tree.map_structure(
        lambda spec: rng.random((BATCH, *spec.shape[1:]), dtype=np.float32), model.output
    )


def scalar_loss(kind: str, outputs: Any, targets: Any) -> Any:
    """The scalar whose gradient a case takes (see :class:`Case`), with the package's losses."""
    from xprospect.losses import build_loss, discriminator_loss_per_example

    if kind == "volume":
        loss = build_loss({"mae": 1.0, "mse": 1.0, "projection": 1.0})
        return loss(targets, outputs)
    if kind in ("lsgan", "bce"):
        # The batch's second half plays the generated volumes, so both terms have gradients.
        fake = ops.flip(outputs, axis=0)
        return ops.mean(discriminator_loss_per_example(outputs, fake, kind))
    flat_out = keras.tree.flatten(outputs)
    flat_target = keras.tree.flatten(targets)
    terms = [
        ops.mean(ops.square(ops.cast(o, "float32") - t))
        for o, t in zip(flat_out, flat_target, strict=True)
        if "float" in str(o.dtype)
    ]
    return ops.sum(ops.stack(terms))


# === Running a case on the current backend ===


def _numpy(x: Any) -> np.ndarray:
    return np.asarray(ops.convert_to_numpy(x))


def _holder(model: Any) -> Any:
    from xprospect.lpips import LPIPS

    # LPIPS is built on its first call; its weights are its backbone's.
    return model.features if isinstance(model, LPIPS) else model


def build(make: Callable[[], Any], weights: Path | None = None) -> Any:
    """``make()``'s network with seeded initial weights, or with those of ``weights``.

    With ``weights`` the variables are created without values and then loaded: drawing initial
    values on JAX compiles one XLA program per weight shape (about 0.3 s each on a CPU), for
    values the file replaces anyway.
    """
    keras.utils.set_random_seed(0)
    if weights is None:
        return make()
    with keras.StatelessScope(initialize_variables=False):
        model = make()
    _holder(model).load_weights(weights)
    # Keras still lists the (now loaded) variables as waiting for their initial values.
    keras.utils.clear_session(free_memory=False)
    return model


def forward_and_grads(model: Any, kind: str, x: Any, y: Any) -> dict[str, np.ndarray]:
    """The outputs (training mode), the case's scalar and its gradient w.r.t. every trainable
    weight (``out/<i>``, ``loss``, ``grad/<path>``); for ``kind`` ``"none"`` the inference-mode
    outputs only. On JAX, one jitted ``value_and_grad`` of ``model.stateless_call``."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        tv = [v.value for v in model.trainable_variables]
        ntv = [v.value for v in model.non_trainable_variables]
        if kind == "none":
            outputs = jax.jit(lambda a, b: model.stateless_call(a, b, x)[0])(tv, ntv)
            value, grads = None, []
        else:

            def f(trainable: Any, non_trainable: Any) -> Any:
                out, _ = model.stateless_call(trainable, non_trainable, x, training=True)
                return scalar_loss(kind, out, y), out

            (value, outputs), grads = jax.jit(jax.value_and_grad(f, has_aux=True))(tv, ntv)
    elif backend == "tensorflow":
        import tensorflow as tf

        if kind == "none":
            outputs, value, grads = model(x, training=False), None, []
        else:
            with tf.GradientTape() as tape:
                outputs = model(x, training=True)
                value = scalar_loss(kind, outputs, y)
            grads = tape.gradient(value, model.trainable_variables)
    else:  # pragma: no cover - the test runs these two only
        raise NotImplementedError(backend)
    results = {f"out/{i}": _numpy(o) for i, o in enumerate(keras.tree.flatten(outputs))}
    if value is not None:
        results["loss"] = _numpy(value)
        for var, grad in zip(model.trainable_variables, grads, strict=True):
            # TensorFlow says None for a weight the scalar does not depend on.
            zero = np.zeros(var.shape, "float32")
            results[f"grad/{var.path}"] = zero if grad is None else _numpy(grad)
    return results


def run_case(case: Case, model: Any) -> dict[str, np.ndarray]:
    """:func:`forward_and_grads` on the case's inputs and targets, and ``seconds`` it took."""
    start = time.perf_counter()
    x = inputs_of(model)
    y = None if case.loss == "none" else targets_of(model)
    results = forward_and_grads(model, case.loss, x, y)
    results["seconds"] = np.float64(time.perf_counter() - start)
    return results


# === Losses and metrics ===


def _feature_net() -> Any:
    # A small 2D network standing in for VGG16 (no download): the loss code is the same.
    return keras.Sequential(
        [
            keras.Input((None, None, 1)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.Conv2D(4, 3, strides=2),
        ],
        name="features",
    )


def _lpips() -> Any:
    from xprospect.lpips import LPIPS

    return LPIPS("alex", backbone_weights="random")


METRIC_MODELS: dict[str, Callable[[], Any]] = {"features": _feature_net, "lpips": _lpips}
"""The networks the losses and metrics use: a perceptual feature net, LPIPS (AlexNet, random
weights: the backbone is the same code with either weights)."""


def _volumes() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    t = rng.random((BATCH, 12, 12, 12, 1), dtype=np.float32)
    p = np.clip(t + 0.1 * rng.standard_normal(t.shape), 0, 1).astype(np.float32)
    mask = (rng.random(t.shape) > 0.5).astype(np.float32)
    return t, p, mask


def loss_terms(models: dict[str, Any]) -> dict[str, Callable[[Any], Any]]:
    """Every loss and metric as a function of the prediction ``p`` (its gradient is taken too)."""
    from xprospect import losses, metrics
    from xprospect.models.xctdiff import NoiseSchedule, VectorQuantizer, diffusion_loss_per_example
    from xprospect.perceptual import PerceptualLoss

    t, _, mask = _volumes()
    logits = np.linspace(-3, 3, BATCH * 27, dtype=np.float32).reshape(BATCH, 3, 3, 3, 1)
    perceptual = PerceptualLoss(models["features"], axes="all", num_slices=4)
    lpips = models["lpips"]
    schedule = NoiseSchedule(50)
    steps = np.array([3, 41])
    vq = VectorQuantizer(num_codes=16, code_dim=4)
    vq.build((None, 4))
    vq.codebook.assign(np.random.default_rng(3).standard_normal((16, 4)).astype(np.float32))

    def metric(cls: Any) -> Callable[[Any], Any]:
        # The stateless API: under jax.jit a metric's variables must not be assigned to.
        m = cls()

        def value(p: Any) -> Any:
            state = m.stateless_update_state([v.value for v in m.variables], t, p)
            return m.stateless_result(state)

        return value

    def pieces(p: Any) -> Any:
        return ops.reshape(p, (BATCH, 6, 6, 12, 4))

    return {
        "MAELoss": lambda p: losses.MAELoss(reduction="none")(t, p),
        "MSELoss": lambda p: losses.MSELoss()(t, p),
        "ProjectionLoss": lambda p: losses.ProjectionLoss(reduction="none")(t, p),
        "WeightedLoss": lambda p: losses.build_loss(
            {"mae": 1.0, "mse": 0.5, "projection": 2.0}, reduction="sum"
        )(t, p),
        "masked_mae": lambda p: losses.masked_mae_per_example(t, p, mask),
        "masked_mse/mask": lambda p: losses.masked_mse_per_example(t, p, mask, "mask"),
        "d_lsgan": lambda p: losses.discriminator_loss_per_example(
            p[:, :3, :3, :3] * 6 - 3, logits, "lsgan"
        ),
        "d_bce": lambda p: losses.discriminator_loss_per_example(
            logits, p[:, :3, :3, :3] * 6 - 3, "bce", weight=0.01
        ),
        "g_lsgan": lambda p: losses.generator_adversarial_per_example(p * 4 - 2, "lsgan"),
        "g_bce": lambda p: losses.generator_adversarial_per_example(p * 4 - 2, "bce"),
        "per_example(keras MSE)": lambda p: losses.per_example_loss(
            keras.losses.MeanSquaredError(reduction="none")
        )(t, p),
        "PerceptualLoss": lambda p: perceptual(t, p),
        "PSNR3D": metric(metrics.PSNR3D),
        "SSIM3D": metric(metrics.SSIM3D),
        # AlexNet needs images of 64^2 or more: six by six copies of a slice.
        "LPIPS": lambda p: lpips([ops.tile(v[:, 0], (1, 6, 6, 1)) for v in (t, p)]),
        "diffusion (Eq. 7)": lambda p: diffusion_loss_per_example(
            lambda x_t, _: 0.5 * x_t, schedule, pieces(t), steps, pieces(p)
        ),
        "VQ codebook (Eq. 2)": lambda p: vq.codebook_loss(pieces(p), vq(pieces(p))[1]),
    }


def run_losses(models: dict[str, Any]) -> dict[str, np.ndarray]:
    """Every loss term's value and the gradient of its sum w.r.t. the prediction
    (``value/<name>``, ``grad/<name>``); on JAX in one jitted function."""
    _, p, _ = _volumes()
    terms = loss_terms(models)
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        def all_terms(p: Any) -> dict[str, Any]:
            out = {}
            for name, fn in terms.items():
                value, vjp = jax.vjp(fn, p)
                out[name] = (value, vjp(ops.ones_like(value))[0])
            return out

        pairs = jax.jit(all_terms)(p)
    else:
        import tensorflow as tf

        pairs = {}
        for name, fn in terms.items():
            x = tf.convert_to_tensor(p)
            with tf.GradientTape() as tape:
                tape.watch(x)
                value = fn(x)
            pairs[name] = (value, tape.gradient(value, x))
    results: dict[str, np.ndarray] = {}
    for name, (value, grad) in pairs.items():
        results[f"value/{name}"] = _numpy(value)
        results[f"grad/{name}"] = _numpy(grad)
    return results


# === The two sides ===


def weights_path(folder: Path, name: str) -> Path:
    """Where the weights of case (or metric model) ``name`` are saved."""
    return folder / f"{file_name(name)}.weights.h5"


def results_path(folder: Path, name: str) -> Path:
    """Where the JAX side writes the results of case ``name`` (``losses``: the loss terms)."""
    return folder / f"{file_name(name)}.jax.npz"


def _save_weights(model: Any, folder: Path, name: str) -> None:
    # Written under another name and renamed: the JAX side, already running, takes a case as
    # soon as its file exists and must never read a half-written one.
    partial = folder / f"{file_name(name)}.partial.weights.h5"
    model.save_weights(partial)
    partial.replace(weights_path(folder, name))


def _wait_for_weights(folder: Path, name: str, timeout_s: float = 600.0) -> Path:
    path = weights_path(folder, name)
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout_s:.0f} s")
        time.sleep(0.05)
    return path


def build_and_save(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Builds every case and metric model (seeded) and saves its weights into ``folder``, each
    file as soon as its model is built (in :func:`cases` order, then the metric models)."""
    rng = np.random.default_rng(5)
    models = {}
    for case in cases():
        model = models[case.name] = build(case.build)
        for var in model.trainable_variables:
            # A kernel that starts at zero (the diffusion UNet's output convolution, LDM's
            # zero_module) would leave every weight before it without a gradient.
            if len(var.shape) > 1 and not np.any(_numpy(var)):
                var.assign(0.05 * rng.standard_normal(var.shape).astype("float32"))
        _save_weights(model, folder, case.name)
    extra = {}
    for name, make in METRIC_MODELS.items():
        extra[name] = build(make)
        _save_weights(_holder(extra[name]), folder, name)
    return models, extra


def main(folder: Path) -> None:
    """The JAX side: every case and loss term with the weights in ``folder``, results there.

    It may start before :func:`build_and_save` has finished: each case waits for its weights.
    """
    import json

    assert keras.backend.backend() == "jax", keras.backend.backend()
    seconds = {}
    for case in cases():
        weights = _wait_for_weights(folder, case.name)
        start = time.perf_counter()
        try:
            model = build(case.build, weights)
            np.savez(results_path(folder, case.name), **run_case(case, model))
        except Exception as exc:
            exc.add_note(f"in case {case.name!r} on {keras.backend.backend()}")
            raise
        seconds[case.name] = time.perf_counter() - start
    start = time.perf_counter()
    extra = {
        name: build(make, _wait_for_weights(folder, name)) for name, make in METRIC_MODELS.items()
    }
    np.savez(results_path(folder, "losses"), **run_losses(extra))
    seconds["losses"] = time.perf_counter() - start
    (folder / "seconds.json").write_text(json.dumps(seconds, indent=1))
