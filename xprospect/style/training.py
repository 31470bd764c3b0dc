"""Training one CycleGAN (one view) through xprospect's shared training loop.

``xprospect style train --config FILE.yaml`` runs :func:`train_style`. Domain A holds the DRRs
(or mean-CT projections) of a dataset written by ``xprospect prepare``, domain B the real
radiographs of a folder and its manifest (:mod:`xprospect.style.radiographs`). One step reads a
batch of each and updates:

- the generators ``drr2real`` (A → B) and ``real2drr`` (B → A) with one optimizer on
  ``adv(D_B(G(a))) + adv(D_A(F(b))) + lambda * (|F(G(a)) - a| + |G(F(b)) - b|)
  + identity * lambda * (|G(b) - b| + |F(a) - a|)``, LSGAN (or BCE) adversarial terms;
- the discriminators ``d_drr`` and ``d_real`` with another, each on
  ``0.5 * (adv_real(D(real)) + adv_fake(D(pool(fake))))`` where ``pool`` is an
  :class:`ImageHistoryBuffer` of the last ``history_size`` generated images (Shrivastava et al.).

Both updates use the same forward pass (the discriminators' loss sees the generated images with
their gradient stopped), like the official implementation's ``G`` then ``D`` step with one batch.
With ``optimizer.use_ema`` and ``optimizer.ema_reset: epoch`` (XprospeCT's setting) the live
weights are set to their exponential moving average at the end of every epoch.

The run folder is the shared loop's (``config.yaml``, ``checkpoints/``, ``metrics.csv``,
``tensorboard/`` with input | translated | cycled image grids, ``curves.png``) plus, at the end:
``drr2real.keras``, ``real2drr.keras``, ``style_panel.png`` and ``style.json`` (what
:class:`xprospect.style.apply.StyleModel` needs to preprocess and translate; written last).
Like every run of the shared loop, it locks its folder while it trains, and ``SIGINT``/``SIGTERM``
save a checkpoint at the step reached before it stops (:mod:`xprospect.training.loop`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xprospect.errors import ConfigError, MissingDataError
from xprospect.preprocessing import resize_images
from xprospect.style.config import StyleConfig
from xprospect.style.film import FilmAugmentation, FilmAugmentationConfig, film_seed
from xprospect.training import Trainer, TrainResult
from xprospect.training.loop import TrainingRun

__all__ = [
    "CycleGANStepLogic",
    "DomainImages",
    "ImageHistoryBuffer",
    "StyleTrainer",
    "StyleTrainingRun",
    "domain_a_images",
    "domain_b_images",
    "film_augment_dataset",
    "minmax_per_image",
    "resize_batch",
    "train_style",
    "translate_images",
]

log = logging.getLogger("xprospect.style")

STYLE_FILE = "style.json"
GENERATOR_FILES = {"drr2real": "drr2real.keras", "real2drr": "real2drr.keras"}


# === Data ===


@dataclass
class DomainImages:
    """The images of both domains for one run, (N, S, S) float32 in [0, 1]."""

    a_train: np.ndarray
    a_val: np.ndarray
    b_train: np.ndarray
    b_val: np.ndarray


def resize_batch(images: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W) → (N, size, size) float32 in [0, 1], area averaging down and bilinear up
    (:func:`xprospect.preprocessing.resize_images`); images already at ``size`` are only cast.

    The one resize of the style stage: training data (:func:`domain_a_images`) and
    :class:`xprospect.style.apply.StyleModel` both go through it, so a model sees images resized
    as in training.
    """
    return np.clip(resize_images(images, size), 0.0, 1.0).astype(np.float32)


def minmax_per_image(images: np.ndarray) -> np.ndarray:
    """(N, H, W) → float32 with each image min-max scaled to [0, 1] (constant images become 0).

    Domain A's ``mean_ct`` projections in training (:func:`domain_a_images`) and in
    :meth:`xprospect.style.apply.StyleModel.domain_a`.
    """
    lo = images.min(axis=(1, 2), keepdims=True)
    hi = images.max(axis=(1, 2), keepdims=True)
    return np.where(hi > lo, (images - lo) / np.maximum(hi - lo, 1e-12), 0.0).astype(np.float32)


def domain_a_images(
    dataset_dir: str | Path,
    split: str,
    view: str,
    size: int,
    *,
    source: str = "drr",
    limit: int | None = None,
) -> np.ndarray:
    """Domain A: one view of a prepared dataset's split as (N, size, size) images in [0, 1].

    Args:
        dataset_dir: A folder written by ``xprospect prepare``.
        split: ``train``, ``val`` or ``test``.
        view: ``frontal`` or ``lateral``.
        size: Output edge.
        source: ``drr``: the stored DRRs in display mapping (per-image maximum → 1, as the
            models see them); ``mean_ct``: the mean of the [-1000, 1000] HU windowed volume along
            the view's beam axis (array axis 1 for frontal, 2 for lateral; docs/conventions.md),
            min-max scaled per image.
        limit: At most this many images (None: all).
    """
    from xprospect.data import load_dataset

    if source not in ("drr", "mean_ct"):
        raise ConfigError(f"data.source must be drr or mean_ct, got {source!r}")
    ds = load_dataset(dataset_dir, split, batch_size=8, views=(view,), shuffle=False)
    out: list[np.ndarray] = []
    for x, y in ds:
        if source == "drr":
            img = x[view].numpy()[..., 0]
        else:
            axis = 2 if view == "frontal" else 3
            img = minmax_per_image(y.numpy()[..., 0].mean(axis=axis))
        out.append(img)
        if limit is not None and sum(len(o) for o in out) >= limit:
            break
    images = np.concatenate(out)[:limit]
    return resize_batch(images, size)


def domain_b_images(cfg: StyleConfig, split: str | None, limit: int | None = None) -> np.ndarray:
    """Domain B: the real radiographs of the config's view and patient split (None: all)."""
    from xprospect.style.radiographs import default_real_xray_dir, load_real_xrays

    d = cfg.data
    folder = Path(d.real_dir) if d.real_dir else default_real_xray_dir()
    if folder is None:
        raise MissingDataError(
            "no real X-ray folder: set data.real_dir or XPROSPECT_REAL_XRAYS", "data.real_dir"
        )
    images, _ = load_real_xrays(
        folder,
        d.view,
        d.size,
        manifest=d.real_manifest,
        split=split,
        val_fraction=d.val_fraction,
        seed=cfg.training.seed,
        crop=d.crop,
        percentiles=tuple(d.percentiles),
        suppress=d.suppress_markers,
        limit=limit,
    )
    return images


def film_augment_dataset(
    dataset: Any,
    config: FilmAugmentationConfig,
    seed: int,
    percentiles: Sequence[float] = (0.5, 99.5),
) -> Any:
    """Maps a ``tf.data`` stream of (S, S, 1) domain-A images through :class:`FilmAugmentation`.

    The n-th element of the stream gets the seed :func:`film_seed` ``(seed, n)``: a fresh draw
    for every image shown (an epoch never repeats another's), reproducible, and a resumed run
    (which skips the batches already seen downstream) meets the same draws. Only domain A's
    training stream goes through it; validation and evaluation images never do.
    """
    import tensorflow as tf

    def augment(index: Any, image: np.ndarray) -> np.ndarray:
        t = FilmAugmentation(config, film_seed(seed, int(index)), tuple(percentiles))
        return t(image[..., 0])[..., None]

    def map_fn(index: Any, image: Any) -> Any:
        out = tf.numpy_function(augment, [index, image], tf.float32, stateful=False)
        out.set_shape(image.shape)
        return out

    return dataset.enumerate().map(map_fn)


# === History buffer ===


class ImageHistoryBuffer:
    """The image pool of Shrivastava et al. (2017) that CycleGAN's discriminators train on.

    For each generated image: while the pool holds fewer than ``capacity`` images, store it and
    return it; once full, with probability 1/2 return a uniformly drawn stored image and store the
    new one in its place, else return the new image. ``capacity`` 0 returns its input.

    The pool, its fill count and its random draws are TensorFlow variables (saved in checkpoints,
    so a resumed run continues with the same pool). Created under a ``tf.distribute`` strategy
    they are per-replica (``ON_READ``): each replica keeps its own pool and its own random stream
    (seeded with the replica id), and a checkpoint stores the first replica's.

    Args:
        capacity: Images kept (CycleGAN: 50).
        image_shape: Shape of one image, e.g. ``(128, 128, 1)``.
        seed: Seed of the draws.
        name: Variable name prefix.
    """

    def __init__(
        self, capacity: int, image_shape: Sequence[int], seed: int = 0, name: str = "pool"
    ) -> None:
        import tensorflow as tf

        if capacity < 0:
            raise ConfigError(f"history_size must be >= 0, got {capacity}")
        self.capacity = int(capacity)
        self.image_shape = tuple(int(s) for s in image_shape)
        self.seed = int(seed)
        local = {
            "trainable": False,
            "synchronization": tf.VariableSynchronization.ON_READ,
            "aggregation": tf.VariableAggregation.ONLY_FIRST_REPLICA,
        }
        self.images = tf.Variable(
            tf.zeros((max(self.capacity, 1), *self.image_shape), tf.float32),
            name=f"{name}_images",
            **local,
        )
        self.count = tf.Variable(0, dtype=tf.int64, name=f"{name}_count", **local)
        self.draws = tf.Variable(0, dtype=tf.int64, name=f"{name}_draws", **local)

    def trackables(self) -> dict[str, Any]:
        """The variables to put in a checkpoint."""
        return {"images": self.images, "count": self.count, "draws": self.draws}

    def __call__(self, images: Any) -> Any:
        """Queries the pool with a batch ``(B, *image_shape)``; returns a batch of the same shape.

        The batch size must be static (the trainer drops partial batches).
        """
        import tensorflow as tf

        images = tf.stop_gradient(tf.cast(images, tf.float32))
        if self.capacity == 0:
            return images
        ctx = tf.distribute.get_replica_context()
        replica = tf.cast(ctx.replica_id_in_sync_group, tf.int64) if ctx is not None else 0
        out = []
        for i in range(int(images.shape[0])):
            image = images[i]
            seed = tf.stack([tf.constant(self.seed, tf.int64) * 1009 + replica, self.draws])
            u = tf.random.stateless_uniform([2], seed=seed, dtype=tf.float32)
            self.draws.assign_add(1)

            def insert(image: Any = image) -> Any:
                index = self.count.read_value()
                pool = tf.tensor_scatter_nd_update(
                    self.images.read_value(), index[None, None], image[None]
                )
                self.images.assign(pool)
                self.count.assign_add(1)
                return image

            def swap(image: Any = image, u: Any = u) -> Any:
                index = tf.minimum(
                    tf.cast(u[1] * self.capacity, tf.int64),
                    tf.constant(self.capacity - 1, tf.int64),
                )
                pool = self.images.read_value()
                old = pool[index]
                self.images.assign(
                    tf.tensor_scatter_nd_update(pool, index[None, None], image[None])
                )
                return old

            def full(image: Any = image, u: Any = u) -> Any:
                return tf.cond(u[0] < 0.5, lambda: swap(image, u), lambda: image)

            out.append(tf.cond(self.count.read_value() < self.capacity, insert, full))
        return tf.stack(out)


# === Step logic ===


class CycleGANStepLogic:
    """The four networks, two optimizers, two history buffers and the replica step.

    The interface is :class:`xprospect.training.steps.StepLogic`'s, so the shared loop runs it.
    """

    log_names = ("loss", "g_adversarial", "cycle", "identity", "d_loss")
    needs_mask = False
    plain_loss = None

    def __init__(self, run: StyleTrainingRun) -> None:
        self.run = run
        self.cfg: StyleConfig = run.cfg  # type: ignore[assignment]
        self.model: Any = None
        self.optimizer: Any = None
        self.discriminator: Any = None
        self.d_optimizer: Any = None

    def build(self) -> None:
        """Builds networks, optimizers and buffers (call inside ``strategy.scope()``)."""
        from xprospect.models.cyclegan import build_style_discriminator, build_style_generator
        from xprospect.training.optimizers import build_optimizer

        cfg, run = self.cfg, self.run
        size = cfg.data.size
        g_args, d_args = dict(cfg.model.generator), dict(cfg.model.discriminator)
        self.g_ab = build_style_generator(size, name="drr2real", **g_args)
        self.g_ba = build_style_generator(size, name="real2drr", **g_args)
        self.d_a = build_style_discriminator(size, name="d_drr", **d_args)
        self.d_b = build_style_discriminator(size, name="d_real", **d_args)
        self.model, self.discriminator = self.g_ab, self.d_b
        self.g_vars = [*self.g_ab.trainable_variables, *self.g_ba.trainable_variables]
        self.d_vars = [*self.d_a.trainable_variables, *self.d_b.trainable_variables]
        # Both optimizers as the config says (the discriminators share the schedule).
        self.optimizer = build_optimizer(cfg, run.total, steps_per_epoch=run.steps_per_epoch)  # type: ignore[arg-type]
        self.d_optimizer = build_optimizer(cfg, run.total, steps_per_epoch=run.steps_per_epoch)  # type: ignore[arg-type]
        self.optimizer.build(self.g_vars)
        self.d_optimizer.build(self.d_vars)
        shape = (size, size, 1)
        seed = cfg.training.seed
        self.pool_a = ImageHistoryBuffer(cfg.history_size, shape, seed, name="pool_drr")
        self.pool_b = ImageHistoryBuffer(cfg.history_size, shape, seed + 1, name="pool_real")

    def checkpoint_objects(self) -> dict[str, Any]:
        import tensorflow as tf

        return {
            "drr2real": self.g_ab,
            "real2drr": self.g_ba,
            "d_drr": self.d_a,
            "d_real": self.d_b,
            "optimizer": self.optimizer,
            "d_optimizer": self.d_optimizer,
            "pool_drr": tf.train.Checkpoint(**self.pool_a.trackables()),
            "pool_real": tf.train.Checkpoint(**self.pool_b.trackables()),
        }

    def ema_groups(self) -> list[tuple[Any, list[Any]]]:
        return [(self.optimizer, self.g_vars), (self.d_optimizer, self.d_vars)]

    def state_variables(self) -> list[Any]:
        nets = (self.g_ab, self.g_ba, self.d_a, self.d_b)
        out = [w for n in nets for w in n.weights]
        out += [*self.optimizer.variables, *self.d_optimizer.variables]
        return [v for v in out if "float" in str(v.dtype)]

    def make_train_step(self) -> Callable[[Any], Any]:
        """``train_step(iterator) -> {name: scalar}`` (:attr:`log_names`, global means)."""
        from xprospect.training.distribute import distributed_step

        return distributed_step(self.run.strategy, self._replica_step())

    def _replica_step(self) -> Callable[[Any], dict[str, Any]]:
        import tensorflow as tf

        from xprospect.losses import (
            discriminator_loss_per_example,
            generator_adversarial_per_example,
        )

        cfg = self.cfg
        kind = cfg.loss.adversarial
        lam = float(cfg.loss.cycle)
        lam_id = float(cfg.loss.identity) * lam
        global_batch = cfg.data.batch_size
        g_ab, g_ba, d_a, d_b = self.g_ab, self.g_ba, self.d_a, self.d_b
        opt, d_opt = self.optimizer, self.d_optimizer
        g_vars, d_vars = self.g_vars, self.d_vars

        def l1(x: Any, y: Any) -> Any:
            return tf.reduce_mean(
                tf.abs(tf.cast(x, tf.float32) - tf.cast(y, tf.float32)), [1, 2, 3]
            )

        def mean(per_example: Any) -> Any:
            return tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)

        def replica_step(batch: Any) -> dict[str, Any]:
            a, b = batch
            with tf.GradientTape(persistent=True) as tape:
                fake_b = g_ab(a, training=True)
                fake_a = g_ba(b, training=True)
                adv = generator_adversarial_per_example(
                    d_b(fake_b, training=True), kind
                ) + generator_adversarial_per_example(d_a(fake_a, training=True), kind)
                cycle = l1(g_ba(fake_b, training=True), a) + l1(g_ab(fake_a, training=True), b)
                per_example = adv + lam * cycle
                identity = tf.zeros_like(cycle)
                if lam_id > 0:
                    identity = l1(g_ab(b, training=True), b) + l1(g_ba(a, training=True), a)
                    per_example += lam_id * identity
                loss = mean(per_example)
                pooled_a = self.pool_a(fake_a)
                pooled_b = self.pool_b(fake_b)
                d_per_example = discriminator_loss_per_example(
                    d_a(a, training=True), d_a(pooled_a, training=True), kind
                ) + discriminator_loss_per_example(
                    d_b(b, training=True), d_b(pooled_b, training=True), kind
                )
                d_loss = mean(d_per_example)
                scaled, d_scaled = opt.scale_loss(loss), d_opt.scale_loss(d_loss)
            g_grads = tape.gradient(scaled, g_vars)
            d_grads = tape.gradient(d_scaled, d_vars)
            del tape
            opt.apply(g_grads, g_vars)
            d_opt.apply(d_grads, d_vars)
            return {
                "loss": loss,
                "g_adversarial": mean(adv),
                "cycle": mean(cycle),
                "identity": mean(identity),
                "d_loss": d_loss,
            }

        return replica_step


# === Run ===


class StyleTrainingRun(TrainingRun):
    """The shared loop with CycleGAN data, validation, images and export."""

    best_key = None
    final_name = STYLE_FILE
    val_columns = (
        "val_cycle_mae_drr",
        "val_cycle_mae_real",
        "val_hist_w1_before",
        "val_hist_w1_after",
    )

    def _setup_data(self) -> tuple[int, bool]:
        cfg: StyleConfig = self.cfg  # type: ignore[assignment]
        d = cfg.data
        from xprospect.data.manifest import read_manifest

        manifest = read_manifest(d.dir)
        self.manifest = manifest
        splits = {name.split("-")[0] for name in manifest.get("shards", {})}
        a_val_split = "val" if "val" in splits else "test" if "test" in splits else "train"
        a_train = domain_a_images(
            d.dir, "train", d.view, d.size, source=d.source, limit=d.max_images
        )
        a_val = domain_a_images(
            d.dir, a_val_split, d.view, d.size, source=d.source, limit=d.val_images
        )
        b_train = domain_b_images(cfg, "train", limit=d.max_images)
        b_val = domain_b_images(cfg, "val", limit=d.val_images)
        self.images = DomainImages(a_train, a_val, b_train, b_val)
        log.info(
            "style data: %d DRRs and %d real %s X-rays for training, %d + %d for validation",
            len(a_train),
            len(b_train),
            d.view,
            len(a_val),
            len(b_val),
        )
        self.style_sample: dict[str, np.ndarray] | None = None
        return max(len(a_train), len(b_train)), True

    def _make_logic(self) -> Any:
        return CycleGANStepLogic(self)

    def _dataset_fn(self, skip_steps: int) -> Callable[[Any], Any]:
        import tensorflow as tf

        cfg: StyleConfig = self.cfg  # type: ignore[assignment]
        images = self.images

        def domain(array: np.ndarray, ctx: Any, seed: int) -> Any:
            ds = tf.data.Dataset.from_tensor_slices(array[..., None])
            if ctx.num_input_pipelines > 1:
                ds = ds.shard(ctx.num_input_pipelines, ctx.input_pipeline_id)
            buffer = min(cfg.data.shuffle_buffer, len(array))
            return ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True).repeat()

        def fn(ctx: Any) -> Any:
            seed = cfg.training.seed + 2 * int(ctx.input_pipeline_id)
            batch = ctx.get_per_replica_batch_size(cfg.data.batch_size)
            a = domain(images.a_train, ctx, seed)
            if cfg.data.film_augmentation is not None:
                a = film_augment_dataset(
                    a, cfg.data.film_augmentation, seed, tuple(cfg.data.percentiles)
                )
            ds = tf.data.Dataset.zip((a, domain(images.b_train, ctx, seed + 1)))
            ds = ds.batch(batch, drop_remainder=True)
            if skip_steps:
                per_step = max(1, ctx.num_replicas_in_sync // ctx.num_input_pipelines)
                ds = ds.skip(skip_steps * per_step)
            options = tf.data.Options()
            options.deterministic = True
            return ds.with_options(options).prefetch(2)

        return fn

    def translate(self, images: np.ndarray, direction: str) -> np.ndarray:
        """Runs one generator on (N, S, S) images in batches (inference mode)."""
        g = self.logic.g_ab if direction == "drr2real" else self.logic.g_ba
        return translate_images(g, images)

    def _validate(self) -> dict[str, float]:
        from xprospect.style.metrics import histogram_distances

        im = self.images
        fake_b = self.translate(im.a_val, "drr2real")
        rec_a = self.translate(fake_b, "real2drr")
        fake_a = self.translate(im.b_val, "real2drr")
        rec_b = self.translate(fake_a, "drr2real")
        self.style_sample = {"a": im.a_val, "fake_b": fake_b, "rec_a": rec_a}
        self.style_sample.update(b=im.b_val, fake_a=fake_a, rec_b=rec_b)
        return {
            "val_cycle_mae_drr": float(np.mean(np.abs(rec_a - im.a_val))),
            "val_cycle_mae_real": float(np.mean(np.abs(rec_b - im.b_val))),
            "val_hist_w1_before": histogram_distances(im.a_val, im.b_val)["wasserstein"],
            "val_hist_w1_after": histogram_distances(fake_b, im.b_val)["wasserstein"],
        }

    def _grid(self, rows: int = 4) -> np.ndarray | None:
        s = self.style_sample
        if s is None:
            return None
        n = min(rows, len(s["a"]), len(s["b"]))

        def block(keys: Sequence[str]) -> np.ndarray:
            return np.concatenate(
                [np.concatenate([s[k][i] for k in keys], axis=1) for i in range(n)], axis=0
            )

        return np.concatenate(
            [block(("a", "fake_b", "rec_a")), block(("b", "fake_a", "rec_b"))], axis=1
        )

    def _log_images(self, tb: Any, step: int) -> None:
        grid = self._grid()
        if grid is not None:
            tb.image(
                "style/drr_translated_cycled__real_translated_cycled",
                grid,
                step,
            )

    def _export(self) -> Path | None:
        import keras

        from xprospect import __version__
        from xprospect.training.checkpoints import atomic_keras_file, write_json

        cfg: StyleConfig = self.cfg  # type: ignore[assignment]
        with self.ema_weights():
            if self.style_sample is None:
                self.last_val = self._validate()
            if not self.chief:
                return None
            for net, name in ((self.logic.g_ab, "drr2real"), (self.logic.g_ba, "real2drr")):
                with atomic_keras_file(self.out / GENERATOR_FILES[name]) as tmp:
                    net.save(tmp)
        d = cfg.data
        meta = {
            "kind": "xprospect-style",
            "view": d.view,
            "size": d.size,
            "source": d.source,
            "crop": d.crop,
            "suppress_markers": d.suppress_markers,
            "percentiles": list(d.percentiles),
            "film_augmentation": (
                None if d.film_augmentation is None else asdict(d.film_augmentation)
            ),
            "dataset": str(d.dir),
            "generators": GENERATOR_FILES,
            "steps": int(keras.ops.convert_to_numpy(self.logic.optimizer.iterations)),
            "validation": self.last_val,
            "xprospect_version": __version__,
        }
        # Written last: its presence says the generators are complete.
        write_json(self.out / STYLE_FILE, meta)
        log.info("saved %s", self.out / STYLE_FILE)
        return self.out / STYLE_FILE

    def _figures(self) -> None:
        from xprospect.style.metrics import save_style_grid
        from xprospect.training.logs import read_metrics, save_curves

        rows = read_metrics(self.out / "metrics.csv")
        if rows:
            save_curves(rows, self.out / "curves.png")
        s = self.style_sample
        if s is not None:
            save_style_grid(
                {
                    "DRR": s["a"],
                    "DRR → real": s["fake_b"],
                    "cycled": s["rec_a"],
                    "real": s["b"],
                    "real → DRR": s["fake_a"],
                },
                self.out / "style_panel.png",
                rows=min(4, len(s["a"]), len(s["b"])),
                title=f"CycleGAN {self.cfg.data.view}",  # type: ignore[attr-defined]
            )


def translate_images(generator: Any, images: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """``generator`` on (N, S, S) images in [0, 1], in batches, inference mode → (N, S, S)."""
    import tensorflow as tf

    fn = getattr(generator, "_xp_predict", None)
    if fn is None:
        fn = tf.function(lambda x: generator(x, training=False))
        generator._xp_predict = fn
    out = [
        np.asarray(fn(tf.constant(images[i : i + batch_size, ..., None], tf.float32)))[..., 0]
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(out) if out else np.zeros_like(images)


# === Entry points ===


class StyleTrainer(Trainer):
    """Runs one style experiment in the shared loop (strategies, checkpoints, resume, logs).

    Args:
        config: The style experiment.
        step_hook: ``step_hook(step, logs)`` after each step.
        progress: Show a Keras progress bar.

    After :meth:`fit`, :attr:`logic` is the run's :class:`CycleGANStepLogic` (its four networks).
    """

    run_class = StyleTrainingRun

    def __init__(
        self,
        config: StyleConfig,
        *,
        step_hook: Callable[[int, Mapping[str, float]], None] | None = None,
        progress: bool = True,
    ) -> None:
        super().__init__(config, step_hook=step_hook, progress=progress)  # type: ignore[arg-type]

    def _validate(self, config: Any) -> None:
        from xprospect.style.config import validate_style_config

        validate_style_config(config)

    def _resolve(self) -> Any:
        return self.config


def train_style(
    config: StyleConfig,
    *,
    step_hook: Callable[[int, Mapping[str, float]], None] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Trains (or resumes) one CycleGAN; see the module docstring."""
    return StyleTrainer(config, step_hook=step_hook, progress=progress).fit()
