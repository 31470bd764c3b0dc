"""benchmarks/bench_growth.py without a training step: the exponents against NumPy, the cell
order, the resume state, the watchdog and the table."""

from __future__ import annotations

import numpy as np
import pytest
from bench_loader import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_growth")


def test_slope_is_the_log_log_least_squares_fit(bench):
    xs = [32.0, 64.0, 128.0]
    ys = [0.4, 2.9, 26.0]
    expected = np.polyfit(np.log(xs), np.log(ys), 1)[0]
    np.testing.assert_allclose(bench.slope(xs, ys), expected, rtol=1e-12)
    # A cost proportional to the voxels grows as size^3.
    np.testing.assert_allclose(bench.slope(xs, [5e-6 * x**3 for x in xs]), 3.0, rtol=1e-12)
    assert bench.slope([64.0], [1.0]) is None
    assert bench.slope([64.0, 64.0], [1.0, 2.0]) is None


def test_cells_run_cheapest_first(bench):
    order = bench.cell_order(["A", "B"], [32, 64, 128], [1, 2, 4])
    assert len(order) == len(set(order)) == 2 * 3 * 3
    assert order[:4] == [("A", 32, 1), ("B", 32, 1), ("A", 64, 1), ("B", 64, 1)]
    assert all(size == 128 for _, size, _ in order[-6:])
    assert order[-6:] == sorted(order[-6:], key=lambda c: c[2])


def test_a_cell_is_not_started_after_a_smaller_one_ran_out(bench):
    done = {("A", 64, 2): {"error": "over memory: passed 16 GiB"}, ("B", 64, 1): {"step_s": [1]}}
    assert bench.blocked_by(("A", 64, 4), done) == "over memory at 64^3 batch 2"
    assert bench.blocked_by(("A", 128, 2), done) == "over memory at 64^3 batch 2"
    assert bench.blocked_by(("A", 128, 1), done) is None  # a smaller batch may still fit
    assert bench.blocked_by(("B", 128, 4), done) is None
    # Other errors (a bug, a crash) do not say the bigger cell would not fit.
    assert bench.blocked_by(("C", 64, 2), {("C", 32, 2): {"error": "Traceback"}}) is None


def test_state_resumes_and_ignores_a_torn_line(bench, tmp_path):
    state = tmp_path / "state.jsonl"
    bench.append_state(state, ("A", 32, 1), {"step_s": [0.5], "peak_rss_gib": 1.0})
    bench.append_state(state, ("A", 32, 2), {"error": "over time: still running after 9 s"})
    with open(state, "a", encoding="utf-8") as fh:
        fh.write('{"preset": "A", "size": 64, "ba')  # killed mid-write
    done = bench.read_state(state)
    assert set(done) == {("A", 32, 1), ("A", 32, 2)}
    assert done[("A", 32, 1)]["step_s"] == [0.5]


def test_summary_and_markdown(bench):
    done = {
        ("A", 32, 1): {"step_s": [1.0, 3.0, 2.0], "peak_rss_gib": 1.0, "params": 10},
        ("A", 64, 1): {"step_s": [8.0], "peak_rss_gib": 2.0, "params": 10},
        ("A", 64, 2): {"step_s": [16.0, 15.0, 17.0], "peak_rss_gib": 3.0, "params": 10},
        ("A", 32, 2): {"error": "over memory: passed 1 GiB"},
    }
    table = bench.summarise(done, ["A"], [32, 64], [1, 2])
    cells = table["A"]["cells"]
    assert cells["32x1"]["step_s"] == 2.0  # the median
    assert cells["32x2"]["missing"].startswith("over memory")
    size_k = table["A"]["size_exponent"]["1"]
    np.testing.assert_allclose(size_k["step_s"], np.log2(8.0 / 2.0))
    np.testing.assert_allclose(size_k["peak_rss_gib"], 1.0)
    assert table["A"]["batch_exponent"]["32"]["step_s"] is None  # one point only
    np.testing.assert_allclose(table["A"]["batch_exponent"]["64"]["step_s"], 1.0)
    machine = {"cpu": "cpu", "cpu_count": 2, "memory": "1 GiB"}
    text = bench.markdown(table, [32, 64], [1, 2], machine, "cmd")
    step_row = next(ln for ln in text.splitlines() if ln.startswith("| A |"))
    assert step_row == "| A | 2.00 | over memory | 8.00 | 16.00 | 2.00 | 1.00 (64^3) |"


def test_exponents_use_the_cells_of_one_cpu(bench):
    # A run resumed on another machine: 32^3 and 64^3 on "old", 128^3 on "new".
    done = {
        ("A", 32, 1): {"step_s": [1.0], "peak_rss_gib": 1.0, "cpu": "old"},
        ("A", 64, 1): {"step_s": [4.0], "peak_rss_gib": 2.0, "cpu": "old"},
        ("A", 128, 1): {"step_s": [1000.0], "peak_rss_gib": 3.0, "cpu": "new"},
        ("A", 128, 2): {"step_s": [2000.0], "peak_rss_gib": 3.0, "cpu": "new"},
    }
    table = bench.summarise(done, ["A"], [32, 64, 128], [1, 2])
    # Fitted on 32^3 and 64^3 only (two "old" cells against one "new").
    np.testing.assert_allclose(table["A"]["size_exponent"]["1"]["step_s"], 2.0)
    np.testing.assert_allclose(table["A"]["batch_exponent"]["128"]["step_s"], 1.0)
    machine = {"cpu": "new", "cpu_count": 2, "memory": "1 GiB"}
    text = bench.markdown(table, [32, 64, 128], [1, 2], machine, "cmd")
    step_row = next(ln for ln in text.splitlines() if ln.startswith("| A |"))
    assert step_row.startswith("| A | 1.00 * | n/m | 4.00 * | n/m | 1000.00 | 2000.00 | 2.00 |")
    assert "measured on another machine (old)" in text
    # A tie goes to the CPU of the later cells.
    tie = {k: v for k, v in done.items() if k != ("A", 32, 1)}
    table = bench.summarise(tie, ["A"], [32, 64, 128], [1, 2])
    assert table["A"]["size_exponent"]["1"]["step_s"] is None  # one "new" cell only


@pytest.mark.parametrize(
    ("limits", "verdict"),
    [
        ({"max_rss_gib": 1e-6, "timeout_s": 60.0}, "over memory"),
        ({"max_rss_gib": 64.0, "timeout_s": 0.05}, "over time"),
    ],
)
def test_watchdog_stops_a_worker(bench, tmp_path, limits, verdict):
    # The prepare worker imports the package: long enough for either limit to stop it.
    res = bench.run_cell(
        ["prepare", "--data", str(tmp_path / "d"), "--size", "16"], poll_s=0.02, **limits
    )
    assert res["error"].startswith(verdict), res


def test_report_only_writes_the_tables_from_the_state(bench, tmp_path):
    state = tmp_path / "state.jsonl"
    bench.append_state(state, ("A", 32, 1), {"step_s": [0.5, 0.7, 0.6], "peak_rss_gib": 1.5})
    out = tmp_path / "out"
    argv = ["--presets", "A", "--sizes", "32", "64", "--batches", "1", "--report-only"]
    bench.main([*argv, "--state", str(state), "--output-dir", str(out)])
    text = (out / "bench_growth.md").read_text()
    assert "| A | 0.60 | n/m | - | - |" in text
    assert "| A | 1.50 | n/m | - | - |" in text
    assert bench.read_state(state).keys() == {("A", 32, 1)}  # nothing was run or added
