"""Every notebook in ``notebooks/`` runs headless in smoke mode (tiny sizes, a few steps).

The notebooks read ``XPROSPECT_SMOKE`` and ``XPROSPECT_NOTEBOOK_DIR`` in their parameters cell;
here they run with the repository root as the working directory and their outputs in a temporary
folder. Committed notebooks carry no outputs (checked too).
"""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_the_six_notebooks_exist_in_order() -> None:
    assert [p.name[:3] for p in NOTEBOOKS] == ["01_", "02_", "03_", "04_", "05_", "06_"]


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_smoke_mode(path: Path, tmp_path: Path, monkeypatch) -> None:
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.get("outputs") and cell.get("execution_count") is None, (
                f"{path.name} is committed with outputs"
            )
    assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells), path.name
    monkeypatch.setenv("XPROSPECT_SMOKE", "1")
    monkeypatch.setenv("XPROSPECT_NOTEBOOK_DIR", str(tmp_path))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    )
    client.execute()
    errors = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not errors, errors
    assert any(tmp_path.rglob("*")), "the notebook wrote nothing"
