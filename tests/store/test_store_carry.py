"""Approvals that follow a user and working directory to a new session, and resumed
sessions: the store side of ``guardproxy run`` started again after an approval."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from guardproxy.store import HoldState, InvalidValueError, NotFoundError, Session, Store
from guardproxy.store.base import carried_until, hash_token

from .conftest import HoldFactory

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)


def _session(store: Store, session_id: str, user: str = "carol", cwd: str = "/repo") -> None:
    store.create_session(
        Session(
            id=session_id, name="run", user=user, agent="aws", command=("aws",), cwd=cwd,
            labels=(), started_at=T0, token_hash=hash_token(f"token-{session_id}"),
        )
    )  # fmt: skip


def _approved(store: Store, make_hold: HoldFactory, grant: str = "once") -> str:
    """A hold of s-1 (carol in /repo) approved at T0 + 1 min; its approval time-out 30 min."""
    _session(store, "s-1")
    hold = make_hold(session_id="s-1", grant=grant, expires_at=T0 + 30 * MIN)
    store.resolve_hold(hold.id, state=HoldState.APPROVED, by="alice", reason="ok", now=T0 + MIN)
    store.end_session("s-1", T0 + MIN)
    return hold.id


def test_a_once_grant_passes_once_for_a_new_session_of_the_same_user_and_directory(
    store: Store, make_hold: HoldFactory
) -> None:
    hold_id = _approved(store, make_hold)
    _session(store, "s-2")
    assert store.consume_carried_approval("s-2", "digest-b", T0 + 2 * MIN) is None  # other request
    released = store.consume_carried_approval("s-2", "digest-a", T0 + 2 * MIN)
    assert released is not None and released.id == hold_id
    assert released.state is HoldState.RELEASED
    _session(store, "s-3")
    assert store.consume_carried_approval("s-3", "digest-a", T0 + 2 * MIN) is None  # once
    assert store.consume_approval("s-1", "digest-a", T0 + 2 * MIN) is None  # not even its own
    [event] = [r for r in store.audit_for(hold_id) if r.kind == "hold.released"]
    assert json.loads(event.payload_json)["released_to_session"] == "s-2"


@pytest.mark.parametrize(
    ("user", "cwd"),
    [("dave", "/repo"), ("carol", "/elsewhere"), ("", "/repo"), ("carol", "")],
)
def test_another_user_or_directory_gets_nothing(
    store: Store, make_hold: HoldFactory, user: str, cwd: str
) -> None:
    _approved(store, make_hold)
    _session(store, "s-2", user=user, cwd=cwd)
    assert store.consume_carried_approval("s-2", "digest-a", T0 + 2 * MIN) is None
    assert store.consume_carried_approval("anonymous:127.0.0.1", "digest-a", T0 + 2 * MIN) is None


def test_the_carried_grant_lapses_after_the_hold_time_out_counted_from_the_approval(
    store: Store, make_hold: HoldFactory
) -> None:
    hold_id = _approved(store, make_hold)
    hold = store.get_hold(hold_id)
    assert hold is not None and carried_until(hold) == T0 + 31 * MIN
    _session(store, "s-2")
    assert store.consume_carried_approval("s-2", "digest-a", T0 + 31 * MIN) is None
    assert store.consume_carried_approval("s-2", "digest-a", T0 + 31 * MIN - MIN / 60) is not None


def test_a_session_grant_serves_new_sessions_until_it_lapses(
    store: Store, make_hold: HoldFactory
) -> None:
    _approved(store, make_hold, grant="session:600")
    for n in (2, 3):
        _session(store, f"s-{n}")
        granted = store.consume_carried_approval(f"s-{n}", "digest-a", T0 + 5 * MIN)
        assert granted is not None and granted.state is HoldState.APPROVED  # not consumed
    assert store.consume_carried_approval("s-2", "digest-a", T0 + 11 * MIN) is None


def test_a_new_session_joins_the_pending_hold_of_an_ended_one(
    store: Store, make_hold: HoldFactory
) -> None:
    _session(store, "s-1")
    pending = make_hold(session_id="s-1", expires_at=T0 + 30 * MIN)
    _session(store, "s-2")
    _session(store, "s-9", cwd="/other")
    assert store.find_carried_hold("s-2", "digest-a", T0 + MIN) == pending
    assert store.find_carried_hold("s-1", "digest-a", T0 + MIN) is None  # its own: find_hold
    assert store.find_carried_hold("s-9", "digest-a", T0 + MIN) is None
    assert store.find_carried_hold("s-2", "digest-a", T0 + 30 * MIN) is None  # past its time-out


def test_resume_reopens_an_ended_session_with_a_new_credential(store: Store) -> None:
    _session(store, "s-1")
    with pytest.raises(InvalidValueError, match="still active"):
        store.resume_session("s-1", hash_token("new"))
    store.end_session("s-1", T0 + MIN)
    resumed = store.resume_session("s-1", hash_token("new"))
    assert resumed.active and resumed.token_hash == hash_token("new")
    assert store.find_session_by_token(hash_token("token-s-1")) is None
    with pytest.raises(NotFoundError):
        store.resume_session("s-404", hash_token("other"))


def test_directories_that_redaction_changed_never_carry(
    store: Store, make_hold: HoldFactory
) -> None:
    """Two directories whose names held different tokens are stored alike: no carrying."""
    secret = "/tmp/ghp_R2d2C3p0x9Lk4Mn7Pq1Rs5Tu8Vw0Xy3Za6Bc"
    _session(store, "s-1", cwd=secret)
    hold = make_hold(session_id="s-1", expires_at=T0 + 30 * MIN)
    store.resolve_hold(hold.id, state=HoldState.APPROVED, by="alice", reason="ok", now=T0 + MIN)
    _session(store, "s-2", cwd=secret.replace("R2d2", "Z9z9"))
    first, second = store.get_session("s-1"), store.get_session("s-2")
    assert first is not None and second is not None and first.cwd == second.cwd
    assert store.consume_carried_approval("s-2", "digest-a", T0 + 2 * MIN) is None
    assert store.find_carried_hold("s-2", "digest-a", T0 + 2 * MIN) is None
