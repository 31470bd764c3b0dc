"""Tests of xprospect.models: presets, DualUNet shapes, single-view mode, saving, precision.

Models are built at 32^3 with ``base_filters=2`` so the module runs in well under a minute on two
cores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from keras_contract import check_model, check_registration

from xprospect.config.presets import preset_training_defaults
from xprospect.errors import ConfigError
from xprospect.models import (
    MODEL_KEYS,
    PRESETS,
    DualUNet,
    PresetInfo,
    build_model,
    canonical_preset,
    list_presets,
    preset_config,
)
from xprospect.models.blocks import ConnectionC, view_to_canonical

SIZE = 32
TINY = {"base_filters": 2, "max_filters": 8}
DUAL = sorted(p for p, c in PRESETS.items() if c["family"] == "dualunet")
GAN_FAMILY = {
    "X2CT-CNN+B",
    "X2CT-CNN+S",
    "X2CT-GAN",
    "CVAA-GAN",
    "DuoLift-CNN",
    "DuoLift-GAN",
    "S-XR2CT",
}
GAN_FAMILY |= {"XctDiff"}  # the diffusion family (issue 14)


def _inputs(views: tuple[str, ...] = ("frontal", "lateral"), batch: int = 2) -> dict:
    rng = np.random.default_rng(1)
    return {v: rng.random((batch, SIZE, SIZE, 1), dtype=np.float32) for v in views}


def _predict(model: keras.Model, inputs: dict) -> np.ndarray:
    return keras.ops.convert_to_numpy(model(inputs, training=False))


# === Presets ===


@pytest.mark.parametrize("preset", DUAL)
def test_every_preset_builds(preset: str) -> None:
    model = build_model(preset, size=SIZE, **TINY)
    assert isinstance(model, DualUNet)
    assert sorted(model.input) == ["frontal", "lateral"]  # a dict of named inputs
    for name, tensor in model.input.items():
        assert tuple(tensor.shape) == (None, SIZE, SIZE, 1), name
    out = _predict(model, _inputs())
    assert out.shape == (2, SIZE, SIZE, SIZE, 1)
    assert out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert model.back_projection == PRESETS[preset]["model"]["back_projection"]


def test_preset_table() -> None:
    assert set(DUAL) == {"64-Dense", "512-Dense", "512-Dense-MAE", "512-ProjInj"}
    assert set(PRESETS) == set(DUAL) | GAN_FAMILY
    for name in DUAL:
        cfg = PRESETS[name]
        training = preset_training_defaults(name)
        assert set(training) == {"loss_weights", "optimizer", "learning_rate"}, name
        assert training["optimizer"] in ("adam", "nadam")
        assert set(training["loss_weights"]) <= {"mse", "mae"}
        assert set(cfg["model"]) <= set(MODEL_KEYS)
    assert PRESETS["64-Dense"]["model"]["dense_units"] == 64
    assert preset_training_defaults("512-Dense-MAE")["loss_weights"] == {"mae": 1.0}
    assert preset_training_defaults("512-Dense-MAE")["optimizer"] == "nadam"
    assert PRESETS["512-ProjInj"]["model"]["back_projection"] is True


_X2CT = {
    "optimizer": "adam",
    "learning_rate": 2e-4,
    "beta_1": 0.5,
    "beta_2": 0.99,
    "schedule": {"name": "linear", "start_fraction": 0.5},
}
# The training defaults as xprospect.models.PRESETS held them before they moved to
# xprospect/configs/presets/training.yaml: the move must not change one value. Added since (issue
# 13): X2CT-CNN+S and each GAN's discriminator loss weight (tests/models/test_paper_presets.py).
PAPER_TRAINING = {
    "64-Dense": {"loss_weights": {"mse": 1.0}, "optimizer": "adam", "learning_rate": 1e-4},
    "512-Dense": {"loss_weights": {"mse": 1.0}, "optimizer": "adam", "learning_rate": 1e-4},
    "512-Dense-MAE": {"loss_weights": {"mae": 1.0}, "optimizer": "nadam", "learning_rate": 1e-4},
    "512-ProjInj": {"loss_weights": {"mae": 1.0}, "optimizer": "nadam", "learning_rate": 1e-4},
    "X2CT-CNN+B": {**_X2CT, "loss_weights": {"mse": 10.0}},
    "X2CT-CNN+S": {**_X2CT, "loss_weights": {"mse": 10.0}},
    "X2CT-GAN": {
        **_X2CT,
        "loss_weights": {"mse": 10.0, "projection": 10.0, "adversarial": 0.1},
        "adversarial": "lsgan",
        "d_loss_weight": 0.1,
    },
    "CVAA-GAN": {
        **_X2CT,
        "loss_weights": {"mse": 10.0, "projection": 10.0, "adversarial": 0.1},
        "adversarial": "lsgan",
        "d_loss_weight": 1.0,
        "schedule": {"name": "constant"},
    },
    "DuoLift-CNN": {
        "loss_weights": {"mse": 1.0, "mae": 1.0},
        "optimizer": "adam",
        "learning_rate": 5e-4,
        "schedule": {"name": "multistep", "milestones": [0.7], "decay_factor": 0.1},
        "grad_accum_steps": 4,
    },
    "DuoLift-GAN": {
        "loss_weights": {
            "mse": 1.0,
            "mae": 1.0,
            "masked_mse": 1.0,
            "masked_mae": 1.0,
            "adversarial": 0.01,
        },
        "adversarial": "bce",
        "d_loss_weight": 0.01,
        "optimizer": "adam",
        "learning_rate": 1e-4,
        "schedule": {"name": "multistep", "milestones": [0.7], "decay_factor": 0.1},
        "grad_accum_steps": 4,
    },
    "S-XR2CT": {
        **_X2CT,
        "loss_weights": {"mse": 10.0, "projection": 10.0, "perceptual": 1.0, "adversarial": 0.1},
        "adversarial": "lsgan",
        "d_loss_weight": 0.1,
        "schedule": {"name": "constant"},
    },
    "XctDiff": {"loss_weights": {"diffusion": 1.0}, "optimizer": "adam", "learning_rate": 1e-4},
}


@pytest.mark.parametrize("preset", sorted(PAPER_TRAINING))
def test_preset_training_defaults_live_in_configs(preset: str) -> None:
    assert set(PAPER_TRAINING) == set(PRESETS)
    assert "training" not in PRESETS[preset]  # presets are architecture metadata only
    got = preset_training_defaults(preset)
    assert got == PAPER_TRAINING[preset]
    # Same types as before (YAML reads 2e-4 without a dot as a string) and the same term order
    # (the tuner lists one hyperparameter per loss term, in this order).
    assert isinstance(got["learning_rate"], float)
    assert list(got["loss_weights"]) == list(PAPER_TRAINING[preset]["loss_weights"])
    assert preset_training_defaults(preset.lower()) == got
    got["loss_weights"]["mse"] = -1.0  # a copy: the defaults are not mutated
    assert preset_training_defaults(preset) == PAPER_TRAINING[preset]


def test_canonical_preset_is_case_insensitive() -> None:
    assert canonical_preset("512-dense") == "512-Dense"
    assert canonical_preset(" x2ct-cnn+b ") == "X2CT-CNN+B"
    with pytest.raises(ConfigError, match=r"unknown preset '1024-Dense'; expected one of"):
        canonical_preset("1024-Dense")
    with pytest.raises(ConfigError, match="unknown preset"):
        preset_training_defaults("1024-Dense")


def test_list_presets_counts_built_models() -> None:
    rows = list_presets(sizes=(SIZE,), names=DUAL)
    assert [r.name for r in rows] == [p for p in PRESETS if p in DUAL]
    assert all(isinstance(r, PresetInfo) and r.size == SIZE and r.description for r in rows)
    by_name = {r.name: r.params for r in rows}
    assert by_name["512-Dense"] == by_name["512-Dense-MAE"] < by_name["512-ProjInj"]
    assert by_name["512-Dense"] == build_model("512-Dense", size=SIZE).count_params()


def test_overrides() -> None:
    model = build_model(
        "512-Dense",
        size=SIZE,
        base_filters=3,
        activation="relu",
        dropout=0.1,
        dense_units=64,
        back_projection=True,
        name="custom",
    )
    assert (model.base_filters, model.activation, model.dense_units) == (3, "relu", 64)
    assert model.back_projection and model.name == "custom"
    assert preset_config("64-Dense", depth=2)["model"]["depth"] == 2
    assert PRESETS["64-Dense"]["model"]["depth"] is None  # presets are not mutated


def test_bad_overrides_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="base_filters") as info:
        build_model("512-Dense", size=SIZE, filters=8)
    assert "filters" in str(info.value) and "dense_units" in str(info.value)
    with pytest.raises(ConfigError, match="unknown preset"):
        build_model("1024-Dense")
    with pytest.raises(ConfigError, match="activation"):
        build_model("512-Dense", size=SIZE, activation="gelu")
    with pytest.raises(ConfigError, match="size"):
        build_model("512-Dense", size=48)
    with pytest.raises(ConfigError, match="grid_size"):
        build_model("512-Dense", size=SIZE, dense_units=100)
    with pytest.raises(ConfigError, match="views"):
        build_model("512-Dense", size=SIZE, views=("lateral", "sagittal"))
    with pytest.raises(ConfigError, match="geometry"):
        build_model("512-ProjInj", size=SIZE, geometry="fan")


# === Single view, precision, learning ===


@pytest.mark.parametrize("preset", ["512-Dense", "512-ProjInj"])
def test_single_view_mode(preset: str) -> None:
    model = build_model(preset, size=SIZE, views=("frontal",), **TINY)
    assert list(model.input) == ["frontal"]
    assert not any(layer.name.startswith("lateral") for layer in model.layers)
    out = _predict(model, _inputs(("frontal",)))
    assert out.shape == (2, SIZE, SIZE, SIZE, 1)


def test_output_is_float32_under_mixed_precision() -> None:
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_model("512-ProjInj", size=SIZE, **TINY)
        assert model.get_layer("fusion_connC8").compute_dtype == "bfloat16"
        assert model.get_layer("frontal_backproj").compute_dtype == "float32"
        out = model(_inputs(), training=False)
        assert keras.backend.standardize_dtype(out.dtype) == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")
    # The policy is part of the config: the model rebuilds in bfloat16 under a float32 policy.
    clone = DualUNet.from_config(model.get_config())
    assert clone.get_layer("frontal_enc32").convs[0].compute_dtype == "bfloat16"
    explicit = build_model("512-Dense", size=SIZE, dtype="mixed_bfloat16", **TINY)
    assert explicit.get_layer("fusion_connD32").compute_dtype == "bfloat16"
    assert explicit.get_layer("volume").compute_dtype == "float32"


def test_a_few_steps_reduce_the_loss() -> None:
    keras.utils.set_random_seed(0)
    model = build_model("512-Dense", size=SIZE, **TINY)
    # Eager: tracing the train step of even a tiny DualUNet costs ~15 s on two cores.
    model.compile(optimizer=keras.optimizers.Nadam(1e-3), loss="mae", run_eagerly=True)
    x = _inputs(batch=1)
    y = np.zeros((1, SIZE, SIZE, SIZE, 1), np.float32)
    y[:, 8:24, 10:22, 6:26] = 0.8
    losses = [float(model.train_on_batch(x, y)) for _ in range(4)]
    assert losses[-1] < losses[0]


class MaxFusion(ConnectionC):
    """A Connection C variant: the views' maximum instead of their mean (same inputs/outputs)."""

    def call(self, inputs: Any) -> Any:
        items = [view_to_canonical(x, v) for x, v in zip(inputs, self.views, strict=True)]
        return keras.ops.maximum(items[0], items[1])


class MaxFusionUNet(DualUNet):
    connection_c = MaxFusion


def test_a_connection_variant_changes_only_its_inside() -> None:
    model = MaxFusionUNet(size=SIZE, dense_units=64, **TINY)
    assert isinstance(model.get_layer("fusion_connC32"), MaxFusion)
    assert _predict(model, _inputs()).shape == (2, SIZE, SIZE, SIZE, 1)
    base = DualUNet(size=SIZE, dense_units=64, **TINY)
    assert model.count_params() == base.count_params()


# === Saving ===


@pytest.mark.parametrize(
    ("preset", "views"),
    [
        ("64-Dense", ("frontal", "lateral")),
        ("512-ProjInj", ("frontal", "lateral")),
        ("512-Dense", ("frontal",)),
    ],
    ids=["dense", "projinj", "single-view"],
)
def test_model_contract(preset: str, views: tuple[str, ...], tmp_path: Path) -> None:
    model = build_model(preset, size=SIZE, views=views, **TINY)
    cfg = PRESETS[preset]["model"]
    init = {
        "size": SIZE,
        "views": views,
        "dense_units": cfg["dense_units"],
        "back_projection": cfg["back_projection"],
        "geometry": "x2ct",
        "spacing_mm": None,
        **TINY,
    }
    check_registration(model, init)
    check_model(model, _inputs(views), tmp_path)


def test_registered_names_are_unique_across_the_package() -> None:
    # Keras' registry is a dict: a second class registered under the same name silently replaces
    # the first, and saved models would then load the wrong class.
    import importlib
    import inspect
    import pkgutil

    import xprospect

    seen: dict[str, type] = {}
    for info in pkgutil.walk_packages(xprospect.__path__, "xprospect."):
        if info.name.endswith(("cli", "__main__")):
            continue
        module = importlib.import_module(info.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if obj.__module__ != module.__name__:
                continue
            name = keras.saving.get_registered_name(obj)
            if not name.startswith("xprospect>"):
                continue
            assert name not in seen or seen[name] is obj, f"{name}: {seen.get(name)} and {obj}"
            seen[name] = obj
            assert keras.saving.get_registered_object(name) is obj, name
    assert len(seen) > 30
