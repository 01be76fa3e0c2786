"""Requests waiting live on holds, and waking them when a hold is resolved.

Each waiting request holds a future of its loop; :meth:`Waiters.wake` must run on that
loop (the store's listener thread hands over with ``call_soon_threadsafe``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from guardproxy.store.base import HoldState


@dataclass
class Waiters:
    """Live requests waiting on holds, woken when a hold is resolved."""

    futures: dict[str, set[asyncio.Future[HoldState]]] = field(default_factory=dict)

    def add(self, hold_id: str) -> asyncio.Future[HoldState]:
        future: asyncio.Future[HoldState] = asyncio.get_running_loop().create_future()
        self.futures.setdefault(hold_id, set()).add(future)
        return future

    def remove(self, hold_id: str, future: asyncio.Future[HoldState]) -> None:
        waiting = self.futures.get(hold_id)
        if waiting is not None:
            waiting.discard(future)
            if not waiting:
                del self.futures[hold_id]

    def wake(self, hold_id: str, state: HoldState) -> int:
        """Answer the requests waiting on ``hold_id`` with ``state``; how many there were.
        Call on their event loop."""
        woken = 0
        for future in self.futures.get(hold_id, set()):
            if not future.done():
                future.set_result(state)
                woken += 1
        return woken

    def wake_all(self, state: HoldState) -> None:
        for hold_id in list(self.futures):
            self.wake(hold_id, state)
