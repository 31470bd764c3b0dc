"""The CLI's error contract (docs/errors.md): categories and exit codes, the one line, internal
errors with their traceback file, typed errors of libraries, TensorFlow's start-up lines."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import xprospect.errors as errors_module
from xprospect.cli import main
from xprospect.cli.common import (
    ERROR_CATEGORIES,
    EXIT_CONFIG,
    EXIT_INPUT,
    EXIT_INTERNAL_ERROR,
    EXIT_INTERRUPTED,
    EXIT_MODEL,
    EXIT_OUTPUT,
    EXIT_RESOURCE,
    ISSUE_TRACKER_URL,
    config_errors,
    describe_failure,
    error_category,
    model_errors,
    user_path,
)
from xprospect.cli.main import without_tensorflow_noise
from xprospect.errors import (
    ConfigError,
    DicomError,
    MissingDataError,
    ModelError,
    OutputExistsError,
    ResourceLimitError,
    XprospectError,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "errors.md"


def _typed_errors() -> list[type[XprospectError]]:
    return [
        cls
        for name in errors_module.__all__
        if isinstance(cls := getattr(errors_module, name), type) and issubclass(cls, XprospectError)
    ]


# === Categories ===


def test_every_typed_error_has_one_category_and_the_docs_table_agrees():
    listed = [cls for category in ERROR_CATEGORIES for cls in category.errors]
    assert len(listed) == len(set(listed)), "a class in two categories"
    table = {
        int(m.group(1)): m.group(0)
        for m in re.finditer(r"^\| (\d+) \|.*$", DOCS.read_text(encoding="utf-8"), re.M)
    }
    for cls in _typed_errors():
        category = error_category(cls("x"))
        assert category is not None, cls.__name__
        # The class, or the nearest ancestor the table lists (a subclass takes its category).
        listed_as = next(c for c in cls.__mro__ if c in category.errors)
        assert f"`{listed_as.__name__}`" in table[category.code], (cls.__name__, category.code)
        assert listed_as is not XprospectError or cls is XprospectError, f"{cls.__name__}?"
    codes = [c.code for c in ERROR_CATEGORIES]
    assert codes == [4, 5, 6, 7, 8] and set(codes) <= set(table)
    assert {0, 1, 2, 3, 130} <= set(table)


def test_subclasses_take_their_parents_category():
    class ShardLikeError(DicomError):
        pass

    assert error_category(ShardLikeError("x")).code == EXIT_INPUT  # type: ignore[union-attr]
    assert error_category(ValueError("x")) is None
    assert error_category(MemoryError()).code == EXIT_RESOURCE  # type: ignore[union-attr]


def test_training_divergence_keeps_its_own_code():
    from xprospect.training import EXIT_DIVERGED

    assert EXIT_DIVERGED == 3
    assert EXIT_DIVERGED not in {c.code for c in ERROR_CATEGORIES}


def test_a_message_the_cli_prints_from_a_result_is_not_logged_too(monkeypatch, capsys):
    """A diverged run logs its message (for notebooks) and returns it; the CLI says it once."""
    import logging

    from xprospect.cli import main
    from xprospect.utils import IN_RESULT

    def command(args):
        log = logging.getLogger("xprospect.training.loop")
        log.error("training diverged at step 4", extra=IN_RESULT)
        log.error("a checkpoint could not be read")
        return 3

    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])  # as in a fresh process: the CLI's own handler
    monkeypatch.setattr(root, "level", root.level)
    monkeypatch.setattr("xprospect.cli.models.run_models", command)
    assert main(["models"]) == 3
    assert capsys.readouterr().err.splitlines() == [
        "xprospect: warning: a checkpoint could not be read"
    ]


# === Untyped failures ===


def test_os_errors_are_typed_by_errno_and_name_the_users_path(tmp_path):
    from xprospect.utils import atomic_path

    dest = tmp_path / "out" / "ct.nii.gz"
    with pytest.raises(RuntimeError), atomic_path(dest) as tmp:
        assert tmp.name != dest.name and user_path(str(tmp)) == str(dest)
        full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))
        code, line = describe_failure(full)
        assert code == EXIT_OUTPUT and line is not None
        assert line.startswith(f"{dest}: cannot write: disk full") and ".tmp" not in line
        raise RuntimeError  # the write fails: no temporary file stays
    assert not any(p.name.endswith(".tmp.nii.gz") for p in dest.parent.iterdir())

    tagged = tmp_path / ".ct.nii.gz.p4242h0123abcd.k2j4_x9a.tmp.nii.gz"  # with writer PID, host
    assert user_path(f"{tagged}: No space left") == f"{tmp_path / 'ct.nii.gz'}: No space left"
    assert user_path(str(tmp_path / ".ds.abcd1234.tmp" / "train.tfrecord")) == str(
        tmp_path / "ds" / "train.tfrecord"
    )
    missing = FileNotFoundError(errno.ENOENT, "No such file", str(tmp_path / "in.png"))
    assert describe_failure(missing) == (
        EXIT_INPUT,
        f"{tmp_path / 'in.png'}: no such file or folder",
    )
    (tmp_path / "afile").write_text("x")
    in_the_way = FileExistsError(errno.EEXIST, "File exists", str(tmp_path / "afile"))
    code, line = describe_failure(in_the_way)
    assert code == EXIT_OUTPUT and "is a file, not a folder" in str(line)
    handles = OSError(errno.EMFILE, "Too many open files")
    assert describe_failure(handles)[0] == EXIT_RESOURCE
    assert describe_failure(OSError(errno.EIO, "I/O error")) == (EXIT_INTERNAL_ERROR, None)


def test_memory_interrupts_and_tensorflow_errors():
    assert describe_failure(MemoryError())[0] == EXIT_RESOURCE
    assert describe_failure(KeyboardInterrupt()) == (EXIT_INTERRUPTED, "interrupted")
    stopped = KeyboardInterrupt("SIGTERM: saved runs/a/checkpoints/step-12")
    assert describe_failure(stopped)[1] == "interrupted: SIGTERM: saved runs/a/checkpoints/step-12"

    def tf_error(name: str, message: str) -> Exception:
        cls = type(name, (Exception,), {"__module__": "tensorflow.python.framework.errors_impl"})
        return cls(message)

    loss = tf_error(
        "DataLossError",
        'Graph execution error:\n\nDetected at node IteratorGetNext defined at:\n  File "x.py"'
        ", line 3\n\ncorrupted record at 12\n\t [[{{node IteratorGetNext}}]] [Op:__inference_f]",
    )
    assert describe_failure(loss) == (
        EXIT_INPUT,
        "corrupt or truncated data: corrupted record at 12",
    )
    assert describe_failure(tf_error("ResourceExhaustedError", "OOM when allocating"))[0] == 8
    assert describe_failure(tf_error("InternalError", "x")) == (EXIT_INTERNAL_ERROR, None)


def test_model_errors_types_loading_failures_and_passes_the_rest(tmp_path):
    model = tmp_path / "run"
    loading = "cannot load the model \\(ValueError: bad zip\\)"
    with pytest.raises(ModelError, match=loading) as err, model_errors(model):
        raise ValueError("bad zip\nmore detail")
    assert err.value.path == str(model)
    with pytest.raises(ModelError, match="no model here"), model_errors(model):
        raise MissingDataError("no model here", model)
    with pytest.raises(ModelError), model_errors(model):
        raise ConfigError("bad run config", model / "config.yaml")
    with pytest.raises(ModelError), model_errors(model):
        raise PermissionError(errno.EACCES, "Permission denied", str(model / "model.keras"))
    with pytest.raises(OutputExistsError), model_errors(model):
        raise OutputExistsError("exists", tmp_path / "out")
    with pytest.raises(ConfigError), model_errors(model):
        raise ConfigError("version must be >= 1")  # a flag, not the model
    with pytest.raises(OSError, match="No space"), model_errors(model, "export"):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out" / "x.pb"))
    with pytest.raises(KeyboardInterrupt), model_errors(model):
        raise KeyboardInterrupt


def test_config_errors_types_binary_files_and_deep_nesting(tmp_path):
    config = tmp_path / "c.yaml"
    with pytest.raises(ConfigError, match="not a text file") as err, config_errors(config):
        b"\xff\xfe".decode("utf-8")
    assert err.value.path == str(config)
    with pytest.raises(ResourceLimitError, match="nested too deeply"), config_errors(config):
        raise RecursionError
    with pytest.raises(ConfigError, match="unknown key"), config_errors(config):
        raise ConfigError("unknown key", config)


# === The one line ===


def _boom(args):
    raise RuntimeError("something broke\nsecond line")


def test_internal_error_names_the_tracker_and_writes_the_traceback(tmp_path, capsys, monkeypatch):
    import xprospect.cli.data as data_cli

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(data_cli, "run_info", _boom)
    code = main(["info", "whatever.png"])
    err = capsys.readouterr().err
    assert code == EXIT_INTERNAL_ERROR and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("xprospect: internal error: RuntimeError: something broke;")
    assert ISSUE_TRACKER_URL in lines[0]
    files = list(tmp_path.glob("xprospect-traceback-*.txt"))
    assert len(files) == 1 and str(files[0]) in lines[0]
    report = files[0].read_text()
    assert "Traceback" in report and "something broke" in report and "info whatever.png" in report
    assert [p.name for p in tmp_path.iterdir()] == [files[0].name]  # written atomically

    code = main(["--debug", "info", "whatever.png"])
    err = capsys.readouterr().err
    assert code == EXIT_INTERNAL_ERROR and "Traceback" in err and "internal error" in err


def test_interrupt_exits_130(capsys, monkeypatch):
    import xprospect.cli.data as data_cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(data_cli, "run_info", interrupted)
    assert main(["info", "x"]) == EXIT_INTERRUPTED
    assert capsys.readouterr().err == "xprospect: interrupted\n"


def test_usage_errors_are_one_line_with_code_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["predict", "--frontal", "f.png"])
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert err.count("\n") == 1 and err.startswith("xprospect: error: predict: ")
    assert "--model" in err and "xprospect predict --help" in err
    assert main([]) == 2
    captured = capsys.readouterr()
    assert "COMMAND" in captured.out and captured.err.startswith("xprospect: error: give a command")


def test_error_raised_while_writing_a_temp_file_names_the_users_path(
    capsys, tmp_path, monkeypatch, phantom
):
    import numpy as np

    from xprospect.io import write_nifti

    ct = write_nifti(phantom.volume, tmp_path / "ct.nii.gz")

    def disk_full(file, arr, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), file.name)

    monkeypatch.setattr(np, "save", disk_full)
    out = tmp_path / "drr"
    args = ["drr", str(ct), "--out", str(out), "--size", "16", "--geometry", "parallel"]
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_OUTPUT and len(err) == 1
    assert err[0].startswith(f"xprospect: error: {out / 'frontal.npy'}:") and ".tmp" not in err[0]
    assert "disk full" in err[0] or "No space" in err[0]
    assert list(out.iterdir()) == []  # the temporary file is gone


def test_model_loading_errors_exit_6_naming_the_model(capsys, tmp_path):
    from xprospect.io import write_png

    write_png(np_random((256, 256)), tmp_path / "f.png")
    (tmp_path / "m.keras").write_bytes(b"PK\x03\x04 not a zip at all")
    code = main(
        ["predict", "--model", str(tmp_path / "m.keras"), "--frontal", str(tmp_path / "f.png"),
         "--out", str(tmp_path / "o.nii.gz")]
    )  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_MODEL and len(err) == 1
    assert err[0].startswith(f"xprospect: error: {tmp_path / 'm.keras'}: cannot load the model")


def test_binary_config_is_a_config_error(capsys, tmp_path):
    (tmp_path / "c.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe binary")
    code = main(["train", "--config", str(tmp_path / "c.yaml")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_CONFIG and len(err) == 1 and str(tmp_path / "c.yaml") in err[0]


def np_random(shape):
    import numpy as np

    return np.random.default_rng(0).random(shape)


# === TensorFlow's start-up lines ===

_NOISE = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796280266.946452   30986 port.cc:153] oneDNN custom operations are on.",
    "I0000 00:00:1796280266.946866   30986 cudart_stub.cc:31] Could not find cuda drivers",
    "E0000 00:00:1796280272.340248   30986 cuda_platform.cc:52] failed call to cuInit: INTERNAL",
    "2024-01-01 10:00:00.000000: I tensorflow/core/util/port.cc:113] oneDNN custom operations",
    "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with "
    "the appropriate compiler flags.",
)


def test_tensorflow_noise_is_filtered_and_everything_else_kept():
    text = "\n".join(
        [_NOISE[0], "real line one", *_NOISE[1:4], "xprospect: warning: kept", *_NOISE[4:], ""]
    )
    assert without_tensorflow_noise(text) == "real line one\nxprospect: warning: kept\n"
    bar = "\rprepare: 100%|##########| 1/1" + _NOISE[1] + "\nnext\n"
    assert without_tensorflow_noise(bar) == "\rprepare: 100%|##########| 1/1next\n"
    assert without_tensorflow_noise("no newline at the end") == "no newline at the end"


@pytest.mark.parametrize("verbose", [False, True], ids=["default", "verbose"])
def test_no_tensorflow_start_up_lines_unless_verbose(tmp_path, verbose):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP")}
    argv = [sys.executable, "-m", "xprospect", *(["--verbose"] if verbose else [])]
    argv += ["prepare", "--phantoms", "1", "--size", "16", "--geometry", "parallel"]
    argv += ["--val-fraction", "0", "--test-fraction", "0", "--output", str(tmp_path / "ds")]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "wrote 1 case(s)" in proc.stdout
    noise = [line for line in proc.stderr.splitlines() if without_tensorflow_noise(line) != line]
    if verbose:
        assert noise, proc.stderr  # what the default run hides is really there
    else:
        assert not noise, noise
        for marker in ("oneDNN", "cuda", "cuInit", "absl::InitializeLog", "cudart"):
            assert marker not in proc.stderr, proc.stderr
