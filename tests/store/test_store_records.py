"""Sessions and the decision log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from guardproxy.store import (
    AlreadyExistsError,
    DecisionRecord,
    NotFoundError,
    Session,
    Store,
    hash_token,
)

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)


def _session(session_id: str = "s-1", **overrides: object) -> Session:
    fields: dict[str, object] = {
        "id": session_id,
        "name": "fix-prod",
        "user": "alice",
        "agent": "claude-code",
        "command": ("claude", "--resume"),
        "cwd": "/home/alice/infra",
        "labels": ("team:sre",),
        "started_at": T0,
        "token_hash": hash_token(f"token-{session_id}"),
    }
    fields.update(overrides)
    return Session(**fields)  # type: ignore[arg-type]


def _decision(decision_id: str, **overrides: object) -> DecisionRecord:
    fields: dict[str, object] = {
        "id": decision_id,
        "at": T0,
        "session_id": "s-1",
        "action_json": '{"operation": "get"}',
        "context_json": '{"now": "2025-03-01T12:00:00Z"}',
        "decision_json": '{"outcome": "allow"}',
        "outcome": "allow",
    }
    fields.update(overrides)
    return DecisionRecord(**fields)  # type: ignore[arg-type]


def test_hash_token_is_sha256_hex() -> None:
    assert hash_token("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_session_round_trip_and_token_lookup(store: Store) -> None:
    session = _session()
    store.create_session(session)
    assert store.get_session("s-1") == session
    assert store.find_session_by_token(hash_token("token-s-1")) == session
    assert store.find_session_by_token(hash_token("wrong")) is None
    assert store.get_session("s-2") is None


def test_anonymous_sessions_have_no_token(store: Store) -> None:
    for client in ("10.0.0.1", "10.0.0.2"):
        store.create_session(_session(f"anonymous:{client}", anonymous=True, token_hash=None))
    stored = store.get_session("anonymous:10.0.0.1")
    assert stored is not None and stored.anonymous and stored.token_hash is None


def test_duplicate_sessions_are_refused(store: Store) -> None:
    store.create_session(_session())
    with pytest.raises(AlreadyExistsError):
        store.create_session(_session())
    with pytest.raises(AlreadyExistsError):
        store.create_session(_session("s-2", token_hash=hash_token("token-s-1")))
    assert store.get_session("s-2") is None


def test_end_session_keeps_the_first_end(store: Store) -> None:
    store.create_session(_session())
    store.create_session(_session("s-2", started_at=T0 + MIN))
    ended = store.end_session("s-1", T0 + 5 * MIN)
    assert ended.ended_at == T0 + 5 * MIN and not ended.active
    assert store.end_session("s-1", T0 + 9 * MIN).ended_at == T0 + 5 * MIN
    assert [s.id for s in store.list_sessions()] == ["s-2", "s-1"]
    assert [s.id for s in store.list_sessions(active_only=True)] == ["s-2"]
    with pytest.raises(NotFoundError):
        store.end_session("s-9", T0)


def test_decision_log_append_update_and_list(store: Store) -> None:
    store.append_decision(_decision("d-1"))
    store.append_decision(_decision("d-2", at=T0 + MIN, outcome="deny", session_id="s-2"))
    store.append_decision(_decision("d-3", at=T0 + 2 * MIN))
    store.set_upstream_status("d-3", 204)

    assert store.get_decision("d-3") == _decision("d-3", at=T0 + 2 * MIN, upstream_status=204)
    assert store.get_decision("d-9") is None
    assert [d.id for d in store.list_decisions()] == ["d-3", "d-2", "d-1"]
    assert [d.id for d in store.list_decisions(limit=2)] == ["d-3", "d-2"]
    assert [d.id for d in store.list_decisions(session_id="s-1")] == ["d-3", "d-1"]
    assert [d.id for d in store.list_decisions(outcome="deny")] == ["d-2"]
    assert store.list_decisions(session_id="s-1", outcome="deny") == []
    with pytest.raises(NotFoundError):
        store.set_upstream_status("d-9", 200)
    with pytest.raises(AlreadyExistsError):
        store.append_decision(_decision("d-1"))


def test_decisions_reference_real_holds(store: Store) -> None:
    with pytest.raises(NotFoundError):
        store.append_decision(_decision("d-1", outcome="hold", hold_id="h-nosuchhold"))
    hold = store.create_hold(
        session_id="s-1",
        request_digest="d",
        action_json="{}",
        decision_json="{}",
        summary="s",
        grant="once",
        created_at=T0,
        expires_at=T0 + MIN,
    )
    store.append_decision(_decision("d-1", outcome="hold", hold_id=hold.id))
    recorded = store.get_decision("d-1")
    assert recorded is not None and recorded.hold_id == hold.id
