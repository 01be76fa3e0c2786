"""Where the recorder's batches are redacted, chained and written.

* :class:`ProcessWriter` (``guardproxy serve``): a writer process of its own, fed
  through a pipe. Redaction, record hashes and SQL run on another core, outside
  the proxy's interpreter lock; the proxy's share of a read's record is building
  its draft and pickling it with the batch.
* :class:`StoreWriter`: the same work in the recorder's thread, for a store only
  this process can open (tests hand the gate a store object).

The writer process opens the store from the same location as the proxy and
appends to an audit chain of its own, so its batches never hold up the proxy's
appends of mutations (which wait for nothing but their own chain's lock); the
replicas' checkpoints bind both chains.

The pipe carries frames: a 4-byte big-endian length, then the payload. The first
frame is JSON: the store location (not an argument: a PostgreSQL URL may hold a
password, and arguments are visible to every user) and the drafts' fields; each
later one is a pickled ``(drafts, statuses)`` batch. The process answers on its
stdout with one JSON line when the store is open, then one per batch, and exits
when its stdin closes, after writing what it was sent.
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

from guardproxy.context import ContextParts
from guardproxy.gate.recorder import DecisionDraft
from guardproxy.store.base import DecisionRecord, Store, StoreError

log = structlog.get_logger(__name__)

OnError = Callable[[str], None]
"""Counts a failed store operation (``Metrics.store_error``)."""

_LENGTH = struct.Struct(">I")
_CHUNK = 500
"""Records per transaction."""
_START_TIMEOUT = 20.0
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
    # one transaction per chunk: a batch that piled up (a store that was away) must not
    # hold the write lock the proxy's own, fail-closed, writes wait for
    for start in range(0, len(records), _CHUNK):
        chunk = records[start : start + _CHUNK]
        try:
            store.append_decisions(chunk)
        except Exception as error:  # reported, and the writer goes on
            errors.append(f"{len(chunk)} decisions from {chunk[0].id}: {error}")
    try:
        if statuses:
            store.set_upstream_statuses(statuses)
    except Exception as error:
        errors.append(f"{len(statuses)} upstream statuses: {error}")
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
        self._sending = threading.Lock()  # held while a frame is in the pipe's write
        self._closed = False
        self._process, self._answers = self._start()

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def alive(self) -> bool:
        return self._process.poll() is None

    def write(self, drafts: list[DecisionDraft], statuses: list[tuple[str, int]]) -> None:
        last = "the writer is closed"
        try:
            payload = pickle.dumps((drafts, statuses), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as error:  # a value that does not pickle: the batch is reported lost
            payload, last = b"", f"cannot send the batch: {error}"
        for _ in range(2 if payload else 0):
            if self._closed:  # closing: a process killed for hanging is not replaced
                break
            try:  # a dead process is replaced once per batch
                if not self.alive:
                    log.error("decision_writer.restarting", exit_code=self._process.returncode)
                    self._process, self._answers = self._start()
                with self._sending:
                    _send(_stdin(self._process), payload)
                return
            except (OSError, StoreError, RuntimeError) as error:
                last = str(error)
                # a broken pipe can come before the exit is visible: let poll() see it
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._process.wait(1)
        log.error("decisions.not_recorded", count=len(drafts), error=last)
        if self._on_error is not None:
            self._on_error("append_decisions")

    def close(self, timeout: float) -> None:
        """Close the pipe, and wait (bounded) for what was sent to be written.

        A process that has not taken a frame within ``timeout`` (a store that hangs)
        is killed: that batch is lost, and the proxy's shutdown is not.
        """
        self._closed = True
        process = self._process
        if self._sending.acquire(timeout=timeout):
            try:
                with contextlib.suppress(OSError):  # gone already: wait() says how it ended
                    _stdin(process).close()
            finally:
                self._sending.release()
        else:  # the sender is stuck in a write: killing the reader end frees it
            process.kill()
            log.error("decision_writer.killed", reason="a batch was not taken", timeout=timeout)
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
            log.error("decision_writer.killed", reason="it did not finish", timeout=timeout)
        self._answers.join(timeout)  # the last batches' errors are reported before this returns
        if code != 0:
            log.error("decision_writer.exited", exit_code=code)

    def _start(self) -> tuple[subprocess.Popen[bytes], threading.Thread]:
        """The process, ready, and the thread reading its answers."""
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
        try:
            reader.start()
            with contextlib.suppress(OSError):  # died at once: its answer (or silence) says why
                _send(_stdin(process), json.dumps(_hello(self._location)).encode())
            if not ready.wait(self._start_timeout) or not started.get("ready"):
                reason = started.get("error", f"not ready within {self._start_timeout:g} s")
                raise StoreError(f"the decision writer process cannot start: {reason}")
        except BaseException:
            process.kill()
            process.wait()
            raise
        return process, reader

    def _read_answers(
        self, process: subprocess.Popen[bytes], started: dict[str, Any], ready: threading.Event
    ) -> None:
        """The process's answers: first whether the store opened, then each batch's errors."""
        assert process.stdout is not None  # opened with PIPE
        for line in process.stdout:
            try:
                answer = json.loads(line)
            except ValueError:
                answer = None
            if not isinstance(answer, dict):
                answer = {"error": f"unreadable answer {line[:200]!r}"}
            if not ready.is_set():
                started.update(answer)
                ready.set()
                continue
            errors = answer.get("errors", [answer.get("error")])
            _report([str(error) for error in errors], self._on_error)
        if not ready.is_set():
            started["error"] = f"it exited (code {process.wait()}) before opening the store"
            ready.set()


def _hello(location: str) -> dict[str, Any]:
    """The first frame: where to write, and the draft's shape as this proxy knows it.

    Drafts are tuples: a writer started from newer code on disk (an upgrade while the
    proxy runs) would read their fields in the wrong places, so it refuses instead.
    """
    return {
        "store": location,
        "draft": list(DecisionDraft._fields),
        "context": list(ContextParts._fields),
    }


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


class _Answers:
    """The writer process's answers; once the proxy is gone, nobody reads them, and the
    writing goes on (what the proxy sent before it died is still written)."""

    def __init__(self, out: IO[str]) -> None:
        self._out: IO[str] | None = out

    def __call__(self, answer: dict[str, Any]) -> None:
        if self._out is None:
            return
        try:
            self._out.write(json.dumps(answer) + "\n")
            self._out.flush()
        except OSError:
            self._out = None


def serve(pipe: IO[bytes], out: IO[str]) -> int:
    """The writer process: open the store named by the first frame, write every batch."""
    from guardproxy.store import open_store  # noqa: PLC0415 - the process's own import

    answer = _Answers(out)
    first = _receive(pipe)
    if first is None:
        return 1
    hello = json.loads(first)
    expected = _hello(hello["store"])
    if hello != expected:
        answer(
            {"error": f"this writer's records have other fields: {expected} (restart guardproxy)"}
        )
        return 1
    try:
        store = open_store(hello["store"], writer="decision writer")
    except StoreError as error:
        answer({"error": str(error)})
        return 1
    answer({"ready": True})
    try:
        while (frame := _receive(pipe)) is not None:
            try:
                drafts, statuses = pickle.loads(frame)  # our parent, our pipe
            except Exception as error:  # a frame we cannot read is reported, not fatal
                answer({"errors": [f"unreadable batch: {error}"]})
                continue
            answer({"errors": write_batch(store, drafts, statuses)})
    finally:
        store.close()
    return 0


def main() -> int:
    # the proxy decides when this process stops: it closes the pipe (or dies, which
    # closes it too); a Ctrl-C or a service manager's SIGTERM to the whole group must not
    # cut the last batches short
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # answers keep the real stdout; anything else printed (a log line) goes to stderr
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return serve(sys.stdin.buffer, answers)


if __name__ == "__main__":
    sys.exit(main())
