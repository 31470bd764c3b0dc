"""``run_demo`` end to end at a tiny size: every step runs and the report holds its tables, the
real CT scored with both baselines beside the model."""

from __future__ import annotations

import json
import re

import yaml

from xprospect.demo import OUTPUT_NAMES, DemoSettings, run_demo


def test_demo_report_scores_the_real_ct_with_both_baselines(tmp_path, sample_ct_paths):
    settings = DemoSettings(
        size=16,
        train_cases=4,
        val_cases=1,
        test_cases=1,
        steps=2,
        upsampling="resize_conv",
        loss={"mse": 1.0},
        training_seed=3,
        overrides={"optimizer.use_ema": True, "optimizer.ema_momentum": 0.9},
    )
    report = run_demo(tmp_path / "demo", settings)
    assert {p.name for p in (tmp_path / "demo").iterdir()} == set(OUTPUT_NAMES)
    text = report.read_text()
    assert "('real_ct' calibration)" in text  # the default: phantoms calibrated to real CT
    manifest = json.loads((tmp_path / "demo" / "data" / "manifest.json").read_text())
    assert manifest["config"]["phantom_calibration"] == "real_ct"
    run_config = yaml.safe_load((tmp_path / "demo" / "run" / "config.yaml").read_text())
    assert run_config["model"]["overrides"]["upsampling"] == "resize_conv"
    assert run_config["loss"] == {"mse": 1.0}
    # The training seed is its own; the split keeps DemoSettings.seed. Overrides apply last.
    assert run_config["training"]["seed"] == 3
    assert manifest["config"]["split_seed"] == 0
    assert run_config["optimizer"]["use_ema"] is True
    assert run_config["optimizer"]["ema_momentum"] == 0.9
    section = text.split("### The real LIDC chest CT", 1)[1].split("## Figures", 1)[0]
    assert "| metric | model | mean volume | back-projection |" in section
    rows = {
        m[1]: [float(v) for v in m.groups()[1:]]
        for m in re.finditer(r"^\| (\w+) \| ([-\d.e+]+) \| ([-\d.e+]+) \| ([-\d.e+]+) \|$",
                             section, re.M)
    }  # fmt: skip
    assert {"psnr_3d", "ssim_3d"} <= set(rows), section
    # Three methods, three different reconstructions of the same CT.
    assert len(set(rows["psnr_3d"])) == 3
    assert (tmp_path / "demo" / "real_ct_panel.png").stat().st_size > 0
    # The real CT is scored inside its scanned region: the reconstruction circle of the LIDC
    # scan leaves its corners out (-2048 HU there), so the share is below 100 %.
    share = re.search(r"Scored inside the scanned region, ([\d.]+)% of the cube", section)
    assert share is not None, section
    assert 80.0 < float(share[1]) < 100.0
    # The phantom test split is fully scanned: scored over the whole cube, and said so.
    assert "Scored over the whole cube" in text.split("### The real LIDC chest CT", 1)[0]
