"""Experiment configs: loading, one-line errors, overrides, the shipped YAML files."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from xprospect.config import (
    ExperimentConfig,
    apply_overrides,
    config_from_dict,
    dump_config,
    engine,
    load_config,
    parse_override,
    resolve_config_path,
    shipped_configs,
)
from xprospect.errors import ConfigError

VALID = """
name: test
data:
  dir: data/ds16
  hu_window: [-1000, 1000]
  augmentation: {gamma: 0.2}
  batch_size: 2
model:
  preset: 512-Dense
  overrides: {base_filters: 8}
loss: {mae: 1.0, projection: 0.1}
optimizer:
  name: nadam
  learning_rate: 2e-4          # YAML reads this as a string; the float field converts it
  schedule: {name: cosine, warmup_steps: 10}
  use_ema: true
training:
  steps: 100
  mixed_precision: mixed_bfloat16
  output_dir: runs/test
"""


def _write(tmp_path, text, name="exp.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _error(tmp_path, text) -> str:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path)), message
    return message


def test_valid_file_loads_with_types_and_defaults(tmp_path):
    cfg = load_config(_write(tmp_path, VALID))
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.data.hu_window == [-1000.0, 1000.0] and cfg.data.views == ["frontal", "lateral"]
    assert cfg.optimizer.learning_rate == pytest.approx(2e-4)
    assert cfg.optimizer.schedule.name == "cosine" and cfg.optimizer.schedule.warmup_steps == 10
    assert cfg.model.overrides == {"base_filters": 8} and cfg.model.size is None
    assert cfg.loss == {"mae": 1.0, "projection": 0.1}
    assert cfg.training.steps == 100 and cfg.training.strategy == "auto"
    assert cfg.training.checkpoint_every == 500  # default


def test_unknown_key_names_it_and_lists_the_valid_ones(tmp_path):
    msg = _error(tmp_path, VALID.replace("  steps: 100", "  stepz: 100"))
    assert "unknown key 'training.stepz'" in msg and "did you mean 'steps'" in msg
    assert "valid keys: steps, epochs, steps_per_epoch" in msg
    msg = _error(tmp_path, VALID + "extra: 1\n")
    assert "unknown key 'extra'" in msg
    assert "data, model, loss, perceptual, optimizer, gan, training" in msg


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "  steps: 100",
            "  steps: many",
            "training.steps: expected an integer or null, got 'many'",
        ),
        ("  use_ema: true", "  use_ema: 1", "optimizer.use_ema: expected true or false, got 1"),
        ("  batch_size: 2", "  batch_size: 0", "data.batch_size: must be >= 1, got 0"),
        (
            "  mixed_precision: mixed_bfloat16",
            "  mixed_precision: fp8",
            "training.mixed_precision: expected one of none, mixed_bfloat16, mixed_float16",
        ),
        ("  name: nadam", "  name: sgd", "optimizer.name: expected one of adam, nadam or null"),
        ("{gamma: 0.2}", "{gama: 0.2}", "data.augmentation: unknown augmentation keys ['gama']"),
        ("[-1000, 1000]", "[1000, -1000]", "data.hu_window: hu_window needs low < high"),
        ("  steps: 100", "  steps: 100\n  epochs: 2", "set exactly one of steps and epochs"),
    ],
)
def test_wrong_values_give_one_line_errors_naming_the_key(tmp_path, old, new, expected):
    text = VALID.replace(old, new)
    assert text != VALID
    assert expected in _error(tmp_path, text)


def test_missing_file_bad_yaml_and_wrong_top_level(tmp_path):
    with pytest.raises(ConfigError, match=r"config file not found .*shipped: .*demo"):
        load_config(tmp_path / "nope.yaml")
    msg = _error(tmp_path, "data:\n  dir: [unclosed\n")
    assert "invalid YAML: line" in msg
    assert "expected a mapping of sections" in _error(tmp_path, "- a\n- b\n")
    assert "data.dir: is required" in _error(tmp_path, "training: {steps: 1}\n")


def test_overrides_from_cli_strings_and_dicts(tmp_path):
    cfg = load_config(_write(tmp_path, VALID))
    new = apply_overrides(
        cfg,
        [
            "training.steps=7",
            "optimizer.learning_rate=1e-3",
            "model.overrides.dense_units=64",
            "data.views=[frontal]",
            "optimizer.clip_global_norm=null",
        ],
    )
    assert new.training.steps == 7 and new.optimizer.learning_rate == pytest.approx(1e-3)
    assert new.model.overrides == {"base_filters": 8, "dense_units": 64}
    assert new.data.views == ["frontal"] and cfg.training.steps == 100  # original unchanged
    assert apply_overrides(cfg, {"training.seed": 3}).training.seed == 3
    with pytest.raises(ConfigError, match=r"--set training\.stepz: unknown key 'training.stepz'"):
        apply_overrides(cfg, ["training.stepz=1"])
    with pytest.raises(ConfigError, match=r"--set overrides: training\.steps: expected an integer"):
        apply_overrides(cfg, {"training.steps": "x"})
    with pytest.raises(ConfigError, match=r"must look like section\.key=value"):
        parse_override("training.steps")
    assert load_config(_write(tmp_path, VALID), ["training.steps=3"]).training.steps == 3


def test_dump_and_load_round_trip(tmp_path):
    cfg = load_config(_write(tmp_path, VALID))
    again = load_config(dump_config(cfg, tmp_path / "out" / "config.yaml"))
    assert again == cfg


@pytest.mark.parametrize("name", ["64-dense", "512-dense", "512-dense-mae", "512-projinj", "demo"])
def test_shipped_configs_load_by_name(name):
    assert name in shipped_configs()
    path = resolve_config_path(name)
    assert path == resolve_config_path(f"{name}.yaml") == shipped_configs()[name]
    cfg = load_config(name)
    assert cfg.training.steps and cfg.data.dir
    if name != "demo":
        # The paper's rows are 128^2 → 128^3 on "Mean CT" inputs: the shipped files take the
        # size of the dataset they are pointed at (prepared with --size 128 --geometry mean).
        assert cfg.model.size is None and cfg.data.dir == "data/ds128-mean"
    else:
        assert cfg.model.size == 64
    if name == "demo":
        assert cfg.model.preset == "512-ProjInj"  # bench_transfer: transfers best to real CT
        assert cfg.training.mixed_precision == "mixed_bfloat16"
        assert cfg.model.overrides["base_filters"] == 8


def test_config_from_dict_without_a_file():
    cfg = config_from_dict({"data": {"dir": "x"}, "training": {"epochs": 2}})
    assert cfg.training.epochs == 2 and cfg.training.steps is None
    with pytest.raises(ConfigError, match="warmup_steps: is only used by the cosine schedule"):
        config_from_dict(
            {
                "data": {"dir": "x"},
                "training": {"steps": 1},
                "optimizer": {"schedule": {"warmup_steps": 5}},
            }
        )


GAN_CONFIGS = [
    "x2ct-cnn-b",
    "x2ct-cnn-s",
    "x2ct-gan",
    "cvaa-gan",
    "duolift-cnn",
    "duolift-gan",
    "s-xr2ct",
]


@pytest.mark.parametrize("name", GAN_CONFIGS)
def test_shipped_gan_configs_name_their_preset_and_take_its_views(name):
    from xprospect.models import PRESETS

    cfg = load_config(name)
    assert cfg.model.preset in PRESETS and cfg.model.size == 128
    assert tuple(cfg.data.views) in [tuple(v) for v in PRESETS[cfg.model.preset]["views"]]
    # Everything the preset supplies is left to it.
    assert cfg.loss is None and cfg.optimizer.schedule is None and cfg.gan.adversarial is None


def test_gan_settings_are_validated():
    base = {"data": {"dir": "x"}, "training": {"steps": 1}}
    bad = [
        ({"optimizer": {"beta_1": 1.5}}, "optimizer.beta_1"),
        ({"optimizer": {"schedule": {"name": "multistep"}}}, "milestones"),
        (
            {"optimizer": {"schedule": {"name": "multistep", "milestones": [0.8, 0.2]}}},
            "milestones",
        ),
        ({"gan": {"adversarial": "wgan"}}, "gan.adversarial"),
        ({"gan": {"d_learning_rate": -1}}, "gan.d_learning_rate"),
        ({"training": {"steps": 1, "grad_accum_steps": 0}}, "grad_accum_steps"),
    ]
    for extra, key in bad:
        with pytest.raises(ConfigError, match=key):
            config_from_dict({**base, **extra})


def test_presets_refuse_views_they_do_not_take():
    from xprospect.models import build_model

    with pytest.raises(ConfigError, match="takes views"):
        build_model("S-XR2CT", size=32, views=("frontal", "lateral"))
    with pytest.raises(ConfigError, match="takes views"):
        build_model("CVAA-GAN", size=32, views=("frontal",))


def test_a_bad_key_inside_an_optional_section_is_named():
    base = {"data": {"dir": "x"}, "training": {"steps": 1}}
    with pytest.raises(ConfigError, match=r"unknown key 'optimizer\.schedule\.nme' \(did you mean"):
        config_from_dict({**base, "optimizer": {"schedule": {"nme": "cosine"}}})
    with pytest.raises(
        ConfigError, match=r"optimizer\.schedule\.warmup_steps: expected an integer, got 'x'"
    ):
        config_from_dict({**base, "optimizer": {"schedule": {"warmup_steps": "x"}}})
    with pytest.raises(ConfigError, match=r"optimizer\.schedule: expected a mapping or null"):
        config_from_dict({**base, "optimizer": {"schedule": "cosine"}})


@dataclass
class _Export:
    format: Literal["keras", "savedmodel"] = "keras"
    batch: int = 1


@dataclass
class _Tool:
    name: str = ""
    export: _Export = field(default_factory=_Export)
    tags: dict[str, float] = field(default_factory=dict)


def _tool_from_dict(data, source=None) -> _Tool:
    src = None if source is None else str(source)
    config = engine.build(_Tool, data, "", src)
    engine.check(config.export.batch >= 1, "export.batch", "must be >= 1", src)
    return config


def test_the_engine_serves_any_schema(tmp_path):
    folder = tmp_path / "shipped"
    folder.mkdir()
    (folder / "tool.yaml").write_text("name: t\nexport: {format: SavedModel, batch: 2}\n")
    file = engine.resolve_path("tool", folder, "tool config")
    assert engine.shipped(folder) == {"tool": file}
    cfg = engine.load_file(file, _tool_from_dict, ["export.batch=4", "tags.a=0.5"])
    assert cfg == _Tool("t", _Export("savedmodel", 4), {"a": 0.5})
    assert engine.load_file(engine.dump(cfg, tmp_path / "again.yaml"), _tool_from_dict) == cfg
    with pytest.raises(ConfigError, match=r"tool config file not found \(shipped: tool\)"):
        engine.resolve_path("nope", folder, "tool config")
    bad = tmp_path / "bad.yaml"
    bad.write_text("export: {batch: 0}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: export\.batch: must be >= 1"):
        engine.load_file(bad, _tool_from_dict)
    bad.write_text("export: {format: onnx}\n")
    with pytest.raises(ConfigError, match=r"export\.format: expected one of keras, savedmodel"):
        engine.load_file(bad, _tool_from_dict)
    with pytest.raises(ConfigError, match=r"--set export\.size: unknown key 'export\.size'"):
        engine.apply_overrides(cfg, ["export.size=1"], _tool_from_dict)
    assert engine.describe_type(int | None) == "an integer or null"
    assert engine.describe_type(list[float]) == "a list of numbers"
