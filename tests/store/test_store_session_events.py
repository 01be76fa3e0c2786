"""The session history's rows: append, window reads, totals and per-resource reads."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from guardproxy.store import EventTotal, SessionEvent, Store
from guardproxy.store.base import AlreadyExistsError, DecisionRecord

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def event(minutes: int, verb: str, *, session: str = "s-1", outcome: str = "allow") -> SessionEvent:
    return SessionEvent(
        session_id=session,
        at=T0 + timedelta(minutes=minutes),
        summary=f"aws sqs {verb} q",
        operation=verb,
        verb=verb,
        provider="aws",
        environment="prod",
        resource_key="aws:1:r:aws:sqs:queue/q" if verb != "read" else "",
        outcome=outcome,
        protection_removed=verb == "update",
        recreate=verb == "create",
        destroyed_container="",
    )


def test_session_events_round_trip_newest_first(store: Store) -> None:
    events = [event(0, "delete"), event(1, "create"), event(2, "read"), event(3, "update")]
    store.append_session_events(events)
    store.append_session_events([event(4, "delete", session="s-2", outcome="hold")])
    assert store.session_events("s-1") == events[::-1]
    assert store.session_events("s-1", since=T0 + timedelta(minutes=2)) == events[:1:-1]
    assert store.session_events("s-1", limit=1) == [events[-1]]


def test_totals_group_by_verb_provider_environment_and_outcome(store: Store) -> None:
    store.append_session_events([event(0, "delete"), event(1, "delete"), event(2, "read")])
    assert sorted(store.session_event_totals("s-1"), key=lambda t: t.verb) == [
        EventTotal("delete", "aws", "prod", "allow", 2),
        EventTotal("read", "aws", "prod", "allow", 1),
    ]
    assert store.session_event_totals("s-unknown") == []


def test_resource_events_cross_sessions_and_filter_by_outcome(store: Store) -> None:
    store.append_session_events(
        [event(0, "delete"), event(1, "create", session="s-2", outcome="hold"), event(2, "read")]
    )
    key = "aws:1:r:aws:sqs:queue/q"
    assert [e.verb for e in store.resource_events(key)] == ["create", "delete"]
    assert [e.session_id for e in store.resource_events(key, outcome="allow")] == ["s-1"]
    assert store.resource_events("") == []


def test_changed_resource_keys_are_the_forwarded_changes(store: Store) -> None:
    """PostgreSQL's rows are dicts: reading them by position raised KeyError(0), and a
    replica that first asked once another had recorded a change never decided again
    without `history_unavailable` (issue item 8)."""
    assert store.changed_resource_keys(outcome="allow", limit=10) == []
    store.append_session_events(
        [event(0, "delete"), event(1, "read"), event(2, "create", session="s-2", outcome="deny")]
    )
    assert store.changed_resource_keys(outcome="allow", limit=10) == ["aws:1:r:aws:sqs:queue/q"]
    assert store.changed_resource_keys(outcome="deny", limit=10) == ["aws:1:r:aws:sqs:queue/q"]
    assert store.changed_resource_keys(outcome="hold", limit=10) == []


def _decision(decision_id: str) -> DecisionRecord:
    return DecisionRecord(
        id=decision_id, at=T0, session_id="s-1", action_json="{}", context_json="{}",
        decision_json="{}", outcome="allow",
    )  # fmt: skip


def test_events_appended_with_a_decision_are_committed_with_it(store: Store) -> None:
    """A change's history goes into its decision record's transaction (one commit on the
    request path): both are there, the events redacted as on their own."""
    token = "ghp_" + "a1B2" * 9
    events = [event(0, "read"), replace(event(1, "delete"), summary=f"aws sqs delete {token}")]
    store.append_decision(_decision("d-1"), events)
    assert store.get_decision("d-1") is not None
    stored = store.session_events("s-1")
    assert [e.verb for e in stored] == ["delete", "read"]
    assert token not in stored[0].summary and "[REDACTED]" in stored[0].summary


def test_events_of_a_decision_that_cannot_be_written_are_not_written_either(
    store: Store,
) -> None:
    store.append_decision(_decision("d-1"))
    with pytest.raises(AlreadyExistsError):
        store.append_decision(_decision("d-1"), [event(0, "delete")])
    assert store.session_events("s-1") == []
    store.append_decision(_decision("d-2"), [event(1, "create")])  # the chain goes on
    assert [e.verb for e in store.session_events("s-1")] == ["create"]
