"""Nothing overwritten, nothing half-written: every command's outputs (side files included).

For each command that writes: an existing output is refused with one line naming it (and the
file stays byte-identical), ``--overwrite`` replaces it, a symbolic link at an output path counts
as existing and its target is never written, and no temporary file is left. Outputs are checked
before any model is loaded (a missing model is not even looked at). Exit codes are asserted as
non-zero only: the error contract's codes are set elsewhere.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from faults import full_disk, leftovers

from xprospect.cli import main
from xprospect.io import write_nifti, write_png

SIZE = 16


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _refused(
    code: int, err: str, path: Path, what: str = "--overwrite", exit_code: int = 7
) -> None:
    # 7: an output error; 5 where two arguments clash (a config error), docs/errors.md.
    lines = err.strip().splitlines()
    assert code == exit_code, err
    assert len(lines) == 1 and lines[0].startswith("xprospect: error: "), err
    assert str(path) in lines[0] and what in lines[0], lines[0]
    assert "Traceback" not in err and ".tmp" not in lines[0]


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (links as links) with its content hash."""
    snap = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if p.is_symlink():
            snap[rel] = "-> " + str(p.readlink())
        elif p.is_file():
            snap[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return snap


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from xprospect.models import build_model

    run = tmp_path_factory.mktemp("run")
    model = build_model("512-Dense", size=SIZE, base_filters=2, dense_units=8, geometry="parallel")
    model.save(run / "model.keras")
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"hu_window": "xprospect"}}))
    return run


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from xprospect.data.prepare import PrepareConfig, prepare_dataset

    out = tmp_path_factory.mktemp("data") / "ds"
    cfg = PrepareConfig(
        size=SIZE, geometry="parallel", shard_size=4, val_fraction=0, test_fraction=0.5
    )
    prepare_dataset([], out, cfg, phantoms=4, progress=False)
    return out


@pytest.fixture(scope="module")
def style_run(tmp_path_factory) -> Path:
    """A style run folder with two one-layer generators: enough to load and translate."""
    import keras

    run = tmp_path_factory.mktemp("style")
    (run / "style.json").write_text(json.dumps({"view": "frontal", "size": SIZE}))
    for name in ("drr2real", "real2drr"):
        x = keras.Input((None, None, 1))
        y = keras.layers.Conv2D(1, 1, activation="sigmoid")(x)
        keras.Model(x, y).save(run / f"{name}.keras")
    return run


@pytest.fixture
def xrays(tmp_path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    return (
        write_png(rng.random((80, 80)), tmp_path / "f.png"),
        write_png(rng.random((80, 80)), tmp_path / "l.png"),
    )


# === predict ===


def test_predict_refuses_an_existing_output_before_loading_the_model(capsys, tmp_path, xrays):
    out = tmp_path / "ct.nii.gz"
    out.write_bytes(b"the user's own file")
    before = _snapshot(tmp_path)
    missing_model = tmp_path / "no_such_model"
    code, _, err = _run(
        capsys, "predict", "--model", missing_model, "--frontal", xrays[0], "--out", out
    )
    _refused(code, err, out)
    assert "pass --overwrite to replace it" in err and "no_such_model" not in err
    assert _snapshot(tmp_path) == before
    new = tmp_path / "new.nii.gz"
    code, _, err = _run(
        capsys, "predict", "--model", missing_model, "--frontal", xrays[0], "--out", new,
        "--dicom-out", new,
    )  # fmt: skip
    _refused(code, err, new, "--dicom-out must be a folder of its own", exit_code=5)
    assert _snapshot(tmp_path) == before


def test_predict_side_files_count_as_outputs(capsys, tmp_path, xrays, run_dir):
    args = ["predict", "--model", run_dir, "--frontal", xrays[0], "--lateral", xrays[1]]
    preview = tmp_path / "ct_preview.png"
    preview.write_bytes(b"an older preview")
    before = _snapshot(tmp_path)
    code, _, err = _run(capsys, *args, "--out", tmp_path / "ct.nii.gz")
    _refused(code, err, preview)
    assert _snapshot(tmp_path) == before  # not even the NIfTI was written
    series = tmp_path / "series"
    series.mkdir()
    (series / "IM00001.dcm").write_bytes(b"someone's series")
    before = _snapshot(tmp_path)
    code, _, err = _run(capsys, *args, "--out", tmp_path / "b.nii", "--dicom-out", series)
    _refused(code, err, series)
    assert _snapshot(tmp_path) == before


def test_predict_overwrite_replaces_every_output(capsys, tmp_path, xrays, run_dir):
    args = ["predict", "--model", run_dir, "--frontal", xrays[0], "--lateral", xrays[1]]
    out, series = tmp_path / "ct.nii.gz", tmp_path / "series"
    for path in (out, tmp_path / "ct_preview.png"):
        path.write_bytes(b"old")
    series.mkdir()
    (series / "old.dcm").write_bytes(b"old")
    code, _, err = _run(capsys, *args, "--out", out, "--dicom-out", series, "--overwrite")
    assert code == 0, err
    from xprospect.io import read_nifti, read_volume

    assert read_nifti(out).shape == (SIZE,) * 3
    assert read_volume(series).shape == (SIZE,) * 3 and not (series / "old.dcm").exists()
    assert (tmp_path / "ct_preview.png").read_bytes()[:4] == b"\x89PNG"
    assert leftovers(tmp_path) == []


def test_predict_never_writes_through_a_link(capsys, tmp_path, xrays, run_dir):
    args = ["predict", "--model", run_dir, "--frontal", xrays[0], "--lateral", xrays[1]]
    user = tmp_path / "important.nii.gz"
    user.write_bytes(b"precious")
    link = tmp_path / "ct.nii.gz"
    link.symlink_to(user)
    code, _, err = _run(capsys, *args, "--out", link)
    _refused(code, err, link)
    assert "symbolic link" in err and link.is_symlink() and user.read_bytes() == b"precious"
    code, _, err = _run(capsys, *args, "--out", link, "--overwrite")
    assert code == 0, err
    assert not link.is_symlink() and user.read_bytes() == b"precious"
    assert leftovers(tmp_path) == []


def test_predict_on_a_full_disk_keeps_the_previous_file(
    capsys, tmp_path, xrays, run_dir, monkeypatch
):
    args = ["predict", "--model", run_dir, "--frontal", xrays[0], "--lateral", xrays[1]]
    out_dir = tmp_path / "out"
    out = out_dir / "ct.nii.gz"
    assert _run(capsys, *args, "--out", out)[0] == 0
    before = _snapshot(out_dir)
    with full_disk(monkeypatch, out_dir, budget=100):
        code, _, err = _run(capsys, *args, "--out", out, "--overwrite")
    _refused(code, err, out, "disk full")
    assert _snapshot(out_dir) == before and leftovers(out_dir) == []


# === drr ===


def test_drr_refuses_existing_images_and_overwrite_replaces_them(capsys, tmp_path, phantom):
    ct = write_nifti(phantom.volume, tmp_path / "ct.nii.gz")
    out = tmp_path / "drr"
    out.mkdir()
    (out / "notes.txt").write_text("the folder may hold other files")
    args = ["drr", ct, "--out", out, "--geometry", "parallel", "--size", SIZE, "--fov-mm", "128"]
    assert _run(capsys, *args)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "frontal.npy", "frontal.png", "lateral.npy", "lateral.png", "notes.txt",
    ]  # fmt: skip
    before = _snapshot(out)
    code, _, err = _run(capsys, *args)
    _refused(code, err, out / "frontal.npy")
    assert _snapshot(out) == before
    (out / "lateral.png").unlink()
    (out / "lateral.png").symlink_to(ct)  # a side file that is a link to the user's CT
    ct_bytes = ct.read_bytes()
    code, _, err = _run(capsys, *args, "--size", "8")
    _refused(code, err, out / "frontal.npy")
    code, _, err = _run(capsys, *args, "--overwrite", "--size", "8")
    assert code == 0, err
    assert np.load(out / "frontal.npy").shape == (8, 8) and not (out / "lateral.png").is_symlink()
    assert ct.read_bytes() == ct_bytes and leftovers(tmp_path) == []


def test_drr_refuses_a_file_as_its_folder(capsys, tmp_path, phantom):
    ct = write_nifti(phantom.volume, tmp_path / "ct.nii.gz")
    code, _, err = _run(capsys, "drr", ct, "--out", ct, "--overwrite")
    _refused(code, err, ct, "not a folder")


# === evaluate ===


def test_evaluate_refuses_a_report_folder_in_use(capsys, tmp_path, dataset):
    from xprospect.models import build_model

    report = tmp_path / "report"
    report.mkdir()
    (report / "summary.md").write_text("last week's results")
    before = _snapshot(tmp_path)
    args = ["evaluate", "--data", dataset, "--max-cases", "1"]
    code, _, err = _run(capsys, *args, "--model", tmp_path / "no_model", "--output", report)
    _refused(code, err, report)
    assert _snapshot(tmp_path) == before
    # The default folder (beside a model file) is not replaced silently either.
    model = build_model("512-Dense", size=SIZE, base_filters=2, dense_units=8, geometry="parallel")
    model.save(tmp_path / "m.keras")
    args += ["--model", tmp_path / "m.keras"]
    assert _run(capsys, *args)[0] == 0
    default = tmp_path / "eval_test"
    before = _snapshot(default)
    code, _, err = _run(capsys, *args)
    _refused(code, err, default)
    assert _snapshot(default) == before
    code, _, err = _run(capsys, *args, "--output", report, "--overwrite")
    assert code == 0, err
    assert "last week" not in (report / "summary.md").read_text()
    assert (report / "per_case.csv").exists() and leftovers(tmp_path) == []


# === style apply / style evaluate ===


def test_style_apply_real2drr_refuses_existing_pngs(capsys, tmp_path, xrays, style_run):
    out = tmp_path / "pngs"
    base = ["style", "apply", "--model", style_run, "--direction", "real2drr", "--output", out]
    args = [*base, "--input", xrays[0]]
    assert _run(capsys, *args)[0] == 0
    before = _snapshot(out)
    code, _, err = _run(capsys, *args)
    _refused(code, err, out / "f_drr_style.png")
    assert _snapshot(out) == before
    code, _, err = _run(capsys, *args, "--overwrite")
    assert code == 0, err
    # Two inputs writing one name would overwrite each other's result.
    (tmp_path / "other").mkdir()
    twin = write_png(np.zeros((40, 40)), tmp_path / "other" / "f.png")
    code, _, err = _run(capsys, *base, "--overwrite", "--input", xrays[0], twin)
    _refused(code, err, out / "f_drr_style.png", "both write", exit_code=5)
    assert leftovers(tmp_path) == []


def test_style_apply_drr2real_replaces_only_a_dataset(capsys, tmp_path, dataset, style_run):
    out = tmp_path / "stylized"
    args = ["style", "apply", "--model", style_run, "--data", dataset, "--no-progress"]
    assert _run(capsys, *args, "--output", out)[0] == 0
    before = _snapshot(out)
    code, _, err = _run(capsys, *args, "--output", out)
    _refused(code, err, out)
    assert _snapshot(out) == before
    code, _, err = _run(capsys, *args, "--output", out, "--overwrite")
    assert code == 0, err
    assert (out / "manifest.json").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    code, _, err = _run(capsys, *args, "--output", mine, "--overwrite")
    _refused(code, err, mine, "not an xprospect dataset")
    assert (mine / "thesis.tex").read_text() == "precious"
    before = _snapshot(dataset)
    code, _, err = _run(capsys, *args, "--output", dataset, "--overwrite")
    _refused(code, err, dataset, "being stylized", exit_code=5)
    assert _snapshot(dataset) == before and leftovers(tmp_path) == []


def test_style_evaluate_refuses_a_report_folder_in_use(capsys, tmp_path):
    report = tmp_path / "report"
    report.mkdir()
    (report / "style_eval.md").write_text("old")
    code, _, err = _run(
        capsys, "style", "evaluate", "--model", tmp_path / "no_run", "--output", report
    )
    _refused(code, err, report)
    assert (report / "style_eval.md").read_text() == "old"


# === demo, info ===


def test_demo_refuses_a_folder_it_did_not_make(capsys, tmp_path):
    from xprospect.cli.demo import check_demo_folder

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    code, _, err = _run(capsys, "demo", "--output", mine, "--steps", "1")
    _refused(code, err, mine)
    assert "thesis.tex" in err and sorted(p.name for p in mine.iterdir()) == ["thesis.tex"]
    # A demo's own folder (even with an interrupted write's temporary file) is continued.
    demo = tmp_path / "demo"
    (demo / "data").mkdir(parents=True)
    (demo / "sample_ct_128.nii.gz").write_bytes(b"x")
    (demo / ".report.md.abc123.tmp").write_text("x")
    assert check_demo_folder(demo, overwrite=False) == demo
    assert check_demo_folder(mine, overwrite=True) == mine
    code, _, err = _run(capsys, "demo", "--output", tmp_path / "mine" / "thesis.tex")
    _refused(code, err, mine / "thesis.tex", "not a folder")


def test_info_writes_nothing(capsys, tmp_path, phantom):
    path = write_nifti(phantom.volume, tmp_path / "ct.nii.gz")
    before = _snapshot(tmp_path)
    assert _run(capsys, "info", path)[0] == 0
    assert _snapshot(tmp_path) == before
