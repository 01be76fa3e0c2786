"""Terminal styling: colour on a terminal, plain text when piped or NO_COLOR is set."""

from __future__ import annotations

import os
import sys
from typing import TextIO

_CODES = {"red": "31", "green": "32", "yellow": "33", "blue": "34", "bold": "1", "dim": "2"}


class Style:
    def __init__(self, stream: TextIO | None = None) -> None:
        stream = stream or sys.stdout
        self.enabled = stream.isatty() and "NO_COLOR" not in os.environ

    def __call__(self, text: str, *names: str) -> str:
        if not self.enabled or not names:
            return text
        codes = ";".join(_CODES[n] for n in names)
        return f"\x1b[{codes}m{text}\x1b[0m"

    def outcome(self, outcome: str) -> str:
        colour = {"allow": "green", "hold": "yellow", "deny": "red"}.get(outcome, "bold")
        return self(outcome.upper(), colour, "bold")
