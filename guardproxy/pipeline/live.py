"""The pipeline on the proxy's event loop: where each step runs, so reads stay fast.

* A request whose body is at most :data:`INLINE_BODY_BYTES` is decided inline on the
  event loop: deciding it costs about what a hop to a worker thread and back does (and a
  thread runs no faster: it needs the same interpreter lock). A larger body (a big SQL
  script, a plan's JSON) is decided in a thread, so the loop keeps serving others.
* The gate applies the decision where it was made when that waits for nothing but
  CPU (``settle_inline``: the store commits without waiting for a disk or a network,
  SQLite with ``synchronous = normal``); otherwise, in a worker thread.
* A change is recorded into the session history *before* the request goes out, so the
  session's next decision sees it: in the gate's decision record transaction, through
  the :class:`Journal` the gate is handed (one commit for both), else in a thread.
* A read changes no resource's history: it is queued and recorded in a batch
  :data:`READ_BATCH_SECONDS` after the first read of the batch, off the loop. A decision
  made meanwhile does not count the reads still queued.

The steps themselves are :class:`~guardproxy.pipeline.steps.Pipeline`'s; replay runs the
same steps one after the other.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime

from guardproxy.action import Action, Verb
from guardproxy.context import SessionInfo
from guardproxy.pipeline.steps import Pipeline, Verdict
from guardproxy.recognise.request import HttpRequest
from guardproxy.session.names import ResponseLearner
from guardproxy.store.base import SessionEvent

READ_BATCH_SECONDS = 0.05
"""How long the first read of a batch waits for others before the batch is recorded."""
INLINE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
"""Methods whose requests are decided on the event loop when they carry no body (always:
a read recorded in the background)."""
INLINE_BODY_BYTES = 16 * 1024
"""The largest body a request decided on the event loop may carry."""


class LivePipeline:
    """:class:`Pipeline` scheduled on the running event loop, with the proxy's clock."""

    def __init__(
        self, pipeline: Pipeline, clock: Callable[[], datetime], *, settle_inline: bool = False
    ) -> None:
        """``settle_inline``: the ``then`` of :meth:`decide_then` (the gate applying a
        decision, its record's commit included) waits for no disk and no network, so it
        may run on the event loop."""
        self.pipeline = pipeline
        self._clock = clock
        self._settle_inline = settle_inline
        self._reads: list[tuple[Action, str, str, datetime]] = []
        self._unrecorded = 0

    @property
    def unrecorded_reads(self) -> int:
        """Reads decided whose history record is not written yet (queued or being written)."""
        return self._unrecorded

    async def decide(self, request: HttpRequest, session: SessionInfo) -> Verdict:
        if _decided_inline(request):
            return self.pipeline.decide(request, session, self._clock())
        return await asyncio.to_thread(self._decide_now, request, session)

    def _decide_now(self, request: HttpRequest, session: SessionInfo) -> Verdict:
        return self.pipeline.decide(request, session, self._clock())

    async def decide_then[T](
        self, request: HttpRequest, session: SessionInfo, then: Callable[[Verdict], T]
    ) -> tuple[Verdict, T | None]:
        """:meth:`decide`, then ``then`` of the verdict where it may run: on the event loop
        after an inline decision when ``settle_inline``, else in a worker thread (after a
        decision there: one hop for both). ``then`` is not called for a bodiless read
        method decided inline without ``settle_inline`` (the caller applies it on the
        loop: a read's record is written in the background)."""
        if _decided_inline(request):
            verdict = self.pipeline.decide(request, session, self._clock())
            if self._settle_inline:
                return verdict, then(verdict)
            if request.method in INLINE_METHODS and not request.body:
                return verdict, None
            return verdict, await asyncio.to_thread(then, verdict)

        def decide_and_then() -> tuple[Verdict, T | None]:
            verdict = self._decide_now(request, session)
            return verdict, then(verdict)

        return await asyncio.to_thread(decide_and_then)

    def journal(self, verdict: Verdict) -> Journal:
        """What the gate stores with ``verdict``'s decision record (a change's)."""
        return Journal(self.pipeline, verdict, self._clock)

    async def after(
        self, verdict: Verdict, outcome: str, journal: Journal | None = None
    ) -> ResponseLearner | None:
        """Record the gate's ``outcome`` (a change before returning, unless ``journal``
        stored it with the decision; a read in a batch later) and return the learner for
        the response, if any."""
        action, session_id = verdict.action, verdict.session.id
        if action.verb is Verb.READ:
            self._queue_read(action, session_id, outcome)
        elif journal is None or journal.outcome != outcome:
            at = self._clock()
            await asyncio.to_thread(self.pipeline.record, action, session_id, outcome, at)
        return self.pipeline.learner(action, outcome)

    def _queue_read(self, action: Action, session_id: str, outcome: str) -> None:
        # the action alone is kept until the batch: a verdict's context would keep more alive
        self._reads.append((action, session_id, outcome, self._clock()))
        self._unrecorded += 1
        if len(self._reads) == 1:
            asyncio.get_running_loop().call_later(READ_BATCH_SECONDS, self._flush_reads)

    def _flush_reads(self) -> None:
        batch, self._reads = self._reads, []
        record = self.pipeline.record

        def record_all() -> None:
            for action, session_id, outcome, at in batch:
                record(action, session_id, outcome, at)

        written = asyncio.get_running_loop().run_in_executor(None, record_all)
        written.add_done_callback(lambda _: self._recorded(len(batch)))

    def _recorded(self, count: int) -> None:
        self._unrecorded -= count


def _decided_inline(request: HttpRequest) -> bool:
    return len(request.body) <= INLINE_BODY_BYTES


class Journal:
    """The session history of one change, handed to the gate (``gate.Journal``): its
    events go into the decision record's transaction and ``outcome`` says, once that
    committed, for which outcome they were stored (None: not stored, :meth:`LivePipeline.after`
    records them)."""

    def __init__(self, pipeline: Pipeline, verdict: Verdict, clock: Callable[[], datetime]) -> None:
        self._pipeline = pipeline
        self._verdict = verdict
        self._clock = clock
        self.outcome: str | None = None

    def __call__(self, outcome: str, write: Callable[[Sequence[SessionEvent]], None]) -> None:
        def stored(events: Sequence[SessionEvent]) -> None:
            write(events)
            self.outcome = outcome

        verdict = self._verdict
        self._pipeline.record_with(
            verdict.action, verdict.session.id, outcome, self._clock(), stored
        )


__all__ = [
    "INLINE_BODY_BYTES",
    "INLINE_METHODS",
    "READ_BATCH_SECONDS",
    "Journal",
    "LivePipeline",
]
