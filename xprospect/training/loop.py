"""The training loop behind :class:`xprospect.training.Trainer` (one ``fit`` call).

:class:`TrainingRun` owns the data, checkpoints, resume, validation and logs of one run; the
networks, optimizers and the replica step are its :class:`xprospect.training.steps.StepLogic`'s.
It sees the trainer only through :class:`RunOwner` (the factories, hooks and strategy), so this
module does not import :mod:`xprospect.training.trainer`.

One step logic for every strategy: each replica computes per-example losses, averages them over
the global batch (``tf.nn.compute_average_loss``) and applies its gradients through the Keras 3
optimizer inside ``strategy.run`` (the optimizer sums them over replicas). The host reads the
reduced loss after every step, so a NaN or Inf loss stops all workers at the same step, before
anything of that state is saved.

The run folder is locked (:func:`xprospect.utils.folder_lock`) from before the run looks for a
checkpoint until it ends. ``SIGINT`` (Ctrl-C) and ``SIGTERM`` (how cluster schedulers preempt a
job) do not kill the run: the handler of :func:`stop_on_signals` sets a flag that the loop reads
before each step; it then saves a checkpoint at the step reached and raises
:class:`TrainingInterrupted` (a ``KeyboardInterrupt``: the CLI prints its one-line message and
exits with 130), and the same command resumes from that checkpoint. A second signal stops at once.
Under ``MultiWorkerMirroredStrategy`` the signals keep their default action (a save needs every
worker, and a signal may reach only one): the run resumes from its last periodic checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from xprospect.config import ExperimentConfig, config_to_dict, dump_config
from xprospect.config.engine import read_yaml_file
from xprospect.data.manifest import read_manifest, split_cases
from xprospect.errors import ConfigError, XprospectError
from xprospect.training.results import TrainResult
from xprospect.training.steps import NetworkFactories, StepLogic
from xprospect.utils import IN_RESULT, folder_lock

__all__ = [
    "RunOwner",
    "StepHook",
    "TrainingInterrupted",
    "TrainingRun",
    "stop_on_signals",
    "stop_requested",
    "target_window",
    "total_steps",
]

log = logging.getLogger("xprospect.training")

StepHook = Callable[[int, Mapping[str, float]], None]
"""``step_hook(step, logs)``, called after each step."""


class TrainingInterrupted(KeyboardInterrupt):
    """A run stopped by ``SIGINT``/``SIGTERM`` after saving a checkpoint at the step reached.

    It is a ``KeyboardInterrupt``, so code that handles Ctrl-C handles it, and KerasTuner (which
    catches ``Exception``) lets it through, leaving the trial to be resumed.

    Attributes:
        step: The step reached (and saved, when ``checkpoint`` is set).
        checkpoint: The checkpoint saved now, or None (nothing new to save, or non-finite state).
        output_dir: The run folder.
        signal_name: ``SIGINT`` or ``SIGTERM``.
    """

    def __init__(
        self, message: str, *, step: int, checkpoint: str | None, output_dir: Path, signal_name: str
    ) -> None:
        super().__init__(message)
        self.step = step
        self.checkpoint = checkpoint
        self.output_dir = output_dir
        self.signal_name = signal_name


class _StopSignals:
    """Turns ``SIGINT``/``SIGTERM`` into a flag (one handler for the process, nestable)."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._depth = 0
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.received is not None:
            raise KeyboardInterrupt(f"{name} received twice: stopped without saving")
        self.received = name
        log.info("%s received: stopping after this step (send it again to stop at once)", name)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # only the main thread may set signal handlers
            return
        if self._depth == 0:
            self.received = None
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:
                for signum, handler in self._previous.items():
                    signal.signal(signum, handler)
                self._previous.clear()
                self.received = None


_STOP = _StopSignals()


def stop_on_signals() -> contextlib.AbstractContextManager[None]:
    """While entered (in the main thread), ``SIGINT`` and ``SIGTERM`` set the flag that
    :func:`stop_requested` reads instead of stopping the process; a second signal raises
    ``KeyboardInterrupt`` at once. Nested uses share one handler (a tune search around its
    trials' runs); the flag is cleared when the outermost is entered and left."""
    return _STOP.installed()


def stop_requested() -> str | None:
    """The signal (``"SIGINT"``, ``"SIGTERM"``) that asked the running loop to stop, or None."""
    return _STOP.received


class RunOwner(NetworkFactories, Protocol):
    """What a :class:`TrainingRun` needs of its trainer (:class:`xprospect.training.Trainer`).

    The run reads the factories, the hook, the progress flag and the strategy, and hands the
    built networks, optimizers and step logic back through the remaining attributes.
    """

    step_hook: StepHook | None
    progress: bool
    strategy: Any
    model: Any
    optimizer: Any
    discriminator: Any
    d_optimizer: Any
    logic: Any


def target_window(config: ExperimentConfig) -> str | tuple[float, ...]:
    """The HU window of the targets, ``data.hu_window``, as :func:`xprospect.data.load_dataset`
    takes it (a window name, or a ``(low, high)`` tuple)."""
    w = config.data.hu_window
    return w if isinstance(w, str) else tuple(w)


def total_steps(config: ExperimentConfig, steps_per_epoch: int) -> int:
    """The run length: ``training.steps``, else ``training.epochs`` (default 1) epochs."""
    t = config.training
    if t.steps is not None:
        return t.steps
    return int(t.epochs or 1) * steps_per_epoch


class TrainingRun:
    """The state of one :meth:`Trainer.fit` call (kept apart to keep the Trainer reusable).

    The loop (:meth:`execute`: steps, logs, checkpoints, resume, divergence checks) is shared by
    every kind of model. A subclass trains another kind (the CycleGAN of
    :mod:`xprospect.style.training`) by overriding the data (:meth:`_setup_data`,
    :meth:`_dataset_fn`), :meth:`_make_logic`, :meth:`_validate`, :meth:`_log_images`,
    :meth:`_export`, :meth:`_figures` and :attr:`best_key`.
    """

    best_key: str | None = "val_psnr_3d"
    """The validation metric (maximised) that selects ``best.weights.h5``; None: no best model."""
    final_name = "model.keras"
    """The file whose presence says a run finished."""
    val_columns: tuple[str, ...] = ()
    """Validation metrics written to ``metrics.csv`` beyond ``val_loss/psnr_3d/mae``."""

    def __init__(self, trainer: RunOwner, cfg: ExperimentConfig) -> None:
        import tensorflow as tf

        from xprospect.training.checkpoints import CheckpointStore
        from xprospect.training.distribute import is_chief, strategy_label

        self.t0 = time.perf_counter()
        self.trainer = trainer
        self.cfg = cfg
        self.strategy = trainer.strategy
        self.label = strategy_label(self.strategy)
        self.chief = is_chief(self.strategy)
        self.replicas = int(self.strategy.num_replicas_in_sync)
        self.out = Path(cfg.training.output_dir)
        batch = cfg.data.batch_size
        if batch % self.replicas:
            raise ConfigError(
                f"data.batch_size {batch} must be a multiple of the {self.replicas} replicas"
            )
        n_train, self.has_val = self._setup_data()
        self.scan_masked = self._scan_masked()
        if n_train < self.replicas:
            raise ConfigError(
                f"the train split of {cfg.data.dir} has fewer cases than the {self.replicas} "
                "replicas that each need their own"
            )
        if cfg.training.steps_per_epoch:
            self.steps_per_epoch = int(cfg.training.steps_per_epoch)
        else:
            # One step reads grad_accum_steps batches: an epoch is one pass over the cases.
            accum = int(cfg.training.grad_accum_steps or 1)
            self.steps_per_epoch = max(1, n_train // (batch * accum))
        self.total = total_steps(cfg, self.steps_per_epoch)
        # Held until execute() ends: the chief alone writes into the run folder.
        self._held = contextlib.ExitStack()
        try:
            if self.chief:
                self._held.enter_context(folder_lock(self.out))
            self.store = CheckpointStore(
                self.out, chief=self.chief, keep=cfg.training.keep_checkpoints
            )
            self.store.sweep()
            self.latest = self.store.latest()
            self.start_step = self.store.saved_step(self.latest) if self.latest else 0
            self._agree_on_start()
        except BaseException:
            self._held.close()
            raise
        self.saved_step = self.start_step
        self.startup_s: dict[str, float] = {}
        """Seconds before the first step: ``build``, ``trace``, ``first_step``, ``total``."""
        self.step_var = tf.Variable(self.start_step, dtype=tf.int64, trainable=False, name="step")
        self.last_val: dict[str, float] = {}
        self.sample: tuple[np.ndarray, np.ndarray, str] | None = None

    # --- set-up ---

    def _setup_data(self) -> tuple[int, bool]:
        """Reads what the run needs to know of its data: (training examples, has a val split)."""
        self.manifest = read_manifest(self.cfg.data.dir)
        return split_cases(self.manifest, "train"), split_cases(self.manifest, "val") > 0

    def _scan_masked(self) -> bool:
        """Whether losses and validation are taken inside each case's scanned region:
        ``data.validity_mask`` is on and some case of the dataset was only partly scanned (a
        fully scanned dataset trains exactly as without masks, with no mask in its pipeline)."""
        from xprospect.data.manifest import scan_fraction

        # Runs of other kinds (the CycleGAN's) have their own data config, without the option.
        wanted = bool(getattr(self.cfg.data, "validity_mask", False))
        manifest = getattr(self, "manifest", None)
        return wanted and isinstance(manifest, dict) and scan_fraction(manifest) < 1.0

    def _make_logic(self) -> Any:
        return StepLogic(self)

    @staticmethod
    def psnr(truth: np.ndarray, pred: np.ndarray, mask: np.ndarray | None = None) -> float:
        """PSNR-3D of one case (:func:`xprospect.metrics.psnr_3d`, inside ``mask`` if given)."""
        from xprospect.metrics import psnr_3d

        return float(psnr_3d(truth, pred, mask=mask))

    def _agree_on_start(self) -> None:
        """Stops when workers see different checkpoints (the run folder must be shared)."""
        if self.label != "multiworker":
            return
        import tensorflow as tf

        step = float(self.start_step)

        @tf.function
        def moments() -> Any:
            per_replica = self.strategy.run(
                lambda: tf.constant([1.0, step, step * step], tf.float64)
            )
            return self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

        n, s, q = (float(v) for v in moments().numpy())
        if q / n - (s / n) ** 2 > 1e-6:
            raise ConfigError(
                "workers found different checkpoints; training.output_dir must be a folder all "
                "workers share",
                self.out,
            )

    def _dataset_fn(self, skip_steps: int) -> Callable[[Any], Any]:
        from xprospect.data import augmentation_from_dict, load_dataset

        cfg = self.cfg
        augment = augmentation_from_dict(cfg.data.augmentation)

        def fn(ctx: Any) -> Any:
            ds = load_dataset(
                cfg.data.dir,
                "train",
                batch_size=cfg.data.batch_size,
                hu_window=target_window(cfg),
                views=tuple(cfg.data.views),
                xray_mapping=cfg.data.xray_mapping,
                with_lung_mask=self.logic.needs_mask,
                with_scan_mask=self.scan_masked,
                shuffle=True,
                shuffle_buffer=cfg.data.shuffle_buffer,
                # Each pipeline its own seed: equal seeds would give every replica the same
                # augmentation draws at every step.
                seed=cfg.training.seed + int(ctx.input_pipeline_id),
                repeat=True,
                cache=cfg.data.cache,
                augment=augment,
                input_context=ctx,
                drop_remainder=True,
            )
            if skip_steps:
                # One step consumes one batch per local replica fed by this pipeline.
                per_step = max(1, ctx.num_replicas_in_sync // ctx.num_input_pipelines)
                ds = ds.skip(skip_steps * per_step)
            return ds

        return fn

    def _data_mode(self) -> str:
        wanted = self.cfg.training.resume_data
        cache = bool(getattr(self.cfg.data, "cache", False))
        can_save = self.label in ("default", "mirrored") and not cache
        if wanted == "iterator" and not can_save:
            reason = "with data.cache" if cache else f"under the {self.label} strategy"
            raise ConfigError(
                f"training.resume_data: TensorFlow cannot save the input iterator {reason}; "
                "use auto or skip"
            )
        return "iterator" if wanted in ("auto", "iterator") and can_save else "skip"

    def _build(self) -> None:
        import tensorflow as tf

        from xprospect.training.distribute import DataTracking, input_options

        self.logic = self._make_logic()
        with self.strategy.scope():
            self.logic.build()
        self.model, self.optimizer = self.logic.model, self.logic.optimizer
        self.trainer.model, self.trainer.optimizer = self.model, self.optimizer
        self.trainer.discriminator = self.logic.discriminator
        self.trainer.d_optimizer = self.logic.d_optimizer
        self.trainer.logic = self.logic
        plain = self.logic.plain_loss
        if plain is None:
            from xprospect.losses import build_loss, per_example_loss

            # Validation scores the voxel terms; a config with none of them gets MAE.
            plain = per_example_loss(build_loss({"mae": 1.0}))
        self.loss = plain
        if not self.start_step and not self.latest:
            self._set_template()

        self.data_mode = self._data_mode()
        expected = (
            [f"replica_{i}" for i in range(self.replicas)] if self.data_mode == "iterator" else []
        )
        restore_data = bool(self.latest) and self.data_mode == "iterator"
        if restore_data and self.latest and self.store.saved_data(self.latest) != expected:
            log.warning(
                "the checkpoint holds no input state for %d replica(s) (strategy or resume_data "
                "changed); resuming the input by skipping %d batches",
                self.replicas,
                self.start_step,
            )
            restore_data = False
        skip = self.start_step if self.latest and not restore_data else 0
        options = input_options(self.strategy)
        dist = self.strategy.distribute_datasets_from_function(self._dataset_fn(skip), options)
        self.iterator = iter(dist)
        tracking = DataTracking(self.iterator) if self.data_mode == "iterator" else None
        if tracking is not None and tracking.trackable is None:
            # TensorFlow changed its private iterator layout: fall back to skipping.
            log.warning("this TensorFlow cannot save the input iterator; resume will skip batches")
            self.data_mode, tracking, restore_data = "skip", None, False
            if self.latest and not skip:
                dist = self.strategy.distribute_datasets_from_function(
                    self._dataset_fn(self.start_step), options
                )
                self.iterator = iter(dist)
        objects: dict[str, Any] = {**self.logic.checkpoint_objects(), "step": self.step_var}
        if tracking is not None:
            objects["data"] = tracking.trackable
        self.checkpoint = tf.train.Checkpoint(**objects)
        if self.latest:
            if restore_data:
                self.store.restore(self.checkpoint, self.latest)
            else:
                partial = {k: v for k, v in objects.items() if k != "data"}
                self.store.restore(tf.train.Checkpoint(**partial), self.latest)
            log.info("resumed from %s at step %d", self.latest, self.start_step)
        self.store.attach(self.checkpoint)

    # --- weights ---

    @contextlib.contextmanager
    def ema_weights(self) -> Iterator[None]:
        """Swaps the EMA weights in (when ``use_ema``), and the training weights back after."""
        import keras

        if not self.cfg.optimizer.use_ema:
            yield
            return
        groups = self.logic.ema_groups()
        backup = [[keras.ops.convert_to_numpy(v) for v in variables] for _, variables in groups]
        for optimizer, variables in groups:
            optimizer.finalize_variable_values(variables)
        try:
            yield
        finally:
            for (_, variables), saved in zip(groups, backup, strict=True):
                for v, b in zip(variables, saved, strict=True):
                    v.assign(b)

    def _finite_state(self) -> bool:
        """Whether every float weight and optimizer variable is finite (checked on device)."""
        import tensorflow as tf

        if getattr(self, "_all_finite", None) is None:
            variables = self.logic.state_variables()

            @tf.function
            def all_finite() -> Any:
                flags = [
                    tf.reduce_all(tf.math.is_finite(tf.convert_to_tensor(v))) for v in variables
                ]
                return tf.reduce_all(tf.stack(flags))

            self._all_finite = all_finite
        return bool(self._all_finite())

    # --- validation ---

    def _validate(self) -> dict[str, float]:
        import tensorflow as tf

        from xprospect.data import load_dataset

        cfg = self.cfg
        batch = max(1, cfg.data.batch_size // self.replicas)
        ds = load_dataset(
            cfg.data.dir,
            "val",
            batch_size=batch,
            hu_window=target_window(cfg),
            views=tuple(cfg.data.views),
            xray_mapping=cfg.data.xray_mapping,
            shuffle=False,
            with_case_id=True,
            with_scan_mask=self.scan_masked,
        )
        predict = self._predict_fn()
        loss = self.loss
        if self.scan_masked:
            from xprospect.losses import within_scan_mask

            loss_in = within_scan_mask(self.loss)
        losses: list[float] = []
        psnrs: list[float] = []
        maes: list[float] = []
        limit = cfg.data.val_cases
        self.sample = None
        for x, y in ds:
            ids = [c.decode() for c in x.pop("case_id").numpy()]
            valid = x.pop("scan_mask", None)
            pred = predict(x)
            per_case = (loss(y, pred) if valid is None else loss_in(y, pred, valid)).numpy()
            truth, out = y.numpy()[..., 0], tf.cast(pred, tf.float32).numpy()[..., 0]
            masks = None if valid is None else valid.numpy()[..., 0] > 0
            for i, case in enumerate(ids):
                if limit is not None and len(psnrs) >= limit:
                    break
                losses.append(float(per_case[i]))
                m = None if masks is None else masks[i]
                psnrs.append(self.psnr(truth[i], out[i], m))
                err = np.abs(truth[i] - out[i])
                maes.append(float(np.mean(err if m is None else err[m])))
                if self.sample is None:
                    self.sample = (truth[i], out[i], case)
            if limit is not None and len(psnrs) >= limit:
                break
        return {
            "val_loss": float(np.mean(losses)),
            "val_psnr_3d": float(np.mean(psnrs)),
            "val_mae": float(np.mean(maes)),
        }

    def _predict_fn(self) -> Callable[[Any], Any]:
        if not hasattr(self, "_predict"):
            import tensorflow as tf

            model = self.model
            self._predict = tf.function(lambda x: model(x, training=False))
        return self._predict

    def _train_sample(self) -> None:
        """Panel material when there is no validation split: the first training case."""
        import tensorflow as tf

        from xprospect.data import load_dataset

        cfg = self.cfg
        ds = load_dataset(
            cfg.data.dir,
            "train",
            batch_size=1,
            hu_window=target_window(cfg),
            views=tuple(cfg.data.views),
            xray_mapping=cfg.data.xray_mapping,
            shuffle=False,
            with_case_id=True,
        )
        x, y = next(iter(ds))
        case = x.pop("case_id").numpy()[0].decode()
        pred = tf.cast(self._predict_fn()(x), tf.float32).numpy()[0, ..., 0]
        self.sample = (y.numpy()[0, ..., 0], pred, f"{case} (training case: no val split)")

    # --- the loop ---

    def execute(self) -> TrainResult:
        """Runs the loop (see the module docstring); releases the run folder's lock at the end.

        Raises:
            TrainingInterrupted: ``SIGINT``/``SIGTERM`` stopped the run (a checkpoint was saved).
        """
        # Signals keep their default action under multi-worker (see the module docstring).
        signals = stop_on_signals() if self.label != "multiworker" else contextlib.nullcontext()
        with self._held, signals:
            return self._execute()

    def _execute(self) -> TrainResult:
        from xprospect.training.distribute import graph_rewrites

        t = time.perf_counter()
        self._build()
        self.startup_s["build"] = time.perf_counter() - t
        with graph_rewrites(self.logic.checkpoint_objects().values()):
            return self._train()

    def _train(self) -> TrainResult:
        from xprospect.training.checkpoints import read_json

        cfg = self.cfg
        if self.chief:
            self._write_config()
        state = self.store.read_state() or {}
        elapsed0 = float(state.get("elapsed_s", 0.0)) if self.latest else 0.0
        best = read_json(self.out / "best.json") if self.latest else None
        self.best_psnr = float(best["val_psnr_3d"]) if best else -math.inf
        self.best = best
        step = self.start_step
        if step >= self.total and (self.out / self.final_name).exists():
            msg = f"already trained to step {step} (training.steps {self.total}); nothing to do"
            log.warning(msg)
            return self._result("completed", step, message=msg)

        from xprospect.training.logs import MetricsCSV, TensorBoardLog

        if not self.has_val:
            log.warning("no 'val' split in %s: no validation and no best model", cfg.data.dir)
        extra = [n for n in self.logic.log_names if n != "loss"] + list(self.val_columns)
        csv = (
            MetricsCSV(self.out / "metrics.csv", step, extra_columns=extra) if self.chief else None
        )
        tb = TensorBoardLog(self.out / "tensorboard") if self.chief else None
        train_step = self.logic.make_train_step()
        t = time.perf_counter()
        trace = getattr(train_step, "get_concrete_function", None)
        if trace is not None and step < self.total:
            trace(self.iterator)  # traced here (it would be at the first call) to time it alone
        self.startup_s["trace"] = time.perf_counter() - t
        show = self.trainer.progress and self.chief
        bar = _EpochBar(self.steps_per_epoch, self.total, step, enabled=show)
        window: list[dict[str, float]] = []
        status: Literal["completed", "diverged"] = "completed"
        message = ""
        try:
            while step < self.total:
                if stop_requested():
                    self._interrupt(step, elapsed0)
                lr = self._lr()  # the rate this step uses (schedules read the iteration count)
                t = time.perf_counter()
                values = {k: float(v) for k, v in train_step(self.iterator).items()}
                if "first_step" not in self.startup_s:
                    self._started(time.perf_counter() - t)
                step += 1
                bad = [k for k, v in values.items() if not math.isfinite(v)]
                if bad:
                    status = "diverged"
                    message = self._diverged(step, values[bad[0]], name=bad[0])
                    break
                window.append(values)
                logs: dict[str, float] = {**values, "learning_rate": lr}
                row: dict[str, Any] = {}
                if step % cfg.training.log_every == 0 or step == self.total:
                    means = {k: float(np.mean([w[k] for w in window])) for k in values}
                    window = []
                    row.update(means, learning_rate=lr)
                    if tb is not None:
                        tb.scalars("train", {**means, "learning_rate": lr}, step)
                validate = self.has_val and (
                    step % cfg.training.validation_every == 0 or step == self.total
                )
                if validate:
                    with self.ema_weights():
                        self.last_val = self._validate()
                        key = self.best_key
                        if key is not None and self.last_val[key] > self.best_psnr:
                            self._save_best(step)
                    row.update(self.last_val)
                    logs.update(self.last_val)
                    if tb is not None:
                        tb.scalars(
                            "validation",
                            {k.removeprefix("val_"): v for k, v in self.last_val.items()},
                            step,
                        )
                        self._log_images(tb, step)
                bar.update(step, logs)
                if row and csv is not None:
                    elapsed = elapsed0 + time.perf_counter() - self.t0
                    epoch = (step - 1) // self.steps_per_epoch + 1
                    csv.append({"step": step, "epoch": epoch, "elapsed_s": elapsed, **row})
                if step % cfg.training.checkpoint_every == 0 or step == self.total:
                    if not self._finite_state():
                        status = "diverged"
                        message = self._diverged(step, math.nan, weights=True)
                        break
                    self._save(step, elapsed0)
                if self.trainer.step_hook is not None:
                    self.trainer.step_hook(step, logs)
        finally:
            bar.close()
            if tb is not None:
                tb.close()
        model_path = None
        if status == "completed":
            if self.has_val and not self.last_val:
                # Resumed at the final step (e.g. a crash during export): panel and metrics.
                with self.ema_weights():
                    self.last_val = self._validate()
            model_path = self._export()
        if self.chief:
            self._figures()
        return self._result(status, step, model_path=model_path, message=message)

    def _started(self, first_step_s: float) -> None:
        """Logs where the time before the first step went (:attr:`startup_s`)."""
        self.startup_s["first_step"] = first_step_s
        self.startup_s["total"] = time.perf_counter() - self.t0
        log.info(
            "start-up: build %.1f s (networks, optimizers, input, checkpoint), trace %.1f s, "
            "first step %.1f s (graph optimisation and run); %.1f s in all",
            *(self.startup_s[k] for k in ("build", "trace", "first_step", "total")),
        )

    def _save(self, step: int, elapsed0: float) -> str | None:
        self.step_var.assign(step)
        path = self.store.save(step, self._state(step, elapsed0))
        self.saved_step = step
        return path

    def _interrupt(self, step: int, elapsed0: float) -> None:
        """Saves a checkpoint at ``step`` (unless saved already or not finite) and raises
        :class:`TrainingInterrupted`."""
        name = stop_requested() or "SIGINT"
        saved = None
        if step > self.saved_step and self._finite_state():
            saved = self._save(step, elapsed0)
        latest = self.store.latest()
        if latest and step == self.saved_step:
            where = f"checkpoint {Path(latest).name} in {self.store.dir}"
        elif latest:
            where = f"state not finite, not saved; the last checkpoint is {latest}"
        else:
            where = "nothing saved"
        raise TrainingInterrupted(
            f"{name}: stopped at step {step} of {self.total} ({where}); "
            "run the same command again to resume",
            step=step,
            checkpoint=saved,
            output_dir=self.out,
            signal_name=name,
        )

    def _log_images(self, tb: Any, step: int) -> None:
        """TensorBoard images after a validation: truth | prediction | error slices."""
        if self.sample is not None:
            tb.slices(self.sample[0], self.sample[1], step)

    def _set_template(self) -> None:
        """Gives a model with a CT template (S-XR2CT) the mean training volume, on a fresh run."""
        if not hasattr(self.model, "set_template"):
            return
        from xprospect.evaluation import MeanVolumeBaseline

        cfg = self.cfg
        mean = MeanVolumeBaseline.fit(cfg.data.dir, hu_window=target_window(cfg)).mean
        self.model.set_template(mean)
        log.info("template CT: the mean of the training volumes of %s", cfg.data.dir)

    def _lr(self) -> float:
        import keras

        return float(keras.ops.convert_to_numpy(self.optimizer.learning_rate))

    def _diverged(
        self, step: int, loss: float, *, weights: bool = False, name: str = "loss"
    ) -> str:
        what = "weights or optimizer state became NaN/Inf" if weights else f"{name} is {loss}"
        latest = self.store.latest()
        kept = f"the last good checkpoint is {latest}" if latest else "no checkpoint was saved"
        msg = (
            f"training diverged at step {step}: {what}; stopped without saving this state, "
            f"{kept} (try a lower optimizer.learning_rate or optimizer.clip_global_norm)"
        )
        log.error(msg, extra=IN_RESULT)  # the CLI prints the result's message instead
        return msg

    def _state(self, step: int, elapsed0: float) -> dict[str, Any]:
        from xprospect import __version__

        return {
            "total_steps": self.total,
            "epoch": (step - 1) // self.steps_per_epoch + 1,
            "elapsed_s": elapsed0 + time.perf_counter() - self.t0,
            "strategy": self.label,
            "replicas": self.replicas,
            "data_resume": self.data_mode,
            "best": self.best,
            "xprospect_version": __version__,
        }

    def _save_best(self, step: int) -> None:
        from xprospect.training.checkpoints import atomic_keras_file, write_json

        self.best_psnr = self.last_val[self.best_key or "val_psnr_3d"]
        self.best = {"step": step, **self.last_val, "ema": self.cfg.optimizer.use_ema}
        if not self.chief:
            return
        with atomic_keras_file(self.out / "best.weights.h5") as tmp:
            self.model.save_weights(tmp)
        # Written after the weights: best.json never names weights that are not on disk.
        write_json(self.out / "best.json", self.best)

    def _export(self) -> Path | None:
        from xprospect.training.checkpoints import atomic_keras_file

        path = self.out / "model.keras"
        with self.ema_weights():
            if self.sample is None:
                self._train_sample()
            if not self.chief:
                return None
            with atomic_keras_file(path) as tmp:
                self.model.save(tmp)
        log.info("saved %s", path)
        return path

    def _figures(self) -> None:
        from xprospect.training.logs import read_metrics, save_curves, save_panel

        rows = read_metrics(self.out / "metrics.csv")
        if rows:
            save_curves(rows, self.out / "curves.png")
        if self.sample is not None:
            truth, pred, case = self.sample
            title = f"{case}: PSNR-3D {self.psnr(truth, np.clip(pred, 0, 1)):.2f} dB"
            save_panel(truth, pred, self.out / "val_panel.png", title=title)

    def _write_config(self) -> None:

        path = self.out / "config.yaml"
        if path.exists() and self.latest:
            # Compared as written (both resolved): no need to know the config's class.
            try:
                old = read_yaml_file(path) or {}
            except XprospectError:
                old = {}
            new = config_to_dict(self.cfg)
            changed = _diff(old, new, ignore={"training.steps", "training.epochs"})
            if changed:
                log.warning("resuming with changed settings: %s", ", ".join(changed))
        dump_config(self.cfg, path)

    def _result(
        self,
        status: Literal["completed", "diverged"],
        step: int,
        *,
        model_path: Path | None = None,
        message: str = "",
    ) -> TrainResult:
        seconds = time.perf_counter() - self.t0
        if not message:
            best = self.best
            tail = (
                f"; best val PSNR-3D {best['val_psnr_3d']:.2f} dB at step {best['step']}"
                if best
                else ""
            )
            message = f"trained to step {step} in {seconds:.0f} s{tail}; outputs in {self.out}"
        return TrainResult(
            status=status,
            steps=step,
            start_step=self.start_step,
            output_dir=self.out,
            model_path=model_path,
            best=self.best,
            metrics=dict(self.last_val),
            seconds=seconds,
            message=message,
        )


def _diff(
    old: Mapping[str, Any], new: Mapping[str, Any], ignore: set[str], prefix: str = ""
) -> list[str]:
    keys = sorted(set(old) | set(new))
    out: list[str] = []
    for k in keys:
        name = f"{prefix}{k}"
        a, b = old.get(k), new.get(k)
        if isinstance(a, Mapping) and isinstance(b, Mapping) and name not in ignore:
            out += _diff(a, b, ignore, f"{name}.")
        elif a != b and name not in ignore:
            out.append(name)
    return out


class _EpochBar:
    """A Keras ``Progbar`` per epoch; a resumed run starts mid-epoch where it stopped."""

    def __init__(self, steps_per_epoch: int, total: int, step: int, *, enabled: bool) -> None:
        self.spe = steps_per_epoch
        self.epochs = math.ceil(total / steps_per_epoch)
        self.total = total
        self.enabled = enabled
        self.bar: Any = None
        self.epoch = -1
        if enabled and step < total:
            self._open(step)

    def _open(self, step: int) -> None:
        import keras

        self.epoch = step // self.spe
        target = min(self.spe, self.total - self.epoch * self.spe)
        print(f"Epoch {self.epoch + 1}/{self.epochs}", flush=True)
        self.bar = keras.utils.Progbar(
            target, stateful_metrics=["learning_rate", "val_loss", "val_psnr_3d", "val_mae"]
        )
        if step % self.spe:
            self.bar.update(step % self.spe)

    def update(self, step: int, logs: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        if self.bar is None or (step - 1) // self.spe != self.epoch:
            self._open(step - 1)
        self.bar.update(step - self.epoch * self.spe, values=list(logs.items()))

    def close(self) -> None:
        self.bar = None
