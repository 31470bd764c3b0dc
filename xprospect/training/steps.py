"""What one optimizer step does: the generator alone, or a conditional 3D GAN.

:class:`TrainingRun` (:mod:`xprospect.training.loop`) owns the loop (data, checkpoints, resume,
validation, logs); :class:`StepLogic` owns the networks, their optimizers and the losses. One
class covers both kinds of model, since a supervised model is a GAN without a discriminator:

- **Generator terms** (weights in the config's ``loss``): the voxel terms ``mae``, ``mse``,
  ``projection`` (through the trainer's ``loss_fn``, :func:`xprospect.losses.build_loss` by
  default), ``masked_mae`` / ``masked_mse`` inside the lung mask that
  :func:`xprospect.data.load_dataset` computes with ``with_lung_mask``, ``perceptual``
  (:class:`xprospect.perceptual.PerceptualLoss`, arguments from the config's ``perceptual``) and
  ``adversarial`` (LSGAN or BCE, ``gan.adversarial``). A generator with ``supervision_layers``
  (DuoLift's deep-supervised UNet++ heads) also has the voxel terms of each head's prediction
  added, averaged over its heads.
- **Discriminator**: built by :func:`xprospect.models.build_discriminator` when the preset has
  one and ``adversarial`` has a positive weight. It sees the volume (real or generated) with the
  X-rays broadcast along their beams (:class:`xprospect.models.blocks.ExpandXrays`) and has its own
  optimizer (the generator's kind, betas and schedule; ``gan.d_learning_rate``).
- **One forward pass per micro-batch**: the generated volume goes through the discriminator once,
  under a persistent tape; the generator's gradient is taken of its loss with respect to its own
  weights only and the discriminator's of its loss with respect to its own, so the two updates
  use the same (pre-step) weights, as in X2CT-GAN's alternating update with one batch.
- **Gradient accumulation** (``training.grad_accum_steps`` = k): each step reads k batches, sums
  the gradients of losses averaged over ``k * data.batch_size`` examples, then applies them once:
  the same update as one batch k times larger (up to instance-norm statistics, which are
  per-example anyway). Micro-batches run in a ``tf.while_loop`` with ``parallel_iterations=1``,
  so only one micro-batch's activations are alive at a time (DuoLift-CNN at 32^3, 4 batches:
  1.7 GiB peak instead of 6.7 GiB with an unrolled loop).

Losses are per example and averaged over the global batch (``tf.nn.compute_average_loss``); the
Keras 3 optimizers sum the replicas' gradients inside ``strategy.run``. Under ``mixed_float16``
each optimizer is a ``LossScaleOptimizer`` and scales its own loss.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from xprospect.config import ExperimentConfig
from xprospect.errors import ConfigError
from xprospect.training.optimizers import build_optimizer

__all__ = ["LossFn", "ModelFn", "NetworkFactories", "StepContext", "StepLogic"]

log = logging.getLogger("xprospect.training")

_EXTRA_TERMS = ("masked_mae", "masked_mse", "perceptual", "adversarial")

ModelFn = Callable[[ExperimentConfig], Any]
"""``model_fn(config) -> keras.Model`` (the generator or the discriminator, or None)."""
LossFn = Callable[[ExperimentConfig], Any]
"""``loss_fn(config) -> keras.losses.Loss | None``: the voxel terms of the generator's loss."""


class NetworkFactories(Protocol):
    """What the step logic builds its networks and voxel loss with (the trainer's factories)."""

    @property
    def model_fn(self) -> ModelFn: ...

    @property
    def loss_fn(self) -> LossFn: ...

    @property
    def discriminator_fn(self) -> ModelFn: ...


class StepContext(Protocol):
    """What the step logic reads of its run (:class:`xprospect.training.loop.TrainingRun`)."""

    @property
    def cfg(self) -> ExperimentConfig: ...

    @property
    def strategy(self) -> Any: ...

    @property
    def replicas(self) -> int: ...

    @property
    def total(self) -> int: ...

    @property
    def steps_per_epoch(self) -> int: ...

    @property
    def trainer(self) -> NetworkFactories: ...


class StepLogic:
    """The networks, optimizers and losses of one run, and its replica step.

    Args:
        run: The training run (config, strategy, run length, the trainer's factories).
    """

    def __init__(self, run: StepContext) -> None:
        self.run = run
        cfg = run.cfg
        weights = dict(cfg.loss or {})
        self.weights = {k: float(v) for k, v in weights.items() if float(v) > 0}
        self.adversarial_kind = cfg.gan.adversarial or "lsgan"
        self.needs_mask = any(k.startswith("masked_") for k in self.weights)
        # data.validity_mask on a partly scanned dataset: the run feeds "scan_mask".
        self.scan_masked = bool(getattr(run, "scan_masked", False))
        self.model: Any = None
        self.optimizer: Any = None
        self.discriminator: Any = None
        self.d_optimizer: Any = None
        self.perceptual: Any = None

    # --- set-up ---

    @property
    def adversarial(self) -> bool:
        return self.weights.get("adversarial", 0.0) > 0

    @property
    def log_names(self) -> tuple[str, ...]:
        """Names of the values a train step returns (``loss`` is the generator's total)."""
        return ("loss", "g_adversarial", "d_loss") if self.adversarial else ("loss",)

    def build(self) -> None:
        """Builds networks and optimizers (call inside ``strategy.scope()``)."""
        from xprospect.losses import per_example_loss, within_scan_mask

        run, cfg = self.run, self.run.cfg
        self.model = run.trainer.model_fn(cfg)
        self.optimizer = build_optimizer(cfg, run.total, steps_per_epoch=run.steps_per_epoch)
        # Built now, so that a restore fills existing slots (no deferred restoration).
        self.optimizer.build(self.model.trainable_variables)
        if self.adversarial:
            self.discriminator = run.trainer.discriminator_fn(cfg)
            if self.discriminator is None:
                raise ConfigError(
                    f"loss.adversarial: preset {cfg.model.preset!r} has no discriminator; drop "
                    "the term or choose a GAN preset"
                )
            self.d_optimizer = build_optimizer(
                cfg,
                run.total,
                learning_rate=cfg.gan.d_learning_rate,
                steps_per_epoch=run.steps_per_epoch,
            )
            self.d_optimizer.build(self.discriminator.trainable_variables)
        if "perceptual" in self.weights:
            from xprospect.perceptual import PerceptualLoss

            try:
                self.perceptual = PerceptualLoss(**cfg.perceptual)
            except TypeError as exc:
                raise ConfigError(f"perceptual: {exc}") from None
        plain = run.trainer.loss_fn(cfg)
        self.plain_loss = per_example_loss(plain) if plain is not None else None
        self.plain_loss_in = (
            within_scan_mask(self.plain_loss) if self.plain_loss is not None else None
        )
        # Deep supervision (DuoLift's UNet++): a view of the generator that also returns its
        # supervised heads' predictions; it shares the generator's variables.
        heads = tuple(getattr(self.model, "supervision_layers", ()) or ())
        self.supervised_model = None
        if heads and self.plain_loss is not None:
            import keras

            self.supervised_model = keras.Model(
                self.model.input,
                [self.model.output, *[self.model.get_layer(n).output for n in heads]],
                name="supervised",
            )

    def checkpoint_objects(self) -> dict[str, Any]:
        """Objects saved in each checkpoint besides the step and the data position."""
        objects: dict[str, Any] = {"model": self.model, "optimizer": self.optimizer}
        if self.discriminator is not None:
            objects.update(discriminator=self.discriminator, d_optimizer=self.d_optimizer)
        # Dropout's seed-generator states are Keras variables that TF's object graph does not
        # reach through the layers; without them a resumed run draws other dropout masks.
        nets = [self.model] + ([self.discriminator] if self.discriminator is not None else [])
        seeds = [v for net in nets for v in net.variables if "seed_generator" in v.path]
        if seeds:
            objects["seed_states"] = seeds
        return objects

    def ema_groups(self) -> list[tuple[Any, list[Any]]]:
        """(optimizer, variables) pairs whose EMA weights validation and export swap in."""
        return [(self.optimizer, list(self.model.trainable_variables))]

    def state_variables(self) -> list[Any]:
        """Every float variable whose finiteness the run checks before a checkpoint."""
        out = [*self.model.weights, *self.optimizer.variables]
        if self.discriminator is not None:
            out += [*self.discriminator.weights, *self.d_optimizer.variables]
        return [v for v in out if "float" in str(v.dtype)]

    # --- the step ---

    def make_train_step(self) -> Callable[[Any], Any]:
        """A ``tf.function`` that reads ``grad_accum_steps`` batches and makes one update.

        Returns:
            ``train_step(iterator) -> {name: scalar}`` with :attr:`log_names`, reduced over
            replicas (global-batch means).
        """
        from xprospect.training.distribute import distributed_step

        accum = int(self.run.cfg.training.grad_accum_steps or 1)
        return distributed_step(self.run.strategy, self._replica_step(accum), batches=accum)

    def _clipper(self, optimizer: Any) -> Callable[[list[Any]], list[Any]]:
        import tensorflow as tf

        clip = self.run.cfg.optimizer.clip_global_norm
        replicas = self.run.replicas

        def clipped(grads: list[Any]) -> list[Any]:
            if clip is None:
                return grads
            # The global norm of the summed gradient, as on one device: sum over replicas here,
            # clip, and hand each replica 1/n of it since the optimizer sums them again.
            idx = [i for i, g in enumerate(grads) if g is not None]
            present = [grads[i] for i in idx]
            scale = tf.cast(optimizer.scale_loss(tf.constant(1.0)), tf.float32)
            if replicas > 1:
                ctx = tf.distribute.get_replica_context()
                present = ctx.all_reduce(tf.distribute.ReduceOp.SUM, present)
            present = [g / scale for g in present]
            present, _ = tf.clip_by_global_norm(present, clip)
            present = [g * (scale / replicas) for g in present]
            out = list(grads)
            for i, g in zip(idx, present, strict=True):
                out[i] = g
            return out

        return clipped

    def _generator_terms(
        self, x: Any, y: Any, pred: Any, mask: Any, fake: Any, heads: Any = (), valid: Any = None
    ) -> Any:
        """Per-example weighted generator loss ``(B,)`` and the unweighted adversarial term.
        ``heads``: deep-supervision predictions, each scored by the voxel terms, averaged.
        ``valid``: the scan masks (``data.validity_mask``): the voxel terms are taken inside
        them (:func:`xprospect.losses.within_scan_mask`); the lung, perceptual and adversarial
        terms are not (the lungs lie inside the scan; the others see whole volumes)."""
        import tensorflow as tf

        from xprospect.losses import MASKED_TERMS, generator_adversarial_per_example

        total = tf.zeros([tf.shape(y)[0]], tf.float32)
        if self.plain_loss is not None:
            voxel_terms = self.plain_loss
            # Read only with masks: a logic assembled without __init__ (tests) lacks it.
            masked_terms = self.plain_loss_in if valid is not None else None
            if masked_terms is not None:

                def voxel_terms(t: Any, p: Any) -> Any:
                    return masked_terms(t, p, valid)

            total += voxel_terms(y, pred)
            if heads:
                total += tf.add_n([voxel_terms(y, h) for h in heads]) / float(len(heads))
        for name, fn in MASKED_TERMS.items():
            if name in self.weights:
                total += self.weights[name] * fn(y, pred, mask)
        if self.perceptual is not None:
            total += self.weights["perceptual"] * tf.cast(
                self.perceptual.call(y, tf.cast(pred, tf.float32)), tf.float32
            )
        adv = None
        if fake is not None:
            adv = generator_adversarial_per_example(fake, self.adversarial_kind)
            total += self.weights["adversarial"] * adv
        return total, adv

    def _replica_step(self, accum: int) -> Callable[[list[Any]], dict[str, Any]]:
        import tensorflow as tf

        from xprospect.losses import discriminator_loss_per_example

        g, opt = self.model, self.optimizer
        d, d_opt = self.discriminator, self.d_optimizer
        global_batch = self.run.cfg.data.batch_size * accum
        clip_g = self._clipper(opt)
        clip_d = self._clipper(d_opt) if d is not None else None
        kind = self.adversarial_kind
        d_weight = 0.5 if self.run.cfg.gan.d_loss_weight is None else self.run.cfg.gan.d_loss_weight
        names = self.log_names

        def dense(grads: list[Any], variables: list[Any]) -> list[Any]:
            return [
                tf.zeros_like(v) if gr is None else gr
                for gr, v in zip(grads, variables, strict=True)
            ]

        def micro(x: Any, y: Any) -> tuple[list[Any], list[Any], dict[str, Any]]:
            """Gradients (of losses averaged over the global batch) and logged values."""
            g_vars = g.trainable_variables
            d_vars = d.trainable_variables if d is not None else []
            x = dict(x)
            mask = x.pop("lung_mask", None)
            valid = x.pop("scan_mask", None)
            with tf.GradientTape(persistent=d is not None) as tape:
                heads: list[Any] = []
                if self.supervised_model is not None:
                    pred, *heads = self.supervised_model(x, training=True)
                else:
                    pred = g(x, training=True)
                fake = real = None
                if d is not None:
                    fake = d({"volume": pred, **x}, training=True)
                    real = d({"volume": y, **x}, training=True)
                per_example, adv = self._generator_terms(x, y, pred, mask, fake, heads, valid=valid)
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
                if g.losses:
                    reg = tf.add_n([tf.cast(v, tf.float32) for v in g.losses])
                    loss += tf.nn.scale_regularization_loss(reg) / accum
                scaled = opt.scale_loss(loss)
                if d is not None:
                    d_loss = tf.nn.compute_average_loss(
                        discriminator_loss_per_example(real, fake, kind, d_weight),
                        global_batch_size=global_batch,
                    )
                    d_scaled = d_opt.scale_loss(d_loss)
            values = {"loss": loss}
            g_grads = dense(tape.gradient(scaled, g_vars), g_vars)
            d_grads: list[Any] = []
            if d is not None:
                d_grads = dense(tape.gradient(d_scaled, d_vars), d_vars)
                values["d_loss"] = d_loss
                values["g_adversarial"] = tf.nn.compute_average_loss(
                    adv, global_batch_size=global_batch
                )
            return g_grads, d_grads, values

        def replica_step(batches: list[Any]) -> dict[str, Any]:
            if accum == 1:
                g_acc, d_acc, sums = micro(*batches[0])
            else:
                # A while loop runs the micro-batches one after the other, so only one
                # micro-batch's activations are alive at a time (unrolled Python code lets the
                # executor run the forward passes side by side: 4x the memory, measured).
                xs = tf.nest.map_structure(lambda *t: tf.stack(t), *[b[0] for b in batches])
                ys = tf.stack([b[1] for b in batches])
                g_zero = [tf.zeros_like(v) for v in g.trainable_variables]
                d_zero = [tf.zeros_like(v) for v in d.trainable_variables] if d is not None else []
                s_zero = {k: tf.constant(0.0) for k in names}

                def body(i: Any, g_sum: Any, d_sum: Any, s_sum: Any) -> Any:
                    x = tf.nest.map_structure(lambda t: t[i], xs)
                    gg, dg, vals = micro(x, ys[i])
                    return (
                        i + 1,
                        [a + b for a, b in zip(g_sum, gg, strict=True)],
                        [a + b for a, b in zip(d_sum, dg, strict=True)],
                        {k: s_sum[k] + vals[k] for k in names},
                    )

                _, g_acc, d_acc, sums = tf.while_loop(
                    lambda i, *_: i < accum,
                    body,
                    (tf.constant(0), g_zero, d_zero, s_zero),
                    parallel_iterations=1,
                )
            opt.apply(clip_g(list(g_acc)), g.trainable_variables)
            if d is not None and clip_d is not None:
                d_opt.apply(clip_d(list(d_acc)), d.trainable_variables)
            return sums

        return replica_step
