"""Work done on hold events off the publisher's thread: each event a task on the loop,
a hold's events one after another (a page is triggered before it is resolved, a chat
message posted before it is updated), different holds side by side."""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar

import structlog

from guardproxy.approvals.events import HoldEvent, HoldEventKind, HoldEvents

__all__ = ["HoldEventWorker"]

log = structlog.get_logger(__name__)


class HoldEventWorker(ABC):
    """Subscribe with :meth:`start`; :meth:`work` runs for each event of ``kinds``."""

    kinds: ClassVar[frozenset[HoldEventKind]]
    final_kinds: ClassVar[frozenset[HoldEventKind]] = frozenset({"denied", "expired", "released"})
    """After these no event of ``kinds`` comes for the hold (its turn-keeping is dropped)."""
    name: ClassVar[str]

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._locks: dict[str, asyncio.Lock] = {}
        self._unsubscribe: Callable[[], None] | None = None

    @abstractmethod
    async def work(self, event: HoldEvent) -> None:
        """Handle one event; called after the earlier events of the same hold."""

    def start(self, events: HoldEvents) -> None:
        self._loop = asyncio.get_running_loop()
        self._unsubscribe = events.subscribe(self.offer)

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._loop = None

    async def idle(self) -> None:
        """Wait until every event offered so far is handled (tests)."""
        await asyncio.sleep(0)  # events offered from this loop's thread are scheduled next
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
            await asyncio.sleep(0)

    def offer(self, event: HoldEvent) -> None:
        """HoldEvents subscriber: any thread, returns at once."""
        if self._loop is None or event.kind not in self.kinds:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closing: guardproxy stops
            self._loop.call_soon_threadsafe(self._spawn, event)

    def _spawn(self, event: HoldEvent) -> None:
        task = asyncio.create_task(self.handle(event), name=f"{self.name} {event.hold_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def handle(self, event: HoldEvent) -> None:
        """``work`` on one event in its hold's turn; a failure is logged, never raised."""
        lock = self._locks.setdefault(event.hold_id, asyncio.Lock())
        try:
            async with lock:
                await self.work(event)
        except Exception:
            log.exception(f"{self.name}.failed", hold=event.hold_id, kind=event.kind)
        finally:
            if event.kind in self.final_kinds and not lock.locked():
                self._locks.pop(event.hold_id, None)
