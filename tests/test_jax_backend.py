"""Every network, loss and metric on the JAX backend, against the same on TensorFlow.

The networks and terms are :mod:`backend_cases` (every preset's generator and discriminator,
XctDiff's networks, the style CycleGAN; every loss and Keras metric). This process (TensorFlow)
builds them with seeded weights and saves the weights; one child interpreter with
``KERAS_BACKEND=jax`` and TensorFlow blocked (the GPU machines have JAX and no TensorFlow),
started first, loads each network as soon as its weights are saved, runs its forward pass and
the gradient of a scalar loss w.r.t. every trainable weight (one jitted ``jax.value_and_grad``
over ``model.stateless_call``), and every loss term's value and gradient. This process computes
the same with TensorFlow meanwhile; the test then holds the two to each other: same outputs,
same loss, same gradients (all finite, none zero).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from typing import Any

import backend_cases
import numpy as np
import pytest
from faults import TESTS_ROOT, subprocess_env

from xprospect.models import PRESETS

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("jax") is None, reason="jax is not installed (pip install -e .[dev])"
)

_CHILD = """
import importlib.abc
import importlib.util
import json
import sys
from pathlib import Path


class NoTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "tensorflow":
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: the JAX side)")
        return None


sys.meta_path.insert(0, NoTensorFlow())
import os

# XLA's CPU fusion emitters (MLIR) take twice the compile time of the older LLVM IR emitters
# for the same programs; the compiled programs run as fast on these tiny inputs.
os.environ["XLA_FLAGS"] = " ".join(
    filter(None, [os.environ.get("XLA_FLAGS"), "--xla_cpu_use_fusion_emitters=false"])
)
import jax

# Every network is compiled once and run once, on tiny inputs: XLA's optimisations cost more
# than they save (they halve the compile time here).
jax.config.update("jax_disable_most_optimizations", True)
import xprospect.models
import backend_cases

backend_cases.main(Path(sys.argv[2]))
spec = importlib.util.spec_from_file_location("gpu_check", sys.argv[3])
spec.loader.exec_module(importlib.util.module_from_spec(spec))
print(json.dumps(sorted(m for m in sys.modules if m.partition(".")[0] == "tensorflow")))
"""

CASES = {case.name: case for case in backend_cases.cases()}


@pytest.fixture(scope="module")
def sides(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``{"tf": {case: results}, "jax": {...}, "tf_losses", "jax_losses", "stdout"}``."""
    folder = tmp_path_factory.mktemp("jax_backend")
    log = folder / "child.log"
    gpu_check = TESTS_ROOT.parent / "benchmarks" / "gpu_check.py"
    with log.open("w") as out:
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(TESTS_ROOT), str(folder), str(gpu_check)],
            stdout=subprocess.PIPE,
            stderr=out,
            text=True,
            env=subprocess_env(KERAS_BACKEND="jax"),
        )
        try:
            # TensorFlow's side runs while the child compiles: the child starts at once and
            # takes each case as soon as its weights are saved.
            models, extra = backend_cases.build_and_save(folder)
            tf = {name: backend_cases.run_case(CASES[name], models[name]) for name in CASES}
            tf_losses = backend_cases.run_losses(extra)
            stdout, _ = child.communicate(timeout=900)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    assert child.returncode == 0, log.read_text()[-6000:]
    return {
        "tf": tf,
        "jax": {name: dict(np.load(backend_cases.results_path(folder, name))) for name in CASES},
        "tf_losses": tf_losses,
        "jax_losses": dict(np.load(backend_cases.results_path(folder, "losses"))),
        "stdout": stdout,
    }


def test_every_preset_and_discriminator_has_a_case() -> None:
    covered = {p for case in CASES.values() for p in case.covers}
    assert covered == set(PRESETS)
    for case in CASES.values():
        # Presets that share a case have one architecture.
        first, *rest = case.covers or ("",)
        for other in rest:
            assert PRESETS[other]["family"] == PRESETS[first]["family"]
            assert PRESETS[other]["model"] == PRESETS[first]["model"], (first, other)
            assert PRESETS[other]["views"][0] == PRESETS[first]["views"][0]
    for name, preset in PRESETS.items():
        if preset["discriminator"]:
            # Presets with the same discriminator arguments and views share a case.
            same = [
                n
                for n in CASES
                if n.endswith("/D")
                and n[:-2] in PRESETS
                and PRESETS[n[:-2]]["discriminator"] == preset["discriminator"]
                and PRESETS[n[:-2]]["views"][0] == preset["views"][0]
            ]
            assert same, name


def test_nothing_imports_tensorflow_on_jax(sides: dict[str, Any]) -> None:
    # The child blocked TensorFlow: importing xprospect.models, running every case and loading
    # benchmarks/gpu_check.py must not have needed it.
    assert json.loads(sides["stdout"].strip().splitlines()[-1]) == []


@pytest.mark.parametrize("name", list(CASES))
def test_forward_and_gradients_match_tensorflow(sides: dict[str, Any], name: str) -> None:
    case = CASES[name]
    tf, jx = sides["tf"][name], sides["jax"][name]
    assert set(jx) == set(tf)
    for key in jx:
        assert np.all(np.isfinite(jx[key])), key
    outputs = sorted(k for k in tf if k.startswith("out/"))
    assert outputs
    for key in outputs:
        assert jx[key].shape == tf[key].shape, key
        if case.tolerance is not None:
            scale = float(np.abs(tf[key]).max())
            np.testing.assert_allclose(
                jx[key], tf[key], rtol=case.tolerance, atol=case.tolerance * scale, err_msg=key
            )
    if case.loss == "none":
        return
    assert case.tolerance is not None
    np.testing.assert_allclose(jx["loss"], tf["loss"], rtol=case.tolerance)
    grads = sorted(k for k in tf if k.startswith("grad/"))
    assert grads
    scale = max(float(np.abs(tf[k]).max()) for k in grads)
    zero = {k.removeprefix("grad/") for k in grads if not np.any(jx[k])}
    assert zero == set(case.zero_grad_ok), zero
    for key in grads:
        np.testing.assert_allclose(
            jx[key],
            tf[key],
            rtol=10 * case.tolerance,
            atol=10 * case.tolerance * scale,
            err_msg=key,
        )


def test_losses_and_metrics_match_tensorflow(sides: dict[str, Any]) -> None:
    tf, jx = sides["tf_losses"], sides["jax_losses"]
    assert set(jx) == set(tf) and len(tf) >= 30
    for key in tf:
        assert np.all(np.isfinite(jx[key])), key
        if key.startswith("grad/"):
            assert np.any(jx[key]), key
        scale = float(np.abs(tf[key]).max())
        np.testing.assert_allclose(jx[key], tf[key], rtol=1e-4, atol=1e-5 * scale, err_msg=key)
