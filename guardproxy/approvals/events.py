"""In-process fan-out of hold lifecycle events.

The gate (held, released), the approvals service (approval, approved, denied,
expired, escalated, step) and the impact previews (impact) publish one event per step of
a hold's life; the console's live view and the notifiers subscribe.  Publishing never
fails and never waits: a subscriber that raises is logged and skipped, and subscribers
queue their own work.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import structlog

from guardproxy.store.base import Hold

log = structlog.get_logger(__name__)

HoldEventKind = Literal[
    "held",
    "approval",
    "approved",
    "denied",
    "expired",
    "escalated",
    "released",
    "impact",
    "step",
]
"""``impact``: the hold's impact preview is in (``reason``: its summary line); ``step``: a
safety step ran before a release (``reason``: its result or its error)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class HoldEvent:
    kind: HoldEventKind
    hold_id: str
    at: datetime
    summary: str
    """One line: the action summary."""
    session_id: str
    actor: str = ""
    """The approver id for approval / approved / denied, empty otherwise."""
    reason: str = ""


def hold_event(
    kind: HoldEventKind, hold: Hold, at: datetime, actor: str = "", reason: str = ""
) -> HoldEvent:
    """The event of ``hold`` reaching step ``kind`` at ``at``."""
    return HoldEvent(
        kind=kind,
        hold_id=hold.id,
        at=at,
        summary=hold.summary,
        session_id=hold.session_id,
        actor=actor,
        reason=reason,
    )


class HoldEvents:
    """In-process fan-out of hold lifecycle events (console live updates, notifications)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[HoldEvent], None]] = []

    def subscribe(self, callback: Callable[[HoldEvent], None]) -> Callable[[], None]:
        """Call ``callback`` for every event from now on; returns the unsubscribe function."""
        with self._lock:
            self._callbacks.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)

        return unsubscribe

    def publish(self, event: HoldEvent) -> None:
        """Call every subscriber; one that raises is logged and does not stop the others."""
        with self._lock:
            callbacks = list(self._callbacks)
        for callback in callbacks:
            try:
                callback(event)
            except Exception:
                log.exception("hold_event.subscriber_failed", kind=event.kind, hold=event.hold_id)
