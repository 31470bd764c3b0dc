"""Resumable training state: TensorFlow checkpoints, ``state.json`` and the best model.

Layout under the run folder::

    checkpoints/ckpt-<step>.{index,data-*}   model, optimizer (slots, EMA, iterations), step and,
                                             where TensorFlow can save it, the input iterators
    checkpoints/checkpoint                   TensorFlow's pointer to the latest one
    state.json                               step, checkpoint, how the input position is resumed
    best.weights.h5 + best.json              the weights with the best validation PSNR-3D

TensorFlow writes checkpoint files under temporary names and renames them, and the ``checkpoint``
pointer is updated last, so a crash mid-save leaves the previous checkpoint as the latest.
``state.json``, ``best.json`` and ``best.weights.h5`` are written atomically. A save that fails
(disk full, permission denied) removes what it had half-written (``ckpt-<step>_temp/``) and raises
:class:`~xprospect.errors.OutputError` naming the run folder; the previous checkpoint stays the
latest and intact, so the run resumes from it once there is space. Under
``MultiWorkerMirroredStrategy`` every worker saves (saving may need collectives) but only the
chief writes into the run folder; the others write to a temporary folder that is deleted at once,
as TensorFlow recommends, and restore from the chief's folder (which must be shared).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import tensorflow as tf

from xprospect import __version__
from xprospect.errors import ConfigError, OutputError, XprospectError
from xprospect.utils import (
    atomic_path,
    output_error,
    read_json_file,
    sweep_temporaries,
    temp_prefix,
)

__all__ = ["CheckpointStore", "atomic_keras_file", "read_json", "write_json"]

STEP_KEY = "step/.ATTRIBUTES/VARIABLE_VALUE"
_RELEASE_LINE = ".".join(__version__.split(".")[:2]) + "."
"""Run folders stamped with another release line (``0.1.`` for this 0.2) may have been built
differently: a mismatch there names the release."""
_DATA_RE = re.compile(r"^data/(replica_\d+)/")


def write_json(path: str | os.PathLike[str], data: Mapping[str, Any]) -> None:
    """Writes JSON atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")


def read_json(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when it is missing or unreadable."""
    try:
        data = read_json_file(path)
    except XprospectError:
        return None
    return data if isinstance(data, dict) else None


@contextlib.contextmanager
def atomic_keras_file(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yields a temporary path with the same file name for Keras to save to, then moves it onto
    ``path``.

    Keras picks the format from the name (``.keras``, ``.weights.h5`` must end the name), so the
    temporary file sits in a private folder beside ``path`` under the final name.

    Raises:
        OutputError: The disk is full (or the folder not writable); ``path`` is unchanged and the
            temporary folder removed.
    """
    dest = Path(path)
    note = "the existing file is unchanged" if dest.exists() else "nothing was written"
    folder: Path | None = None
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        sweep_temporaries(dest.parent)
        folder = Path(tempfile.mkdtemp(prefix=temp_prefix(dest), suffix=".tmp", dir=dest.parent))
        yield folder / dest.name
        os.replace(folder / dest.name, dest)
    except Exception as exc:
        err = output_error(exc, dest, note)
        if err is None:
            raise
        raise err from exc
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


class CheckpointStore:
    """Saves and finds checkpoints of one run.

    Args:
        output_dir: The run folder.
        chief: Whether this process writes into the run folder.
        keep: Checkpoints kept (``training.keep_checkpoints``).
    """

    def __init__(self, output_dir: str | os.PathLike[str], *, chief: bool, keep: int) -> None:
        self.output_dir = Path(output_dir)
        self.dir = self.output_dir / "checkpoints"
        self.state_path = self.output_dir / "state.json"
        self.chief = chief
        self.keep = keep
        self._manager: tf.train.CheckpointManager | None = None
        self._checkpoint: tf.train.Checkpoint | None = None

    # --- finding ---

    def latest(self) -> str | None:
        """Prefix of the newest complete checkpoint in the run folder, or None."""
        if not self.dir.exists():
            return None
        path: str | None = tf.train.latest_checkpoint(str(self.dir))
        return path

    @staticmethod
    def saved_step(path: str) -> int:
        """The training step stored in a checkpoint."""
        return int(tf.train.load_variable(path, STEP_KEY))

    @staticmethod
    def saved_data(path: str) -> list[str]:
        """Names of the input iterators a checkpoint holds (``replica_0``, ...), maybe none."""
        names = {
            m.group(1) for name, _ in tf.train.list_variables(path) if (m := _DATA_RE.match(name))
        }
        return sorted(names, key=lambda n: int(n.split("_")[1]))

    # --- saving and restoring ---

    def attach(self, checkpoint: tf.train.Checkpoint) -> None:
        """Sets the object graph that :meth:`save` writes."""
        self._checkpoint = checkpoint
        if self.chief:
            self._manager = tf.train.CheckpointManager(
                checkpoint, str(self.dir), max_to_keep=self.keep, checkpoint_name="ckpt"
            )

    def restore(self, checkpoint: tf.train.Checkpoint, path: str) -> None:
        """Restores ``checkpoint`` from ``path`` and checks that every variable was found.

        Raises:
            ConfigError: The checkpoint belongs to another model or optimizer (the run folder
                was used for a different experiment).
        """
        try:
            # A variable of another shape fails in restore() itself (ValueError), a missing one
            # in the assertion.
            status = checkpoint.restore(path)
            status.assert_existing_objects_matched()
        except (AssertionError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            made_by = str((self.read_state() or {}).get("xprospect_version") or "")
            if made_by and not made_by.startswith(_RELEASE_LINE):
                raise ConfigError(
                    f"checkpoint of a run made by xprospect {made_by} does not match the network "
                    "this config builds; docs/presets.md ('Old runs and files') lists what that "
                    f"release built, or use a new training.output_dir ({first[:120]})",
                    path,
                ) from None
            raise ConfigError(
                "checkpoint does not match this model/optimizer (was the run folder used for "
                f"another experiment? use a new training.output_dir): {first[:200]}",
                path,
            ) from None
        status.expect_partial()

    def save(self, step: int, state: Mapping[str, Any]) -> str | None:
        """Writes a checkpoint for ``step`` (and ``state.json`` on the chief).

        Returns:
            The checkpoint prefix on the chief, None on other workers.
        """
        if self._checkpoint is None:
            raise RuntimeError("attach() a checkpoint before saving")
        if self._manager is not None:
            try:
                path: str = self._manager.save(checkpoint_number=step)
            except Exception as exc:
                err = self._failed_save(step, exc)
                if err is None:
                    raise
                raise err from exc
            write_json(
                self.state_path,
                {**state, "step": step, "checkpoint": Path(path).name, "time": time.time()},
            )
            return path
        # Non-chief workers take part in the save (it may involve collectives) but write to a
        # private temporary folder that is removed at once.
        tmp = tempfile.mkdtemp(prefix="xprospect-worker-ckpt-")
        try:
            self._checkpoint.write(os.path.join(tmp, "ckpt"))
        except Exception as exc:
            # The user did not name this folder: say where it is and that the chief's is intact.
            err = output_error(
                exc,
                tempfile.gettempdir(),
                f"this worker's copy of the checkpoint of step {step} (removed at once) did not "
                "fit; free space there or set TMPDIR",
            )
            if err is None:
                raise
            raise err from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return None

    def _failed_save(self, step: int, exc: Exception) -> OutputError | None:
        """Removes what a failed save of ``step`` left; the :class:`OutputError` to raise for a
        full disk or a refused write, None for any other failure."""
        latest = self.latest()
        prefix = self.dir / f"ckpt-{step}"
        shutil.rmtree(f"{prefix}_temp", ignore_errors=True)
        if latest is None or Path(latest).name != prefix.name:
            # Data files that were moved into place before the index was written.
            for part in self.dir.glob(f"{prefix.name}.*"):
                with contextlib.suppress(OSError):
                    part.unlink()
        kept = (
            f"the previous checkpoint {Path(latest).name} is intact; free space and rerun to "
            "resume from it"
            if latest
            else "no earlier checkpoint exists"
        )
        return output_error(exc, self.output_dir, f"checkpoint of step {step} not saved, {kept}")

    def sweep(self) -> list[Path]:
        """Removes what a save killed midway left in ``checkpoints/``: TensorFlow's
        ``ckpt-N_temp/`` folders and its ``*.tmp<hex>`` / ``*.tempstate<n>`` files.

        Call it only while no other process saves into this run folder (the run holds its lock).
        """
        removed: list[Path] = []
        if not self.chief or not self.dir.is_dir():
            return removed
        for p in self.dir.iterdir():
            if p.name.endswith("_temp") or ".tmp" in p.name or ".tempstate" in p.name:
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
                removed.append(p)
        return removed

    def read_state(self) -> dict[str, Any] | None:
        """``state.json`` of the run folder, if any."""
        return read_json(self.state_path)
