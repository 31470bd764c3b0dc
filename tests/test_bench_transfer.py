"""benchmarks/bench_transfer.py without training: margins over the best baseline, the choice of
the best variant, the target verdict and the tables, on made-up scores."""

from __future__ import annotations

import pytest
from bench_loader import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_transfer")


def _scores(model: tuple[float, float], mean: tuple[float, float], bp: tuple[float, float]):
    return {
        name: {"psnr_3d": p, "ssim_3d": s}
        for name, (p, s) in (("model", model), ("mean_volume", mean), ("back_projection", bp))
    }


def _variant(real: dict[str, dict], test: dict, scoring: str | None = "couch removed") -> dict:
    return {
        "phantom_calibration": "original",
        "upsampling": None,
        "wall_s": 1.0,
        "real_scoring": scoring,
        "scores": {
            "real": {k: {"scanned_fraction": 0.9, "metrics": v} for k, v in real.items()},
            "phantom_test": {"own": test, "original": test},
        },
    }


def _result(variants: dict, date: str = "2026-12-03") -> dict:
    return {
        "command": "python benchmarks/bench_transfer.py",
        "date": date,
        "machine": "x86_64, 2 CPUs",
        "settings": {"train_cases": 200, "size": 64},
        "steps": 800,
        "variants": variants,
    }


def test_margins_are_over_the_best_baseline_per_metric(bench):
    # PSNR's best baseline is back-projection, SSIM's the mean volume.
    m = bench.margins(_scores((16.0, 0.40), (13.0, 0.30), (14.0, 0.20)))
    assert m["psnr_3d"] == pytest.approx(2.0)
    assert m["ssim_3d"] == pytest.approx(0.10)


def test_the_best_variant_has_the_largest_worst_case_margin_and_the_target_is_two_sided(bench):
    test = _scores((21.0, 0.6), (19.0, 0.5), (13.0, 0.2))
    result = {
        "variants": {
            # Better on one CT, worse on the other: its worst case (+0.5 dB) decides.
            "a": _variant(
                {
                    "ct1": _scores((18.0, 0.5), (14.0, 0.3), (13.0, 0.2)),
                    "ct2": _scores((14.5, 0.4), (14.0, 0.3), (13.0, 0.2)),
                },
                test,
            ),
            "b": _variant(
                {
                    "ct1": _scores((17.0, 0.45), (14.0, 0.3), (13.0, 0.2)),
                    "ct2": _scores((16.6, 0.38), (14.0, 0.3), (13.0, 0.2)),
                },
                test,
            ),
        }
    }
    text, best = bench.verdict(result)
    assert best == "b"
    # b: +3.0 / +2.6 dB, but +0.15 / +0.08 SSIM: the SSIM half of the target fails on ct2.
    assert "**NOT met**" in text and "ct2: +2.60 dB, +0.080 SSIM" in text
    result["variants"]["b"]["scores"]["real"]["ct2"]["metrics"]["model"]["ssim_3d"] = 0.41
    text, best = bench.verdict(result)
    assert best == "b" and "**MET**" in text
    # One real CT is not "both": the target needs two.
    del result["variants"]["a"]["scores"]["real"]["ct2"]
    del result["variants"]["b"]["scores"]["real"]["ct2"]
    assert "**NOT met**" in bench.verdict(result)[0]


def test_markdown_has_a_table_per_real_ct_and_the_phantom_rows(bench):
    test = _scores((21.0, 0.6), (19.0, 0.5), (13.0, 0.2))
    result = _result(
        {"original": _variant({"LIDC": _scores((14.4, 0.30), (12.8, 0.23), (13.4, 0.22))}, test)}
    )
    result["verdict"], result["best"] = bench.verdict(result)
    text = bench.markdown(result)
    assert "## LIDC" in text
    assert "| original | 14.40 | 0.300 | 13.40 | 0.230 | +1.00 | +0.070 |" in text
    assert "| original | own | 21.00 | 0.600 | 19.00 | 13.00 |" in text
    assert "Scanned region: 90.0 % of the cube." in text
    # Without lung metrics (an older record) the lung table says so rather than failing.
    assert "| original | - (-) | - |" in text
    # Lung Dice / volume ratio: 1200 / 3000 ml = 0.40 on the real CT, 3900 / 4000 on phantoms.
    lungs = {"lung_dice": 0.55, "lung_volume_ml_pred": 1200.0, "lung_volume_ml_truth": 3000.0}
    real = result["variants"]["original"]["scores"]["real"]["LIDC"]["metrics"]
    real["model"].update(lungs)
    real["mean_volume"].update(
        lung_dice=0.6, lung_volume_ml_pred=3300.0, lung_volume_ml_truth=3000.0
    )
    own = result["variants"]["original"]["scores"]["phantom_test"]["own"]["model"]
    own.update(lung_dice=0.93, lung_volume_ml_pred=3900.0, lung_volume_ml_truth=4000.0)
    assert "| original | 0.55 / 0.40 (0.60 / 1.10) | 0.93 / 0.97 |" in bench.markdown(result)


def test_rows_scored_with_the_couch_are_marked_and_left_out_of_the_verdict(bench, tmp_path):
    assert bench.REAL_SCORING == "couch removed"
    test = _scores((21.0, 0.6), (19.0, 0.5), (13.0, 0.2))
    result = _result(
        {
            # The larger margin, but scored another way: not comparable, so not the best.
            "old": _variant({"LIDC": _scores((18.0, 0.5), (13.0, 0.2), (13.0, 0.2))}, test, None),
            "new": _variant({"LIDC": _scores((15.0, 0.4), (13.0, 0.2), (13.0, 0.2))}, test),
        },
        date="2026-12-04",
    )
    result["verdict"], result["best"] = bench.verdict(result)
    assert result["best"] == "new"
    text = bench.markdown(result)
    assert "| old (couch kept) | 18.00 |" in text and "| new | 15.00 |" in text
    assert "Real-CT rows marked (couch kept): old" in text
    # A stale record without its run folder cannot be rescored and is left as it was.
    record = _variant({"LIDC": _scores((18.0, 0.5), (13.0, 0.2), (13.0, 0.2))}, test, None)
    assert not bench.rescore_if_stale(tmp_path / "old", record, [("LIDC", tmp_path / "ct.nii")])
    assert record["real_scoring"] is None


def test_variants_share_a_dataset_only_when_every_setting_that_builds_it_agrees(bench, tmp_path):
    base = {"size": 64, "train_cases": 200, "val_cases": 10, "test_cases": 20}
    built = tmp_path / "a" / "data"
    built.mkdir(parents=True)
    (built / "manifest.json").write_text("{}")
    done = {bench.dataset_key({**base, **bench.VARIANTS["real_ct+projinj"]}): built}
    # Same calibration and counts: hard-linked, so prepare finds it complete.
    same = {**base, **bench.VARIANTS["real_ct+resize_conv"]}
    bench.share_dataset(tmp_path, "b", bench.dataset_key(same), done)
    assert (tmp_path / "b" / "data" / "manifest.json").stat().st_ino == (
        built / "manifest.json"
    ).stat().st_ino
    # Same calibration, twice the training phantoms: built on its own.
    more = {**base, **bench.VARIANTS["real_ct+projinj+400"]}
    assert more["train_cases"] == 400
    bench.share_dataset(tmp_path, "c", bench.dataset_key(more), done)
    assert not (tmp_path / "c").exists()
