"""Records decisions without a disk sync per request on the read path.

A mutating request's decision is written before the request is forwarded (the
gate does that synchronously). Reads, and upstream statuses, go through this
queue and are written in batches: one transaction, one sync, per batch.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

import structlog

from guardproxy.store.base import DecisionRecord, Store

log = structlog.get_logger(__name__)

_Item = Callable[[], DecisionRecord] | tuple[str, int] | None


class DecisionRecorder:
    def __init__(self, store: Store, *, interval: float = 0.05, batch: int = 500) -> None:
        self._store = store
        self._interval = interval
        self._batch = batch
        self._queue: queue.Queue[_Item] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="decision-recorder", daemon=True)
        self._thread.start()

    def record(self, build: Callable[[], DecisionRecord]) -> None:
        """Queue a record; ``build`` runs on the writer thread (serialising costs time)."""
        self._queue.put(build)

    def status(self, decision_id: str, status: int) -> None:
        self._queue.put((decision_id, status))

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            items: list[_Item] = [self._queue.get()]
            try:
                while len(items) < self._batch:
                    items.append(self._queue.get(timeout=self._interval))
            except queue.Empty:
                pass
            stopping = None in items
            self._write([i for i in items if i is not None])

    def _write(self, items: list[Callable[[], DecisionRecord] | tuple[str, int]]) -> None:
        statuses = [i for i in items if isinstance(i, tuple)]
        try:
            records = [i() for i in items if not isinstance(i, tuple)]
            if records:
                self._store.append_decisions(records)
            if statuses:
                self._store.set_upstream_statuses(statuses)
        except Exception as error:  # the writer thread must outlive one bad batch
            log.error("decisions.not_recorded", count=len(items), error=str(error))
