"""The decision recorder writes every queued record once, in batches, off the request path.

Real SQLite store; the writer thread is the real one, with a short interval.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path

from guardproxy.gate.recorder import Build, DecisionRecorder
from guardproxy.store import DecisionRecord, SqliteStore
from guardproxy.store.chain import verify

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def _builder(decision_id: str) -> Build:
    def build(upstream_status: int | None) -> DecisionRecord:
        return DecisionRecord(
            id=decision_id,
            at=T0,
            session_id="s-1",
            action_json='{"provider":"k8s"}',
            context_json="{}",
            decision_json='{"outcome":"allow"}',
            outcome="allow",
            upstream_status=upstream_status,
            provider="k8s",
        )

    return build


def test_records_from_many_threads_are_all_written_once(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "g.db")
    recorder = DecisionRecorder(store, interval=0.01)

    def request(thread: int) -> None:
        for n in range(200):
            decision_id = f"d-{thread}-{n}"
            recorder.record(decision_id, _builder(decision_id))
            recorder.status(decision_id, 200)

    threads = [threading.Thread(target=request, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    recorder.close()
    records = store.audit_records(limit=10_000)
    decisions = [r for r in records if r.kind == "decision"]
    assert sorted(r.record_id for r in decisions) == sorted(
        f"d-{t}-{n}" for t in range(4) for n in range(200)
    )
    # a status written with its decision, or chained after it: never lost, never twice
    folded = {r.record_id for r in decisions if "upstream_status" in json.loads(r.payload_json)}
    later = [r.subject for r in records if r.kind == "upstream"]
    assert len(folded) + len(later) == 800 and not folded & set(later)
    stored = [store.get_decision(r.record_id) for r in decisions]
    assert all(d is not None and d.upstream_status == 200 for d in stored)
    assert verify(records) == []
    store.close()


def test_a_record_that_cannot_be_built_loses_only_itself(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "g.db")
    recorder = DecisionRecorder(store, interval=0.01)

    def broken(upstream_status: int | None) -> DecisionRecord:
        raise ValueError("cannot serialise")

    recorder.record("d-bad", broken)
    recorder.record("d-good", _builder("d-good"))
    recorder.close()
    assert [r.record_id for r in store.audit_records()] == ["d-good"]
    store.close()


def test_close_writes_what_is_queued_without_waiting_for_the_interval(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "g.db")
    recorder = DecisionRecorder(store, interval=60.0)
    recorder.record("d-1", _builder("d-1"))
    closing = threading.Thread(target=recorder.close)
    closing.start()
    closing.join(timeout=10)
    assert not closing.is_alive()
    assert [r.record_id for r in store.audit_records()] == ["d-1"]
    store.close()
