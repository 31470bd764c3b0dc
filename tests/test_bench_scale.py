"""benchmarks/bench_scale.py without running a stage: the per-unit arithmetic, the medians and
ratios, the table and the rule that a run with a failed cell never replaces the results."""

from __future__ import annotations

import json

import numpy as np
import pytest
from bench_loader import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_scale")


def _run(stage, n, r, seconds, units, first_s, first_units, rss, **extra):
    result = {
        "seconds": seconds,
        "units": units,
        "first_s": first_s,
        "first_units": first_units,
        "rss_self_mb": rss,
        "rss_children_mb": 60.0,
        "wall_s": seconds + 8.0,
        **extra,
    }
    return {"stage": stage, "n": n, "round": r, "result": result}


@pytest.fixture()
def runs(bench):
    out = []
    for stage in bench.STAGES:
        out += [
            _run(stage, 20, 0, 12.0, 20, 8.0, 16, 1000.0),
            _run(stage, 20, 1, 14.0, 20, 9.0, 16, 1010.0),
            _run(stage, 400, 0, 130.0, 400, 9.0, 16, 1040.0),
            _run(stage, 400, 1, 150.0, 400, 11.0, 16, 1120.0),
        ]
    return out


def test_per_unit_leaves_the_first_unit_and_the_closing_work_out(bench):
    # 30 steps in 40 s; the first ended at 12 s, the 29th at 26 s (the 30th validates).
    result = {"seconds": 40.0, "units": 30, "first_s": 12.0, "first_units": 1}
    total, steady = bench.per_unit({**result, "end_s": 26.0, "end_units": 29})
    np.testing.assert_allclose([total, steady], [40.0 / 30, 14.0 / 28], rtol=1e-12)
    # Without end_s the steady part runs to the stage's end.
    np.testing.assert_allclose(bench.per_unit(result)[1], 28.0 / 29, rtol=1e-12)
    # One unit alone: nothing once started.
    one = {"seconds": 5.0, "units": 1, "first_s": 5.0, "first_units": 1}
    assert bench.per_unit(one) == (5.0, None)


def test_case_mb_is_the_float32_volume_and_two_drrs(bench):
    np.testing.assert_allclose(bench.case_mb(32), (32**3 + 2 * 32**2) * 4 / 2**20, rtol=1e-12)


def test_aggregate_medians_and_ratios(bench, runs):
    table = bench.aggregate(runs, [20, 400], size=32)
    assert table["missing"] == []
    prep = table["stages"]["prepare"]
    lo, hi = prep["cells"]["20"], prep["cells"]["400"]
    assert lo["rss_mb"] == {"median": 1005.0, "min": 1000.0, "max": 1010.0, "n": 2}
    assert hi["seconds"]["median"] == 140.0 and hi["processes"] == 2
    # s per case: 12/20, 14/20 -> 0.65; 130/400, 150/400 -> 0.35. Once started: (12-8)/4,
    # (14-9)/4 -> 1.125; (130-9)/384, (150-11)/384 -> 260/768.
    np.testing.assert_allclose(
        [lo["s_per_unit"]["median"], hi["s_per_unit"]["median"]], [0.65, 0.35], rtol=1e-12
    )
    np.testing.assert_allclose(
        [lo["steady_s_per_unit"]["median"], hi["steady_s_per_unit"]["median"]],
        [1.125, 260.0 / 768],
        rtol=1e-12,
    )
    ratio = prep["ratio"]
    np.testing.assert_allclose(
        [ratio["rss"], ratio["s_per_unit"], ratio["steady_s_per_unit"], ratio["rss_growth_mb"]],
        [1080.0 / 1005.0, 0.35 / 0.65, (260.0 / 768) / 1.125, 75.0],
        rtol=1e-12,
    )
    np.testing.assert_allclose(ratio["all_cases_mb"], 380 * bench.case_mb(32), rtol=1e-12)
    assert ratio["rss_within_tolerance"]  # 7.5 % growth


def test_rss_growth_over_ten_percent_is_not_flat(bench, runs):
    runs = [r for r in runs if r["stage"] == "train"]
    runs[2]["result"]["rss_self_mb"] = runs[3]["result"]["rss_self_mb"] = 1110.0
    ratio = bench.aggregate(runs, [20, 400], size=32)["stages"]["train"]["ratio"]
    np.testing.assert_allclose(ratio["rss"], 1110.0 / 1005.0, rtol=1e-12)
    assert not ratio["rss_within_tolerance"]  # 10.4 %


def test_failed_cells_are_missing_and_kept_apart(bench, runs, tmp_path, monkeypatch):
    runs = [r for r in runs if not (r["stage"] == "evaluate" and r["n"] == 400)]
    runs.append({"stage": "evaluate", "n": 400, "round": 0, "result": {"error": "exit 1: boom"}})
    table = bench.aggregate(runs, [20, 400], size=32)
    assert table["missing"] == ["evaluate N=400"]
    assert table["stages"]["evaluate"]["cells"]["400"] is None
    assert table["stages"]["evaluate"]["ratio"] is None
    meta = {
        "command": "python benchmarks/bench_scale.py",
        "machine": "test",
        "when": "now",
        "size": 32,
        "config": "512-dense",
        "batch": 2,
        "steps": 30,
        "workers": 1,
        "rounds": 2,
    }
    monkeypatch.setattr(bench, "RESULTS", tmp_path)
    (tmp_path / "bench_scale.json").write_text("{}")
    md = bench.write(table, runs, [20, 400], meta, "bench_scale")
    assert md.name == "bench_scale.partial.md"
    assert (tmp_path / "bench_scale.json").read_text() == "{}"  # the real results untouched
    report = json.loads((tmp_path / "bench_scale.partial.json").read_text())
    assert report["table"]["missing"] == ["evaluate N=400"]
    text = md.read_text()
    assert "| evaluate | test case | 400 | missing |" in text
    assert "Missing (failed) cells: evaluate N=400." in text


def test_markdown_puts_the_ratios_on_the_largest_n(bench, runs):
    table = bench.aggregate(runs, [20, 400], size=32)
    meta = {
        "command": "c",
        "machine": "m",
        "when": "w",
        "size": 32,
        "config": "512-dense",
        "batch": 2,
        "steps": 30,
        "workers": 1,
        "rounds": 2,
    }
    lines = bench.markdown(table, [20, 400], meta).splitlines()
    row = next(x for x in lines if x.startswith("| prepare | case | 400 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    growth = f"+75 ({380 * bench.case_mb(32):.0f})"
    assert cells[3:] == [
        "400",
        "140.00",
        "0.3500",
        f"{260.0 / 768:.4f}",
        "1080",
        "148.0",
        f"{1080.0 / 1005.0:.3f}",
        "yes",
        growth,
        f"{0.35 / 0.65:.2f}",
        f"{(260.0 / 768) / 1.125:.2f}",
    ]
    small = next(x for x in lines if x.startswith("| prepare | case | 20 |"))
    assert small.rstrip().endswith("|  |  |  |  |  |")
