"""A request waiting live on its hold is answered as soon as the approvals service on
the same loop resolves the hold: the gate subscribes to the service's resolutions
(``Gate.watch_approvals``).  The gate's periodic re-read of the hold is pushed out of
reach in these tests, so only that subscription can end the wait before the hold
window does (and a request still waiting then is answered "held", which fails them).
Real gate, real service, real SQLite store."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from approvals.rig import SETTINGS, Rig, delete_configmap, person, write_bundle

from guardproxy.gate import gate as live_gate
from guardproxy.gate.gate import Answer, Forward, Gate, Verdict
from guardproxy.policy import evaluate
from guardproxy.recognise import recognise
from guardproxy.store import HoldState, SqliteStore

HOLD_WINDOW = 20.0
"""Longer than any test here should wait: only a resolution ends the wait early."""


@pytest.fixture
def no_re_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live_gate, "RECHECK_SECONDS", 3600.0)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    with SqliteStore(tmp_path / "guardproxy.db") as store:
        yield Rig(store, write_bundle(tmp_path / "policies"))


def held_then(
    rig: Rig, resolve: Callable[[str], Coroutine[Any, Any, object]], *, watch: bool = True
) -> tuple[Verdict, object]:
    """Send a held delete through the gate; once it waits on its hold, run ``resolve``
    (given the hold id). The gate's answer and what ``resolve`` returned."""
    gate = Gate(rig.store, rig.bundle, hold_window=HOLD_WINDOW, clock=rig.clock)
    if watch:
        gate.watch_approvals(rig.service)
    request = delete_configmap("once-cm")
    action = recognise(request, SETTINGS)
    context = rig.context()
    decision = evaluate(rig.bundle, action, context)

    async def scenario() -> tuple[Verdict, object]:
        waiting = asyncio.create_task(gate.handle(request, action, context, decision))
        while gate.waiting() == 0:
            assert not waiting.done(), waiting.result()
            await asyncio.sleep(0.01)
        [hold] = rig.store.list_holds(state=HoldState.PENDING)
        returned = await resolve(hold.id)
        return await asyncio.wait_for(waiting, timeout=2 * HOLD_WINDOW), returned

    try:
        return asyncio.run(scenario())
    finally:
        gate.flush()


@pytest.mark.usefixtures("no_re_read")
def test_an_approval_releases_the_waiting_request_at_once(rig: Rig) -> None:
    async def approve(hold_id: str) -> object:
        return await rig.service.decide_hold(hold_id, person("bob"), approve=True, reason="ok")

    verdict, decided = held_then(rig, approve)
    assert isinstance(verdict, Forward) and verdict.hold_id is not None
    assert getattr(decided, "woken", None) == 1  # the approver is told it was released
    released = rig.store.get_hold(verdict.hold_id)
    assert released is not None and released.state is HoldState.RELEASED


@pytest.mark.usefixtures("no_re_read")
def test_a_denial_answers_the_waiting_request_at_once(rig: Rig) -> None:
    async def deny(hold_id: str) -> object:
        return await rig.service.decide_hold(
            hold_id, person("bob"), approve=False, reason="wrong cluster"
        )

    verdict, decided = held_then(rig, deny)
    assert isinstance(verdict, Answer) and verdict.kind == "deny"
    assert b"a human denied this request" in verdict.answer.body
    assert b"by bob: wrong cluster" in verdict.answer.body
    assert getattr(decided, "woken", None) == 1


@pytest.mark.usefixtures("no_re_read")
def test_expiry_by_the_sweeper_answers_the_waiting_request_at_once(rig: Rig) -> None:
    async def expire(hold_id: str) -> object:
        rig.clock.at(10)
        await rig.service.sweep()
        return None

    verdict, _ = held_then(rig, expire)
    assert isinstance(verdict, Answer) and verdict.kind == "deny"
    assert b"expired without approval" in verdict.answer.body


def test_without_the_subscription_only_the_re_read_finds_the_approval(rig: Rig) -> None:
    """The other side of the seam: a gate not watching this service learns of the
    approval only from its periodic re-read (as a replica does when the store's
    announcement is lost), and the approver hears that nobody was released at once."""

    async def approve(hold_id: str) -> object:
        return await rig.service.decide_hold(hold_id, person("bob"), approve=True, reason="ok")

    verdict, decided = held_then(rig, approve, watch=False)
    assert isinstance(verdict, Forward)
    assert getattr(decided, "woken", None) == 0
