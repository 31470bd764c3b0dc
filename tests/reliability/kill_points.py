"""``python -m kill_points ARGS...`` runs ``xprospect ARGS...`` (the CLI's ``main``) with one fault
armed, for the fault-injection tests (``test_kill.py``).

The fault comes from ``XPROSPECT_FAULT``, a JSON object:

- ``{"at": "step", "n": 3, "signal": "KILL"}``: after the 3rd training step of this process (its
  step hook, which runs after the step's checkpoint, if any), send itself ``SIGKILL`` (or
  ``TERM``, ``INT``: a preemption or Ctrl-C, which the loop handles).
- ``{"at": "replace", "n": 2, "when": "before"}``: ``SIGKILL`` just before (or ``"after"``) the
  2nd ``os.replace`` of this process: the moment an atomic write publishes its file.
- ``{"at": "call", "target": "tensorflow.io.TFRecordWriter.write", "n": 3}``: ``SIGKILL`` as the
  3rd call of that function begins (e.g. midway through writing a shard).
- ``{"at": "checkpoint", "n": 2}``: ``SIGKILL`` when the 2nd checkpoint's files are written but
  TensorFlow's ``checkpoint`` pointer is not yet updated.

``python -m kill_points --each '["train", ...]' '["export", ...]'`` runs several commands in one
process (the uninterrupted reference runs share one TensorFlow start-up).

``XPROSPECT_TINY_MODEL=1`` makes training (``train``, ``tune`` trials) build a tiny model (the
two X-rays stacked, broadcast along the head-feet axis, two Conv3D layers), so that a run costs
little more than the TensorFlow start-up.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
from typing import Any


def _die(sig: str = "KILL") -> None:
    os.kill(os.getpid(), getattr(signal, f"SIG{sig}"))


def _counted(n: int, action: Any) -> Any:
    calls = 0

    def tick() -> None:
        nonlocal calls
        calls += 1
        if calls == n:
            action()

    return tick


def _arm_step(fault: dict[str, Any]) -> None:
    from xprospect.training.loop import TrainingRun

    tick = _counted(int(fault["n"]), lambda: _die(fault.get("signal", "KILL")))
    original = TrainingRun.__init__

    def init(self: Any, trainer: Any, cfg: Any) -> None:
        original(self, trainer, cfg)
        inner = trainer.step_hook

        def hook(step: int, logs: Any) -> None:
            if inner is not None:
                inner(step, logs)
            tick()

        trainer.step_hook = hook

    TrainingRun.__init__ = init  # type: ignore[method-assign]


def _arm_replace(fault: dict[str, Any]) -> None:
    real = os.replace
    n, after = int(fault["n"]), fault.get("when", "before") == "after"
    calls = 0

    def replace(src: Any, dst: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == n and not after:
            _die()
        real(src, dst, **kwargs)
        if calls == n and after:
            _die()

    os.replace = replace


def _arm_call(fault: dict[str, Any]) -> None:
    path = fault["target"].split(".")
    owner: Any = None
    for cut in range(len(path) - 1, 0, -1):
        try:
            owner = importlib.import_module(".".join(path[:cut]))
        except ImportError:
            continue
        for attr in path[cut:-1]:
            owner = getattr(owner, attr)
        break
    name = path[-1]
    real = getattr(owner, name)
    tick = _counted(int(fault["n"]), _die)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        tick()
        return real(*args, **kwargs)

    setattr(owner, name, wrapper)


def _arm_checkpoint(fault: dict[str, Any]) -> None:
    from tensorflow.python.checkpoint import checkpoint_management as cm

    real = cm.update_checkpoint_state_internal
    tick = _counted(int(fault["n"]), _die)

    def update(*args: Any, **kwargs: Any) -> Any:
        tick()
        return real(*args, **kwargs)

    cm.update_checkpoint_state_internal = update


def tiny_model(config: Any) -> Any:
    """Both X-rays stacked, broadcast along the head-feet axis, two Conv3D layers."""
    import keras

    s = int(config.model.size or 16)
    views = tuple(config.data.views)
    inputs = {v: keras.Input((s, s, 1), name=v) for v in views}
    x = inputs[views[0]] if len(views) == 1 else keras.layers.Concatenate()(list(inputs.values()))
    x = keras.layers.Reshape((1, s, s, len(views)))(x)
    x = keras.layers.UpSampling3D((s, 1, 1))(x)
    x = keras.layers.Conv3D(4, 3, padding="same", activation="relu")(x)
    out = keras.layers.Conv3D(1, 3, padding="same", activation="sigmoid", dtype="float32")(x)
    return keras.Model(inputs, out)


def main(argv: list[str]) -> int:
    """Arms the fault and runs the CLI; ``--each JSON...`` runs several commands (each a JSON list
    of arguments) one after the other in this process, stopping at the first that fails."""
    if argv[:1] == ["--each"]:
        for raw_args in argv[1:]:
            code = main(json.loads(raw_args))
            if code:
                return code
        return 0
    if os.environ.get("XPROSPECT_TINY_MODEL"):
        import xprospect.training.trainer
        import xprospect.tuning.hypermodel

        xprospect.training.trainer.default_model = tiny_model
        xprospect.tuning.hypermodel.default_model = tiny_model  # type: ignore[attr-defined]
    raw = os.environ.get("XPROSPECT_FAULT")
    if raw:
        fault = json.loads(raw)
        arm = {
            "step": _arm_step,
            "replace": _arm_replace,
            "call": _arm_call,
            "checkpoint": _arm_checkpoint,
        }
        arm[fault["at"]](fault)
    from xprospect.cli.main import main as cli

    return cli(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
