"""What the corpus runner shares: the tiny run folder and dataset (made once per session), and the
summary of the corpus (cases by kind, passing) printed at the end of the run."""

from __future__ import annotations

import pytest
from make_corpus import Shared, build_cases, summary

SIZE = 16
"""Edge of the shared model's X-rays and volumes, and of the shared dataset's cubes."""

_OUTCOMES: dict[str, str] = {}
_TEST = "test_corpus.py::test_case["


@pytest.fixture(scope="session")
def corpus_shared(tmp_path_factory: pytest.TempPathFactory) -> Shared:
    """A run folder (a tiny biplanar 16^3 Keras model, ``model.keras`` + ``config.yaml``) and a
    dataset of four 16^3 phantoms (train, val and test shards)."""
    import yaml

    from xprospect.cli.main import quiet_tensorflow_start_up
    from xprospect.data.prepare import PrepareConfig, prepare_dataset

    with quiet_tensorflow_start_up():  # TensorFlow's start-up lines stay out of the report
        import keras

    root = tmp_path_factory.mktemp("corpus-shared")
    run = root / "run"
    run.mkdir()
    inputs = {v: keras.Input((SIZE, SIZE, 1), name=v) for v in ("frontal", "lateral")}
    x = keras.layers.Concatenate()([inputs["frontal"], inputs["lateral"]])
    x = keras.layers.Reshape((1, SIZE, SIZE, 2))(x)
    x = keras.layers.UpSampling3D((SIZE, 1, 1))(x)
    x = keras.layers.Conv3D(2, 3, padding="same", activation="relu")(x)
    out = keras.layers.Conv3D(1, 1, activation="sigmoid", dtype="float32")(x)
    keras.Model(inputs, out, name="corpus_tiny").save(run / "model.keras")
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"hu_window": "xprospect"}}))
    data = root / "data"
    cfg = PrepareConfig(
        size=SIZE, geometry="parallel", shard_size=2, val_fraction=0.25, test_fraction=0.25
    )
    prepare_dataset([], data, cfg, phantoms=4, progress=False)
    for split in ("train", "val", "test"):
        assert list(data.glob(f"{split}-*.tfrecord")), split
    return Shared(model=run, data=data)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if _TEST not in report.nodeid:
        return
    name = report.nodeid.split(_TEST, 1)[1].removesuffix("]")
    if report.when == "call":
        _OUTCOMES[name] = "passed" if report.passed else "failed"
    elif report.when == "setup" and not report.passed:
        _OUTCOMES[name] = "skipped" if report.skipped else "failed"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _OUTCOMES:
        return
    cases = [c for c in build_cases() if c.name in _OUTCOMES]
    terminalreporter.section("corpus of bad inputs (tests/reliability)")
    terminalreporter.write_line(summary(cases, _OUTCOMES))
    skipped = sorted(n for n, o in _OUTCOMES.items() if o == "skipped")
    if skipped:
        terminalreporter.write_line(f"skipped here: {', '.join(skipped)}")
