"""KerasTuner searches over experiment configs: ``xprospect tune --config FILE.yaml``.

The search space is a table of hyperparameters (:class:`HyperParam`) kept apart from the model
code: :class:`SearchSpace` declares them in KerasTuner's ``hp`` and maps the values onto an
ordinary :class:`~xprospect.config.ExperimentConfig`, which the normal builders
(:func:`xprospect.models.build_model`) and the normal trainer (:class:`xprospect.training.Trainer`)
turn into a trained model. Every trial is an ordinary training run in its own folder
(``DIRECTORY/PROJECT/trial_ID/run``) and reports the best validation PSNR-3D of the run
(``val_psnr_3d``, maximised).

Families (``tuner.family``; ``auto`` picks one from ``model.preset``):

``xprospect``: the DualUNet presets (64-Dense, 512-Dense, 512-Dense-MAE, 512-ProjInj). Defaults
are the base experiment's values where they lie in the space, else the table's.

================= ======================= ======== ============================================
name              values                  default  goes to
================= ======================= ======== ============================================
dense_units       64, 512                 512      model.overrides.dense_units
back_projection   false, true             false    model.overrides.back_projection (ProjInj)
base_filters      8, 16, 32               16       model.overrides.base_filters
depth             2, 3, 4                 3        model.overrides.depth (2D encoder max-pools)
activation        selu, relu              selu     model.overrides.activation
loss              mae, mse                mae      loss: {LOSS: 1.0, ...}
loss_projection   0.0, 0.1                0.0      loss.projection (0: no projection term)
optimizer         adam, nadam             adam     optimizer.name
learning_rate     1e-5 .. 1e-3 (log)      1e-4     optimizer.learning_rate
================= ======================= ======== ============================================

``gan``: every other preset (X2CT-GAN, CVAA-GAN, DuoLift-GAN, S-XR2CT, and the CNN baselines):
one ``loss_TERM`` per positive weight of the experiment's ``loss`` (else the preset's), e.g.
``loss_mse``, ``loss_projection``, ``loss_masked_mae``, ``loss_perceptual``,
``loss_adversarial``: log-uniform in ``[w / 10, 10 w]``, default ``w``.

A tune file has two sections; ``experiment`` is what ``xprospect train`` takes::

    experiment: 512-dense          # a shipped name, an experiment YAML path, or a mapping
    tuner:
      kind: random                 # random | hyperband | bayesian
      family: auto                 # auto | xprospect | gan
      max_trials: 20               # random, bayesian (hyperband: set by max_epochs and factor)
      steps_per_trial: 2000        # training steps of each trial
      executions_per_trial: 1      # runs per trial (seeds training.seed + k), scores averaged
      directory: tuning            # relative to the cwd; re-running resumes the search
      project_name: null           # null: the experiment's name
      seed: 1                      # the oracle's seed, >= 1 (trials train with training.seed)
      max_consecutive_failed_trials: 3
      max_epochs: 9                # hyperband: the largest budget, in epochs
      factor: 3                    # hyperband: reduction factor between brackets
      hyperband_iterations: 1
      steps_per_epoch: null        # hyperband: steps per epoch; null: steps_per_trial // max_epochs
      num_initial_points: null     # bayesian: random trials first; null: 3 x the hyperparameters
      alpha: 1.0e-4                # bayesian: noise of the Gaussian process
      beta: 2.6                    # bayesian: exploration of the upper confidence bound
      space:                       # narrow the table: NAME: [values] (one value: fixed), or
        dense_units: [64, 512]     #   NAME: {min_value: ..., max_value: ..., sampling: log}
      best_config: null            # null: DIRECTORY/PROJECT/best.yaml

Re-running the same command resumes: KerasTuner reloads its oracle (``overwrite=False``), an
interrupted trial is retried in the same folder (the trainer resumes from its checkpoint), and a
search that reached ``max_trials`` runs no new trial. The settings of a project are recorded in
``PROJECT/xprospect_tune.yaml``; resuming with a different search is refused.

Distributed search uses KerasTuner's chief/worker mode: every process runs the same command with
``KERASTUNER_ORACLE_IP``, ``KERASTUNER_ORACLE_PORT`` and ``KERASTUNER_TUNER_ID`` set; the process
whose id contains ``chief`` only serves the oracle (gRPC), the others (``tuner0``, ``tuner1``,
...) each run trials. The project folder must be shared by all of them.

The package is split by job: :mod:`~xprospect.tuning.space` (the tables and
:class:`SearchSpace`), :mod:`~xprospect.tuning.config` (the tune file),
:mod:`~xprospect.tuning.hypermodel` (the KerasTuner hypermodel), :mod:`~xprospect.tuning.search`
(tuners, :func:`tune`, resuming, distribution) and :mod:`~xprospect.tuning.results` (trials, the
results table, ``best.yaml``). Everything public is re-exported here.
"""

from __future__ import annotations

from typing import Any

from xprospect.tuning.config import (
    TUNE_CONFIG_DIR,
    TUNER_KINDS,
    TuneConfig,
    TunerConfig,
    load_tune_config,
    shipped_tune_configs,
    tune_config_from_dict,
    validate_tune_config,
)
from xprospect.tuning.hypermodel import OBJECTIVE, hypermodel_class, make_hypermodel
from xprospect.tuning.results import TrialRow, TuneResult
from xprospect.tuning.search import distributed_role, make_tuner, tune, tuner_class
from xprospect.tuning.space import (
    XPROSPECT_SPACE,
    HyperParam,
    SearchSpace,
    SpaceOverride,
    family_of,
    gan_space,
    search_space,
)

__all__ = [
    "OBJECTIVE",
    "TUNER_KINDS",
    "TUNE_CONFIG_DIR",
    "XPROSPECT_SPACE",
    "HyperParam",
    "SearchSpace",
    "SpaceOverride",
    "TrialRow",
    "TuneConfig",
    "TuneResult",
    "TunerConfig",
    "distributed_role",
    "family_of",
    "gan_space",
    "hypermodel_class",
    "load_tune_config",
    "make_hypermodel",
    "make_tuner",
    "search_space",
    "shipped_tune_configs",
    "tune",
    "tune_config_from_dict",
    "tuner_class",
    "validate_tune_config",
]


def __getattr__(name: str) -> Any:
    # ``from xprospect.tuning import ExperimentHyperModel`` without importing KerasTuner up front.
    if name == "ExperimentHyperModel":
        return hypermodel_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
