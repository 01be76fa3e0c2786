"""HoldEvents: every subscriber hears every event; a failing one harms nobody."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from guardproxy.approvals.events import HoldEvent, HoldEvents

EVENT = HoldEvent(
    kind="held",
    hold_id="h-abc",
    at=datetime(2025, 3, 1, tzinfo=UTC),
    summary="k8s delete namespaces prod",
    session_id="s-1",
)


def test_every_subscriber_gets_the_event_even_after_one_raises() -> None:
    events = HoldEvents()
    heard: list[tuple[str, HoldEvent]] = []

    def broken(event: HoldEvent) -> None:
        raise RuntimeError("subscriber bug")

    events.subscribe(lambda e: heard.append(("first", e)))
    events.subscribe(broken)
    events.subscribe(lambda e: heard.append(("last", e)))
    events.publish(EVENT)
    assert heard == [("first", EVENT), ("last", EVENT)]


def test_unsubscribe_stops_delivery_and_is_idempotent() -> None:
    events = HoldEvents()
    heard: list[HoldEvent] = []
    unsubscribe = events.subscribe(heard.append)
    events.publish(EVENT)
    unsubscribe()
    unsubscribe()
    events.publish(EVENT)
    assert heard == [EVENT]


def test_events_are_immutable() -> None:
    with pytest.raises(AttributeError):
        EVENT.kind = "denied"  # type: ignore[misc]
