"""The architecture checks behind ``make lint`` find what they are meant to find.

``make lint`` runs import-linter (the layer and no-cycle contracts in setup.cfg) and
``scripts/check_private_imports.py`` on the package; these tests feed the private-import check a
small package with known violations, so a check that silently passes everything cannot go unseen.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _checker():
    spec = importlib.util.spec_from_file_location(
        "check_private_imports", ROOT / "scripts" / "check_private_imports.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_private_names_across_modules_are_found_and_nothing_else(tmp_path: Path) -> None:
    pkg = _write(
        tmp_path / "pkg",
        {
            "__init__.py": "from pkg.a import public\n__version__ = '1'\n",
            "a.py": "def public(): ...\ndef _private(): ...\nfrom pkg.a import _private as again\n",
            "b.py": "def f():\n    from pkg.a import _private\n",  # function-level: found
            "c.py": "from . import __version__\nfrom .a import public\nfrom os import _exit\n",
            "sub/__init__.py": "from pkg.sub._impl import thing\n",  # a package's own private
            "sub/_impl.py": "thing = 1\n",
            "sub/user.py": "from ._impl import thing\n",  # inside the private module's package
            "d.py": "from pkg.sub._impl import thing\nfrom ..x import _y\n",
        },
    )
    found = list(_checker().violations(pkg))
    assert len(found) == 2, found
    assert any("b.py:2:" in line and "'_private' of pkg.a" in line for line in found), found
    assert any("d.py:1:" in line and "private module pkg.sub._impl" in line for line in found)


def test_the_package_itself_has_no_private_imports_across_modules() -> None:
    assert list(_checker().violations(ROOT / "xprospect")) == []
