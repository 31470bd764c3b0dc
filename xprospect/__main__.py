"""``python -m xprospect`` runs the CLI."""

from __future__ import annotations

import sys

from xprospect.cli import main

sys.exit(main())
