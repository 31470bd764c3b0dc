"""benchmarks/bench_x2ct_peer.py without torch or a real step: the table's arithmetic, the
process clock, the parsing of pip's listing and the skip path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from bench_loader import load_benchmark

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_x2ct_peer.py"


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_x2ct_peer")


def _run(impl, precision, step_s, rss, first, params=(41_526_707, 11_055_169)):
    result = {
        "step_s": step_s,
        "peak_rss_gib": rss,
        "first_step_s": first,
        "params_g": params[0],
        "params_d": params[1],
    }
    return {"impl": impl, "precision": precision, "size": 64, "round": 0, "result": result}


@pytest.fixture()
def runs():
    x = (57_350_641, 11_056_961)
    return [
        _run("official", "fp32", [10.0, 12.0], 2.0, 20.0),
        _run("official", "fp32", [11.0, 13.0], 2.2, 22.0),
        _run("official", "fp32", [9.0], 2.1, 21.0),
        _run("xprospect", "fp32", [4.0, 6.0], 3.0, 60.0, x),
        _run("xprospect", "fp32", [5.0], 3.3, 80.0, x),
        _run("xprospect", "fp32", [5.0, 5.0], 3.15, 70.0, x),
        _run("xprospect", "bf16", [3.3], 2.1, 42.0, x),
        {
            "impl": "xprospect",
            "precision": "bf16",
            "size": 64,
            "round": 1,
            "result": {"error": "MemoryError"},
        },
    ]


def test_aggregate_medians_ranges_and_ratios(bench, runs):
    table = bench.aggregate(runs, [64])["64"]
    ref = table["official_fp32"]
    # Step times pooled over processes: 9..13 -> median 11.
    assert ref["step_s"] == {"median": 11.0, "min": 9.0, "max": 13.0, "n": 5}
    assert ref["peak_rss_gib"]["median"] == pytest.approx(2.1)
    assert ref["first_step_s"] == {"median": 21.0, "min": 20.0, "max": 22.0, "n": 3}
    fp32 = table["xprospect_fp32"]
    assert fp32["step_s"] == {"median": 5.0, "min": 4.0, "max": 6.0, "n": 5}
    ratio = fp32["ratio"]
    np.testing.assert_allclose(
        [ratio["step_s"], ratio["peak_rss_gib"], ratio["first_step_s"]],
        [5.0 / 11.0, 3.15 / 2.1, 70.0 / 21.0],
        rtol=1e-12,
    )
    bf16 = table["xprospect_bf16"]
    assert bf16["processes"] == 1 and bf16["errors"] == ["MemoryError"]
    np.testing.assert_allclose(
        [bf16["ratio"][m] for m in ("step_s", "peak_rss_gib", "first_step_s")],
        [0.3, 1.0, 2.0],
        rtol=1e-12,
    )
    assert fp32["params_g"] == [57_350_641] and ref["params_d"] == [11_055_169]


def test_markdown_has_the_issue_table(bench, runs):
    table = bench.aggregate(runs, [64])
    text = bench.markdown(table, {"cpu": "test cpu", "cpu_count": 2}, "python bench --rounds 3")
    lines = text.splitlines()
    assert "| | official, fp32 | xprospect, fp32 | xprospect, bf16 |" in lines
    step = next(ln for ln in lines if ln.startswith("| step time"))
    assert step == (
        "| step time | 11.00 s (9.00-13.00) | 5.00 s (4.00-6.00) (0.45x) | 3.30 s (0.30x) |"
    )
    rss = next(ln for ln in lines if ln.startswith("| peak RSS"))
    assert "(1.50x)" in rss and "(1.00x)" in rss
    first = next(ln for ln in lines if ln.startswith("| from process start"))
    assert "(3.33x)" in first and "(2.00x)" in first
    params = next(ln for ln in lines if ln.startswith("| parameters"))
    assert params == ("| parameters | 41.53 M + 11.06 M | 57.35 M + 11.06 M | 57.35 M + 11.06 M |")
    assert "- error: xprospect_bf16: MemoryError" in lines
    assert "- cpu: test cpu" in lines and "Command: `python bench --rounds 3`" in lines


def test_a_cell_without_results_has_no_ratio(bench):
    table = bench.aggregate([_run("official", "fp32", [2.0], 1.0, 5.0)], [64])["64"]
    assert table["xprospect_fp32"]["step_s"] is None
    assert table["xprospect_fp32"]["ratio"] == {m: None for m in bench.METRICS}
    assert "| step time | 2.00 s | n/a | n/a |" in bench.markdown({"64": table}, {}, "c")


def test_cpu_torch_version_from_pip_listing(bench):
    listing = (
        "torch (2.15.0)\n"
        "Available versions: 2.15.0, 2.14.1, 2.13.0+cpu, 2.13.0, 2.12.0+cpu, 2.12.0\n"
    )
    assert bench.cpu_torch_version(listing) == "2.13.0+cpu"
    assert bench.cpu_torch_version("torch (2.15.0)\nAvailable versions: 2.15.0\n") is None
    assert bench.cpu_torch_version("") is None


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_seconds_since_process_start_counts_from_the_process_start():
    # A child that sleeps 0.5 s before asking: at least 0.5 s since its own start.
    code = (
        "import importlib.util, time, sys\n"
        f"spec = importlib.util.spec_from_file_location('b', {str(SCRIPT)!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "time.sleep(0.5)\n"
        "print(*m.seconds_since_process_start(None))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[1] == "proc"
    assert 0.5 <= float(out[0]) < 5.0


def test_skips_when_the_peer_folder_is_empty(bench, tmp_path, capsys):
    empty = tmp_path / "x2ct"
    empty.mkdir()
    out = tmp_path / "results"
    venv = tmp_path / "venv"
    bench.main(["--peer", str(empty), "--peer-venv", str(venv), "--output-dir", str(out)])
    line = capsys.readouterr().out.strip()
    assert line.startswith("bench_x2ct_peer: skipped: ") and str(empty) in line
    record = json.loads((out / "bench_x2ct_peer.json").read_text())
    assert record["skipped"] is True and str(empty) in record["reason"]
    assert not venv.exists()  # nothing installed for a peer that is not there


def test_a_skip_keeps_real_results(bench, tmp_path, capsys):
    out = tmp_path / "results"
    out.mkdir()
    real = {"command": "x", "table": {"64": {}}}
    (out / "bench_x2ct_peer.json").write_text(json.dumps(real))
    bench.main(["--output-dir", str(out), "--peer-venv", str(tmp_path / "venv")])
    assert "no --peer given" in capsys.readouterr().out
    assert json.loads((out / "bench_x2ct_peer.json").read_text()) == real


def test_a_folder_that_is_no_venv_is_left_alone(bench, tmp_path, capsys):
    peer = tmp_path / "X2CT" / "3DGAN"
    (peer / bench.PEER_YML).parent.mkdir(parents=True)
    (peer / "train.py").write_text("")
    (peer / bench.PEER_YML).write_text("")
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep")
    out = tmp_path / "results"
    bench.main(["--peer", str(peer.parent), "--peer-venv", str(folder), "--output-dir", str(out)])
    assert "not a virtual environment" in capsys.readouterr().out
    assert (folder / "notes.txt").read_text() == "keep"
    assert json.loads((out / "bench_x2ct_peer.json").read_text())["skipped"] is True
