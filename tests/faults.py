"""Shared helpers for tests that crash runs on purpose, fill the disk, or run scripts in a fresh
interpreter."""

from __future__ import annotations

import builtins
import contextlib
import errno
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TESTS_ROOT = Path(__file__).resolve().parent


class Crash(Exception):
    """Raised from a step hook to stop a run the way a crash would."""


def crash_at(step: int):
    """A ``step_hook`` that raises :class:`Crash` right after ``step``."""

    def hook(s: int, logs) -> None:
        if s == step:
            raise Crash(f"simulated crash after step {s}")

    return hook


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a test's child interpreter: quiet TensorFlow, and this folder on
    ``PYTHONPATH`` so that shared helpers (this module, ``keras_contract``) import there too."""
    path = os.pathsep.join(p for p in (str(TESTS_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": path, **extra}


def run_script(
    script: str, folder: Path, *args: str, timeout: float = 900, **env: str
) -> subprocess.CompletedProcess[str]:
    """Runs ``script`` in a fresh interpreter and checks that it succeeded.

    Args:
        script: Python source; ``sys.argv[1]`` is ``folder`` (the calling test's folder, so the
            script can import that test module), then ``args``.
        folder: The calling test's folder.
        *args: More command-line arguments.
        timeout: Seconds before the run counts as hung.
        **env: Extra environment variables (e.g. ``TF_CONFIG``).
    """
    proc = subprocess.run(
        [sys.executable, "-c", script, str(folder), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        env=subprocess_env(**env),
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


class _FullDiskFile:
    """A file opened for writing on a disk with ``budget`` bytes left: ``write`` stores what
    fits, then raises ``OSError(ENOSPC)`` as the kernel does."""

    def __init__(self, raw: Any, budget: list[int]) -> None:
        self._raw = raw
        self._budget = budget

    def write(self, data: Any) -> int:
        n = len(memoryview(data).cast("B")) if not isinstance(data, str) else len(data)
        room = self._budget[0]
        if n > room:
            if room:
                self._raw.write(data[:room])
            self._budget[0] = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), getattr(self._raw, "name", ""))
        self._budget[0] -= n
        return int(self._raw.write(data))

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __enter__(self) -> _FullDiskFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._raw.close()

    def __iter__(self) -> Iterator[Any]:
        return iter(self._raw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


@contextlib.contextmanager
def full_disk(monkeypatch: Any, root: str | os.PathLike[str], budget: int = 0) -> Iterator[None]:
    """The disk under ``root`` fills after ``budget`` more bytes: files opened for writing there
    (through ``open``/``io.open``, as gzip, PIL, pydicom, numpy and zipfile do, and nibabel's
    opener of uncompressed files, which holds its own reference to ``open``) raise
    ``OSError(ENOSPC)`` once the budget is spent, after writing what fit."""
    real_open = builtins.open
    left = [budget]
    root_s = os.path.realpath(root)

    def fake_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        f = real_open(file, mode, *args, **kwargs)
        writing = any(c in mode for c in "wax+")
        inside = isinstance(file, str | os.PathLike) and os.path.realpath(file).startswith(root_s)
        return _FullDiskFile(f, left) if writing and inside else f

    with monkeypatch.context() as m:
        m.setattr(builtins, "open", fake_open)
        m.setattr(io, "open", fake_open)
        from nibabel.openers import ImageOpener, Opener

        for opener in (Opener, ImageOpener):
            m.setitem(opener.compress_ext_map, None, (fake_open, ("mode", "buffering")))
        yield


def leftovers(folder: str | os.PathLike[str]) -> list[str]:
    """Temporary files or folders (``.NAME.xxxx.tmp``, ``.old``, ``_temp``) anywhere under
    ``folder``: what an interrupted or failed write must never leave behind."""
    return sorted(
        str(p.relative_to(folder))
        for p in Path(folder).rglob("*")
        if ".tmp" in p.name or p.name.endswith(".old") or p.name.endswith("_temp")
    )
