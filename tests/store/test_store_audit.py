"""The audit chain: decisions, upstream statuses and hold events in the store's hash chain.

These tests use only the ``Store`` protocol (the ``store`` fixture), so every backend
runs them; one store appends to one chain.  Several chains and checkpoints are in
test_store_chains.py; tampering with the stored rows directly in
tests/audit/test_verify_tampering.py (both backends) and tests/audit/test_cli_audit.py.
"""

from __future__ import annotations

import hashlib
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from guardproxy.store import (
    AlreadyExistsError,
    AuditEntry,
    AuditRecord,
    DecisionRecord,
    HoldConflict,
    HoldState,
    Store,
    Verdict,
)
from guardproxy.store.chain import (
    GENESIS,
    LEGACY_CHAIN,
    ChainVerifier,
    chain_genesis,
    decision_entry,
    event_entry,
    link,
    verify,
)

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
SEC = timedelta(seconds=1)


def _decision(decision_id: str, **overrides: object) -> DecisionRecord:
    fields: dict[str, object] = {
        "id": decision_id,
        "at": T0,
        "session_id": "s-1",
        "action_json": '{"provider":"k8s","operation":"delete"}',
        "context_json": '{"now":"2025-03-01T12:00:00Z"}',
        "decision_json": '{"outcome":"allow","input_hash":"sha256:ab"}',
        "outcome": "allow",
        "provider": "k8s",
    }
    fields.update(overrides)
    return DecisionRecord(**fields)  # type: ignore[arg-type]


def _all(store: Store) -> list[AuditRecord]:
    return store.audit_records(limit=100_000)


def _hold(store: Store, digest: str = "dg", grant: str = "once", minutes: int = 5) -> str:
    return store.create_hold(
        session_id="s-1",
        request_digest=digest,
        action_json='{"provider":"k8s"}',
        decision_json='{"outcome":"hold"}',
        summary="k8s delete namespaces prod",
        grant=grant,
        created_at=T0,
        expires_at=T0 + timedelta(minutes=minutes),
    ).id


def test_decisions_are_chained_with_their_payload(store: Store) -> None:
    store.append_decision(_decision("d-1"))
    store.append_decisions([_decision("d-2", at=T0 + SEC), _decision("d-3", at=T0 + 2 * SEC)])
    records = _all(store)
    assert [(r.seq, r.record_id, r.kind) for r in records] == [
        (1, "d-1", "decision"),
        (2, "d-2", "decision"),
        (3, "d-3", "decision"),
    ]
    assert records[0].chain != LEGACY_CHAIN and {r.chain for r in records} == {records[0].chain}
    assert records[0].prev_hash == chain_genesis(records[0].chain) != GENESIS
    assert [r.prev_hash for r in records[1:]] == [r.hash for r in records[:-1]]
    assert [r.position for r in records] == sorted({r.position for r in records})
    assert verify(records) == []
    payload = json.loads(records[0].payload_json)
    assert payload["action"] == {"provider": "k8s", "operation": "delete"}
    assert payload["decision"]["input_hash"] == "sha256:ab"
    assert payload["outcome"] == "allow" and payload["hold_id"] is None
    assert records[0].provider == "k8s" and records[0].outcome == "allow"
    assert store.get_audit_record("d-2") == records[1]
    assert store.get_audit_record("d-404") is None


def test_a_failed_append_leaves_the_chain_untouched(store: Store) -> None:
    store.append_decision(_decision("d-1"))
    with pytest.raises(AlreadyExistsError):
        store.append_decisions([_decision("d-2"), _decision("d-1")])
    assert [r.record_id for r in _all(store)] == ["d-1"]
    store.append_decision(_decision("d-2"))
    assert verify(_all(store)) == []


def test_upstream_status_is_a_new_record_referencing_the_decision(store: Store) -> None:
    store.append_decision(_decision("d-1"))
    store.append_decision(_decision("d-2"))
    decision_hash = _all(store)[0].hash
    store.set_upstream_statuses([("d-1", 204), ("d-unknown", 500)])
    store.set_upstream_status("d-2", 503)
    records = _all(store)
    assert [r.kind for r in records] == ["decision", "decision", "upstream", "upstream"]
    assert records[0].hash == decision_hash  # the decision's record never changes
    assert (records[2].subject, records[2].outcome) == ("d-1", "204")
    assert json.loads(records[3].payload_json) == {"decision_id": "d-2", "status": 503}
    assert records[2].provider == "k8s"
    assert [r.record_id for r in store.audit_for("d-1")] == ["d-1", records[2].record_id]
    recorded = store.get_decision("d-1")
    assert recorded is not None and recorded.upstream_status == 204
    assert verify(records) == []


def test_hold_lifecycle_events_join_the_chain(store: Store) -> None:
    approved = _hold(store, "a")
    store.record_approval(
        approved, approver="alice", groups=("sre",), verdict=Verdict.APPROVE, reason="ok", at=T0
    )
    store.resolve_hold(approved, state=HoldState.APPROVED, by="alice", reason="ok", now=T0 + SEC)
    assert store.consume_approval("s-1", "a", T0 + 2 * SEC) is not None
    denied = _hold(store, "b")
    store.resolve_hold(denied, state=HoldState.DENIED, by="bob", reason="no", now=T0 + SEC)
    expired = _hold(store, "c", minutes=1)
    store.expire_holds(T0 + timedelta(minutes=2))
    late = _hold(store, "d", minutes=1)
    with pytest.raises(HoldConflict):
        store.resolve_hold(late, state=HoldState.APPROVED, by="carol", reason="", now=T0 + 90 * SEC)

    events = [(r.kind, r.subject, r.outcome) for r in _all(store)]
    assert events == [
        ("hold.created", approved, "pending"),
        ("hold.approval", approved, "approve"),
        ("hold.approved", approved, "approved"),
        ("hold.released", approved, "released"),
        ("hold.created", denied, "pending"),
        ("hold.denied", denied, "denied"),
        ("hold.created", expired, "pending"),
        ("hold.expired", expired, "expired"),
        ("hold.created", late, "pending"),
        ("hold.expired", late, "expired"),
    ]
    approval = json.loads(store.audit_for(approved)[1].payload_json)
    assert approval == {
        "approver": "alice",
        "groups": ["sre"],
        "reason": "ok",
        "verdict": "approve",
    }
    resolution = json.loads(store.audit_for(denied)[1].payload_json)
    assert (resolution["resolved_by"], resolution["reason"]) == ("bob", "no")
    assert all(r.session_id == "s-1" for r in _all(store))
    assert verify(_all(store)) == []


def test_list_audit_filters(store: Store) -> None:
    store.append_decision(_decision("d-1", session_id="s-1", outcome="allow", provider="aws"))
    store.append_decision(_decision("d-2", at=T0 + SEC, session_id="s-2", outcome="deny"))
    store.append_decision(_decision("d-3", at=T0 + 2 * SEC, outcome="hold", provider="aws"))
    _hold(store)

    def ids(**filters: object) -> list[str]:
        return [r.record_id for r in store.list_audit(kind="decision", **filters)]  # type: ignore[arg-type]

    assert ids() == ["d-3", "d-2", "d-1"]
    assert ids(session_id="s-1") == ["d-3", "d-1"]
    assert ids(outcome="deny") == ["d-2"]
    assert ids(provider="aws") == ["d-3", "d-1"]
    assert ids(since=T0 + SEC) == ["d-3", "d-2"]
    assert ids(until=T0 + SEC) == ["d-1"]
    assert ids(limit=1) == ["d-3"]
    assert store.list_audit(limit=1)[0].kind == "hold.created"


def test_append_audit_links_caller_entries(store: Store) -> None:
    store.append_decision(_decision("d-1"))
    entry = event_entry(
        "note", at=T0, session_id="s-1", subject="d-1", outcome="", by="alice", text="checked"
    )
    (linked,) = store.append_audit([entry])
    assert linked.seq == 2 and linked.prev_hash == _all(store)[0].hash
    assert verify(_all(store)) == []
    assert store.append_audit([]) == []


def test_paging_through_the_chain(store: Store) -> None:
    store.append_decisions([_decision(f"d-{i}", at=T0 + i * SEC) for i in range(25)])
    first = store.audit_records(limit=10)
    rest = store.audit_records(after=first[-1].position, limit=100)
    assert [r.seq for r in first + rest] == list(range(1, 26))
    chain = first[0].chain
    verifier = ChainVerifier({chain: (10, first[-1].hash)})
    assert [p for r in rest for p in verifier.check(r)] == []
    by_chain = store.chain_records(chain, after_seq=20, limit=3)
    assert [r.seq for r in by_chain] == [21, 22, 23]
    assert by_chain == rest[10:13]
    assert store.chain_records(chain + 1) == []


def test_concurrent_writers_keep_one_unbroken_chain(store: Store) -> None:
    threads, per_thread = 8, 25
    barrier = threading.Barrier(threads)

    def write(worker: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            if i % 5 == 4:
                _hold(store, f"w{worker}-{i}")
            else:
                store.append_decision(_decision(f"d-{worker}-{i}"))

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(write, range(threads)))
    records = _all(store)
    assert len(records) == threads * per_thread
    assert [r.seq for r in records] == list(range(1, len(records) + 1))
    assert verify(records) == []


def test_verify_names_the_broken_record(store: Store) -> None:
    store.append_decisions([_decision(f"d-{i}", at=T0 + i * SEC) for i in range(5)])
    records = _all(store)
    edited = [*records[:2], replace(records[2], outcome="deny"), *records[3:]]
    assert [(p.seq, "edited" in p.problem) for p in verify(edited)] == [(3, True)]
    deleted = records[:2] + records[3:]
    problems = verify(deleted)
    assert problems[0].seq == 4 and "#3 is missing" in problems[0].problem
    forged = decision_entry(_decision("d-forged"))
    inserted = [*records[:2], link(forged, 3, records[1].hash, records[0].chain), *records[2:]]
    renumbered = [
        r if i < 3 else replace(r, seq=r.seq + 1) for i, r in enumerate(inserted)
    ]  # an inserter renumbers the rest; their links and hashes no longer hold
    problems = verify(renumbered)
    assert problems and problems[0].seq == 4 and "previous hash" in problems[0].problem


def _dumped_hash(entry: AuditEntry, seq: int, prev: str) -> str:
    """The record hash as first defined: json.dumps of the fields, sorted, compact."""
    fields = {
        "at": entry.at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "id": entry.record_id,
        "kind": entry.kind,
        "outcome": entry.outcome,
        "payload": entry.payload_json,
        "prev": prev,
        "provider": entry.provider,
        "seq": seq,
        "session": entry.session_id,
        "subject": entry.subject,
    }
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@pytest.mark.parametrize(
    "at",
    [
        T0,
        T0.replace(microsecond=7),
        datetime(2026, 11, 26, 1, 2, 3, tzinfo=timezone(timedelta(hours=-5))),
    ],
)
def test_record_hash_is_the_canonical_json_of_the_fields(at: datetime) -> None:
    odd = 'quote " backslash \\ newline \n tab \t nul \x00 é 中 \u2028 emoji \U0001f600'
    for entry in (
        decision_entry(_decision("d-1", at=at, upstream_status=204)),
        event_entry("hold.approval", at=at, session_id=odd, subject="h-1", outcome=odd, why=odd),
    ):
        assert link(entry, 12, GENESIS).hash == _dumped_hash(entry, 12, GENESIS)
