"""The hold lifecycle: create, find, resolve, expire, consume, approvals, restart."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest

from guardproxy.action import Action, Environment, Provider, Resource, Verb
from guardproxy.policy.decision import Decision
from guardproxy.policy.model import Outcome
from guardproxy.store import (
    Hold,
    HoldConflict,
    HoldState,
    InvalidValueError,
    NotFoundError,
    Store,
    Verdict,
)

from .conftest import OpenStore, new_hold

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)

HoldFactory = Callable[..., Hold]  # the ``make_hold`` fixture (conftest.py)


def test_create_and_get_round_trip_real_models(store: Store, make_hold: HoldFactory) -> None:
    action = Action(
        provider=Provider.K8S,
        operation="delete",
        verb=Verb.DELETE,
        resource=Resource(type="k8s:namespace", name="prod"),
        environment=Environment.PROD,
    )
    decision = Decision(
        outcome=Outcome.HOLD,
        basis="rule",
        determining_rules=["k8s/hold-prod-namespace-delete"],
        bundle_digest="sha256:abc",
        engine_version="1",
        input_hash="sha256:def",
    )
    hold = make_hold(
        action_json=action.model_dump_json(),
        decision_json=decision.model_dump_json(),
        summary="k8s delete\nnamespaces prod",
    )
    assert re.fullmatch(r"h-[a-z2-7]{10}", hold.id)
    assert hold.state is HoldState.PENDING
    assert hold.summary == "k8s delete namespaces prod"
    assert hold.resolved_at is None and hold.grant_expires_at is None
    assert store.get_hold(hold.id) == hold
    assert Action.model_validate_json(hold.action_json) == action
    assert Decision.model_validate_json(hold.decision_json) == decision
    assert store.get_hold("h-missingxxx") is None


def test_timestamps_come_back_in_utc(make_hold: HoldFactory) -> None:
    paris = datetime(2025, 3, 1, 13, 0, tzinfo=timezone(timedelta(hours=1)))
    hold = make_hold(created_at=paris)
    assert hold.created_at == paris
    assert hold.created_at.tzinfo is UTC


@pytest.mark.parametrize(
    "overrides",
    [
        {"grant": "forever"},
        {"grant": "session:0"},
        {"grant": "session:-5"},
        {"action_json": "{not json"},
        {"created_at": datetime(2025, 3, 1, 12, 0)},  # naive
    ],
)
def test_bad_holds_are_refused(make_hold: HoldFactory, overrides: dict[str, object]) -> None:
    with pytest.raises(InvalidValueError):
        make_hold(**overrides)


def test_resolve_only_from_pending(store: Store, make_hold: HoldFactory) -> None:
    hold = make_hold()
    approved = store.resolve_hold(
        hold.id, state=HoldState.APPROVED, by="alice", reason="looks fine", now=T0 + MIN
    )
    assert approved.state is HoldState.APPROVED
    assert (approved.resolved_by, approved.reason, approved.resolved_at) == (
        "alice",
        "looks fine",
        T0 + MIN,
    )
    assert approved.grant_expires_at is None  # once
    for state in (HoldState.APPROVED, HoldState.DENIED):
        with pytest.raises(HoldConflict, match=r"approved.*alice") as caught:
            store.resolve_hold(hold.id, state=state, by="bob", reason="", now=T0 + 2 * MIN)
        assert caught.value.state is HoldState.APPROVED
        assert caught.value.hold == approved
    assert store.get_hold(hold.id) == approved


def test_a_denied_hold_cannot_be_approved(store: Store, make_hold: HoldFactory) -> None:
    hold = make_hold()
    store.resolve_hold(hold.id, state=HoldState.DENIED, by="alice", reason="no", now=T0)
    with pytest.raises(HoldConflict) as caught:
        store.resolve_hold(hold.id, state=HoldState.APPROVED, by="bob", reason="", now=T0)
    assert caught.value.state is HoldState.DENIED


def test_approving_after_the_deadline_expires_the_hold(
    store: Store, make_hold: HoldFactory
) -> None:
    hold = make_hold()
    with pytest.raises(HoldConflict, match="expired") as caught:
        store.resolve_hold(
            hold.id, state=HoldState.APPROVED, by="alice", reason="", now=hold.expires_at
        )
    assert caught.value.state is HoldState.EXPIRED
    stored = store.get_hold(hold.id)
    assert stored is not None
    assert (stored.state, stored.resolved_at) == (HoldState.EXPIRED, hold.expires_at)


def test_resolve_refuses_unknown_holds_and_states(store: Store, make_hold: HoldFactory) -> None:
    with pytest.raises(NotFoundError):
        store.resolve_hold("h-nosuchhold", state=HoldState.APPROVED, by="a", reason="", now=T0)
    hold = make_hold()
    with pytest.raises(InvalidValueError):
        store.resolve_hold(hold.id, state=HoldState.RELEASED, by="a", reason="", now=T0)
    with pytest.raises(InvalidValueError):
        store.resolve_hold(hold.id, state=HoldState.APPROVED, by="", reason="", now=T0)
    assert store.get_hold(hold.id) == hold


def test_expire_holds_takes_only_pending_past_deadline(
    store: Store, make_hold: HoldFactory
) -> None:
    late = make_hold(request_digest="late", expires_at=T0 + MIN)
    on_time = make_hold(request_digest="on-time", expires_at=T0 + 10 * MIN)
    approved = make_hold(request_digest="approved", expires_at=T0 + MIN)
    store.resolve_hold(approved.id, state=HoldState.APPROVED, by="a", reason="", now=T0)

    expired = store.expire_holds(T0 + MIN)
    assert [h.id for h in expired] == [late.id]
    assert expired[0].state is HoldState.EXPIRED
    assert expired[0].resolved_at == T0 + MIN
    assert store.expire_holds(T0 + MIN) == []
    states = {h.id: h.state for h in store.list_holds()}
    assert states == {
        late.id: HoldState.EXPIRED,
        on_time.id: HoldState.PENDING,
        approved.id: HoldState.APPROVED,
    }


def test_find_hold_matches_exact_session_and_digest(store: Store, make_hold: HoldFactory) -> None:
    hold = make_hold()
    now = T0 + MIN
    assert store.find_hold("s-1", "digest-a", now) == hold
    assert store.find_hold("s-2", "digest-a", now) is None
    assert store.find_hold("s-1", "digest-b", now) is None
    assert store.find_hold("s-1", "digest-a", hold.expires_at) is None  # pending, past deadline


@pytest.mark.parametrize("state", [HoldState.APPROVED, HoldState.DENIED])
def test_find_hold_returns_resolved_holds_retries_should_join(
    store: Store, make_hold: HoldFactory, state: HoldState
) -> None:
    hold = make_hold()
    resolved = store.resolve_hold(hold.id, state=state, by="alice", reason="", now=T0)
    assert store.find_hold("s-1", "digest-a", T0 + 60 * MIN) == resolved


def test_find_hold_skips_expired_and_released(store: Store, make_hold: HoldFactory) -> None:
    expired = make_hold(expires_at=T0 + MIN)
    store.expire_holds(T0 + MIN)
    assert store.find_hold("s-1", "digest-a", T0 + MIN) is None

    released = make_hold(created_at=T0 + 2 * MIN, expires_at=T0 + 10 * MIN)
    store.resolve_hold(released.id, state=HoldState.APPROVED, by="a", reason="", now=T0 + 3 * MIN)
    assert store.consume_approval("s-1", "digest-a", T0 + 4 * MIN) is not None
    assert store.find_hold("s-1", "digest-a", T0 + 4 * MIN) is None

    newest = make_hold(created_at=T0 + 5 * MIN, expires_at=T0 + 10 * MIN)
    found = store.find_hold("s-1", "digest-a", T0 + 5 * MIN)
    assert found is not None and found.id == newest.id != expired.id


def test_once_grant_is_consumed_exactly_once(store: Store, make_hold: HoldFactory) -> None:
    hold = make_hold()
    assert store.consume_approval("s-1", "digest-a", T0) is None  # still pending
    store.resolve_hold(hold.id, state=HoldState.APPROVED, by="alice", reason="", now=T0 + MIN)
    assert store.consume_approval("s-2", "digest-a", T0 + 2 * MIN) is None  # other session
    assert store.consume_approval("s-1", "digest-b", T0 + 2 * MIN) is None  # other request

    released = store.consume_approval("s-1", "digest-a", T0 + 2 * MIN)
    assert released is not None
    assert (released.id, released.state, released.released_at) == (
        hold.id,
        HoldState.RELEASED,
        T0 + 2 * MIN,
    )
    assert store.consume_approval("s-1", "digest-a", T0 + 2 * MIN) is None


def test_denied_holds_release_nothing(store: Store, make_hold: HoldFactory) -> None:
    hold = make_hold()
    store.resolve_hold(hold.id, state=HoldState.DENIED, by="alice", reason="no", now=T0)
    assert store.consume_approval("s-1", "digest-a", T0 + MIN) is None


def test_session_grant_passes_until_it_lapses(store: Store, make_hold: HoldFactory) -> None:
    hold = make_hold(grant="session:600")
    approved = store.resolve_hold(hold.id, state=HoldState.APPROVED, by="a", reason="", now=T0)
    assert approved.grant_expires_at == T0 + timedelta(seconds=600)
    for offset in (timedelta(0), MIN, timedelta(seconds=599)):
        passed = store.consume_approval("s-1", "digest-a", T0 + offset)
        assert passed == approved  # returned, not consumed
    lapsed = T0 + timedelta(seconds=600)
    assert store.consume_approval("s-1", "digest-a", lapsed) is None
    assert store.find_hold("s-1", "digest-a", lapsed) is None  # a retry gets a new hold
    assert store.consume_approval("s-2", "digest-a", T0 + MIN) is None


def test_list_holds_filters_newest_first(store: Store, make_hold: HoldFactory) -> None:
    first = make_hold(created_at=T0)
    second = make_hold(created_at=T0 + MIN, session_id="s-2")
    third = make_hold(created_at=T0 + 2 * MIN)
    store.resolve_hold(third.id, state=HoldState.DENIED, by="a", reason="", now=T0 + 2 * MIN)
    assert [h.id for h in store.list_holds()] == [third.id, second.id, first.id]
    assert [h.id for h in store.list_holds(limit=1)] == [third.id]
    assert [h.id for h in store.list_holds(state=HoldState.PENDING)] == [second.id, first.id]
    assert [h.id for h in store.list_holds(session_id="s-1")] == [third.id, first.id]
    assert [h.id for h in store.list_holds(state=HoldState.PENDING, session_id="s-1")] == [first.id]
    with pytest.raises(InvalidValueError):
        store.list_holds(limit=0)


def test_approvals_are_recorded_in_order(store: Store, make_hold: HoldFactory) -> None:
    hold = make_hold()
    first = store.record_approval(
        hold.id, approver="alice", groups=("sre",), verdict=Verdict.APPROVE, reason="ok", at=T0
    )
    second = store.record_approval(
        hold.id,
        approver="bob",
        groups=("sre", "dba"),
        verdict=Verdict.DENY,
        reason="wait",
        at=T0 + MIN,
    )
    assert store.list_approvals(hold.id) == [first, second]
    assert (second.approver, second.groups, second.verdict) == ("bob", ("sre", "dba"), "deny")
    assert store.list_approvals("h-otherhold") == []


def test_approvals_need_a_pending_hold(store: Store, make_hold: HoldFactory) -> None:
    with pytest.raises(NotFoundError):
        store.record_approval(
            "h-nosuchhold", approver="a", groups=(), verdict=Verdict.APPROVE, reason="", at=T0
        )
    hold = make_hold()
    with pytest.raises(HoldConflict) as caught:
        store.record_approval(
            hold.id, approver="a", groups=(), verdict=Verdict.APPROVE, reason="", at=T0 + 5 * MIN
        )
    assert caught.value.state is HoldState.EXPIRED
    with pytest.raises(InvalidValueError):
        store.record_approval(
            make_hold().id,
            approver="a",
            groups=(),
            verdict="maybe",  # type: ignore[arg-type]
            reason="",
            at=T0,
        )
    assert store.list_approvals(hold.id) == []


def test_holds_and_approvals_survive_a_restart(open_store_again: OpenStore) -> None:
    store = open_store_again()
    hold = new_hold(store, request_digest="d", summary="aws cloudformation DeleteStack prod-calc")
    vote = store.record_approval(
        hold.id, approver="alice", groups=("sre",), verdict=Verdict.APPROVE, reason="", at=T0
    )
    approved = store.resolve_hold(hold.id, state=HoldState.APPROVED, by="alice", reason="", now=T0)
    store.close()
    reopened = open_store_again()
    assert reopened.get_hold(hold.id) == approved
    assert reopened.list_approvals(hold.id) == [vote]
    released = reopened.consume_approval("s-1", "d", T0 + MIN)
    assert released is not None and released.state is HoldState.RELEASED
    reopened.close()
    assert open_store_again().consume_approval("s-1", "d", T0 + MIN) is None
