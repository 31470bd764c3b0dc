"""Fails when a module of the package imports a private name (``_name``) of another of its modules.

ruff's PLC2701 catches private names imported from *other* packages, but it treats every module
of a first-party package as one unit, so ``from xprospect.training.trainer import _window`` in
``xprospect/training/loop.py`` passes it. This check closes that gap (docs/architecture.md): a
private name is used only in the module that defines it. Dunder names (``__version__``) are public
by convention and allowed; function-level imports are checked too.

Usage: ``python scripts/check_private_imports.py [PACKAGE_DIR ...]`` (default ``xprospect``).
Prints ``file:line: message`` per violation and exits 1 if there is any.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path


def module_name(path: Path, root: Path) -> str:
    """Dotted name of ``path`` inside the package rooted at ``root`` (``root.name`` first)."""
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _target(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module an ``ImportFrom`` reads from."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    # A package's own ``from . import x`` is relative to itself; a module's to its parent.
    keep = len(base) - node.level + (1 if is_package else 0)
    return ".".join(base[:keep] + ([node.module] if node.module else []))


def is_private(name: str) -> bool:
    """Whether ``name`` is private: one leading underscore, not a dunder."""
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def violations(root: Path) -> Iterator[str]:
    """``file:line: message`` for every private name imported across modules under ``root``."""
    package = root.name
    for path in sorted(root.rglob("*.py")):
        module = module_name(path, root)
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom):
                continue
            source = _target(node, module, path.name == "__init__.py")
            if source != package and not source.startswith(package + "."):
                continue
            if source == module:
                continue
            for alias in node.names:
                if is_private(alias.name):
                    yield (
                        f"{path}:{node.lineno}: {module} imports the private name "
                        f"{alias.name!r} of {source}; make it public in its owner or move the code"
                    )
            parts = source.split(".")
            private = [i for i, part in enumerate(parts) if is_private(part)]
            if private:
                # A private module belongs to its parent package and whatever lies inside it.
                parent = ".".join(parts[: private[0]])
                if module != parent and not module.startswith(parent + "."):
                    yield f"{path}:{node.lineno}: {module} imports the private module {source}"


def main(argv: list[str]) -> int:
    roots = [Path(a) for a in argv[1:]] or [Path("xprospect")]
    found = [line for root in roots for line in violations(root)]
    for line in found:
        print(line)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
