"""A change's session history is committed with its decision record, before the gate
lets the request go: one transaction, so a kill -9 after the forward loses neither, and
a decision that cannot be recorded leaves no history of a forward behind.

Real SqliteStore, the shipped bundle, the live pipeline and the gate as the Guard addon
drives them (intercept/addons.py); the failing stores are real stores, closed or
refusing the events alone.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from guardproxy.context import SessionInfo
from guardproxy.gate.gate import Answer, Forward, Gate
from guardproxy.pipeline import LivePipeline, Pipeline
from guardproxy.pipeline.live import Journal
from guardproxy.pipeline.steps import Verdict
from guardproxy.recognise import RecogniseSettings
from guardproxy.recognise.request import HttpRequest
from guardproxy.server import load_policies
from guardproxy.session.history import FORWARDED, SessionHistory
from guardproxy.store import SqliteStore
from guardproxy.store.base import DecisionRecord, InvalidValueError, SessionEvent

POLICIES = Path(__file__).resolve().parents[2] / "policies"
CLUSTER = "127.0.0.1:6443"
SETTINGS = RecogniseSettings(kubernetes_hosts=(CLUSTER,))
T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
ALICE = SessionInfo(id="s-alice", name="alice-agent", user="alice", anonymous=False)
BUNDLE = load_policies(POLICIES)


def create_configmap(name: str) -> HttpRequest:
    host, port = CLUSTER.split(":")
    return HttpRequest(
        method="POST",
        scheme="https",
        host=host,
        port=int(port),
        path="/api/v1/namespaces/dev-app/configmaps",
        headers=(("content-type", "application/json"),),
        body=json.dumps({"metadata": {"name": name}}).encode(),
        host_header=CLUSTER,
    )


class RefusesEvents(SqliteStore):
    """A real store that takes decisions but refuses session events written with them."""

    def append_decision(self, record: DecisionRecord, events: Sequence[SessionEvent] = ()) -> None:
        if events:
            raise InvalidValueError("these events cannot be stored")
        super().append_decision(record)


def send(
    store: SqliteStore, request: HttpRequest
) -> tuple[Verdict, Forward | Answer, Journal, int]:
    """Decide and apply ``request`` as the Guard addon does; also how many session events
    the store held when the gate answered (before ``after``)."""
    gate = Gate(store, BUNDLE, hold_window=0.001, clock=lambda: T0)
    live = LivePipeline(Pipeline(gate, SETTINGS, SessionHistory(store)), lambda: T0)

    async def go() -> tuple[Verdict, Forward | Answer, Journal, int]:
        verdict = await live.decide(request, ALICE)
        journal = live.journal(verdict)
        effect = await gate.handle(
            request, verdict.action, verdict.context, verdict.decision, journal
        )
        with SqliteStore(store.path) as reader:  # another connection, as after a kill -9
            stored = len(reader.session_events(ALICE.id))
        await live.after(verdict, effect.kind if isinstance(effect, Answer) else FORWARDED, journal)
        return verdict, effect, journal, stored

    try:
        return asyncio.run(asyncio.wait_for(go(), timeout=20))
    finally:
        gate.flush()


def test_an_allowed_change_and_its_history_are_committed_before_the_forward(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "guardproxy.db")
    try:
        verdict, effect, journal, stored = send(store, create_configmap("x"))
        assert isinstance(effect, Forward) and journal.outcome == FORWARDED
        assert stored == 1  # committed with the record, before the request went out
        # read by another connection, as a restarted proxy would
        with SqliteStore(store.path) as reader:
            assert reader.get_decision(effect.decision_id) is not None
            events = reader.session_events(ALICE.id)
        assert [(e.summary, e.outcome) for e in events] == [
            (verdict.action.summary(), FORWARDED)
        ]  # recorded once: ``after`` did not record it again
    finally:
        store.close()


def test_a_decision_that_cannot_be_recorded_leaves_no_forward_in_the_history(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "guardproxy.db")
    store.close()  # a real store that now fails every call
    _, effect, journal, _ = send(store, create_configmap("x"))
    assert isinstance(effect, Answer) and effect.kind == "deny"
    assert journal.outcome is None
    with SqliteStore(store.path) as reader:
        assert reader.session_events(ALICE.id) == []


def test_events_the_store_refuses_do_not_refuse_the_request(tmp_path: Path) -> None:
    """The record is written alone, as before the journal, and the history records its
    events on its own afterwards (where this store takes them)."""
    store = RefusesEvents(tmp_path / "guardproxy.db")
    try:
        _, effect, journal, stored = send(store, create_configmap("x"))
        assert isinstance(effect, Forward) and journal.outcome is None
        assert stored == 0
        assert store.get_decision(effect.decision_id) is not None
        assert [e.outcome for e in store.session_events(ALICE.id)] == [FORWARDED]
    finally:
        store.close()
