"""Every ``xprospect`` command the docs and README show parses, and every ``train`` command's
config (shipped config + its ``--set`` overrides) is valid.

The commands are read from the fenced code blocks: backslash continuations joined, ``# ...``
comments dropped, ``for NAME in A B C; do ... done`` loops expanded, other ``$VARIABLES`` kept as
text. Only the command line is checked (no data is read): a documented flag that does not exist,
or a documented override a shipped config refuses (e.g. ``training.steps`` on a config that
trains ``epochs``), fails here rather than in a user's shell. Synopsis lines (``[--flag]``,
``<...>``) are not commands.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
LOOP = re.compile(r"^for (\w+) in ([^;]+); do$")


def _lines(block: str) -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", block)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if not line.startswith("#"):
            line = re.sub(r"\s+#.*$", "", line)
        out.append(line)
    return out


def _expand(lines: list[str]) -> list[str]:
    commands: list[str] = []
    i = 0
    while i < len(lines):
        loop = LOOP.match(lines[i])
        if loop is None:
            commands.append(lines[i])
            i += 1
            continue
        end = lines.index("done", i)
        for value in loop.group(2).split():
            for body in lines[i + 1 : end]:
                commands.append(re.sub(rf"\${{?{loop.group(1)}}}?", value, body))
        i = end + 1
    return commands


def documented_commands() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        for block in FENCE.findall(doc.read_text(encoding="utf-8")):
            for line in _expand(_lines(block)):
                line = re.sub(r"^\S*/xprospect ", "xprospect ", line)  # .venv/bin/xprospect
                synopsis = "<" in line or "..." in line or re.search(r"\s\[-", line)
                if line.startswith("xprospect ") and not synopsis:
                    found.append((f"{doc.relative_to(ROOT)}: {line}", line))
    return found


COMMANDS = documented_commands()


def test_the_docs_show_commands() -> None:
    names = {c.split(": ", 1)[0] for c, _ in COMMANDS}
    assert "docs/reproducing.md" in names and "README.md" in names
    assert sum(1 for c, _ in COMMANDS if " train " in c) >= 10


@pytest.mark.parametrize("line", [c for _, c in COMMANDS], ids=[i for i, _ in COMMANDS])
def test_documented_command_parses(line: str) -> None:
    from xprospect.cli.common import overrides_with_shortcuts
    from xprospect.cli.main import build_parser
    from xprospect.config import load_config

    argv = shlex.split(line)[1:]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        if exc.code == 0:  # --help
            return
        pytest.fail(f"{line!r} does not parse (exit {exc.code})")
    # A shipped config by name; a path is a file the user's earlier step writes (tune's best).
    if argv[0] == "train" and "/" not in args.config:
        overrides = overrides_with_shortcuts(
            args.overrides,
            [("data.dir", args.data), ("training.output_dir", args.output_dir)],
        )
        load_config(args.config, overrides)
