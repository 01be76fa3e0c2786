"""The web console: its static files and the live stream of hold events.

The console is three static files served from the package under a strict
Content-Security-Policy (scripts and styles from this origin only, no inline code, no
framing, no form posts), so text an agent put in an action or a message can never run
as code. It talks to the same JSON API as the CLI with the approver's bearer token.

Live updates are Server-Sent Events on ``GET /v1/events``, authenticated like every
other API call. The console reads them with ``fetch`` (not ``EventSource``) so the
token travels in the Authorization header and never in a URL.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any, ClassVar

import structlog
import tornado.web
from tornado.iostream import StreamClosedError

from guardproxy.approvals.events import HoldEvent
from guardproxy.control.handler import ControlContext, ControlHandler
from guardproxy.store.base import StoreError

log = structlog.get_logger(__name__)

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
)
"""No inline script or style, nothing from elsewhere, forms never submitted by the browser
(the token field must never end up in a URL if the script fails), never framed."""

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-cache",
}

CONTENT_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}

HEARTBEAT_SECONDS = 15.0
"""A comment line this often keeps idle connections open through proxies, lets the
server notice a client that went away, and re-checks that the approver still exists."""

STREAM_BACKLOG = 256
"""Events queued for one slow client before its stream is closed (it reconnects and
reloads the queue, so nothing is lost but the flash messages)."""

MAX_STREAMS = 64
"""Concurrent event streams in this process; more are refused with 503 (each holds a
connection)."""


def console_files() -> dict[str, bytes]:
    """The console's files, read once from the installed package."""
    folder = resources.files("guardproxy.control").joinpath("console")
    return {name: folder.joinpath(name).read_bytes() for name in CONTENT_TYPES}


class ConsoleFileHandler(tornado.web.RequestHandler):
    """``/console`` and its assets. No token needed: the files hold no data."""

    def initialize(self, files: dict[str, bytes]) -> None:
        self.files = files

    def get(self, name: str | None = None) -> None:
        name = name or "index.html"
        body = self.files.get(name)
        if body is None:
            raise tornado.web.HTTPError(404)
        for header, value in SECURITY_HEADERS.items():
            self.set_header(header, value)
        self.set_header("Content-Type", CONTENT_TYPES[name])
        self.finish(body)


def event_json(event: HoldEvent) -> dict[str, Any]:
    return {
        "kind": event.kind,
        "hold_id": event.hold_id,
        "at": event.at.isoformat(),
        "summary": event.summary,
        "session": event.session_id,
        "actor": event.actor,
        "reason": event.reason,
    }


@dataclass
class _StreamCount:
    open: int = 0


class EventStream:
    """One client's bounded queue of events, fed from any thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[HoldEvent | None] = asyncio.Queue()
        self.overflowed = False

    def offer(self, event: HoldEvent) -> None:
        """Subscriber callback: publishers may run on any thread; never blocks."""
        self._loop.call_soon_threadsafe(self._put, event)

    def close(self) -> None:
        self._put(None)

    def _put(self, event: HoldEvent | None) -> None:
        if event is not None and self._queue.qsize() >= STREAM_BACKLOG:
            if not self.overflowed:
                self.overflowed = True
                self._queue.put_nowait(None)
            return
        self._queue.put_nowait(event)

    async def next(self, timeout: float) -> HoldEvent | bool | None:
        """The next event, None when closed, False when ``timeout`` passed without one."""
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return False


class EventsHandler(ControlHandler):
    """``GET /v1/events``: hold events as they happen, for as long as the client listens."""

    streams: ClassVar[_StreamCount] = _StreamCount()
    stream: EventStream | None = None

    async def get(self) -> None:
        if self.streams.open >= MAX_STREAMS:
            self.fail(503, f"too many event streams (at most {MAX_STREAMS})")
            return
        self.streams.open += 1
        stream = EventStream(asyncio.get_running_loop())
        self.stream = stream
        unsubscribe = self.ctx.events.subscribe(stream.offer)
        try:
            await self._pump(stream)
        finally:
            unsubscribe()
            self.streams.open -= 1

    async def _pump(self, stream: EventStream) -> None:
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Accel-Buffering", "no")
        sequence = 0
        chunk = "retry: 3000\n: connected\n\n"
        while True:
            try:
                self.write(chunk)
                await self.flush()
            except StreamClosedError:
                return
            item = await stream.next(HEARTBEAT_SECONDS)
            if item is None:
                break
            if item is False:
                if not await self._still_approver():
                    break
                chunk = ": keep-alive\n\n"
                continue
            assert isinstance(item, HoldEvent)
            sequence += 1
            chunk = f"id: {sequence}\nevent: hold\ndata: {json.dumps(event_json(item))}\n\n"
        if stream.overflowed:
            log.warning("console.events.overflow", backlog=STREAM_BACKLOG)
        if self.request.connection is not None and not self._finished:
            try:
                self.finish()
            except StreamClosedError:
                return

    async def _still_approver(self) -> bool:
        """A removed approver (or one given a new token) stops hearing events within a
        heartbeat; if the store cannot say, the stream ends and the reconnect is checked."""
        approver = self.approver
        if approver is None:
            return False
        try:
            current = await self.in_thread(lambda: self.ctx.store.get_approver(approver.name))
        except StoreError:
            return False
        return current is not None and current.token_hash == approver.token_hash

    def on_connection_close(self) -> None:
        if self.stream is not None:
            self.stream.close()


def console_routes(
    context: ControlContext,
) -> list[tuple[str, type[tornado.web.RequestHandler], dict[str, Any]]]:
    """The console's routes for ``make_app``: static files and the event stream."""
    files = console_files()
    return [
        (r"/console/?", ConsoleFileHandler, {"files": files}),
        (r"/console/([\w.-]+)", ConsoleFileHandler, {"files": files}),
        (r"/v1/events", EventsHandler, {"context": context}),
    ]
