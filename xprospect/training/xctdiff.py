"""XctDiff's three training stages in the package's loop (preset ``XctDiff``).

``xprospect train --config xctdiff-vqgan``, then ``xctdiff-encoder``, then ``xctdiff-ldm``: each
stage is an ordinary run (checkpoints, exact resume, logs, validation, MirroredStrategy) whose
config names the stage (``xctdiff.stage``) and the run folder of the previous one
(``xctdiff.previous_run``). The extension points are the loop's: :class:`XctDiffRun` (a
:class:`~xprospect.training.loop.TrainingRun`) chooses the step logic of its stage and scores
validation; the step logics are :class:`~xprospect.training.steps.StepLogic` subclasses that
replace the replica step.

- **vqgan** (:class:`VQGANLogic`): trains :attr:`XctDiff.autoencoder` on the CT volumes with
  Eq. 4: ``l1 * L1 + l2 * perceptual + l3 * VQ + l4 * GAN`` (``loss`` keys ``mae``,
  ``perceptual``, ``vq``, ``adversarial``); the GAN term is Eq. 3 (``alpha``, ``beta`` =
  ``xctdiff.volume_gan_weight``, ``slice_gan_weight``) with a 3D volume discriminator and a 2D
  slice discriminator on ``xctdiff.gan_slices`` evenly spaced axial slices, and starts at
  ``xctdiff.gan_start_step`` (before, its weight is 0 and the discriminators get zero
  gradients). Validation adds codebook usage (share of entries used on the validation cases)
  and perplexity. ``model.keras`` is the :class:`XctDiffAutoencoder`. Dead-code restarts
  (``xctdiff.dead_code_restart_every`` = N > 0, an option; the paper has none): the step also
  returns the batch's code histogram and its normalised encoder vectors; every N steps the
  entries that no batch of those N steps used are set to encoder vectors of the last batch
  drawn with ``(training.seed, step)`` (their Adam moments are kept). The histogram restarts
  after each reset, so a resume is exact when ``training.checkpoint_every`` is a multiple of N.
- **encoder** (:class:`PriorEncoderLogic`): loads the ``vqgan`` run's autoencoder (frozen),
  copies its codebook into :attr:`XctDiff.prior_encoder` (frozen) and trains the prior
  encoder's features towards the VQ-GAN encoder's normalised latent of the true CT:
  ``latent * ||N(z) - N(E(x))||^2 + vq * commitment`` (``loss`` keys ``latent``, ``vq``).
  Validation decodes the prior directly. ``model.keras`` is the :class:`XctDiffPriorEncoder`.
- **ldm** (:class:`DiffusionLogic`): loads both previous stages (frozen) and trains the UNet
  with Eq. 7 (``loss`` key ``diffusion``); ``x_0`` is the VQ-GAN's quantised, normalised latent
  of the CT and the condition the prior of its radiograph. Time steps and noise are stateless
  draws from ``(training.seed + replica, step)``: a resumed run draws the same. Use
  ``optimizer.use_ema`` for EMA weights (the shipped config does); validation samples with
  ``xctdiff.val_sampling_steps`` DDIM steps under them. ``model.keras`` is the whole
  :class:`XctDiff` pipeline, what ``xprospect predict`` runs.

On a dataset with partly scanned cases (real CT, ``data.validity_mask`` on: see
``docs/conventions.md``) every stage works inside the scanned region: the CT fed to the VQ-GAN
encoder holds air outside it (what ``prepare`` pads with, so arbitrary values stored there change
nothing), the L1 term is the mean inside the mask, the latent and diffusion terms are the means
over the latent cells whose whole footprint was scanned, and validation scores inside the mask.
The perceptual and adversarial terms see the whole (air-filled) volume.

Gradient accumulation is not supported by these stages (``training.grad_accum_steps`` must be
1); the paper's batch sizes (1, 16, 8) are ``data.batch_size``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from xprospect.config import ExperimentConfig
from xprospect.errors import ConfigError
from xprospect.training.loop import TrainingRun, target_window
from xprospect.training.optimizers import build_optimizer
from xprospect.training.steps import StepContext, StepLogic

__all__ = [
    "STAGES",
    "DiffusionLogic",
    "PriorEncoderLogic",
    "VQGANLogic",
    "XctDiffRun",
    "load_stage_model",
    "stage_of",
]

log = logging.getLogger("xprospect.training")

STAGES = ("vqgan", "encoder", "ldm")
"""The stages in training order."""
STAGE_TERMS = {
    "vqgan": ("mae", "perceptual", "vq", "adversarial"),
    "encoder": ("latent", "vq"),
    "ldm": ("diffusion",),
}
"""The ``loss`` keys of each stage."""


def stage_of(config: ExperimentConfig) -> str | None:
    """The XctDiff stage of a config, or None."""
    return getattr(getattr(config, "xctdiff", None), "stage", None)


def _stage_in_run(run: Path) -> tuple[str | None, dict[str, Any]]:
    import yaml

    try:
        data = yaml.safe_load((run / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None, {}
    section = data.get("xctdiff") or {}
    return section.get("stage"), data


def load_stage_model(previous_run: str | None, expected: str, this: str) -> tuple[Any, dict]:
    """The finished ``model.keras`` of a previous stage's run and that run's config.

    Raises:
        ConfigError: (one line) no run named, no finished run there, or a run of another stage.
    """
    import keras

    key = "xctdiff.previous_run"
    if not previous_run:
        raise ConfigError(f"{key}: stage {this!r} needs the run folder of the {expected!r} stage")
    run = Path(previous_run)
    stage, data = _stage_in_run(run)
    if not (run / "config.yaml").is_file():
        raise ConfigError(f"{key}: {run} is not a training run (no config.yaml)")
    if stage != expected:
        raise ConfigError(
            f"{key}: {run} is a {stage!r} run, stage {this!r} needs a {expected!r} run"
        )
    path = run / "model.keras"
    if not path.is_file():
        raise ConfigError(
            f"{key}: {run} has no model.keras (train the {expected!r} stage to the end)"
        )
    import xprospect.models  # noqa: F401  (registers the classes)

    return keras.saving.load_model(path, compile=False), data


def _copy_weights(source: Any, target: Any, what: str) -> None:
    """Copies weights between two networks of the same architecture (a ConfigError if not)."""
    drop = ("name", "trainable", "dtype")
    a = {k: v for k, v in source.get_config().items() if k not in drop}
    b = {k: v for k, v in target.get_config().items() if k not in drop}
    differ = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    if differ:
        raise ConfigError(
            f"xctdiff.previous_run: the {what} there differs from this config's in "
            f"{', '.join(f'{k} ({a.get(k)!r} vs {b.get(k)!r})' for k in differ)}"
        )
    target.set_weights(source.get_weights())


# === Step logics ===


class _StageLogic(StepLogic):
    """What the three stages share: their loss keys, no gradient accumulation."""

    stage = ""

    def __init__(self, run: StepContext) -> None:
        super().__init__(run)
        cfg = run.cfg
        valid = STAGE_TERMS[self.stage]
        unknown = sorted(set(self.weights) - set(valid))
        if unknown:
            raise ConfigError(
                f"loss: term(s) {', '.join(unknown)} are not terms of the XctDiff {self.stage!r} "
                f"stage ({', '.join(valid)})"
            )
        if int(cfg.training.grad_accum_steps or 1) != 1:
            raise ConfigError("training.grad_accum_steps: XctDiff stages take 1")
        self.needs_mask = False
        self.plain_loss = None
        self.pipeline: Any = None
        from xprospect.constants import STORED_HU_RANGE
        from xprospect.preprocessing import window_hu

        # The padding value of prepare (-1024 HU) in the targets' window.
        self.air = float(window_hu(np.array([STORED_HU_RANGE[0]]), target_window(cfg))[0])

    def split_scan_mask(self, x: Any, y: Any) -> tuple[Any, Any, Any]:
        """``(inputs without "scan_mask", the CT with air outside the scan, mask or None)``."""
        import tensorflow as tf

        y = tf.cast(y, tf.float32)
        if not (isinstance(x, dict) and "scan_mask" in x):
            return x, y, None
        x = dict(x)
        valid = tf.cast(x.pop("scan_mask"), tf.float32)
        return x, valid * y + (1.0 - valid) * self.air, valid

    @staticmethod
    def latent_mask(valid: Any, latent: Any) -> Any:
        """The latent cells of ``latent`` ``(B, d, h, w, C)`` whose whole block of voxels lies
        in the scan mask ``valid`` ``(B, D, H, W, 1)``: a min-pool, ``(B, d, h, w, 1)``."""
        import tensorflow as tf

        if valid is None:
            return None
        factor = int(valid.shape[1]) // int(latent.shape[1])
        return 1.0 - tf.nn.max_pool3d(1.0 - valid, factor, factor, "VALID")

    @property
    def adversarial(self) -> bool:
        return False

    def _pipeline(self) -> Any:
        self.pipeline = self.run.trainer.model_fn(self.run.cfg)
        if not hasattr(self.pipeline, "prior_encoder"):
            raise ConfigError(
                f"xctdiff.stage: model.preset {self.run.cfg.model.preset!r} is not XctDiff"
            )
        return self.pipeline

    def make_train_step(self) -> Callable[[Any], Any]:
        from xprospect.training.distribute import distributed_step

        return distributed_step(self.run.strategy, self._replica_step(1))

    def _average(self, per_example: Any) -> Any:
        import tensorflow as tf

        return tf.nn.compute_average_loss(
            per_example, global_batch_size=self.run.cfg.data.batch_size
        )

    def volume_fn(self) -> Callable[[Any, Any], Any]:
        """``fn(x, y) -> volume`` that validation scores against ``y``."""
        raise NotImplementedError


class VQGANLogic(_StageLogic):
    """Stage 1: the VQ-GAN (see the module docstring)."""

    stage = "vqgan"

    def __init__(self, run: StepContext) -> None:
        super().__init__(run)
        self.x = run.cfg.xctdiff
        self.d2: Any = None
        self.d2_optimizer: Any = None

    @property
    def gan(self) -> bool:
        return self.weights.get("adversarial", 0.0) > 0

    @property
    def log_names(self) -> tuple[str, ...]:
        names = ("loss", "l1", "vq")
        return (*names, "g_adversarial", "d_loss") if self.gan else names

    def build(self) -> None:
        from xprospect.models.xctdiff import XctDiffDiscriminator

        run, cfg = self.run, self.run.cfg
        self.model = self._pipeline().autoencoder
        self.optimizer = build_optimizer(cfg, run.total, steps_per_epoch=run.steps_per_epoch)
        self.optimizer.build(self.model.trainable_variables)
        if self.gan:
            args = {"size": self.model.size, **cfg.gan.discriminator}
            try:
                self.discriminator = XctDiffDiscriminator(rank=3, name="volume_d", **args)
                self.d2 = XctDiffDiscriminator(rank=2, name="slice_d", **args)
            except TypeError as exc:
                raise ConfigError(f"gan.discriminator: {exc}") from None
            d_vars = self.discriminator.trainable_variables + self.d2.trainable_variables
            self.d_optimizer = build_optimizer(
                cfg,
                run.total,
                learning_rate=cfg.gan.d_learning_rate,
                steps_per_epoch=run.steps_per_epoch,
            )
            self.d_optimizer.build(d_vars)
        if "perceptual" in self.weights:
            from xprospect.perceptual import PerceptualLoss

            try:
                self.perceptual = PerceptualLoss(**cfg.perceptual)
            except TypeError as exc:
                raise ConfigError(f"perceptual: {exc}") from None

    def checkpoint_objects(self) -> dict[str, Any]:
        objects = super().checkpoint_objects()
        if self.d2 is not None:
            objects["slice_discriminator"] = self.d2
        return objects

    def state_variables(self) -> list[Any]:
        out = super().state_variables()
        if self.d2 is not None:
            out += [v for v in self.d2.weights if "float" in str(v.dtype)]
        return out

    @property
    def restart_every(self) -> int:
        return int(getattr(self.x, "dead_code_restart_every", 0) or 0)

    def make_train_step(self) -> Callable[[Any], Any]:
        step_fn = super().make_train_step()
        every = self.restart_every
        if every <= 0:
            return step_fn
        quantizer = self.model.quantizer
        n = int(quantizer.num_codes)
        seed = int(self.run.cfg.training.seed)
        counts = np.zeros(n, np.float64)

        def train_step(iterator: Any) -> Any:
            values = dict(step_fn(iterator))
            hist = np.asarray(values.pop("code_counts"), np.float64)
            vectors = np.asarray(values.pop("code_vectors"), np.float32)
            counts[:] += hist
            step = int(self.optimizer.iterations.numpy())
            if step % every == 0:
                dead = np.flatnonzero(counts == 0)
                if dead.size:
                    rng = np.random.default_rng([seed, step])
                    pick = rng.integers(0, len(vectors), dead.size)
                    book = np.array(quantizer.codebook.numpy())
                    book[dead] = vectors[pick]
                    quantizer.codebook.assign(book)
                    log.info("step %d: %d dead codebook entries restarted", step, dead.size)
                counts[:] = 0
            return values

        return train_step

    def _slices(self, volume: Any) -> Any:
        """``gan_slices`` evenly spaced axial slices of each volume: ``(B * k, S, S, 1)``."""
        import tensorflow as tf

        size = int(volume.shape[1])
        k = max(1, min(int(self.x.gan_slices), size))
        idx = np.linspace(0, size - 1, k).round().astype(np.int32)
        picked = tf.gather(volume, idx, axis=1)
        return tf.reshape(picked, [-1, size, size, 1]), k

    def _replica_step(self, accum: int) -> Callable[[Any], dict[str, Any]]:
        import tensorflow as tf

        from xprospect.losses import discriminator_loss_per_example as d_loss_fn
        from xprospect.losses import generator_adversarial_per_example as g_adv_fn

        ae, opt = self.model, self.optimizer
        d3, d2, d_opt = self.discriminator, self.d2, self.d_optimizer
        w = self.weights
        kind = self.run.cfg.gan.adversarial or "bce"
        alpha, beta = float(self.x.volume_gan_weight), float(self.x.slice_gan_weight)
        start = int(self.x.gan_start_step)
        restart = self.restart_every > 0
        num_codes = int(ae.quantizer.num_codes)

        from xprospect.models.xctdiff import zscore

        def per_volume(values: Any, k: int) -> Any:
            # The slice terms of one volume are averaged over its k slices.
            return tf.reduce_mean(tf.reshape(values, [-1, k]), axis=1)

        from xprospect.losses import mae_per_example, within_scan_mask

        masked_l1 = within_scan_mask(mae_per_example)

        def replica_step(batch: Any) -> dict[str, Any]:
            _, y, valid = self.split_scan_mask(*batch)
            g_vars = ae.trainable_variables
            d_vars = (d3.trainable_variables + d2.trainable_variables) if self.gan else []
            with tf.GradientTape(persistent=self.gan) as tape:
                z = ae.encoder(y, training=True)
                zq, idx = ae.quantizer(z)
                rec = tf.cast(ae.decoder(zq, training=True), tf.float32)
                if valid is None:
                    l1 = tf.reduce_mean(tf.abs(y - rec), axis=[1, 2, 3, 4])
                else:
                    l1 = masked_l1(y, rec, valid)
                vq = ae.quantizer.codebook_loss(z, idx)
                total = w.get("mae", 0.0) * l1 + w.get("vq", 0.0) * vq
                if self.perceptual is not None:
                    total += w["perceptual"] * tf.cast(self.perceptual.call(y, rec), tf.float32)
                if self.gan:
                    on = tf.cast(opt.iterations >= start, tf.float32)
                    fake3, real3 = d3(rec, training=True), d3(y, training=True)
                    s_fake, k = self._slices(rec)
                    s_real, _ = self._slices(y)
                    fake2, real2 = d2(s_fake, training=True), d2(s_real, training=True)
                    g_adv = alpha * g_adv_fn(fake3, kind) + beta * per_volume(
                        g_adv_fn(fake2, kind), k
                    )
                    g_adv = on * g_adv  # logged as the term the step uses
                    total += w["adversarial"] * g_adv
                    d_loss = on * (
                        alpha * d_loss_fn(real3, fake3, kind)
                        + beta * per_volume(d_loss_fn(real2, fake2, kind), k)
                    )
                    d_avg = self._average(d_loss)
                    d_scaled = d_opt.scale_loss(d_avg)
                loss = self._average(total)
                scaled = opt.scale_loss(loss)
            grads = tape.gradient(scaled, g_vars)
            opt.apply(grads, g_vars)
            values = {"loss": loss, "l1": self._average(l1), "vq": self._average(vq)}
            if restart:
                # Summed over replicas by the step's reduce: the global batch's histogram, and
                # the replicas' vectors summed (any one replica's would do; a sum of unit-free
                # normalised vectors is renormalised by N when compared).
                flat = tf.reshape(tf.cast(idx, tf.int32), [-1])
                values["code_counts"] = tf.cast(
                    tf.math.bincount(flat, minlength=num_codes, maxlength=num_codes), tf.float32
                )
                values["code_vectors"] = tf.reshape(zscore(z), [-1, z.shape[-1]])
            if self.gan:
                d_grads = tape.gradient(d_scaled, d_vars)
                d_grads = [
                    tf.zeros_like(v) if g is None else g
                    for g, v in zip(d_grads, d_vars, strict=True)
                ]
                d_opt.apply(d_grads, d_vars)
                values["d_loss"] = d_avg
                values["g_adversarial"] = self._average(g_adv)
            return values

        return replica_step

    def volume_fn(self) -> Callable[[Any, Any], Any]:
        model = self.model
        return lambda x, y: model(y, training=False)


class PriorEncoderLogic(_StageLogic):
    """Stage 2: the progressive encoder (see the module docstring)."""

    stage = "encoder"

    @property
    def log_names(self) -> tuple[str, ...]:
        return ("loss", "latent", "vq")

    def build(self) -> None:
        run, cfg = self.run, self.run.cfg
        pipeline = self._pipeline()
        loaded, _ = load_stage_model(cfg.xctdiff.previous_run, "vqgan", "encoder")
        _copy_weights(loaded, pipeline.autoencoder, "VQ-GAN")
        pipeline.autoencoder.trainable = False
        self.autoencoder = pipeline.autoencoder
        self.model = pipeline.prior_encoder
        self.model.set_codebook(self.autoencoder.quantizer.codebook)
        self.optimizer = build_optimizer(cfg, run.total, steps_per_epoch=run.steps_per_epoch)
        self.optimizer.build(self.model.trainable_variables)

    def _replica_step(self, accum: int) -> Callable[[Any], dict[str, Any]]:
        import tensorflow as tf

        from xprospect.models.xctdiff import zscore

        pe, ae, opt, w = self.model, self.autoencoder, self.optimizer, self.weights

        def replica_step(batch: Any) -> dict[str, Any]:
            x, y, valid = self.split_scan_mask(*batch)
            target = tf.stop_gradient(zscore(ae.encoder(y, training=False)))
            cells = self.latent_mask(valid, target)
            g_vars = pe.trainable_variables
            with tf.GradientTape() as tape:
                z = pe.features(x, training=True)
                square = tf.square(zscore(z) - target)
                if cells is None:
                    latent = tf.reduce_mean(square, axis=[1, 2, 3, 4])
                else:
                    scored = tf.reduce_sum(cells, axis=[1, 2, 3, 4]) * float(square.shape[-1])
                    latent = tf.reduce_sum(square * cells, axis=[1, 2, 3, 4]) / tf.maximum(
                        scored, 1.0
                    )
                vq = pe.quantizer.codebook_loss(z, pe.quantizer.nearest(z))
                total = w.get("latent", 0.0) * latent + w.get("vq", 0.0) * vq
                loss = self._average(total)
                scaled = opt.scale_loss(loss)
            opt.apply(tape.gradient(scaled, g_vars), g_vars)
            return {"loss": loss, "latent": self._average(latent), "vq": self._average(vq)}

        return replica_step

    def volume_fn(self) -> Callable[[Any, Any], Any]:
        pe, ae = self.model, self.autoencoder
        return lambda x, y: ae.decoder(pe(x, training=False), training=False)


class DiffusionLogic(_StageLogic):
    """Stage 3: the latent diffusion model (see the module docstring)."""

    stage = "ldm"

    def build(self) -> None:
        run, cfg = self.run, self.run.cfg
        pipeline = self._pipeline()
        encoder, enc_cfg = load_stage_model(cfg.xctdiff.previous_run, "encoder", "ldm")
        vq_run = (enc_cfg.get("xctdiff") or {}).get("previous_run")
        autoencoder, _ = load_stage_model(vq_run, "vqgan", "ldm (through the encoder run)")
        _copy_weights(autoencoder, pipeline.autoencoder, "VQ-GAN")
        _copy_weights(encoder, pipeline.prior_encoder, "progressive encoder")
        pipeline.autoencoder.trainable = False
        pipeline.prior_encoder.trainable = False
        self.model = pipeline
        self.optimizer = build_optimizer(cfg, run.total, steps_per_epoch=run.steps_per_epoch)
        self.optimizer.build(self.model.trainable_variables)

    def _replica_step(self, accum: int) -> Callable[[Any], dict[str, Any]]:
        import tensorflow as tf

        from xprospect.models.xctdiff import diffusion_loss_per_example

        pipe, opt = self.model, self.optimizer
        sched = pipe.noise_schedule
        seed = int(self.run.cfg.training.seed)
        weight = self.weights.get("diffusion", 1.0)

        def replica_step(batch: Any) -> dict[str, Any]:
            x, y, valid = self.split_scan_mask(*batch)
            ctx = tf.distribute.get_replica_context()
            replica = tf.cast(ctx.replica_id_in_sync_group if ctx else 0, tf.int64)
            step = tf.cast(opt.iterations, tf.int64)
            prior = pipe.prior_encoder(x, training=False)
            x0, _ = pipe.autoencoder.quantizer(pipe.autoencoder.encoder(y, training=False))
            x0 = tf.stop_gradient(tf.cast(x0, tf.float32))
            cells = self.latent_mask(valid, x0)
            n = tf.shape(x0)[0]
            key = tf.stack([tf.constant(seed, tf.int64) * 1000 + replica, step])
            t = tf.random.stateless_uniform([n], key, 0, sched.timesteps, dtype=tf.int32)
            noise = tf.random.stateless_normal(tf.shape(x0), tf.stack([key[0], step + (1 << 40)]))
            g_vars = pipe.trainable_variables
            unet = pipe.unet
            with tf.GradientTape() as tape:

                def eps_fn(x_t: Any, tt: Any) -> Any:
                    return unet({"latent": x_t, "timestep": tt, "prior": prior}, training=True)

                per = diffusion_loss_per_example(eps_fn, sched, x0, t, noise, mask=cells)
                loss = self._average(weight * per)
                scaled = opt.scale_loss(loss)
            opt.apply(tape.gradient(scaled, g_vars), g_vars)
            return {"loss": loss}

        return replica_step

    def volume_fn(self) -> Callable[[Any, Any], Any]:
        pipe, steps = self.model, int(self.run.cfg.xctdiff.val_sampling_steps)
        return lambda x, y: pipe.generate(x, steps=steps)


LOGICS: dict[str, type[_StageLogic]] = {
    "vqgan": VQGANLogic,
    "encoder": PriorEncoderLogic,
    "ldm": DiffusionLogic,
}


# === The run ===


class XctDiffRun(TrainingRun):
    """A :class:`TrainingRun` of one XctDiff stage: its step logic, and validation that scores
    the stage's volume (the VQ-GAN's reconstruction, the decoded prior, the sampled CT)."""

    val_columns: tuple[str, ...] = ()

    def __init__(self, trainer: Any, cfg: ExperimentConfig) -> None:
        stage = stage_of(cfg)
        if stage not in STAGES:
            raise ConfigError(f"xctdiff.stage must be one of {STAGES}, got {stage!r}")
        if stage == "vqgan":
            self.val_columns = ("val_codebook_usage", "val_perplexity")
        super().__init__(trainer, cfg)

    def _make_logic(self) -> Any:
        return LOGICS[str(stage_of(self.cfg))](self)

    def _volumes(self, split: str, limit: int | None) -> Any:
        from xprospect.data import load_dataset

        cfg = self.cfg
        ds = load_dataset(
            cfg.data.dir,
            split,
            batch_size=max(1, cfg.data.batch_size // self.replicas) if split == "val" else 1,
            hu_window=target_window(cfg),
            views=tuple(cfg.data.views),
            xray_mapping=cfg.data.xray_mapping,
            shuffle=False,
            with_case_id=True,
            with_scan_mask=self.scan_masked,
        )
        fn = self.logic.volume_fn()
        seen = 0
        for x_in, y_in in ds:
            ids = [c.decode() for c in x_in.pop("case_id").numpy()]
            x, y, valid = self.logic.split_scan_mask(x_in, y_in)
            pred = np.asarray(fn(x, y), dtype=np.float32)
            masks = None if valid is None else valid.numpy()[..., 0] > 0
            for i, case in enumerate(ids):
                if limit is not None and seen >= limit:
                    return
                seen += 1
                m = None if masks is None else masks[i]
                yield case, m, y.numpy()[i, ..., 0], pred[i, ..., 0]

    def _validate(self) -> dict[str, float]:
        psnrs, maes, indices = [], [], []
        self.sample = None
        vq = stage_of(self.cfg) == "vqgan"
        for case, mask, truth, pred in self._volumes("val", self.cfg.data.val_cases):
            psnrs.append(self.psnr(truth, pred, mask))
            err = np.abs(truth - pred)
            maes.append(float(np.mean(err if mask is None else err[mask])))
            if vq:
                ae = self.logic.model
                _, idx = ae.quantizer(ae.encoder(truth[None, ..., None], training=False))
                indices.append(np.asarray(idx).ravel())
            if self.sample is None:
                self.sample = (truth, pred, case)
        out = {
            "val_loss": float(np.mean(maes)),
            "val_psnr_3d": float(np.mean(psnrs)),
            "val_mae": float(np.mean(maes)),
        }
        if vq:
            from xprospect.models.xctdiff import codebook_usage, perplexity

            codes = np.concatenate(indices)
            n = self.logic.model.num_codes
            out["val_codebook_usage"] = float(codebook_usage(codes, n))
            out["val_perplexity"] = float(perplexity(codes, n))
        return out

    def _train_sample(self) -> None:
        for case, _, truth, pred in self._volumes("train", 1):
            self.sample = (truth, pred, f"{case} (training case: no val split)")
