"""Records decisions without a disk sync, or a redaction, per request on the read path.

A mutating request's decision is written before the request is forwarded (the
gate does that synchronously). Reads, and upstream statuses, go through this
recorder: a request appends to a deque, and once per ``interval`` (1 s) the
recorder hands the batch to a :class:`~guardproxy.gate.writer.Writer`. A read
whose upstream status arrives in the same batch is written with it, as one chain
record; a status that comes later gets its own ``upstream`` record.

What a request leaves behind is a :class:`DecisionDraft`: the JSON the decision
already computed (the action's and the context's are cached for the input hash),
not yet redacted. Redaction, hashing and SQL are the writer's, which in
``guardproxy serve`` is a process of its own, so that work never takes the
interpreter lock from the event loop. A draft is built when the request is decided,
not when its batch is written: keeping a second of requests' objects alive for the
batch tripled the proxy's full garbage collections (about 100 us per read).
bench/audit_bench.py: reads through the recording proxy at 0.95-1.02 of the
unrecorded throughput.

A read is forwarded before it is recorded in any case; the interval only bounds
how much a crash of the proxy process can lose.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import NamedTuple, Protocol

import structlog

from guardproxy.context import ContextParts
from guardproxy.redact import redact_context_json, redact_model_json
from guardproxy.store.base import DecisionRecord

log = structlog.get_logger(__name__)


class DecisionDraft(NamedTuple):
    """A decision record before redaction; a tuple, so a batch pickles cheaply (the
    parts shared by many records, a session's JSON, are pickled once per batch)."""

    id: str
    at: datetime
    session_id: str
    action_json: str
    context: ContextParts
    decision_json: str
    outcome: str
    hold_id: str | None
    upstream_status: int | None
    provider: str
    shadow_json: str | None
    """Already safe to keep: the gate redacts the shadow's messages."""

    def redacted(self) -> DecisionRecord:
        """The record to store: every JSON field with credential shapes removed."""
        return DecisionRecord(
            id=self.id,
            at=self.at,
            session_id=self.session_id,
            action_json=redact_model_json(self.action_json),
            context_json=redact_context_json(self.context),
            decision_json=redact_model_json(self.decision_json),
            outcome=self.outcome,
            hold_id=self.hold_id,
            upstream_status=self.upstream_status,
            provider=self.provider,
            shadow_json=self.shadow_json,
        )


Build = Callable[[int | None], DecisionDraft]
"""Builds a decision's draft, given the upstream's status when it is already known."""


class Writer(Protocol):
    """Where batches go. ``write`` never raises: a writer logs and counts its failures."""

    def write(self, drafts: list[DecisionDraft], statuses: list[tuple[str, int]]) -> None: ...

    def close(self, timeout: float) -> None: ...


class DecisionRecorder:
    """One sender thread that wakes once per batch, not once per request.

    The thread shares the proxy's interpreter lock, and every wake-up hands that lock
    back and forth with the event loop. So a request only appends to a deque (no
    lock, no notification); the first item of a batch sets an event, and the thread
    waits ``interval`` for the rest of the batch before building its drafts and
    handing them to the writer.
    """

    def __init__(self, writer: Writer, *, interval: float = 1.0) -> None:
        self._writer = writer
        self._interval = interval
        self._items: deque[tuple[str, DecisionDraft | Build | int]] = deque()
        self._pending = threading.Event()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="decision-recorder", daemon=True)
        self._thread.start()

    def record(self, decision_id: str, record: DecisionDraft | Build) -> None:
        """Queue a record: a draft, or a function the sender thread builds it with (for a
        draft that costs time to build, such as one with a shadow decision).

        A draft is what to prefer: a function keeps the request's objects alive until its
        batch is written, and a second of requests kept alive makes the interpreter's
        full garbage collections several times as frequent.
        """
        self._items.append((decision_id, record))
        self._wake()

    def status(self, decision_id: str, status: int) -> None:
        self._items.append((decision_id, status))
        self._wake()

    def close(self, timeout: float = 10.0) -> None:
        """Hand over what is queued, then stop the writer (bounded by ``timeout`` each)."""
        self._closing.set()
        self._pending.set()
        self._thread.join(timeout)
        self._writer.close(timeout)

    def _wake(self) -> None:
        # appended before the check, and the sender clears before it drains: no item
        # is left behind, whichever way the two threads interleave
        if not self._pending.is_set():
            self._pending.set()

    def _run(self) -> None:
        while True:
            self._pending.wait()
            self._closing.wait(self._interval)  # let the batch gather (unless closing)
            self._pending.clear()
            items = []
            while self._items:
                items.append(self._items.popleft())
            if items:
                try:
                    self._hand_over(items)
                except Exception as error:  # the thread must outlive one bad batch
                    log.error("decisions.not_recorded", count=len(items), error=str(error))
            if self._closing.is_set() and not self._items:
                return

    def _hand_over(self, items: list[tuple[str, DecisionDraft | Build | int]]) -> None:
        statuses = {key: item for key, item in items if isinstance(item, int)}
        drafts: list[DecisionDraft] = []
        for decision_id, item in items:
            if isinstance(item, int):
                continue
            # the answer came before the record was written: one chain record, not two
            status = statuses.pop(decision_id, None)
            if isinstance(item, DecisionDraft):
                drafts.append(item if status is None else item._replace(upstream_status=status))
                continue
            try:
                drafts.append(item(status))
            except Exception as error:  # one record that cannot be built loses only itself
                log.error("decision.not_recorded", decision=decision_id, error=str(error))
        self._writer.write(drafts, list(statuses.items()))
