"""Approvers: stored by name with hashed tokens, found by token hash, removable."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from guardproxy.store import (
    AlreadyExistsError,
    Approver,
    DecisionRecord,
    NotFoundError,
    Store,
    Verdict,
    hash_token,
)

from .conftest import T0, HoldFactory

ALICE = Approver(
    name="alice", groups=("sre-oncall", "senior"), token_hash=hash_token("tok-a"), created_at=T0
)
BOB = Approver(name="bob", groups=("senior",), token_hash=hash_token("tok-b"), created_at=T0)


def test_an_approver_is_found_by_name_and_by_token_hash(store: Store) -> None:
    store.add_approver(ALICE)
    store.add_approver(BOB)
    assert store.get_approver("alice") == ALICE
    assert store.find_approver_by_token(hash_token("tok-b")) == BOB
    assert store.find_approver_by_token(hash_token("tok-unknown")) is None
    assert store.find_approver_by_token("tok-a") is None  # the raw token is not what is stored
    assert [a.name for a in store.list_approvers()] == ["alice", "bob"]


def test_names_and_tokens_are_unique(store: Store) -> None:
    store.add_approver(ALICE)
    with pytest.raises(AlreadyExistsError):
        store.add_approver(replace(ALICE, token_hash=hash_token("other")))
    with pytest.raises(AlreadyExistsError):
        store.add_approver(replace(BOB, token_hash=ALICE.token_hash))


def test_a_removed_approver_can_no_longer_be_found_but_their_verdicts_stay(
    store: Store, make_hold: HoldFactory
) -> None:
    store.add_approver(ALICE)
    hold = make_hold()
    store.record_approval(
        hold.id, approver="alice", groups=ALICE.groups, verdict=Verdict.APPROVE, reason="ok", at=T0
    )
    store.remove_approver("alice")
    assert store.get_approver("alice") is None
    assert store.find_approver_by_token(ALICE.token_hash) is None
    assert [a.approver for a in store.list_approvals(hold.id)] == ["alice"]
    with pytest.raises(NotFoundError):
        store.remove_approver("alice")


def test_a_hold_keeps_its_detail_snapshot(make_hold: HoldFactory, store: Store) -> None:
    hold = make_hold(detail_json='{"request": {"method": "DELETE"}}')
    stored = store.get_hold(hold.id)
    assert stored is not None and stored.detail_json == '{"request": {"method": "DELETE"}}'
    assert make_hold().detail_json == "{}"


def test_decisions_filter_by_provider_and_since(store: Store) -> None:
    def record(decision_id: str, provider: str, minutes: int) -> DecisionRecord:
        return DecisionRecord(
            id=decision_id,
            at=T0 + timedelta(minutes=minutes),
            session_id="s-1",
            action_json=f'{{"provider": "{provider}"}}',
            context_json="{}",
            decision_json="{}",
            outcome="allow",
        )

    store.append_decisions(
        [record("d-1", "aws", 0), record("d-2", "k8s", 1), record("d-3", "aws", 2)]
    )
    assert [d.id for d in store.list_decisions(provider="aws")] == ["d-3", "d-1"]
    assert [d.id for d in store.list_decisions(since=T0 + timedelta(minutes=1))] == ["d-3", "d-2"]
    assert [
        d.id for d in store.list_decisions(provider="aws", since=T0 + timedelta(minutes=1))
    ] == ["d-3"]
