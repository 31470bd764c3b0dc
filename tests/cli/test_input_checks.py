"""Commands check their inputs before any slow work: predict reads and checks its X-rays before
it loads the model; implausible inputs are refused in one line and accepted with --force."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hostile_inputs import cr_dicom, nifti_volume

import xprospect.inference
from xprospect.cli import main
from xprospect.errors import MissingDataError
from xprospect.io import write_png


class _ModelReached(MissingDataError):
    """Raised by the stand-in model loader: the inputs passed their checks."""


@pytest.fixture
def no_model(monkeypatch):
    calls = []

    def fake_load_predictor(path, **kwargs):
        calls.append(path)
        raise _ModelReached("model loading reached", path)

    monkeypatch.setattr(xprospect.inference, "load_predictor", fake_load_predictor)
    return calls


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _predict(tmp_path, frontal, *extra):
    model, out = tmp_path / "model.keras", tmp_path / "ct.nii.gz"
    return ["predict", "--model", model, "--frontal", frontal, "--out", out, *extra]


def test_a_missing_input_fails_before_the_model_loads(capsys, tmp_path, no_model):
    code, _, err = _run(capsys, *_predict(tmp_path, tmp_path / "absent.png"))
    assert code != 0 and not no_model
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "absent.png" in lines[0] and "no such file" in lines[0]
    write_png(np.random.default_rng(0).random((96, 96)), tmp_path / "f.png")
    code, _, err = _run(
        capsys, *_predict(tmp_path, tmp_path / "f.png", "--lateral", tmp_path / "gone.png")
    )
    assert code != 0 and not no_model and "gone.png" in err


def test_a_plausible_input_reaches_the_model(capsys, tmp_path, no_model):
    write_png(np.random.default_rng(0).random((96, 80)), tmp_path / "f.png")
    code, _, err = _run(capsys, *_predict(tmp_path, tmp_path / "f.png"))
    assert code != 0 and no_model and "model loading reached" in err


def test_a_1x1_png_is_refused_and_force_accepts_it(capsys, tmp_path, no_model):
    write_png(np.ones((1, 1)), tmp_path / "dot.png")
    code, _, err = _run(capsys, *_predict(tmp_path, tmp_path / "dot.png"))
    lines = err.strip().splitlines()
    assert code != 0 and not no_model and len(lines) == 1
    assert "dot.png" in lines[0] and "1x1 pixels" in lines[0] and "--force" in lines[0]
    code, _, err = _run(capsys, *_predict(tmp_path, tmp_path / "dot.png", "--force"))
    assert no_model and "model loading reached" in err


def test_a_lateral_dicom_given_as_frontal_is_refused(capsys, tmp_path, no_model):
    lateral = cr_dicom(tmp_path / "lat.dcm", view="LL")
    frontal = cr_dicom(tmp_path / "pa.dcm", view="PA")
    code, _, err = _run(capsys, *_predict(tmp_path, lateral))
    assert code != 0 and not no_model
    assert "lat.dcm" in err and "ViewPosition is 'LL'" in err and "--force" in err
    code, _, err = _run(capsys, *_predict(tmp_path, frontal, "--lateral", frontal))
    assert code != 0 and not no_model and "given as the lateral view" in err
    code, _, err = _run(capsys, *_predict(tmp_path, frontal, "--lateral", lateral))
    assert no_model and "model loading reached" in err
    no_model.clear()
    code, _, err = _run(capsys, *_predict(tmp_path, lateral, "--force"))
    assert no_model and "model loading reached" in err


def test_drr_refuses_a_single_slice_ct_unless_forced(capsys, tmp_path):
    flat = nifti_volume(
        tmp_path / "flat.nii.gz", np.linspace(-1000, 500, 64 * 64).reshape(64, 64, 1)
    )
    code, _, err = _run(capsys, "drr", flat, "--out", tmp_path / "drr", "--size", "16")
    assert code != 0 and "flat.nii.gz" in err and "only 1 slice" in err
    assert not (tmp_path / "drr").exists()
    blank = nifti_volume(tmp_path / "blank.nii.gz", np.zeros((16, 16, 16), np.int16))
    code, _, err = _run(capsys, "drr", blank, "--out", tmp_path / "drr", "--size", "16")
    assert code != 0 and "values span only" in err
    code, _, err = _run(capsys, "drr", blank, "--out", tmp_path / "drr", "--size", "16", "--force")
    assert code == 0, err
    assert (tmp_path / "drr" / "frontal.npy").exists()


def test_prepare_fails_implausible_cases_unless_forced(capsys, tmp_path):
    blank = nifti_volume(tmp_path / "blank.nii.gz", np.zeros((16, 16, 16), np.int16))
    args = ["prepare", blank, "--size", "16", "--val-fraction", "0", "--test-fraction", "0"]
    code, out, _ = _run(capsys, *args, "--output", tmp_path / "ds")
    assert code != 0 and "1 failed" in out
    failures = json.loads((tmp_path / "ds" / "failures.json").read_text())
    assert "values span only" in failures[0]["error"]
    code, out, err = _run(capsys, *args, "--output", tmp_path / "ds2", "--force")
    assert code == 0, err
    assert "wrote 1 case(s)" in out
