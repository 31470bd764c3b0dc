"""benchmarks/bench_style.py's verdict without training, on made-up evaluations."""

from __future__ import annotations

import pytest
from bench_loader import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_style")


def _evaluation(aucs: list[float], cycle: dict[str, float], film: bool) -> dict:
    return {
        "after": {"c2st_auc": aucs[0]},
        "c2st_repeats": {"auc": aucs, "accuracy": [0.6] * len(aucs)},
        "cycle": cycle,
        "film": {"c2st_auc": 1.0} if film else None,
    }


def test_verdict_reads_the_median_auc_and_each_reference_cycle(bench) -> None:
    ref = bench.REFERENCE_CYCLE
    ok = _evaluation([0.9, 0.7, 0.6], dict(ref), film=False)
    text = bench.verdict(ok)
    assert "median over 3 splits: 0.700): **met**" in text
    assert text.count("**met**") == 2
    worse = dict(ref, real_to_drr_to_real=ref["real_to_drr_to_real"] * 1.1)
    text = bench.verdict(_evaluation([0.85, 0.9, 0.81], worse, film=False))
    assert "0.850): **NOT met**" in text
    assert "**NOT met** (real_to_drr_to_real 0.0472, +10%)" in text


def test_a_film_run_is_judged_against_the_noiseless_twin(bench) -> None:
    ref = bench.REFERENCE_CYCLE
    # Noisy cycle above the reference, the noiseless one below it: judged by the noiseless one.
    cycle = {
        "drr_to_real_to_drr": ref["drr_to_real_to_drr"] + 0.007,
        "real_to_drr_to_real": ref["real_to_drr_to_real"],
        "drr_to_real_to_drr_noiseless": ref["drr_to_real_to_drr"] - 0.001,
        "film_noise": 0.007,
    }
    text = bench.verdict(_evaluation([0.6], cycle, film=True))
    assert text.count("**met**") == 2 and "NOT" not in text
    twin = cycle["drr_to_real_to_drr_noiseless"]
    assert f"noiseless twin (the same draws without the detector noise): {twin:.4f}" in text
    assert f"against the noisy film itself {cycle['drr_to_real_to_drr']:.4f}" in text
    cycle["drr_to_real_to_drr_noiseless"] = ref["drr_to_real_to_drr"] * 1.2
    text = bench.verdict(_evaluation([0.6], cycle, film=True))
    assert "**NOT met** (drr_to_real_to_drr 0.0319, +20%)" in text
