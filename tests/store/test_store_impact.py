"""What impact previews and safety steps keep (migration 8), on each backend: one impact
per hold, every step record in order, and each chained into the audit trail."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from guardproxy.store import HoldImpact, InvalidValueError, NotFoundError, Store
from guardproxy.store.chain import verify

from .conftest import T0, HoldFactory, OpenStore


def impact(hold_id: str, status: str = "known", summary: str = "3 resources") -> HoldImpact:
    facts = {"kind": "cloudformation-stack", "resources": {"AWS::SQS::Queue": 3}}
    return HoldImpact(
        hold_id=hold_id, status=status, summary=summary, impact_json=json.dumps(facts),
        gathered_at=T0 + timedelta(seconds=1),
    )  # fmt: skip


def test_a_hold_keeps_one_impact_chained_into_the_audit_trail(
    store: Store, make_hold: HoldFactory
) -> None:
    hold = make_hold()
    other = make_hold(request_digest="digest-b")
    assert store.set_hold_impact(impact(hold.id)) is True
    assert store.set_hold_impact(impact(hold.id, "unknown", "impact unknown: late")) is False
    kept = store.hold_impacts([hold.id, other.id])
    assert list(kept) == [hold.id]
    assert kept[hold.id].status == "known"
    assert kept[hold.id].summary == "3 resources"
    assert json.loads(kept[hold.id].impact_json)["resources"] == {"AWS::SQS::Queue": 3}
    assert kept[hold.id].gathered_at == T0 + timedelta(seconds=1)
    [record] = [r for r in store.audit_for(hold.id) if r.kind == "hold.impact"]
    assert record.outcome == "known"
    assert json.loads(record.payload_json)["impact"]["resources"] == {"AWS::SQS::Queue": 3}
    assert verify(store.audit_records()) == []
    assert store.hold_impacts([]) == {}


def test_an_impact_needs_a_hold_and_a_known_status(store: Store, make_hold: HoldFactory) -> None:
    with pytest.raises(NotFoundError):
        store.set_hold_impact(impact("h-nosuchhold"))
    with pytest.raises(InvalidValueError):
        store.set_hold_impact(impact(make_hold().id, status="nothing"))


def test_safety_steps_are_kept_in_order_and_chained(store: Store, make_hold: HoldFactory) -> None:
    hold = make_hold()
    other = make_hold(request_digest="digest-b")
    store.record_safety_step(
        hold_id=hold.id, step="snapshot", state="chosen", actor="alice",
        started_at=T0, finished_at=T0,
    )  # fmt: skip
    store.record_safety_step(
        hold_id=hold.id, step="snapshot", state="failed", actor="bob", error="quota exceeded",
        started_at=T0, finished_at=T0 + timedelta(seconds=2),
    )  # fmt: skip
    done = store.record_safety_step(
        hold_id=hold.id, step="snapshot", state="succeeded", actor="bob",
        result_json='{"snapshot": "rds:prod-db-guardproxy"}',
        started_at=T0 + timedelta(seconds=3), finished_at=T0 + timedelta(seconds=9),
    )  # fmt: skip
    steps = store.list_safety_steps([hold.id, other.id])
    assert [(s.state, s.actor, s.error) for s in steps] == [
        ("chosen", "alice", ""), ("failed", "bob", "quota exceeded"), ("succeeded", "bob", ""),
    ]  # fmt: skip
    assert steps[-1] == done
    assert json.loads(done.result_json) == {"snapshot": "rds:prod-db-guardproxy"}
    chained = [r for r in store.audit_for(hold.id) if r.kind == "hold.step"]
    assert [r.outcome for r in chained] == ["chosen", "failed", "succeeded"]
    payload = json.loads(chained[-1].payload_json)
    assert payload["result"] == {"snapshot": "rds:prod-db-guardproxy"}
    assert payload["seconds"] == 6.0
    assert verify(store.audit_records()) == []
    assert store.list_safety_steps([other.id]) == []


def test_a_step_needs_a_hold_and_a_known_state(store: Store, make_hold: HoldFactory) -> None:
    with pytest.raises(NotFoundError):
        store.record_safety_step(
            hold_id="h-nosuchhold", step="snapshot", state="chosen", actor="a",
            started_at=T0, finished_at=T0,
        )  # fmt: skip
    with pytest.raises(InvalidValueError):
        store.record_safety_step(
            hold_id=make_hold().id, step="snapshot", state="skipped", actor="a",
            started_at=T0, finished_at=T0,
        )  # fmt: skip


def test_impact_and_step_records_join_the_chain_of_the_store_writing_them(
    store: Store, make_hold: HoldFactory, open_store_again: OpenStore
) -> None:
    """The hold is the proxy's (its chain); another writer (a replica, the CLI's store)
    records the step into its own chain; every chain stays linked from its genesis."""
    hold = make_hold()
    store.set_hold_impact(impact(hold.id))
    other = open_store_again()
    other.record_safety_step(
        hold_id=hold.id, step="snapshot", state="succeeded", actor="bob",
        started_at=T0, finished_at=T0 + timedelta(seconds=1),
    )  # fmt: skip
    records = store.audit_records()
    kinds = {r.kind: r for r in records}
    assert kinds["hold.impact"].chain == kinds["hold.created"].chain
    assert kinds["hold.impact"].seq == kinds["hold.created"].seq + 1
    assert kinds["hold.impact"].prev_hash == kinds["hold.created"].hash
    assert kinds["hold.step"].chain != kinds["hold.created"].chain
    assert kinds["hold.step"].seq == 1
    heads = {c.id: (c.head_seq, c.head_hash) for c in store.audit_chains()}
    assert heads[kinds["hold.impact"].chain] == (
        kinds["hold.impact"].seq,
        kinds["hold.impact"].hash,
    )
    assert heads[kinds["hold.step"].chain] == (1, kinds["hold.step"].hash)
    assert verify(records) == []
