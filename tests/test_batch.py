"""Batch prediction (``xprospect predict --batch``): the case lists, the reprojection self-check
against independent references, and a batch with a bad case that goes on."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from xprospect.batch import (
    DEFAULT_DRR_GEOMETRY,
    FAILURES_FILE,
    REPROJECTION_FILE,
    read_cases,
    reprojection_agreement,
    training_geometry,
)
from xprospect.cli import main
from xprospect.errors import ConfigError, MissingDataError
from xprospect.image import Volume
from xprospect.io import write_png

SIZE = 16
BIPLANAR = ("frontal", "lateral")


def _csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


# === Case lists ===


def test_a_csv_lists_cases_with_paths_relative_to_it(tmp_path):
    rows = [
        {"case_id": "a", "frontal": "x/a_f.png", "lateral": "x/a_l.png"},
        {"case_id": "", "frontal": "b_front.dcm", "lateral": "/abs/b_l.dcm"},
    ]
    cases = read_cases(_csv(tmp_path / "cases.csv", rows), BIPLANAR)
    assert [c.case_id for c in cases] == ["a", "b_front"]  # an empty id: the frontal file's stem
    assert cases[0].files == {"frontal": tmp_path / "x/a_f.png", "lateral": tmp_path / "x/a_l.png"}
    assert cases[1].files["lateral"] == Path("/abs/b_l.dcm")


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"front": "a.png"}], "needs a 'frontal' column"),
        ([{"frontal": "a.png", "lateral": ""}], "row 2 has no lateral file"),
        ([{"frontal": "a.png", "lateral": "b.png", "case_id": "../up"}], "cannot name a file"),
        (
            [
                {"frontal": "d/a.png", "lateral": "l1.png"},
                {"frontal": "e/a.png", "lateral": "l2.png"},
            ],
            "case id 'a' appears twice",
        ),
    ],
)
def test_a_bad_csv_is_a_config_error_naming_it(tmp_path, rows, message):
    path = _csv(tmp_path / "cases.csv", rows)
    with pytest.raises(ConfigError, match=message) as info:
        read_cases(path, BIPLANAR)
    assert str(path) in str(info.value)


def test_a_folder_with_a_manifest_pairs_views_by_pair_id(tmp_path):
    (tmp_path / "images").mkdir()
    rows = [
        {"file": "p1.png", "view": "PA", "pair_id": "7"},
        {"file": "l1.png", "view": "L", "pair_id": "7"},
        {"file": "s.png", "view": "AP Supine", "pair_id": ""},
        {"file": "lonely_lateral.png", "view": "L", "pair_id": "9"},
        {"file": "p2a.png", "view": "PA", "pair_id": "8"},  # two studies of one patient
        {"file": "l2a.png", "view": "L", "pair_id": "8"},
        {"file": "p2b.png", "view": "PA", "pair_id": "8"},
        {"file": "l2b.png", "view": "L", "pair_id": "8"},
    ]
    _csv(tmp_path / "manifest.csv", rows)
    biplanar = read_cases(tmp_path, BIPLANAR)
    # The unpaired images need no lateral: not cases of a biplanar model.
    assert [c.case_id for c in biplanar] == ["pair-7", "pair-8", "pair-8-2"]
    assert biplanar[2].files["lateral"] == tmp_path / "images/l2b.png"
    assert biplanar[0].files == {
        "frontal": tmp_path / "images/p1.png",
        "lateral": tmp_path / "images/l1.png",
    }
    frontal_only = read_cases(tmp_path, ("frontal",))
    assert [c.case_id for c in frontal_only] == ["pair-7", "pair-8", "pair-8-2", "s"]
    with pytest.raises(MissingDataError, match=r"manifest\.csv"):
        read_cases(tmp_path / "images", BIPLANAR)


# === The self-check ===


def _phantom(size: int = SIZE) -> Volume:
    from xprospect.phantoms import asymmetric_phantom

    return asymmetric_phantom((size,) * 3, spacing_mm=(20.0, 20.0, 20.0)).volume


def test_reprojection_agreement_is_psnr_and_ssim_of_the_drr_against_the_input():
    from skimage.metrics import structural_similarity

    from xprospect.inference import prepare_xray
    from xprospect.projection import render_drr

    volume = _phantom()
    drr = {
        v: render_drr(volume, v, "parallel", size=SIZE, output="display").array for v in BIPLANAR
    }
    # The input of a view equal to the prediction's own DRR: perfect agreement.
    same = reprojection_agreement(volume, drr, "parallel")
    for view in BIPLANAR:
        assert same[view]["psnr_2d_db"] == 100.0  # zero error, reported as 100 dB
        np.testing.assert_allclose(same[view]["ssim_2d"], 1.0, atol=1e-6)
    # Another input: the formula's values (PSNR with data range 1, Gaussian-window SSIM).
    rng = np.random.default_rng(0)
    noisy = {v: np.clip(drr[v] + rng.normal(0, 0.05, drr[v].shape), 0, 1) for v in BIPLANAR}
    got = reprojection_agreement(volume, noisy, "parallel", windowed=("lateral",))
    for view in BIPLANAR:
        rep = prepare_xray(drr[view], SIZE) if view == "lateral" else drr[view]
        mse = np.mean((noisy[view] - rep) ** 2)
        np.testing.assert_allclose(got[view]["psnr_2d_db"], 10 * np.log10(1 / mse), rtol=1e-5)
        ssim = structural_similarity(
            noisy[view], rep, data_range=1.0, gaussian_weights=True, sigma=1.5,
            use_sample_covariance=False,
        )  # fmt: skip
        np.testing.assert_allclose(got[view]["ssim_2d"], ssim, rtol=1e-5)
    assert got["frontal"]["psnr_2d_db"] < same["frontal"]["psnr_2d_db"]


def test_training_geometry_comes_from_the_run_or_its_data(tmp_path):
    from xprospect.data.prepare import PrepareConfig, prepare_dataset

    assert training_geometry({"model": {"geometry": "parallel"}}) == "parallel"
    data = tmp_path / "ds"
    cfg = PrepareConfig(size=16, geometry="parallel", val_fraction=0, test_fraction=0)
    prepare_dataset([], data, cfg, phantoms=1, progress=False)
    assert training_geometry({"data": {"dir": str(data)}}) == "parallel"
    assert training_geometry({"model_card": {"model": {"geometry": "xprospect_mean"}}}) == (
        "xprospect_mean"
    )
    assert training_geometry({"data": {"dir": str(tmp_path / "gone")}}) == DEFAULT_DRR_GEOMETRY


# === The command ===


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from xprospect.models import build_model

    run = tmp_path_factory.mktemp("run")
    model = build_model("512-Dense", size=SIZE, base_filters=2, dense_units=8, geometry="parallel")
    model.save(run / "model.keras")
    config = {"data": {"hu_window": "xprospect"}, "model": {"geometry": "parallel"}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    return run


def test_a_batch_with_a_corrupt_file_writes_the_others_and_lists_it(tmp_path, run_dir, capsys):
    rng = np.random.default_rng(1)
    images = tmp_path / "in"
    rows = []
    for case in ("c1", "c2", "c3"):
        write_png(rng.random((80, 80)), images / f"{case}_f.png")
        write_png(rng.random((80, 80)), images / f"{case}_l.png")
        rows.append({"case_id": case, "frontal": f"in/{case}_f.png", "lateral": f"in/{case}_l.png"})
    bad = images / "c2_l.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    cases = _csv(tmp_path / "cases.csv", rows)
    out = tmp_path / "out"
    argv = ["predict", "--model", str(run_dir), "--batch", str(cases), "--out-dir", str(out)]
    code = main([*argv, "--no-progress"])
    captured = capsys.readouterr()
    assert code == 4, captured.err  # an input error: one case failed
    errors = captured.err.strip().splitlines()
    assert len(errors) == 1 and str(out / FAILURES_FILE) in errors[0] and str(bad) in errors[0]
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["c1.nii.gz", "c3.nii.gz"]
    assert sorted(p.name for p in out.glob("*_preview.png")) == [
        "c1_preview.png",
        "c3_preview.png",
    ]
    failures = json.loads((out / FAILURES_FILE).read_text())
    assert [(f["case_id"], f["file"]) for f in failures] == [("c2", str(bad))]
    with (out / REPROJECTION_FILE).open() as f:
        table = list(csv.DictReader(f))
    assert [(r["case_id"], r["view"]) for r in table] == [
        ("c1", "frontal"), ("c1", "lateral"), ("c3", "frontal"), ("c3", "lateral"),
    ]  # fmt: skip
    for row in table:
        assert row["geometry"] == "parallel"
        assert np.isfinite(float(row["psnr_2d_db"])) and -1 <= float(row["ssim_2d"]) <= 1
    # The folder now holds results: a second run refuses it unless --overwrite.
    assert main([*argv, "--no-progress"]) == 7
    assert str(out) in capsys.readouterr().err
    bad.unlink()
    write_png(rng.random((80, 80)), bad)
    assert main([*argv, "--no-progress", "--overwrite"]) == 0
    assert json.loads((out / FAILURES_FILE).read_text()) == []
    assert len(list(out.glob("*.nii.gz"))) == 3


def test_batch_flags_are_usage_errors_before_the_model_loads(tmp_path, capsys):
    missing = str(tmp_path / "no_model")
    for argv, named in (
        (["--batch", "x.csv", "--out", "y.nii.gz"], "--out-dir"),
        (["--frontal", "f.png"], "required: --out"),
        (["--out-dir", "d"], "--batch"),
    ):
        with pytest.raises(SystemExit) as info:
            main(["predict", "--model", missing, *argv])
        err = capsys.readouterr().err.strip().splitlines()
        assert info.value.code == 2 and len(err) == 1 and named in err[0], err
