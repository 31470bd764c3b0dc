"""The command line: subcommands, `info` on real and bad inputs, one-line errors, exit codes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from xprospect.cli import main
from xprospect.io import write_nifti


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in ("info", "demo"):
        assert name in out


def test_console_script_entry_point_runs():
    proc = subprocess.run(
        [sys.executable, "-m", "xprospect", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0 and proc.stdout.startswith("xprospect ")


def test_the_command_line_sets_numpys_environment_before_numpy_loads_and_keeps_the_users():
    # NumPy reads NUMPY_MADVISE_HUGEPAGE once, at import: the package itself must not import
    # NumPy, so that the command line (xprospect.cli) sets it first (xprospect.constants).
    code = (
        "import sys, xprospect, xprospect.errors; assert 'numpy' not in sys.modules; "
        "import os, xprospect.cli, numpy; print(os.environ['NUMPY_MADVISE_HUGEPAGE'])"
    )
    env = {k: v for k, v in os.environ.items() if k != "NUMPY_MADVISE_HUGEPAGE"}
    for given, expected in ((None, "0"), ("1", "1")):
        if given is not None:
            env["NUMPY_MADVISE_HUGEPAGE"] = given
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stdout.strip() == expected


def test_info_on_nifti_prints_geometry(capsys, tmp_path, phantom):
    path = write_nifti(phantom.volume, tmp_path / "p.nii.gz")
    code, out, _ = _run(capsys, "info", str(path), "--json")
    assert code == 0
    info = json.loads(out)
    assert info["shape"] == [32, 32, 32] and info["orientation"] == "IPL"
    np.testing.assert_allclose(info["spacing_mm"], phantom.volume.spacing_mm)
    assert info["value_range"] == [-1000.0, 1000.0]
    code, out, _ = _run(capsys, "info", str(path))
    assert code == 0 and "spacing_mm" in out and "IPL" in out


def test_info_on_png(capsys, tmp_path):
    Image.fromarray(np.zeros((8, 12), np.uint8)).save(tmp_path / "x.png")
    code, out, _ = _run(capsys, "info", str(tmp_path / "x.png"), "--json")
    assert code == 0 and json.loads(out)["shape"] == [8, 12]


def _bad_inputs(tmp_path):
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    a = np.zeros((4, 4, 4), np.float32)
    a[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(a, np.eye(4)), str(tmp_path / "nan.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros((4, 4), np.float32), np.eye(4)), str(tmp_path / "flat.nii"))
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (tmp_path / "notes.xyz").write_text("hello")
    return {
        "empty.nii.gz": "empty",
        "nan.nii.gz": "NaN or Inf",
        "flat.nii": "expected a 3D volume",
        "corrupt.png": "corrupt",
        "notes.xyz": "not a CT volume format",
        "absent.nii": "no such file",
    }


def test_bad_inputs_give_one_line_and_exit_4(capsys, tmp_path):
    # Input errors exit 4 (docs/errors.md); before issue 15 every user error exited 2.
    for name, message in _bad_inputs(tmp_path).items():
        code, _, err = _run(capsys, "info", str(tmp_path / name))
        assert code == 4, (name, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1, (name, err)
        assert lines[0].startswith("xprospect: error: ") and message in lines[0], lines[0]
        assert name in lines[0]
        assert "Traceback" not in err


def test_debug_shows_traceback(capsys, tmp_path):
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    code, _, err = _run(capsys, "--debug", "info", str(tmp_path / "empty.nii.gz"))
    assert code == 4 and "Traceback" in err and "EmptyFileError" in err


@pytest.mark.realdata
def test_info_on_real_ct(capsys, sample_ct_paths):
    code, out, _ = _run(capsys, "info", str(sample_ct_paths.ct_path), "--json")
    assert code == 0
    info = json.loads(out)
    assert info["shape"] == [512, 512, 133] and info["orientation"] == "LAS"
    assert info["value_range"][0] <= -1000 and info["value_range"][1] >= 1000


@pytest.mark.realdata
def test_info_on_real_cr(capsys, sample_cr_path):
    code, out, err = _run(capsys, "info", str(sample_cr_path), "--json")
    assert code == 0
    info = json.loads(out)
    assert info["kind"] == "radiograph" and info["view"] == "PA"
    assert info["shape"] == [1955, 1841] and info["pixel_spacing_mm"] is None
    assert info["photometric_interpretation"] == "MONOCHROME1"
    assert "pixel spacing unknown" in err and err.count("\n") == 1  # the warning, one line


def test_dicom_folder_errors_are_one_line(capsys, tmp_path, phantom):
    from xprospect.io.dicom import write_dicom_series

    series = write_dicom_series(phantom.volume, tmp_path / "series")
    code, out, _ = _run(capsys, "info", str(series), "--json")
    assert code == 0 and json.loads(out)["shape"] == [32, 32, 32]
    files = sorted(series.iterdir())
    files[len(files) // 2].unlink()  # a missing slice
    code, _, err = _run(capsys, "info", str(series))
    assert code == 4 and err.count("\n") == 1 and "gap" in err and str(series) in err
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "readme.txt").write_text("not dicom")
    code, _, err = _run(capsys, "info", str(tmp_path / "junk"))
    assert code == 4 and err.count("\n") == 1 and "not DICOM" in err and "junk" in err
    broken = tmp_path / "cut.dcm"
    broken.write_bytes(files[0].read_bytes()[:600])
    code, _, err = _run(capsys, "info", str(broken))
    assert code == 4 and err.count("\n") == 1 and "cut.dcm" in err and "truncated" in err


def test_drr_command_writes_png_and_npy_in_display_layout(capsys, tmp_path, phantom):
    from xprospect.io import read_radiograph

    path = write_nifti(phantom.volume, tmp_path / "p.nii.gz")
    code = main(
        [
            "drr",
            str(path),
            "--out",
            str(tmp_path / "drr"),
            "--geometry",
            "parallel",
            "--size",
            "32",
            "--fov-mm",
            "128",
        ]
    )
    assert code == 0
    frontal = np.load(tmp_path / "drr" / "frontal.npy")
    lateral = np.load(tmp_path / "drr" / "lateral.npy")
    assert frontal.shape == (32, 32) and lateral.shape == (32, 32)
    png = read_radiograph(tmp_path / "drr" / "frontal.png").array
    np.testing.assert_allclose(png, frontal / frontal.max(), atol=1 / 65535 + 1e-6)
    # The phantom's heart (patient's left, top half) makes the frontal image's upper right dense.
    top = frontal[:16]
    assert top[:, 16:].sum() > top[:, :16].sum()
    assert "frontal" in capsys.readouterr().out


# === Layout of the CLI package ===


def test_parser_builds_without_tensorflow():
    # Command modules import heavy libraries only in their handlers: `xprospect info` stays quick.
    code = (
        "import sys; from xprospect.cli import build_parser; build_parser(); "
        "print(sorted(m for m in ('tensorflow', 'keras', 'keras_tuner') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


def test_tensorflow_imports_without_scikit_learn_and_jax_outside_tune_and_predict_without_keras():
    # Keras imports scikit-learn and TensorFlow Lite imports JAX with TensorFlow where installed
    # (about 1.4 s and 200 MB); no command but `tune` (scikit-learn) uses either. `predict` also
    # leaves Keras out (TensorFlow imports it for tf.keras only); Keras imports later as usual.
    code = (
        "import os, sys\n"
        "os.environ.pop('KERAS_BACKEND', None)\n"
        "from xprospect.cli.main import _QuietTensorFlowImport, hidden_at_tensorflow_import\n"
        "hidden = hidden_at_tensorflow_import('xprospect.cli.predict')\n"
        "_QuietTensorFlowImport.install_unless_imported(hidden=hidden)\n"
        "import tensorflow\n"
        "print(*(m in sys.modules for m in ('sklearn', 'jax', 'keras')))\n"
        "import sklearn, jax, keras\n"  # later imports work as usual
        "y = keras.layers.Dense(2, kernel_initializer='ones')(tensorflow.ones((1, 3)))\n"
        "print(sklearn.__name__, jax.__name__, keras.backend.backend(), float(y[0, 0]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["False", "False", "False", "sklearn", "jax", "tensorflow", "3.0"]


def test_jax_is_hidden_only_where_keras_runs_on_another_backend(monkeypatch, tmp_path):
    from xprospect.cli import predict, train, tune
    from xprospect.cli.main import hidden_at_tensorflow_import, keras_backend_setting

    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert keras_backend_setting() == "tensorflow"  # no keras.json: Keras' default
    assert hidden_at_tensorflow_import(train.__name__) == ("sklearn", "jax")
    assert hidden_at_tensorflow_import(predict.__name__) == ("sklearn", "jax", "keras")
    assert hidden_at_tensorflow_import(tune.__name__) == ()
    (tmp_path / "keras.json").write_text('{"backend": "jax"}', encoding="utf-8")
    assert keras_backend_setting() == "jax"
    assert hidden_at_tensorflow_import(train.__name__) == ("sklearn",)
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")  # the variable overrides keras.json
    assert hidden_at_tensorflow_import(train.__name__) == ("sklearn", "jax")
    (tmp_path / "keras.json").write_text("not json", encoding="utf-8")
    monkeypatch.delenv("KERAS_BACKEND")
    assert keras_backend_setting() == "tensorflow"


def test_every_command_group_adds_its_commands_and_only_the_cli_uses_argparse():
    import xprospect
    from xprospect.cli.main import COMMAND_GROUPS, build_parser

    listed = re.findall(r"^    (\w+) ", build_parser().format_help(), flags=re.MULTILINE)
    assert listed == [
        "info", "drr", "prepare", "models", "evaluate", "predict",
        "style", "export", "train", "tune", "demo",
    ]  # fmt: skip
    for group in COMMAND_GROUPS:
        assert callable(group.add_parser), group.__name__
    package = Path(xprospect.__file__).parent
    users = sorted(
        path.relative_to(package).as_posix()
        for path in package.rglob("*.py")
        if re.search(r"^\s*(import|from) argparse\b", path.read_text(encoding="utf-8"), re.M)
    )
    assert users and all(user.startswith("cli/") for user in users), users
