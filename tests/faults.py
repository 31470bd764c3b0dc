"""Shared helpers for tests that crash runs on purpose or run scripts in a fresh interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
