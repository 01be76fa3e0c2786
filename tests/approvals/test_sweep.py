"""The approvals service's sweeper on a real store with a clock the test moves: escalation once,
half-way; expiry denies; a late sweep still escalates before it expires."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import pytest

from guardproxy.approvals.events import HoldEvent
from guardproxy.approvals.service import ApprovalService
from guardproxy.policy.decision import ApprovalRequirement, RuleApproval
from guardproxy.server import load_policies
from guardproxy.store import Hold, HoldState, SqliteStore

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
POLICIES = Path(__file__).resolve().parents[2] / "policies"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    with SqliteStore(tmp_path / "guardproxy.db") as opened:
        yield opened


def hold_for(store: SqliteStore, on_timeout: Literal["deny", "escalate"]) -> str:
    requirement = ApprovalRequirement(
        all_of=[RuleApproval(rule="t/r", groups=["senior"], quorum=1)],
        groups=["senior"],
        quorum=1,
        timeout_seconds=600,
        on_timeout=on_timeout,
    )
    decision = f'{{"outcome": "hold", "approval": {requirement.model_dump_json()}}}'
    return store.create_hold(
        session_id="s-1", request_digest="d", action_json="{}", decision_json=decision,
        summary="k8s delete x", grant="once", created_at=T0,
        expires_at=T0 + timedelta(minutes=10),
    ).id  # fmt: skip


def service_with_events(
    store: SqliteStore, clock: Clock
) -> tuple[ApprovalService, list[HoldEvent]]:
    bundle = load_policies(POLICIES)
    service = ApprovalService(store, lambda: bundle, clock=clock)
    heard: list[HoldEvent] = []
    service.events.subscribe(heard.append)
    return service, heard


def test_escalation_is_sent_once_half_way_and_expiry_denies(store: SqliteStore) -> None:
    clock = Clock()
    service, heard = service_with_events(store, clock)
    escalating, quiet = hold_for(store, "escalate"), hold_for(store, "deny")
    for minutes in (4, 5, 6, 9):
        clock.now = T0 + timedelta(minutes=minutes)
        asyncio.run(service.sweep())
    assert [(e.kind, e.hold_id) for e in heard] == [("escalated", escalating)]
    assert "0 of 1 approvals" in heard[0].reason
    clock.now = T0 + timedelta(minutes=10)
    asyncio.run(service.sweep())
    assert sorted((e.kind, e.hold_id) for e in heard[1:]) == sorted(
        [("expired", escalating), ("expired", quiet)]
    )
    assert {h.state for h in store.list_holds()} == {HoldState.EXPIRED}


def test_a_late_sweep_escalates_before_it_expires(store: SqliteStore) -> None:
    clock = Clock()
    service, heard = service_with_events(store, clock)
    hold_id = hold_for(store, "escalate")
    clock.now = T0 + timedelta(minutes=11)
    asyncio.run(service.sweep())
    assert [(e.kind, e.hold_id) for e in heard] == [("escalated", hold_id), ("expired", hold_id)]


def test_the_sweeper_outlives_an_unexpected_failure(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    clock.now = T0 + timedelta(minutes=11)
    service, heard = service_with_events(store, clock)
    hold_id = hold_for(store, "deny")
    real = store.list_holds
    calls: list[int] = []

    def fails_once(*args: Any, **kwargs: Any) -> list[Hold]:
        calls.append(1)
        if len(calls) == 1:
            raise KeyError(0)  # not a StoreError: a bug, or a driver's error left unwrapped
        return real(*args, **kwargs)

    monkeypatch.setattr(store, "list_holds", fails_once)

    async def sweep_until_expired() -> None:
        sweeper = asyncio.create_task(service.run_sweeper(interval=0.01))
        try:
            for _ in range(500):
                await asyncio.sleep(0.01)
                if heard or sweeper.done():
                    break
        finally:
            sweeper.cancel()

    asyncio.run(sweep_until_expired())
    assert [(e.kind, e.hold_id) for e in heard] == [("expired", hold_id)]
