"""Evaluation with baselines, model loading and the predict / evaluate / models commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from xprospect.cli import main
from xprospect.data import load_dataset
from xprospect.data.prepare import PrepareConfig, prepare_dataset
from xprospect.evaluation import BackProjectionBaseline, MeanVolumeBaseline, evaluate_dataset
from xprospect.inference import load_predictor, volume_from_output
from xprospect.io import read_nifti, write_png


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "ds"
    cfg = PrepareConfig(
        size=32, geometry="parallel", shard_size=4, val_fraction=0, test_fraction=0.34
    )
    prepare_dataset([], out, cfg, phantoms=6, progress=False)
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from xprospect.models import build_model

    run = tmp_path_factory.mktemp("run")
    model = build_model("512-Dense", size=32, base_filters=4, dense_units=64, geometry="parallel")
    model.save(run / "model.keras")
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"hu_window": "xprospect"}}))
    return run


def test_mean_baseline_is_the_mean_training_volume(dataset):
    base = MeanVolumeBaseline.fit(dataset)
    targets = np.concatenate(
        [y.numpy()[..., 0] for _, y in load_dataset(dataset, "train", shuffle=False)]
    )
    np.testing.assert_allclose(base.mean, targets.mean(0), rtol=1e-5, atol=1e-6)


def test_back_projection_baseline_is_the_least_squares_fit(dataset):
    base = BackProjectionBaseline.fit(dataset, ("frontal", "lateral"))
    from xprospect.evaluation import dataset_cases

    xs, ys = [], []
    for case, target in dataset_cases(dataset, "train", "xprospect"):
        xs.append(base.back_project(case).ravel())
        ys.append(target.ravel())
    slope, intercept = np.polyfit(np.concatenate(xs), np.concatenate(ys), 1)
    np.testing.assert_allclose([base.scale, base.offset], [slope, intercept], rtol=1e-4)
    assert base.scale > 0  # denser rays back-project to denser voxels


def test_evaluate_writes_reports_for_model_and_baselines(dataset, run_dir, tmp_path):
    predictor = load_predictor(run_dir)
    assert predictor.views == ("frontal", "lateral") and predictor.size == 32
    result = evaluate_dataset(predictor, dataset, tmp_path / "ev", split="test", panels=1)
    assert set(result.summary) == {"model", "mean_volume", "back_projection"}
    n_test = len(list(load_dataset(dataset, "test", shuffle=False)))
    assert len(result.rows) == 3 * n_test
    for name in ("per_case.csv", "summary.json", "summary.md"):
        assert (tmp_path / "ev" / name).stat().st_size > 0
    assert len(list((tmp_path / "ev" / "panels").glob("*.png"))) == 1
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())["summary"]
    for method in summary.values():
        assert np.isfinite(method["psnr_3d"]["mean"]) and -1 <= method["ssim_3d"]["mean"] <= 1
    # The fitted baselines come back for reuse, equal to a fresh fit on the train split.
    assert set(result.baselines) == {"mean_volume", "back_projection"}
    fresh = MeanVolumeBaseline.fit(dataset)
    np.testing.assert_allclose(result.baselines["mean_volume"].mean, fresh.mean, rtol=1e-6)
    bp = BackProjectionBaseline.fit(dataset, ("frontal", "lateral"))
    got = result.baselines["back_projection"]
    np.testing.assert_allclose([got.scale, got.offset], [bp.scale, bp.offset], rtol=1e-6)


def test_volume_from_output_maps_back_to_hu():
    cube = np.full((8, 8, 8), 0.5, np.float32)
    cube[0, 0, 0] = 1.5  # outside [0, 1]: clipped
    v = volume_from_output(cube, (-1000, 1000), fov_mm=80.0)
    assert v.is_canonical and v.spacing_mm == (10.0, 10.0, 10.0)
    np.testing.assert_allclose(v.array[1, 1, 1], 0.0, atol=1e-4)
    np.testing.assert_allclose(v.array[0, 0, 0], 1000.0, atol=1e-3)


def test_predict_and_evaluate_and_models_commands(dataset, run_dir, tmp_path, capsys):
    rng = np.random.default_rng(0)
    write_png(rng.random((80, 64)), tmp_path / "f.png")
    write_png(rng.random((64, 80)), tmp_path / "l.png")
    out = tmp_path / "ct.nii.gz"
    code = main(
        [
            "predict",
            "--model",
            str(run_dir),
            "--frontal",
            str(tmp_path / "f.png"),
            "--lateral",
            str(tmp_path / "l.png"),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    vol = read_nifti(out)
    assert vol.shape == (32, 32, 32) and vol.is_canonical
    np.testing.assert_allclose(vol.spacing_mm, (10.0, 10.0, 10.0))
    assert vol.array.min() >= -1000 and vol.array.max() <= 1000
    assert (tmp_path / "ct_preview.png").exists()
    code = main(
        [
            "predict",
            "--model",
            str(run_dir),
            "--frontal",
            str(tmp_path / "f.png"),
            "--out",
            str(tmp_path / "x.nii.gz"),
        ]
    )
    assert code == 5 and "--lateral" in capsys.readouterr().err  # a config error
    code = main(
        [
            "evaluate",
            "--model",
            str(run_dir),
            "--data",
            str(dataset),
            "--output",
            str(tmp_path / "ev2"),
            "--max-cases",
            "1",
        ]
    )
    assert code == 0 and "| model |" in capsys.readouterr().out


def test_evaluate_protocol_option_scores_with_the_papers_definitions(
    dataset, run_dir, tmp_path, capsys, monkeypatch
):
    from xprospect.evaluation import dataset_cases
    from xprospect.protocols import evaluate_protocol

    args = ["evaluate", "--model", str(run_dir), "--data", str(dataset), "--max-cases", "1"]
    code = main([*args, "--protocol", "x2ct", "--output", str(tmp_path / "x2ct")])
    assert code == 0 and "x2ct protocol" in capsys.readouterr().out
    report = json.loads((tmp_path / "x2ct" / "summary.json").read_text())
    assert report["mode"] == "x2ct"
    assert report["protocol"]["columns"]["cosine_similarity"] == "CS"
    assert report["protocol"]["hu_window"] == [-1024.0, 1476.0]
    # The mean-volume baseline's row equals the protocol applied to it by hand.
    base = MeanVolumeBaseline.fit(dataset)
    _, truth = next(iter(dataset_cases(dataset, "test", "xprospect")))
    expected = evaluate_protocol(truth, base.mean, "x2ct", hu_window="xprospect", spacing_mm=10.0)
    got = report["summary"]["mean_volume"]
    for key, value in expected.items():
        np.testing.assert_allclose(got[key]["mean"], value, rtol=1e-5)

    # DuoLift reports LPIPS: without backbone weights, a one-line config error naming them.
    monkeypatch.delenv("XPROSPECT_LPIPS_VGG_WEIGHTS", raising=False)
    code = main([*args, "--protocol", "duolift", "--output", str(tmp_path / "duo")])
    err = capsys.readouterr().err
    assert code == 5 and "XPROSPECT_LPIPS_VGG_WEIGHTS" in err
    code = main(
        [*args, "--protocol", "duolift", "--skip-lpips", "--output", str(tmp_path / "duo2")]
    )
    assert code == 0
    summary = json.loads((tmp_path / "duo2" / "summary.json").read_text())["summary"]["model"]
    assert {"psnr_2d", "psnr_3d", "ssim_2d", "ssim_3d", "lung_dice", "vessel_dice"} <= set(summary)
    assert "lpips_vgg" not in summary


def test_protocol_with_lpips_scores_with_the_given_backbone(dataset, run_dir, tmp_path):
    from xprospect.lpips import LPIPS, backbone, volume_lpips
    from xprospect.protocols import rewindow

    weights = tmp_path / "alex.weights.h5"
    backbone("alex", "random", seed=7).save_weights(weights)
    predictor = load_predictor(run_dir)
    result = evaluate_dataset(
        predictor,
        dataset,
        tmp_path / "ev",
        baselines=False,
        panels=0,
        max_cases=1,
        protocol="s-xr2ct",
        lpips_weights={"alex": str(weights)},
    )
    row = result.rows[0]
    assert set(row) == {"case_id", "method", "ssim_2d", "psnr_3d", "lpips_alex"} | {
        f"ssim_2d_{a}" for a in ("axial", "coronal", "sagittal")
    }
    from xprospect.evaluation import dataset_cases

    case, truth = next(iter(dataset_cases(dataset, "test", predictor.hu_window)))
    pred = predictor.predict({v: case[v] for v in predictor.views})[0]
    window = predictor.hu_window
    t, p = (rewindow(v, window, (-1024.0, 1476.0)) for v in (truth, pred))
    model = LPIPS(net="alex", backbone_weights=str(weights))
    np.testing.assert_allclose(row["lpips_alex"], volume_lpips(model, t, p), rtol=1e-5)


def test_a_partly_scanned_split_is_scored_inside_its_scan(dataset, tmp_path):
    """Test cases scanned only in their lower half: every method scored inside that half."""
    import shutil

    import tensorflow as tf

    from xprospect.data import encode_case, parse_case

    data = tmp_path / "ds"
    shutil.copytree(dataset, data)
    manifest = json.loads((data / "manifest.json").read_text())
    for shard in sorted(data.glob("test-*.tfrecord")):
        cases = [parse_case(r) for r in tf.data.TFRecordDataset(str(shard))]
        with tf.io.TFRecordWriter(str(shard)) as writer:
            for c in cases:
                mask = np.zeros(c["volume"].shape, np.uint8)
                mask[16:] = 1
                cid = c["case_id"].numpy().decode()
                manifest["cases"][cid]["scan_fraction"] = 0.5
                writer.write(
                    encode_case(
                        cid,
                        c["volume"].numpy(),
                        c["spacing_mm"].numpy(),
                        c["frontal"].numpy(),
                        c["lateral"].numpy(),
                        scan_mask=mask,
                    )
                )
    (data / "manifest.json").write_text(json.dumps(manifest))
    result = evaluate_dataset(None, data, tmp_path / "ev", split="test", panels=0)
    assert result.scored_fraction == 0.5
    base = MeanVolumeBaseline.fit(data)
    targets = [y.numpy()[0, ..., 0] for _, y in load_dataset(data, "test", shuffle=False)]
    rows = [r for r in result.rows if r["method"] == "mean_volume"]
    pred = np.clip(base.mean, 0.0, 1.0)
    for row, truth in zip(rows, targets, strict=True):
        err = np.abs(pred - truth)[16:]
        np.testing.assert_allclose(row["mae"], err.mean(), rtol=1e-5)
        np.testing.assert_allclose(row["psnr_3d"], -10 * np.log10(np.mean(err**2)), rtol=1e-5)
    text = (tmp_path / "ev" / "summary.md").read_text()
    assert "Scored inside the scanned region, 50.0% of the cube." in text
    report = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert report["scored_region"] == {"validity_mask": True, "fraction_of_cube": 0.5}
    whole = evaluate_dataset(
        None, data, tmp_path / "ev-whole", split="test", panels=0, validity_mask=False
    )
    assert whole.scored_fraction is None
    assert "whole cube" in (tmp_path / "ev-whole" / "summary.md").read_text()
    whole_rows = [r for r in whole.rows if r["method"] == "mean_volume"]
    np.testing.assert_allclose(whole_rows[0]["mae"], np.abs(pred - targets[0]).mean(), rtol=1e-5)


def test_real_ct_case_removes_the_couch_from_the_truth_and_the_drrs(tmp_path) -> None:
    from xprospect.evaluation import real_ct_case
    from xprospect.io import write_volume
    from xprospect.phantoms import asymmetric_phantom
    from xprospect.preprocessing import body_mask

    vol = asymmetric_phantom((40, 64, 64)).volume
    a = vol.array.astype(np.float32).copy()
    a[:, 61:63, 8:56] = 300.0  # a couch apart from the body
    path = write_volume(vol.replace(array=a), tmp_path / "ct.nii.gz")
    kept = real_ct_case(path, 32, "parallel", remove_couch=False)
    gone = real_ct_case(path, 32, "parallel")
    # Reference: the same CT with the couch (everything off the body) set to air by hand.
    by_hand = np.where(body_mask(a), a, -1000.0).astype(np.float32)
    ref = real_ct_case(
        write_volume(vol.replace(array=by_hand), tmp_path / "by_hand.nii.gz"),
        32,
        "parallel",
        remove_couch=False,
    )
    np.testing.assert_allclose(gone.hu, ref.hu, rtol=0, atol=1e-3)
    assert (kept.hu != gone.hu).any()
    np.testing.assert_array_equal(kept.mask, gone.mask)
    # The couch's attenuation leaves the line integrals of both views.
    for view in ("frontal", "lateral"):
        np.testing.assert_allclose(gone.case[f"{view}_line"], ref.case[f"{view}_line"], atol=1e-4)
        assert gone.case[f"{view}_line"].sum() < kept.case[f"{view}_line"].sum()
