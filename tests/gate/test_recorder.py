"""The decision recorder writes every queued record once, in batches, off the request path.

Real SQLite store; the sender thread is the real one, with a short interval, and the
writer is both kinds: in this process, and the writer process ``guardproxy serve`` runs.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import signal
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from guardproxy.context import Context, SessionInfo
from guardproxy.gate.recorder import Build, DecisionDraft, DecisionRecorder, Writer
from guardproxy.gate.writer import ProcessWriter, StoreWriter, _hello, serve
from guardproxy.store import SqliteStore, StoreError
from guardproxy.store.chain import verify

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


CONTEXT = Context(now=T0).json_parts()


def _builder(decision_id: str) -> Build:
    def build(upstream_status: int | None) -> DecisionDraft:
        return DecisionDraft(
            id=decision_id,
            at=T0,
            session_id="s-1",
            action_json='{"provider":"k8s"}',
            context=CONTEXT,
            decision_json='{"outcome":"allow"}',
            outcome="allow",
            hold_id=None,
            upstream_status=upstream_status,
            provider="k8s",
            shadow_json=None,
        )

    return build


def _writer(kind: str, store: SqliteStore) -> Writer:
    return StoreWriter(store) if kind == "thread" else ProcessWriter(str(store.path))


WRITERS = pytest.mark.parametrize("kind", ["thread", "process"])


@WRITERS
def test_records_from_many_threads_are_all_written_once(tmp_path: Path, kind: str) -> None:
    store = SqliteStore(tmp_path / "g.db")
    recorder = DecisionRecorder(_writer(kind, store), interval=0.01)

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


@WRITERS
def test_a_record_that_cannot_be_built_loses_only_itself(tmp_path: Path, kind: str) -> None:
    store = SqliteStore(tmp_path / "g.db")
    recorder = DecisionRecorder(_writer(kind, store), interval=0.01)

    def broken(upstream_status: int | None) -> DecisionDraft:
        raise ValueError("cannot serialise")

    recorder.record("d-bad", broken)
    recorder.record("d-good", _builder("d-good"))
    recorder.close()
    assert [r.record_id for r in store.audit_records()] == ["d-good"]
    store.close()


@WRITERS
def test_close_writes_what_is_queued_without_waiting_for_the_interval(
    tmp_path: Path, kind: str
) -> None:
    store = SqliteStore(tmp_path / "g.db")
    recorder = DecisionRecorder(_writer(kind, store), interval=60.0)
    recorder.record("d-1", _builder("d-1"))
    closing = threading.Thread(target=recorder.close)
    closing.start()
    closing.join(timeout=10)
    assert not closing.is_alive()
    assert [r.record_id for r in store.audit_records()] == ["d-1"]
    store.close()


def _draft(decision_id: str, **changes: Any) -> DecisionDraft:
    return _builder(decision_id)(None)._replace(**changes)


def test_the_writer_process_redacts_what_it_writes(tmp_path: Path) -> None:
    token = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
    session = Context(now=T0, session=SessionInfo(id="s-1", labels=[f"token={token}"]))
    assert token in session.json_parts().session
    store = SqliteStore(tmp_path / "g.db")
    writer = ProcessWriter(str(store.path))
    writer.write(
        [
            _draft(
                "d-1",
                action_json=f'{{"request":{{"path":"/x?access_token={token}"}}}}',
                context=session.json_parts(),
                decision_json=f'{{"message":"Bearer {token}"}}',
            )
        ],
        [],
    )
    writer.close(10)
    stored = store.get_decision("d-1")
    assert stored is not None
    kept = stored.action_json + stored.context_json + stored.decision_json
    assert token not in kept and "[REDACTED]" in stored.context_json
    assert token not in store.audit_records()[0].payload_json
    store.close()


def test_a_dead_writer_process_is_replaced_and_the_next_batch_written(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "g.db")
    writer = ProcessWriter(str(store.path))
    first = writer.pid
    writer.write([_draft("d-1")], [])
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while writer.alive and time.monotonic() < deadline:
        time.sleep(0.01)
    with capture_logs() as logs:
        writer.write([_draft("d-2")], [("d-2", 204)])
    writer.close(10)
    assert writer.pid != first
    assert [entry["event"] for entry in logs] == ["decision_writer.restarting"]
    stored = store.get_decision("d-2")
    assert stored is not None and stored.upstream_status == 204
    assert verify(store.audit_records()) == []
    store.close()


def test_a_batch_the_store_refuses_is_reported_and_counted(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "g.db")
    failed: list[str] = []
    writer = ProcessWriter(str(store.path), on_error=failed.append)
    with capture_logs() as logs:
        writer.write([_draft("d-1")], [])
        writer.write([_draft("d-1")], [])  # the same decision id twice: refused
        writer.write([_draft("d-2")], [])  # and the writer goes on
        writer.close(10)
    assert failed == ["append_decisions"]
    assert [entry["event"] for entry in logs] == ["decisions.not_recorded"]
    assert "d-1" in logs[0]["error"]
    assert [r.record_id for r in store.audit_records()] == ["d-1", "d-2"]
    store.close()


def test_a_store_the_writer_process_cannot_open_stops_the_start(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    with pytest.raises(StoreError, match="decision writer process cannot start: cannot open"):
        ProcessWriter(str(tmp_path / "a-file" / "g.db"))


def test_close_is_bounded_when_the_writer_process_takes_nothing(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "g.db")
    writer = ProcessWriter(str(store.path))
    os.kill(writer.pid, signal.SIGSTOP)  # a store that hangs: the pipe fills, the write blocks
    batch = [_draft(f"d-{n}", decision_json=os.urandom(600).hex()) for n in range(500)]
    sender = threading.Thread(target=writer.write, args=(batch, []))
    with capture_logs() as logs:
        sender.start()
        time.sleep(0.2)
        writer.close(1.0)
        sender.join(10)
    assert not sender.is_alive() and not writer.alive
    events = [entry["event"] for entry in logs]
    assert "decision_writer.killed" in events and "decisions.not_recorded" in events
    assert "decision_writer.restarting" not in events  # closed: no new process
    store.close()


def test_the_writer_process_ignores_a_terminal_or_service_managers_signals(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "g.db")
    writer = ProcessWriter(str(store.path))
    for signum in (signal.SIGINT, signal.SIGTERM):
        os.kill(writer.pid, signum)
    writer.write([_draft("d-1")], [])
    time.sleep(0.2)
    assert writer.alive
    writer.close(10)
    assert [r.record_id for r in store.audit_records()] == ["d-1"]
    store.close()


def _frames(*payloads: bytes) -> io.BytesIO:
    return io.BytesIO(b"".join(len(p).to_bytes(4, "big") + p for p in payloads))


class _GoneProxy(io.StringIO):
    """The proxy's end of the answers, after the proxy died."""

    def write(self, text: str) -> int:
        raise BrokenPipeError("the proxy is gone")


def test_the_writer_process_writes_what_it_was_sent_after_the_proxy_died(
    tmp_path: Path,
) -> None:
    path = tmp_path / "g.db"
    hello = json.dumps(_hello(str(path))).encode()
    batches = [pickle.dumps(([_draft(f"d-{n}")], [])) for n in range(3)]
    assert serve(_frames(hello, *batches), _GoneProxy()) == 0
    with SqliteStore(path) as store:
        assert [r.record_id for r in store.audit_records()] == ["d-0", "d-1", "d-2"]


def test_a_writer_process_from_other_code_refuses_the_proxys_drafts(tmp_path: Path) -> None:
    hello = _hello(str(tmp_path / "g.db"))
    hello["draft"] = hello["draft"][::-1]  # the fields of another version, in another order
    answers = io.StringIO()
    assert serve(_frames(json.dumps(hello).encode()), answers) == 1
    assert "other fields" in json.loads(answers.getvalue())["error"]
    assert not (tmp_path / "g.db").exists()
