"""What every command module shares: exit codes, the handler and subparsers types, the one-line
error format and the shortcut flags that stand for ``--set KEY=VALUE`` overrides.

Only the standard library is imported here, so building the parser stays quick.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

__all__ = [
    "EXIT_INTERNAL_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_USER_ERROR",
    "Handler",
    "Subparsers",
    "overrides_with_shortcuts",
    "print_error",
]

EXIT_USER_ERROR = 2
"""Exit code of an error the user can fix (bad input, config or data): one line on stderr."""
EXIT_INTERNAL_ERROR = 1
"""Exit code of any other failure (a bug or an environment problem)."""
EXIT_INTERRUPTED = 130
"""Exit code after Ctrl-C, as shells report a SIGINT."""

Handler = Callable[[argparse.Namespace], int]
"""What a subcommand runs: the parsed arguments in, the exit code out."""


class Subparsers(Protocol):
    """The object ``ArgumentParser.add_subparsers()`` returns, as far as command modules use it."""

    def add_parser(self, *args: Any, **kwargs: Any) -> argparse.ArgumentParser:
        """Adds one subcommand and returns its parser."""
        ...


def print_error(message: object) -> None:
    """Prints the one-line ``xprospect: error: MESSAGE`` on stderr."""
    print(f"xprospect: error: {message}", file=sys.stderr)


def overrides_with_shortcuts(
    overrides: Sequence[str] | None, shortcuts: Iterable[tuple[str, Any]]
) -> list[str] | None:
    """The ``--set KEY=VALUE`` overrides, then ``KEY=VALUE`` for every shortcut flag given.

    Args:
        overrides: The ``--set`` values in command-line order.
        shortcuts: ``(config key, flag value)`` pairs, e.g. ``("data.dir", args.data)``; a flag
            left out (``None`` or empty) adds nothing. Shortcuts come after ``--set`` so they win.

    Returns:
        The override strings, or ``None`` when there are none (what the config loaders take for
        "no overrides").
    """
    merged = list(overrides or [])
    merged.extend(f"{key}={value}" for key, value in shortcuts if value)
    return merged or None
