"""Where the recorder's batches are redacted, chained and written.

* :class:`ProcessWriter` (``guardproxy serve``): a writer process of its own, fed
  through a pipe. Redaction, record hashes and SQL run on another core, outside
  the proxy's interpreter lock; the proxy's share of a read's record is building
  its draft and pickling it with the batch.
* :class:`StoreWriter`: the same work in the recorder's thread, for a store only
  this process can open (tests hand the gate a store object).

The writer process opens the store from the same location as the proxy; the
chain stays one chain because every append reads the head inside its write
transaction (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: the chain lock).

The pipe carries frames: a 4-byte big-endian length, then the payload. The first
frame is the store location (not an argument: a PostgreSQL URL may hold a
password, and arguments are visible to every user); each later one is a pickled
``(drafts, statuses)`` batch. The process answers on its stdout with one JSON line
when the store is open, then one per batch, and exits when its stdin closes,
after writing what it was sent.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import structlog

from guardproxy.gate.recorder import DecisionDraft
from guardproxy.store.base import DecisionRecord, Store, StoreError

log = structlog.get_logger(__name__)

OnError = Callable[[str], None]
"""Counts a failed store operation (``Metrics.store_error``)."""

_LENGTH = struct.Struct(">I")
_START_TIMEOUT = 30.0
"""Seconds the writer process may take to import and open the store."""


def write_batch(
    store: Store, drafts: list[DecisionDraft], statuses: list[tuple[str, int]]
) -> list[str]:
    """Redact and write one batch; returns what failed, for the caller to report."""
    errors: list[str] = []
    records: list[DecisionRecord] = []
    for draft in drafts:
        try:
            records.append(draft.redacted())
        except Exception as error:  # one record that cannot be redacted loses only itself
            errors.append(f"decision {draft.id}: {error}")
    try:
        if records:
            store.append_decisions(records)
        if statuses:
            store.set_upstream_statuses(statuses)
    except Exception as error:  # reported, and the writer goes on with the next batch
        errors.append(f"{len(records)} decisions, {len(statuses)} statuses: {error}")
    return errors


class StoreWriter:
    """Writes in the calling thread."""

    def __init__(self, store: Store, on_error: OnError | None = None) -> None:
        self._store = store
        self._on_error = on_error

    def write(self, drafts: list[DecisionDraft], statuses: list[tuple[str, int]]) -> None:
        errors = write_batch(self._store, drafts, statuses)
        _report(errors, self._on_error)

    def close(self, timeout: float) -> None:
        """Nothing to stop: the store belongs to the caller."""


class ProcessWriter:
    """Feeds a writer process, and starts a new one when it has died.

    A process that dies takes the batch it was writing with it (logged, as the
    proxy's own crash would lose its queue); the next batch starts a new process.
    """

    def __init__(
        self,
        location: str,
        *,
        on_error: OnError | None = None,
        start_timeout: float = _START_TIMEOUT,
    ) -> None:
        """Start the process and wait until it has opened the store; raises
        :class:`StoreError` if it cannot."""
        self._location = location
        self._on_error = on_error
        self._start_timeout = start_timeout
        self._process = self._start()

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def alive(self) -> bool:
        return self._process.poll() is None

    def write(self, drafts: list[DecisionDraft], statuses: list[tuple[str, int]]) -> None:
        payload = pickle.dumps((drafts, statuses), protocol=pickle.HIGHEST_PROTOCOL)
        last = ""
        for _ in range(2):  # a dead process is replaced once per batch
            try:
                if not self.alive:
                    log.error("decision_writer.restarting", exit_code=self._process.returncode)
                    self._process = self._start()
                _send(_stdin(self._process), payload)
                return
            except (OSError, StoreError) as error:
                last = str(error)
        log.error("decisions.not_recorded", count=len(drafts), error=last)
        if self._on_error is not None:
            self._on_error("append_decisions")

    def close(self, timeout: float) -> None:
        """Close the pipe, and wait (bounded) for what was sent to be written."""
        process = self._process
        with contextlib.suppress(OSError):  # gone already: wait() below says how it ended
            _stdin(process).close()
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
            log.error("decision_writer.killed", timeout=timeout)
        if code != 0:
            log.error("decision_writer.exited", exit_code=code)

    def _start(self) -> subprocess.Popen[bytes]:
        package_root = str(Path(__file__).resolve().parents[2])
        python_path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PYTHONPATH": python_path}
        process = subprocess.Popen(
            [sys.executable, "-m", "guardproxy.gate.writer"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            start_new_session=True,  # a terminal's Ctrl-C stops the proxy, which closes the pipe
        )
        ready = threading.Event()
        started: dict[str, Any] = {}
        reader = threading.Thread(
            target=self._read_answers,
            args=(process, started, ready),
            name=f"decision-writer-{process.pid}",
            daemon=True,
        )
        reader.start()
        with contextlib.suppress(OSError):  # died at once: its answer (or silence) says why
            _send(_stdin(process), self._location.encode())
        if not ready.wait(self._start_timeout) or "error" in started:
            process.kill()
            process.wait()
            reason = started.get("error", f"not ready within {self._start_timeout:g} s")
            raise StoreError(f"the decision writer process cannot start: {reason}")
        return process

    def _read_answers(
        self, process: subprocess.Popen[bytes], started: dict[str, Any], ready: threading.Event
    ) -> None:
        """The process's answers: first whether the store opened, then each batch's errors."""
        assert process.stdout is not None  # opened with PIPE
        for line in process.stdout:
            try:
                answer = json.loads(line)
            except ValueError:
                answer = {"errors": [f"unreadable answer {line[:200]!r}"]}
            if not ready.is_set():
                started.update(answer)
                ready.set()
                continue
            _report(answer.get("errors", []), self._on_error)
        if not ready.is_set():
            started["error"] = f"it exited (code {process.wait()}) before opening the store"
            ready.set()


def _report(errors: list[str], on_error: OnError | None) -> None:
    for error in errors:
        log.error("decisions.not_recorded", error=error)
        if on_error is not None:
            on_error("append_decisions")


def _stdin(process: subprocess.Popen[bytes]) -> IO[bytes]:
    assert process.stdin is not None  # opened with PIPE
    return process.stdin


def _send(pipe: IO[bytes], payload: bytes) -> None:
    pipe.write(_LENGTH.pack(len(payload)) + payload)
    pipe.flush()


def _receive(pipe: IO[bytes]) -> bytes | None:
    """One frame, or None at the end of the stream."""
    header = pipe.read(_LENGTH.size)
    if len(header) < _LENGTH.size:
        return None
    (length,) = _LENGTH.unpack(header)
    payload = pipe.read(length)
    if len(payload) < length:
        return None  # the proxy died mid-frame: that batch is lost, as with its queue
    return payload


def _answer(out: IO[str], answer: dict[str, Any]) -> None:
    out.write(json.dumps(answer) + "\n")
    out.flush()


def serve(pipe: IO[bytes], out: IO[str]) -> int:
    """The writer process: open the store named by the first frame, write every batch."""
    from guardproxy.store import open_store  # noqa: PLC0415 - the process's own import

    location = _receive(pipe)
    if location is None:
        return 1
    try:
        store = open_store(location.decode())
    except StoreError as error:
        _answer(out, {"error": str(error)})
        return 1
    _answer(out, {"ready": True})
    try:
        while (frame := _receive(pipe)) is not None:
            try:
                drafts, statuses = pickle.loads(frame)  # our parent, our pipe
            except Exception as error:  # a frame we cannot read is reported, not fatal
                _answer(out, {"errors": [f"unreadable batch: {error}"]})
                continue
            _answer(out, {"errors": write_batch(store, drafts, statuses)})
    finally:
        store.close()
    return 0


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the proxy decides when we stop: it closes stdin
    # answers keep the real stdout; anything else printed (a log line) goes to stderr
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return serve(sys.stdin.buffer, answers)


if __name__ == "__main__":
    sys.exit(main())
