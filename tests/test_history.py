"""The session history tracker and the engine's reading of it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from policy_helpers import action, context, decide, rules_bundle
from structlog.testing import capture_logs

from guardproxy.action import Action, Verb
from guardproxy.context import Context, SessionInfo
from guardproxy.policy import Outcome
from guardproxy.session.history import HistorySettings, SessionHistory
from guardproxy.session.windows import count_values, counts_model
from guardproxy.store import SqliteStore, StoreError

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
SESSION = SessionInfo(id="s-1", anonymous=False)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    with SqliteStore(tmp_path / "guardproxy.db") as opened:
        yield opened


def queue(verb: str, name: str = "q", **fields: Any) -> Action:
    key = f"aws:1:us-east-1:aws:sqs:queue/{name}"
    resource = {"type": "aws:sqs:queue", "name": name, "key": key}
    return action(service="sqs", operation=f"{verb}Queue", verb=verb, resource=resource, **fields)


def test_windows_count_what_happened_before(store: SqliteStore) -> None:
    history = SessionHistory(store)
    for minutes in (0, 5, 30, 90):
        history.record(queue("delete"), "s-1", "allow", T0 + timedelta(minutes=minutes))
    history.record(queue("read"), "s-1", "hold", T0 + timedelta(minutes=90, seconds=30))
    now = T0 + timedelta(minutes=90, seconds=45)
    found = history.context(queue("create"), SESSION, now).history
    assert (found.m1.total, found.m10.total, found.h1.total, found.session.total) == (2, 2, 2, 5)
    assert (found.m1.destructive, found.session.destructive) == (1, 4)
    assert found.h1.verb.delete == 1  # the one 30 minutes in is older than the hour
    assert found.m1.verb.read == 1 and found.session.verb.delete == 4
    assert found.session.provider.aws == 5 and found.session.environment.prod == 5
    assert [r.outcome for r in found.recent][-2:] == ["allow", "hold"]


def test_memory_is_bounded(store: SqliteStore) -> None:
    settings = HistorySettings(max_resources=100, max_sessions=3, recent=5)
    history = SessionHistory(store, settings)
    for i in range(400):
        at = T0 + timedelta(seconds=20 * i)
        history.record(queue("update", f"q{i}"), f"s-{i % 5}", "allow", at)
    assert history.cached_resources == 100
    assert 0 < history.window_buckets("s-4") <= 3 * 60
    found = history.context(queue("read"), SessionInfo(id="s-0"), T0 + timedelta(hours=3))
    assert found.history.session.total == 80  # reloaded from the store after eviction
    assert len(found.history.recent) == 5


def test_recreate_names_another_sessions_delete(store: SqliteStore) -> None:
    history = SessionHistory(store)
    history.record(queue("delete"), "s-other", "allow", T0)
    found = history.context(queue("create"), SESSION, T0 + timedelta(minutes=2))
    assert found.signals.recreate
    assert found.signals.recreate_of == "by aws sqs deleteQueue q at 12:00:00Z in session s-other"
    assert found.resource.deleted_by_session == "s-other"
    assert not found.resource.deleted_in_session


class BrokenStore(SqliteStore):
    def session_events(self, *args: Any, **kwargs: Any) -> Any:
        raise StoreError("disk on fire")

    def append_session_events(self, *args: Any, **kwargs: Any) -> None:
        raise StoreError("disk on fire")


def test_history_failures_never_raise_and_fail_closed(tmp_path: Path) -> None:
    with BrokenStore(tmp_path / "guardproxy.db") as broken, capture_logs() as logs:
        history = SessionHistory(broken)
        history.record(queue("delete"), "s-1", "allow", T0)  # logged, not raised
        found = history.context(queue("create"), SESSION, T0)
    assert [entry["event"] for entry in logs] == ["history.not_recorded", "history.unavailable"]
    assert found.signals.history_unavailable
    assert found.session == SESSION


def test_signals_match_and_cel_read_the_history(tmp_path: Path) -> None:
    bundle = rules_bundle(
        tmp_path,
        """
        - id: recreate
          decision: hold
          match: {signals: [recreate, environment_rebuild]}
          message: "re-creates, deleted {signals.recreate_of}"
          approval: {groups: [sre]}
        - id: busy
          decision: deny
          condition: history.m10.verb.delete > 3 && resource.deleted
          message: "busy: {history.m10.verb.delete} deletes"
        """,
    )
    plain = context()
    assert decide(bundle, queue("create"), plain).outcome is Outcome.ALLOW
    recreated = context(signals={"recreate": True, "recreate_of": "by X at 12:00:00Z"})
    held = decide(bundle, queue("create"), recreated)
    assert (held.outcome, held.message) == (Outcome.HOLD, "re-creates, deleted by X at 12:00:00Z")
    busy = context(history={"m10": {"verb": {"delete": 4}}}, resource={"deleted": True})
    denied = decide(bundle, queue("create"), busy)
    assert (denied.outcome, denied.message) == (Outcome.DENY, "busy: 4 deletes")
    assert Verb.DELETE.value in type(busy.history.m10.verb).model_fields


def test_the_context_json_the_hash_covers_is_the_models_own(store: SqliteStore) -> None:
    """The input hash reuses cached JSON of context parts; it must be model_dump_json()."""
    history = SessionHistory(store, HistorySettings(destructive_budget=3))
    verbs = ["read", "delete", "create", "update", "delete", "create", "read", "destroy"]
    at = T0
    for i in range(40):
        verb = verbs[i % len(verbs)]
        found = history.context(queue(verb, f"q{i % 3}"), SESSION, at)
        assert found.canonical_json() == found.model_dump_json()
        assert Context.model_validate_json(found.model_dump_json()) == found
        history.record(queue(verb, f"q{i % 3}"), SESSION.id, "allow" if i % 5 else "hold", at)
        at += timedelta(seconds=7 * i)
    counter = Counter({"total": 7, "destructive": 2, "verb:delete": 2, "env:prod": 7, "x": 1})
    counted = counts_model(count_values(counter))
    assert counted.canonical_json() == counted.model_dump_json()
    assert (counted.total, counted.verb.delete, counted.environment.prod) == (7, 2, 7)


def test_a_new_tracker_sees_deletes_from_before_the_restart(tmp_path: Path) -> None:
    """Resource history lives in memory; the store is asked only about keys it holds."""
    with SqliteStore(tmp_path / "guardproxy.db") as first:
        history = SessionHistory(first)
        history.record(queue("delete", "gone"), "s-old", "allow", T0)
        history.record(queue("read", "other"), "s-old", "allow", T0)
        history.flush()
    with SqliteStore(tmp_path / "guardproxy.db") as second:
        assert second.changed_resource_keys(outcome="allow", limit=10) == [
            "aws:1:us-east-1:aws:sqs:queue/gone"
        ]
        history = SessionHistory(second)
        found = history.context(queue("create", "gone"), SESSION, T0 + timedelta(minutes=1))
        assert found.signals.recreate and found.resource.deleted_by_session == "s-old"
        fresh = history.context(queue("create", "new"), SESSION, T0 + timedelta(minutes=1))
        assert not fresh.resource.deleted and not fresh.signals.recreate


def test_events_the_store_refused_are_written_once_it_is_back(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A locked or restarting store loses no event: a new tracker (a restart, another
    replica) counts the delete made while the store refused it."""
    history = SessionHistory(store)
    history.context(queue("read"), SESSION, T0)  # the session is loaded: no store read next
    real = store.append_session_events

    def locked(*args: Any, **kwargs: Any) -> None:
        raise StoreError("database is locked")

    monkeypatch.setattr(store, "append_session_events", locked)
    with capture_logs() as logs:
        history.record(queue("delete", "a"), "s-1", "allow", T0)
    assert [entry["event"] for entry in logs] == ["history.not_recorded"]
    found = history.context(queue("create", "a"), SESSION, T0 + timedelta(minutes=1))
    assert found.signals.recreate  # counted in memory at once
    monkeypatch.setattr(store, "append_session_events", real)
    history.record(queue("delete", "b"), "s-1", "allow", T0 + timedelta(minutes=2))
    assert [e.resource_key.rsplit("/", 1)[1] for e in store.session_events("s-1")] == ["b", "a"]
    restarted = SessionHistory(store)
    later = restarted.context(queue("create", "a"), SESSION, T0 + timedelta(minutes=3))
    assert later.signals.recreate and later.history.session.destructive == 2
