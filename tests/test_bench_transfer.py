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


def _variant(
    real: dict[str, dict], test: dict, scoring: str | None = "couch removed, axial fill"
) -> dict:
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
    assert bench.REAL_SCORING == "couch removed, axial fill"
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
    assert "Real-CT rows scored an earlier way (marked): old" in text
    # A record of the first couch removal (holes filled in the array's first axis) says so.
    result["variants"]["old"]["real_scoring"] = "couch removed"
    assert "| old (scored as 'couch removed') | 18.00 |" in bench.markdown(result)
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


def test_seed_repeats_share_the_dataset_and_the_verdict_reads_their_mean(bench):
    assert bench.split_seed("real_ct+projinj+400@seed2") == ("real_ct+projinj+400", 2)
    assert bench.split_seed("real_ct") == ("real_ct", None)
    for bad in ("real_ct@seed0", "real_ct@seedx"):
        with pytest.raises(ValueError, match="seed repeat"):
            bench.split_seed(bad)
    base = {"size": 64, "train_cases": 200, "val_cases": 10, "test_cases": 20}
    repeat = bench.variant_settings("real_ct+projinj@seed1")
    assert repeat == {**bench.VARIANTS["real_ct+projinj"], "training_seed": 1}
    assert bench.dataset_key({**base, **repeat}) == bench.dataset_key(
        {**base, **bench.VARIANTS["real_ct+projinj"]}
    )
    test = _scores((21.0, 0.6), (19.0, 0.5), (13.0, 0.2))

    def run(d1: float, d2: float) -> dict:
        return _variant(
            {
                "ct1": _scores((14.0 + d1, 0.45), (14.0, 0.3), (13.0, 0.2)),
                "ct2": _scores((14.0 + d2, 0.45), (14.0, 0.3), (13.0, 0.2)),
            },
            test,
        )

    # "a" has the best single run (+2.8 / +2.7) but a poor repeat; "b" is steadier.
    result = _result(
        {
            "a": run(2.8, 2.7),
            "a@seed1": run(1.8, 2.1),
            "b": run(2.6, 2.6),
            "b@seed1": run(2.5, 2.4),
            "b@seed2": run(2.7, 2.5),
        }
    )
    assert bench.seed_groups(result["variants"]) == {
        "a": ["a", "a@seed1"],
        "b": ["b", "b@seed1", "b@seed2"],
    }
    text, best = bench.verdict(result)
    assert best == "b"
    # b's means: ct1 (2.6 + 2.5 + 2.7) / 3 = +2.60, ct2 (2.6 + 2.4 + 2.5) / 3 = +2.50.
    assert "**b, mean of 3 training seeds**" in text
    assert "ct1: +2.60 dB (range +2.50 to +2.70), +0.150 SSIM" in text
    assert "ct2: +2.50 dB (range +2.40 to +2.60)" in text and "**MET**" in text
    result["variants"]["b@seed1"] = run(2.5, 2.2)  # ct2's mean drops to +2.43
    assert "**NOT met**" in bench.verdict(result)[0]
    result["verdict"], result["best"] = bench.verdict(result)
    table = bench.markdown(result).split("## Training seeds", 1)[1]
    assert "| a | ct1 | +2.80 / +0.150, +1.80 / +0.150 | +2.30 / +0.150 |" in table
    assert "| b | ct2 | +2.60 / +0.150, +2.20 / +0.150, +2.50 / +0.150 | +2.43 / +0.150 |" in table


def test_a_seed_repeat_runs_after_its_own_variant_and_original_first(bench):
    assert bench.run_order(["real_ct@seed1", "real_ct+projinj"]) == [
        "original",
        "real_ct",
        "real_ct@seed1",
        "real_ct+projinj",
    ]
    assert bench.run_order(["original", "a", "a@seed2"]) == ["original", "a", "a@seed2"]


def test_the_seed_ensemble_averages_its_runs_and_its_margins_are_tabled(bench, monkeypatch):
    import numpy as np

    import xprospect.inference as inference

    def member(value: float) -> inference.Predictor:
        def model(chunk, training=False):
            return np.full((len(chunk["frontal"]), 4, 4, 4, 1), value, np.float32)

        return inference.Predictor(model=model, size=4)

    runs = {"/w/a": member(0.2), "/w/a@seed1": member(0.6)}
    monkeypatch.setattr(inference, "load_predictor", lambda path: runs[str(path.parent)])
    from pathlib import Path

    ens = bench.seed_ensemble([Path("/w/a"), Path("/w/a@seed1")])
    x = {v: np.zeros((2, 4, 4, 1), np.float32) for v in ("frontal", "lateral")}
    np.testing.assert_allclose(ens.predict(x), np.full((2, 4, 4, 4), 0.4), rtol=1e-6)
    assert ens.size == 4 and ens.source == "mean of 2 runs"

    test = _scores((21.0, 0.6), (19.0, 0.5), (13.0, 0.2))
    real = {"ct1": _scores((16.0, 0.45), (14.0, 0.3), (13.0, 0.2))}
    result = _result({"a": _variant(real, test), "a@seed1": _variant(real, test)})
    result["ensembles"] = {"a": {"runs": ["a", "a@seed1"], "real": {"ct1": {
        "metrics": _scores((16.9, 0.5), (14.0, 0.3), (13.0, 0.2))}}}}  # fmt: skip
    result["verdict"], result["best"] = bench.verdict(result)
    table = bench.markdown(result).split("## Training seeds", 1)[1]
    assert "| a | ct1 | +2.00 / +0.150, +2.00 / +0.150 | +2.00 / +0.150 | +2.90 / +0.200 |" in table


def test_an_ensemble_whose_runs_are_gone_is_read_from_its_record(bench, tmp_path):
    import json

    variants = {name: {} for name in ("a", "a@seed1", "b", "b@seed1", "c")}
    kept = {"runs": ["a", "a@seed1"], "real": {"ct1": {"metrics": {}}}}
    (tmp_path / "a@ensemble").mkdir()
    (tmp_path / "a@ensemble" / "ensemble.json").write_text(json.dumps(kept))
    # b's record names other runs than b's group now has: left out, not mixed in.
    stale = {"runs": ["b", "b@seed2"], "real": {}}
    (tmp_path / "b@ensemble").mkdir()
    (tmp_path / "b@ensemble" / "ensemble.json").write_text(json.dumps(stale))
    assert bench.score_ensembles(tmp_path, variants, []) == {"a": kept}
