"""Prints the package's module map: lines per module and its longest function (Markdown).

Usage: ``python scripts/module_map.py [PACKAGE_DIR]`` (default ``xprospect``). Used for the
architecture notes in ``docs/architecture.md``.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def longest_function(tree: ast.Module) -> tuple[str, int]:
    """The longest function or method of a module and its length in lines."""
    best = ("", 0)
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno:
            length = node.end_lineno - node.lineno + 1
            if length > best[1]:
                best = (node.name, length)
    return best


def main(argv: list[str]) -> int:
    root = Path(argv[1] if len(argv) > 1 else "xprospect")
    rows = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        name, length = longest_function(ast.parse(text))
        rows.append((str(path), len(text.splitlines()), name, length))
    print("| module | lines | longest function (lines) |")
    print("|---|---:|---|")
    for path, lines, name, length in rows:
        longest = f"{name} ({length})" if name else ""
        print(f"| `{path}` | {lines} | {longest} |")
    total = sum(r[1] for r in rows)
    print(f"| **{len(rows)} modules** | **{total}** | |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
