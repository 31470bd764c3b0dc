"""The error contract on every case of the corpus (``make_corpus.py``), run in-process through
``xprospect.cli.main``.

For each case: the exit code of its category; on failure exactly one line on stderr (warnings
aside), ``xprospect: error: ...``, matching the case's pattern and naming the user's path or key;
no traceback; no file outside the case's output folder created or changed (nor any of the shared
model and dataset); no temporary file left; no traceback file written (no internal error).

``XPROSPECT_CORPUS_LOG=FILE`` appends every case's exit code and stderr to ``FILE``, to read the
messages themselves.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import warnings
from pathlib import Path

import pytest
from make_corpus import Case, Shared, build_cases, release_locks, rng_for

from xprospect.cli import main

CASES = build_cases()

_TEMP = re.compile(r"^\..+\.(tmp|old)(\..*)?$|\.tmp$|\.partial$|ckpt_temp|^tmp[a-z0-9_]{8}$")
"""Names of temporary files and folders (atomic writes, checkpoints, ``tempfile``)."""
_PROGRESS = re.compile(r"\d+%\|")
"""A progress bar's update (tqdm)."""


def _marks(case: Case) -> list[pytest.MarkDecorator]:
    marks = []
    if not case.as_root and hasattr(os, "geteuid") and os.geteuid() == 0:
        marks.append(pytest.mark.skip(reason="root ignores file permissions"))
    return marks


def _fill(text: str, folder: Path, shared: Shared) -> str:
    for key, value in (
        ("{out}", folder / "out"),
        ("{case}", folder),
        ("{model}", shared.model),
        ("{data}", shared.data),
    ):
        text = text.replace(key, str(value))
    return text


def _snapshot(root: Path, *, content: bool = True) -> dict[str, object]:
    """Relative path -> content hash (or size and mtime), link target, or ``dir``."""
    found: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                found[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                found[rel] = "dir"
            elif content:
                found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                st = path.stat()
                found[rel] = (st.st_size, st.st_mtime_ns)
    return found


def _tracebacks() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("xprospect-traceback-*")}


def _stderr_lines(err: str) -> list[str]:
    """stderr's lines without warnings and progress bars."""
    lines = (line.strip() for line in re.split(r"[\r\n]", err))
    return [
        line
        for line in lines
        if line and not line.startswith("xprospect: warning:") and not _PROGRESS.search(line)
    ]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=_marks(c)) for c in CASES])
def test_case(
    case: Case,
    corpus_shared: Shared,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    folder = tmp_path / "case"
    folder.mkdir()
    request.addfinalizer(release_locks)  # a case's lock holder ends with the case
    if case.make is not None:
        case.make(folder, rng_for(case.name), corpus_shared)
    argv = [_fill(a, folder, corpus_shared) for a in case.argv]
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(folder)  # relative paths of usage cases stay inside the case
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # main() replaces it
    before = _snapshot(folder)
    shared_before = [_snapshot(p, content=False) for p in (corpus_shared.model, corpus_shared.data)]
    tracebacks = _tracebacks()
    capsys.readouterr()

    try:
        code = main(argv)
    except SystemExit as exc:  # argparse: usage errors, --help, --version
        code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    out, err = capsys.readouterr()
    log = os.environ.get("XPROSPECT_CORPUS_LOG")  # review every message: a file to append to
    if log:
        with open(log, "a", encoding="utf-8") as f:
            shown = err.strip().replace(str(folder), "{case}").replace("\n", " | ")
            f.write(f"{case.name}\t{code}\t{shown[:400]}\n")

    where = f"xprospect {' '.join(argv)}\nstdout: {out[-2000:]}\nstderr: {err[-3000:]}"
    assert "Traceback" not in err, where
    assert "internal error" not in err, where
    assert code == case.code, where
    lines = _stderr_lines(err)
    if case.code != 0:
        assert len(lines) == 1, where
        line = lines[0]
        assert line.startswith("xprospect: error: "), where
        if case.message is not None:
            # Not in the case's folder name (tmp_path holds the case's name).
            what = line.replace(str(folder), "{case}")
            assert re.search(case.message, what, re.IGNORECASE), f"/{case.message}/ ?\n{where}"
        if case.names is not None:
            named = _fill(case.names, folder, corpus_shared)
            assert named in line, f"{named} not named\n{where}"
    else:
        assert not any(line.startswith("xprospect: error") for line in lines), where

    after = _snapshot(folder)
    changed = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
    outside = [p for p in changed if not (p == "out" or p.startswith("out/"))]
    assert not outside, f"changed outside the output folder: {outside}\n{where}"
    for path in case.unchanged:
        rel = Path(_fill(path, folder, corpus_shared)).relative_to(folder).as_posix()
        assert after.get(rel) == before.get(rel), f"{rel} changed\n{where}"
    for path in case.absent:
        assert not Path(_fill(path, folder, corpus_shared)).exists(), f"{path} exists\n{where}"
    left = [p for p in after if _TEMP.search(Path(p).name)]
    assert not left, f"temporary files left: {left}\n{where}"
    shared_after = [_snapshot(p, content=False) for p in (corpus_shared.model, corpus_shared.data)]
    assert shared_after == shared_before, f"the shared model or dataset changed\n{where}"
    assert _tracebacks() == tracebacks, f"a traceback file was written\n{where}"


def test_corpus_is_large_and_covers_every_kind_and_category() -> None:
    kinds = {c.kind for c in CASES}
    assert len(CASES) >= 150
    assert kinds >= {"nifti", "dicom", "raster", "config", "dataset", "model", "output", "usage"}
    assert {c.code for c in CASES} >= {0, 2, 4, 5, 6, 7, 8}
    for case in CASES:
        if case.code not in (0, 2):
            assert case.names, f"{case.name}: which path or key must the message name?"
