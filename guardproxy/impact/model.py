"""What a preview finds and what bounds it: facts, a budget of time and calls, errors.

A gatherer returns :class:`Facts` (one summary line and a structured ``impact``
object). Anything that stops it (a refused call, a time-out, the call budget spent, a
credential that cannot be had) is an :class:`ImpactError` whose message is one line
for on-call: the preview then says "impact unknown: <why>", never "nothing".
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = [
    "Budget",
    "Facts",
    "ImpactError",
    "StepContext",
    "count_text",
    "plural",
    "stamp",
]


class ImpactError(Exception):
    """A preview or a step could not finish; the message is one line for people."""


@dataclass(frozen=True)
class Facts:
    """What a gatherer found: one line for people, and the structured object."""

    summary: str
    impact: dict[str, Any] = field(default_factory=dict)


class Budget:
    """A deadline and a number of calls for one preview or step; every upstream call
    takes one (:meth:`call`) and is given at most the time left (:meth:`left`)."""

    def __init__(self, seconds: float, calls: int, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self.seconds = seconds
        self.deadline = clock() + seconds
        self.calls = calls
        self.used = 0
        self._lock = threading.Lock()

    def left(self) -> float:
        """Seconds left; ImpactError when none are."""
        remaining = float(self.deadline - self._clock())
        if remaining <= 0:
            raise ImpactError(f"timed out after {self.seconds:g} s")
        return remaining

    def call(self) -> float:
        """Take one call from the budget; the seconds it may last."""
        with self._lock:
            if self.used >= self.calls:
                raise ImpactError(f"stopped after {self.calls} calls (the preview's bound)")
            self.used += 1
        return self.left()


def stamp(now: datetime) -> str:
    """A moment as copies are named after it: ``20250301120000`` (UTC)."""
    return now.astimezone(UTC).strftime("%Y%m%d%H%M%S")


class StepContext:
    """Where a step writes and what it names its copies after."""

    def __init__(self, hold_id: str, now: datetime, data_dir: Path) -> None:
        self.hold_id = hold_id
        self.now = now
        self.data_dir = data_dir

    def folder(self, name: str) -> Path:
        """A new private folder ``<data dir>/safety/<hold>/<name>-<time>``."""
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:100]
        folder = self.data_dir / "safety" / self.hold_id / f"{safe}-{stamp(self.now)}"
        folder.mkdir(parents=True, mode=0o700, exist_ok=False)
        return folder


def plural(count: int, noun: str, *, at_least: bool = False) -> str:
    """``1 object``, ``3 objects``, ``at least 1000 objects``."""
    word = noun if count == 1 else (noun[:-1] + "ies" if noun.endswith("y") else noun + "s")
    return f"{'at least ' if at_least else ''}{count} {word}"


def count_text(counts: dict[str, int], limit: int = 4) -> str:
    """``2 AWS::SQS::Queue, 1 AWS::S3::Bucket`` (largest first, the rest as ``+N more``)."""
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    shown = [f"{n} {name}" for name, n in ordered[:limit]]
    if len(ordered) > limit:
        shown.append(f"+{len(ordered) - limit} more types")
    return ", ".join(shown)
