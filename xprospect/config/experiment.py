"""The experiment schema: typed dataclasses of ``xprospect train`` files, their checks, loading.

An experiment file (``xprospect train --config FILE.yaml``) has five sections; every key is
optional except ``data.dir`` and one of ``training.steps`` / ``training.epochs``::

    name: my-run                 # free label
    data:                        # xprospect.data.load_dataset arguments
      dir: data/ds64             # a folder written by 'xprospect prepare' (relative to the cwd)
      hu_window: xprospect       # window name or [low, high] HU mapping targets to [0, 1]
      views: [frontal, lateral]  # [frontal] for single-view models
      xray_mapping: display
      augmentation: {}           # keys of xprospect.data.Augmentation, e.g. {rotate_deg: 5}
      batch_size: 2              # global batch size (split across replicas and workers)
      shuffle_buffer: 64
      cache: false
      val_cases: null            # validate on the first N cases of the val split (null: all)
      validity_mask: true        # losses ignore voxels outside each case's scanned region
    model:
      preset: 512-Dense          # a key of xprospect.models.PRESETS (case-insensitive)
      size: null                 # null: the dataset's cube size
      geometry: null             # null: the dataset's DRR geometry
      spacing_mm: null           # null: the dataset's voxel size
      overrides: {}              # build_model overrides, e.g. {base_filters: 8}
    loss: null                   # weights, e.g. {mae: 1.0, projection: 0.1}; null: the preset's
    optimizer:
      name: null                 # adam | nadam; null: the preset's
      learning_rate: null        # null: the preset's
      schedule: {name: constant} # constant | cosine | step, see ScheduleConfig
      use_ema: false
      ema_momentum: 0.999
      clip_global_norm: null
    training:
      steps: 1000                # or epochs (+ steps_per_epoch)
      validation_every: 200
      checkpoint_every: 200
      keep_checkpoints: 3
      mixed_precision: none      # none | mixed_bfloat16 | mixed_float16
      strategy: auto             # auto | one | mirrored | multiworker
      seed: 0
      output_dir: runs/my-run    # relative to the cwd

:func:`load_config` rejects unknown keys (listing the valid ones), values of the wrong type and
inconsistent settings with a :class:`~xprospect.errors.ConfigError` whose one-line message names
the file and the key (the checks of types and keys are :mod:`xprospect.config.engine`'s).
:func:`apply_overrides` applies ``section.key=value`` overrides (the CLI's ``--set``), values
parsed as YAML. The shipped experiments live in ``xprospect/configs/``
(:func:`shipped_configs`); :func:`resolve_config_path` finds them by name.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from xprospect.config import engine
from xprospect.config.engine import check
from xprospect.constants import VIEWS
from xprospect.errors import ConfigError

__all__ = [
    "CONFIG_DIR",
    "DataConfig",
    "ExperimentConfig",
    "GanConfig",
    "ModelConfig",
    "OptimizerConfig",
    "ScheduleConfig",
    "TrainingConfig",
    "XctDiffConfig",
    "apply_overrides",
    "config_from_dict",
    "load_config",
    "resolve_config_path",
    "shipped_configs",
    "validate_config",
]

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
"""The YAML files shipped with the package (``xprospect/configs/``): experiments at the top,
style files in ``style/``, tune files in ``tune/``."""

Precision = Literal["none", "mixed_bfloat16", "mixed_float16"]
StrategyName = Literal["auto", "one", "mirrored", "multiworker"]
ResumeData = Literal["auto", "iterator", "skip"]
XrayMapping = Literal["display", "line_integral", "intensity"]


@dataclass
class DataConfig:
    """Input pipeline (arguments of :func:`xprospect.data.load_dataset`).

    Attributes:
        dir: Dataset folder written by ``xprospect prepare`` (relative paths: to the cwd).
        hu_window: Window name or ``[low, high]`` HU that maps target volumes to [0, 1].
        views: Input X-rays, ``[frontal, lateral]`` or ``[frontal]``.
        xray_mapping: How DRR line integrals become model inputs.
        augmentation: Keys of :class:`xprospect.data.Augmentation`; empty for none.
        batch_size: Global batch size, split evenly across replicas (must divide by their count).
        shuffle_buffer: Shuffle buffer in cases. A fixed count, not the dataset's size, so the
            memory of training does not grow with the dataset: the buffer holds up to this many
            parsed cases (float32 volume and DRRs, about 8.1 MiB each at 128^3, so about
            0.5 GiB at the default 64; ``benchmarks/bench_scale.py``).
        cache: Keep parsed cases in memory (then resuming skips batches instead of restoring the
            iterator, whose checkpoint would hold the whole cache). Memory grows with the
            dataset: for small datasets only.
        val_cases: Validate on the first N cases of the ``val`` split; None for all of them.
        validity_mask: Take the voxel losses (``mae``, ``mse``, ``projection``) and the
            validation metrics inside each case's scanned region only (the mask ``prepare``
            stores, :func:`xprospect.preprocessing.scan_mask`), so the air a short scan was
            padded with is not a target. Only datasets with a partly scanned case need it
            (:func:`xprospect.data.scan_fraction` < 1); phantom datasets and datasets made
            before masks are fully scanned, and train exactly as without it.
    """

    dir: str = ""
    hu_window: str | list[float] = "xprospect"
    views: list[str] = field(default_factory=lambda: ["frontal", "lateral"])
    xray_mapping: XrayMapping = "display"
    augmentation: dict[str, float] = field(default_factory=dict)
    batch_size: int = 2
    shuffle_buffer: int = 64
    cache: bool = False
    val_cases: int | None = None
    validity_mask: bool = True


@dataclass
class ModelConfig:
    """Which network to build (:func:`xprospect.models.build_model`).

    Attributes:
        preset: A key of :data:`xprospect.models.PRESETS` (matched case-insensitively).
        size: Cube edge; None: the dataset's (a different value is an error).
        geometry: DRR geometry for back-projection layers; None: the dataset's.
        spacing_mm: Voxel size of the output cube; None: the dataset's.
        overrides: Extra ``build_model`` keyword arguments, e.g. ``{base_filters: 8}``.
    """

    preset: str = "512-Dense"
    size: int | None = None
    geometry: str | None = None
    spacing_mm: float | None = None
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class ScheduleConfig:
    """Learning-rate schedule, evaluated at the optimizer's iteration count.

    Attributes:
        name: ``constant``; ``cosine`` (decay to ``min_fraction * learning_rate`` at the last
            step); ``step`` (multiply by ``decay_factor`` every ``decay_every`` steps);
            ``linear`` (constant until ``start_fraction`` of the run, then linearly to 0 at the
            last step: X2CT-GAN's schedule with 0.5); ``multistep`` (multiply by
            ``decay_factor`` at each of ``milestones``, fractions of the run: DuoLift's
            ``[0.7]`` with 0.1).
        warmup_steps: Linear warm-up from 0 (cosine only).
        min_fraction: Final learning rate as a fraction of the initial one (cosine).
        decay_every: Steps between decays (step).
        decay_factor: Factor applied at each decay (step, multistep).
        start_fraction: Where the linear decay starts, as a fraction of the run (linear).
        milestones: Fractions of the run where the rate drops (multistep).
    """

    name: Literal["constant", "cosine", "step", "linear", "multistep"] = "constant"
    warmup_steps: int = 0
    min_fraction: float = 0.0
    decay_every: int = 1000
    decay_factor: float = 0.5
    start_fraction: float = 0.5
    milestones: list[float] = field(default_factory=list)


@dataclass
class OptimizerConfig:
    """Optimizer settings; None values take the preset's training defaults.

    Attributes:
        name: ``adam`` or ``nadam``.
        learning_rate: Initial learning rate.
        schedule: The learning-rate schedule; None: the preset's (else constant).
        beta_1: First-moment decay; None: the preset's (else Keras' 0.9).
        beta_2: Second-moment decay; None: the preset's (else Keras' 0.999).
        use_ema: Keep an exponential moving average of the weights; validation, the best model
            and the exported model then use the averaged weights.
        ema_momentum: EMA decay per step.
        ema_reset: ``epoch``: set the live weights to their moving average at the end of every
            epoch (XprospeCT's CycleGAN); ``never``: the average is only used for validation and
            export.
        clip_global_norm: Clip the global gradient norm (computed over all replicas) to this.
    """

    name: Literal["adam", "nadam"] | None = None
    learning_rate: float | None = None
    schedule: ScheduleConfig | None = None
    beta_1: float | None = None
    beta_2: float | None = None
    use_ema: bool = False
    ema_momentum: float = 0.999
    ema_reset: Literal["never", "epoch"] = "never"
    clip_global_norm: float | None = None


@dataclass
class GanConfig:
    """Adversarial training (presets with a discriminator: X2CT-GAN, CVAA-GAN, DuoLift-GAN,
    S-XR2CT). The generator's terms, ``adversarial`` included, are weights in ``loss``.

    Attributes:
        adversarial: ``lsgan`` (least squares) or ``bce`` (binary cross-entropy on logits);
            None: the preset's.
        discriminator: Overrides of the preset's discriminator arguments, e.g. ``{filters: [8,
            16, 32, 64]}``.
        d_learning_rate: The discriminator's learning rate; None: the generator's. Its
            optimizer is the generator's kind with the same betas and schedule.
        d_loss_weight: Factor on the discriminator's real + fake loss
            (:func:`xprospect.losses.discriminator_loss_per_example`); None: the preset's
            (X2CT-GAN's official 0.1, DuoLift's beta 0.01), else 0.5.
    """

    adversarial: Literal["lsgan", "bce"] | None = None
    discriminator: dict[str, Any] = field(default_factory=dict)
    d_learning_rate: float | None = None
    d_loss_weight: float | None = None


@dataclass
class TrainingConfig:
    """Length, cadence, precision, distribution and outputs of a run.

    Attributes:
        steps: Total optimizer steps (one of ``steps`` / ``epochs``).
        epochs: Total epochs of ``steps_per_epoch`` steps.
        steps_per_epoch: Steps per epoch (progress bar, CSV column); None: one pass over the
            training cases (``cases // (batch_size * grad_accum_steps)`` optimizer steps, each
            reading ``grad_accum_steps`` batches).
        validation_every: Validate (and maybe save the best model) every N steps and at the end.
        checkpoint_every: Save a checkpoint every N steps and at the end.
        keep_checkpoints: Checkpoints kept on disk.
        log_every: Write training loss and learning rate to CSV / TensorBoard every N steps.
        grad_accum_steps: Batches whose gradients are summed before one optimizer update (the
            effective batch is ``data.batch_size * grad_accum_steps``); None: the preset's (1).
        mixed_precision: Keras dtype policy during the run.
        strategy: ``auto`` (multiworker if ``TF_CONFIG`` is set, mirrored with several GPUs,
            else the default strategy), ``one`` (one device), ``mirrored``, ``multiworker``.
        seed: Seed of weights, shuffling and augmentation.
        deterministic: Enable TensorFlow's deterministic ops (slower; for bit-exact reruns).
        resume_data: How the input position is restored on resume: ``iterator`` (the tf.data
            iterator state in the checkpoint, shuffle and prefetch buffers included, so large
            ``shuffle_buffer`` at 128^3 makes large checkpoints), ``skip`` (rebuild the
            deterministic pipeline and skip the batches already used; it re-reads them) or
            ``auto`` (iterator where TensorFlow can save it: default strategy and mirrored).
            Either is exact when the strategy, replica count and batch size are unchanged.
        output_dir: Run folder (relative paths: to the cwd); re-running resumes from it.
        return_freed_memory: Return the memory of freed tensors to the operating system
            (:func:`xprospect.training.distribute.return_freed_memory`: TensorFlow's system
            allocator instead of its oneDNN pool, a fixed glibc mmap threshold). It trades time
            for memory: X2CT-GAN at 128^3 on a 2-core CPU, peak RSS 8.47 -> 7.70 GiB (float32)
            and 7.68 -> 6.77 GiB (bf16), step 21.1 -> 24.8 s and 14.2 -> 21.2 s
            (``benchmarks/results/bench_x2ct_peer_freed_memory.md``), so it is off by default.
            Takes effect only before the process' first TensorFlow op.
    """

    steps: int | None = None
    epochs: int | None = None
    steps_per_epoch: int | None = None
    validation_every: int = 500
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    log_every: int = 10
    grad_accum_steps: int | None = None
    mixed_precision: Precision = "none"
    strategy: StrategyName = "auto"
    seed: int = 0
    deterministic: bool = False
    resume_data: ResumeData = "auto"
    output_dir: str = "runs/experiment"
    return_freed_memory: bool = False


@dataclass
class XctDiffConfig:
    """The stage of an XctDiff run (preset ``XctDiff``; :mod:`xprospect.training.xctdiff`).

    Attributes:
        stage: ``vqgan`` (stage 1, the VQ-GAN), ``encoder`` (stage 2, the progressive encoder)
            or ``ldm`` (stage 3, the latent diffusion model; its ``model.keras`` is the whole
            pipeline); None: not an XctDiff stage.
        previous_run: The run folder of the previous stage (``encoder``: the ``vqgan`` run;
            ``ldm``: the ``encoder`` run, whose config names the ``vqgan`` run).
        gan_start_step: Step from which the VQ-GAN's adversarial term is on (the paper is
            silent; the official configuration's 100,000 exceeds its 80,000 steps).
        volume_gan_weight: ``alpha`` of Eq. 3 (3D volume discriminator).
        slice_gan_weight: ``beta`` of Eq. 3 (2D slice discriminator).
        gan_slices: Axial slices per volume the slice discriminator sees (evenly spaced).
        val_sampling_steps: DDIM steps when the ``ldm`` stage validates.
        dead_code_restart_every: Every N steps of the ``vqgan`` stage, codebook entries no
            training batch used in those N steps are reset to encoder outputs of the last batch
            (0: off, the paper's setting).
    """

    stage: Literal["vqgan", "encoder", "ldm"] | None = None
    previous_run: str | None = None
    gan_start_step: int = 40000
    volume_gan_weight: float = 1.0
    slice_gan_weight: float = 1.0
    gan_slices: int = 8
    val_sampling_steps: int = 10
    dead_code_restart_every: int = 0


@dataclass
class ExperimentConfig:
    """One training experiment (see the module docstring for the file layout).

    Attributes:
        name: Free label.
        data: Input pipeline.
        model: Network.
        loss: Loss weights by term (``mae``, ``mse``, ``projection``, ``masked_mae``,
            ``masked_mse``, ``perceptual``, ``adversarial``; see :mod:`xprospect.losses`);
            None: the preset's.
        perceptual: Arguments of :class:`xprospect.perceptual.PerceptualLoss` for the
            ``perceptual`` term, e.g. ``{weights: null}`` for a randomly initialised VGG16.
        optimizer: Optimizer and schedule.
        gan: Discriminator and adversarial loss.
        training: Run length and outputs.
        xctdiff: The stage of an XctDiff run.
    """

    name: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: dict[str, float] | None = None
    perceptual: dict[str, Any] = field(default_factory=dict)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    gan: GanConfig = field(default_factory=GanConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    xctdiff: XctDiffConfig = field(default_factory=XctDiffConfig)


# === Validation of values that types cannot express ===


def validate_config(config: ExperimentConfig, source: str | None = None) -> None:
    """Checks ranges and consistency; raises :class:`ConfigError` naming the key.

    Args:
        config: The experiment.
        source: The file (or override text) the values came from, for the message.
    """
    d, m, o, t = config.data, config.model, config.optimizer, config.training
    check(bool(d.dir), "data.dir", "is required (a folder made by 'xprospect prepare')", source)
    from xprospect.preprocessing import resolve_hu_window

    try:
        resolve_hu_window(d.hu_window)
    except ConfigError as exc:
        raise ConfigError(f"data.hu_window: {exc.message}", source) from None
    check(len(d.views) > 0, "data.views", "needs at least one view", source)
    for v in d.views:
        check(v in VIEWS, "data.views", f"unknown view {v!r}", source)
    check(len(set(d.views)) == len(d.views), "data.views", "lists a view twice", source)
    from xprospect.data import augmentation_from_dict

    try:
        augmentation_from_dict(d.augmentation)
    except ConfigError as exc:
        raise ConfigError(f"data.augmentation: {exc.message}", source) from None
    for key, val in d.augmentation.items():
        check(val >= 0, f"data.augmentation.{key}", f"must be >= 0, got {val}", source)
    check(d.batch_size >= 1, "data.batch_size", f"must be >= 1, got {d.batch_size}", source)
    check(d.shuffle_buffer >= 1, "data.shuffle_buffer", "must be >= 1", source)
    check(d.val_cases is None or d.val_cases >= 1, "data.val_cases", "must be >= 1", source)
    check(m.size is None or m.size >= 8, "model.size", f"must be >= 8, got {m.size}", source)
    check(m.spacing_mm is None or m.spacing_mm > 0, "model.spacing_mm", "must be > 0", source)
    if config.loss is not None:
        check(len(config.loss) > 0, "loss", "needs at least one term (or null)", source)
        for key, w in config.loss.items():
            check(w >= 0, f"loss.{key}", f"weight must be >= 0, got {w}", source)
        check(any(w > 0 for w in config.loss.values()), "loss", "all weights are 0", source)
    lr = o.learning_rate
    check(lr is None or lr > 0, "optimizer.learning_rate", f"must be > 0, got {lr}", source)
    check(0 < o.ema_momentum < 1, "optimizer.ema_momentum", "must be in (0, 1)", source)
    clip = o.clip_global_norm
    check(clip is None or clip > 0, "optimizer.clip_global_norm", "must be > 0", source)
    for beta in ("beta_1", "beta_2"):
        b = getattr(o, beta)
        check(b is None or 0 <= b < 1, f"optimizer.{beta}", f"must be in [0, 1), got {b}", source)
    g = config.gan
    dlr = g.d_learning_rate
    check(dlr is None or dlr > 0, "gan.d_learning_rate", f"must be > 0, got {dlr}", source)
    dlw = g.d_loss_weight
    check(dlw is None or dlw > 0, "gan.d_loss_weight", f"must be > 0, got {dlw}", source)
    s = o.schedule or ScheduleConfig()
    check(
        0 <= s.start_fraction < 1, "optimizer.schedule.start_fraction", "must be in [0, 1)", source
    )
    check(
        all(0 < m < 1 for m in s.milestones) and s.milestones == sorted(s.milestones),
        "optimizer.schedule.milestones",
        "must be increasing fractions in (0, 1)",
        source,
    )
    check(
        s.name != "multistep" or bool(s.milestones),
        "optimizer.schedule.milestones",
        "are required by the multistep schedule",
        source,
    )
    check(s.warmup_steps >= 0, "optimizer.schedule.warmup_steps", "must be >= 0", source)
    check(
        s.warmup_steps == 0 or s.name == "cosine",
        "optimizer.schedule.warmup_steps",
        "is only used by the cosine schedule",
        source,
    )
    check(0 <= s.min_fraction <= 1, "optimizer.schedule.min_fraction", "must be in [0, 1]", source)
    check(s.decay_every >= 1, "optimizer.schedule.decay_every", "must be >= 1", source)
    check(s.decay_factor > 0, "optimizer.schedule.decay_factor", "must be > 0", source)
    check(
        (t.steps is None) != (t.epochs is None),
        "training",
        "set exactly one of steps and epochs",
        source,
    )
    for name in ("steps", "epochs", "steps_per_epoch"):
        val = getattr(t, name)
        check(val is None or val >= 1, f"training.{name}", f"must be >= 1, got {val}", source)
    for name in ("validation_every", "checkpoint_every", "keep_checkpoints", "log_every"):
        val = getattr(t, name)
        check(val >= 1, f"training.{name}", f"must be >= 1, got {val}", source)
    acc = t.grad_accum_steps
    check(acc is None or acc >= 1, "training.grad_accum_steps", f"must be >= 1, got {acc}", source)
    check(t.seed >= 0, "training.seed", f"must be >= 0, got {t.seed}", source)
    check(bool(t.output_dir), "training.output_dir", "is required", source)


def config_from_dict(
    data: Mapping[str, Any] | None, source: str | os.PathLike[str] | None = None
) -> ExperimentConfig:
    """Builds and validates an :class:`ExperimentConfig` from plain data (e.g. parsed YAML).

    Args:
        data: The mapping; missing keys take their defaults.
        source: Where the data came from, used in error messages.

    Raises:
        ConfigError: Unknown key, wrong type or invalid value (one line naming the key).
    """
    src = None if source is None else str(source)
    config = engine.build(ExperimentConfig, data, "", src)
    validate_config(config, src)
    return config


def load_config(
    path: str | os.PathLike[str],
    overrides: Mapping[str, Any] | Sequence[str] | None = None,
) -> ExperimentConfig:
    """Reads an experiment YAML file (or a shipped one by name, e.g. ``"demo"``).

    Args:
        path: The file, or the name of a shipped config (:func:`shipped_configs`).
        overrides: Optional ``{"training.steps": 100}`` or ``["training.steps=100"]``.

    Returns:
        The validated config.

    Raises:
        ConfigError: Missing file, bad YAML (with its line), unknown key, wrong type or value.
    """
    return engine.load_file(resolve_config_path(path), config_from_dict, overrides)


def apply_overrides(
    config: Any,
    overrides: Mapping[str, Any] | Sequence[str],
    from_dict: Any = None,
) -> Any:
    """Returns a copy of ``config`` with dotted-key overrides applied and validated
    (:func:`xprospect.config.engine.apply_overrides` with an experiment by default).

    Args:
        config: The base config (left unchanged).
        overrides: ``{"training.steps": 100, "model.overrides.base_filters": 8}`` or the CLI form
            ``["training.steps=100"]``.
        from_dict: ``from_dict(data, source)`` that builds and validates the config's class;
            default :func:`config_from_dict` (an :class:`ExperimentConfig`).

    Raises:
        ConfigError: Unknown key (listing the valid ones), wrong type or invalid value; the
            message starts with ``--set KEY`` or ``--set overrides``.
    """
    return engine.apply_overrides(config, overrides, from_dict or config_from_dict)


def shipped_configs(directory: Path = CONFIG_DIR) -> dict[str, Path]:
    """Name → path of the YAML files shipped in ``directory`` (default ``xprospect/configs/``:
    the experiments; ``configs/style`` and ``configs/tune`` hold the other kinds)."""
    return engine.shipped(directory)


def resolve_config_path(
    path: str | os.PathLike[str], directory: Path = CONFIG_DIR, what: str = "config"
) -> Path:
    """An existing file as given, else a shipped file of ``directory`` by name (``demo``,
    ``512-dense.yaml``).

    Raises:
        ConfigError: Neither exists (the message lists the shipped names).
    """
    return engine.resolve_path(path, directory, what)
