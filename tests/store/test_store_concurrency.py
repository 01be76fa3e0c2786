"""Atomicity under concurrency: one winner, whether threads share a store or not.

Sharing one store is how the proxy's worker threads use it; separate stores on the
same database stand in for separate processes or replicas (the CLI approving a hold
while the proxy consumes it), which only the database's own locking can serialise.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from guardproxy.store import DecisionRecord, Hold, HoldConflict, HoldState, Store
from guardproxy.store.chain import verify

from .conftest import OpenStore, new_hold

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
THREADS = 8


def _race[R](work: Callable[[int], R]) -> list[R]:
    """Run ``work(i)`` in THREADS threads released together by a barrier."""
    barrier = threading.Barrier(THREADS)

    def run(i: int) -> R:
        barrier.wait()
        return work(i)

    with ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(run, range(THREADS)))


def _approved_once(store: Store) -> Hold:
    hold = new_hold(store, request_digest="d")
    return store.resolve_hold(hold.id, state=HoldState.APPROVED, by="a", reason="", now=T0)


def test_once_grant_has_one_winner_among_threads(store: Store) -> None:
    hold = _approved_once(store)
    results = _race(lambda _: store.consume_approval("s-1", "d", T0 + timedelta(seconds=1)))
    winners = [r for r in results if r is not None]
    assert [w.id for w in winners] == [hold.id]
    assert winners[0].state is HoldState.RELEASED


def test_once_grant_has_one_winner_across_connections(
    open_store_again: OpenStore, store: Store
) -> None:
    hold = _approved_once(store)
    stores = [open_store_again() for _ in range(THREADS)]
    try:
        results = _race(lambda i: stores[i].consume_approval("s-1", "d", T0 + timedelta(seconds=1)))
    finally:
        for each in stores:
            each.close()
    assert [r.id for r in results if r is not None] == [hold.id]


def test_concurrent_approvals_resolve_once(open_store_again: OpenStore, store: Store) -> None:
    hold = new_hold(store, request_digest="d")
    stores = [open_store_again() for _ in range(THREADS // 2)]

    def approve(i: int) -> str:
        target = store if i % 2 else stores[i // 2]
        try:
            target.resolve_hold(
                hold.id, state=HoldState.APPROVED, by=f"approver-{i}", reason="", now=T0
            )
        except HoldConflict as conflict:
            assert conflict.state is HoldState.APPROVED
            return "conflict"
        return f"approver-{i}"

    try:
        results = _race(approve)
    finally:
        for each in stores:
            each.close()
    winners = [r for r in results if r != "conflict"]
    assert len(winners) == 1
    final = store.get_hold(hold.id)
    assert final is not None and final.resolved_by == winners[0]


def test_the_audit_chains_stay_unbroken_across_connections(
    open_store_again: OpenStore, store: Store
) -> None:
    """Separate stores on one database (processes, replicas) append at once, each to a
    chain of its own: every chain gapless and unforked."""
    stores = [open_store_again() for _ in range(THREADS)]

    def append(i: int) -> None:
        for n in range(20):
            stores[i].append_decision(
                DecisionRecord(
                    id=f"d-{i}-{n}", at=T0, session_id=f"s-{i}", action_json="{}",
                    context_json="{}", decision_json="{}", outcome="allow",
                )
            )  # fmt: skip
            if n % 5 == 0:
                stores[i].set_upstream_statuses([(f"d-{i}-{n}", 200)])

    try:
        _race(append)
    finally:
        for each in stores:
            each.close()
    records = store.audit_records(limit=10_000)
    assert len(records) == THREADS * 24
    chains = {r.chain for r in records}
    assert len(chains) == THREADS
    for chain in chains:
        mine = [r for r in records if r.chain == chain]
        assert [r.seq for r in mine] == list(range(1, 25))
        assert len({r.session_id for r in mine if r.kind == "decision"}) == 1  # one writer
    assert verify(records) == []
