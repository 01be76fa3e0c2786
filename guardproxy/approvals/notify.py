"""Tell people about holds: deliver hold events to every notification target.

Each notification target has its own bounded queue and its own asyncio task. The gate
publishes an event and moves on; a slow or failing receiver delays only its own
messages. A message that cannot be delivered after its retries is logged and dropped:
the hold itself lives in the store, stays pending and approvable from the console or
CLI, and expires to a deny, so no notification failure can release or lose it.

What a message says and how it is signed is the target's channel's business
(approvals/channels.py, one class per kind); how it travels is an :class:`HttpTransport`
(tornado's HTTP client by default, :class:`TornadoTransport`), so tests drive a channel
and the retry loop through a transport of their own, without a receiver server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest, HTTPResponse

from guardproxy.approvals.channels import Channel, HoldFacts, channel
from guardproxy.approvals.events import HoldEvent, HoldEvents
from guardproxy.approvals.targets import NotificationTarget
from guardproxy.store.base import Store, StoreError

__all__ = [
    "QUEUE_LIMIT",
    "HttpPost",
    "HttpTransport",
    "Notifications",
    "Notifier",
    "NotifyConfigError",
    "Outcome",
    "TornadoTransport",
    "TransportError",
    "backoff_delay",
    "hold_facts",
    "read_secret",
]

log = structlog.get_logger(__name__)

QUEUE_LIMIT = 1000
"""Events waiting per target; beyond it new ones are dropped (and logged), never waited for."""
RESPONSE_LIMIT = 1024 * 1024
"""Bytes of a receiver's answer read at most (its body is never used)."""


class NotifyConfigError(Exception):
    """A notification target cannot be used; the message says which and what to do."""


def read_secret(target: NotificationTarget) -> bytes:
    """The target's signing secret from its file or environment variable (never logged)."""
    where = target.label()
    if target.secret_file is not None:
        try:
            value = target.secret_file.read_text(encoding="utf-8").strip()
        except OSError as error:
            raise NotifyConfigError(
                f"notification {where}: cannot read the secret file {target.secret_file}: "
                f"{error.strerror}; create it (e.g. `openssl rand -hex 32 > FILE; chmod 600 FILE`)"
            ) from None
        source = f"the secret file {target.secret_file}"
    elif target.secret_env is not None:
        value = os.environ.get(target.secret_env, "").strip()
        source = f"the environment variable {target.secret_env}"
    else:
        return b""
    if not value:
        raise NotifyConfigError(f"notification {where}: {source} is empty or unset")
    return value.encode("utf-8")


def hold_facts(store: Store, hold_id: str) -> HoldFacts | None:
    """The hold's message and determining rules from the store (None if unavailable:
    the notification is still sent, with the summary only)."""
    try:
        hold = store.get_hold(hold_id)
    except StoreError as error:
        log.warning("notify.hold_lookup_failed", hold=hold_id, error=str(error))
        return None
    if hold is None:
        return None
    try:
        decision = json.loads(hold.decision_json)
    except ValueError:
        return None
    rules = decision.get("determining_rules") or []
    return HoldFacts(
        str(decision.get("message", "")), tuple(str(r) for r in rules), _impact(store, hold_id)
    )


def _impact(store: Store, hold_id: str) -> dict[str, Any] | None:
    """The hold's impact preview for a notification, None while it is being gathered."""
    try:
        found = store.hold_impacts([hold_id]).get(hold_id)
    except StoreError:
        return None
    if found is None:
        return None
    try:
        facts = json.loads(found.impact_json)
    except ValueError:
        facts = {}
    known = found.status == "known"
    return {
        "status": found.status,
        "summary": found.summary,
        "line": found.summary if known else f"impact unknown: {found.summary}",
        "facts": facts,
    }


# ---------------------------------------------------------------------- transport


@dataclass(frozen=True, slots=True)
class HttpPost:
    """One attempt to deliver: a POST of ``body`` to ``url``, redirects not followed."""

    url: str
    headers: Mapping[str, str]
    body: bytes
    timeout: float
    """Seconds to connect, and again to get the answer."""


class TransportError(Exception):
    """No answer at all (refused, reset, timed out, TLS failure): always worth a retry.
    The message is one line for the log and never holds the URL's path."""


class HttpTransport(Protocol):
    """Sends one :class:`HttpPost` and returns the answer's status code, whatever it is
    (a 503 is an answer, not an error); raises :class:`TransportError` when there is none.
    """

    async def post(self, request: HttpPost) -> int: ...

    def close(self) -> None: ...


class TornadoTransport:
    """The real transport: tornado's HTTP client, one instance per target (its own
    connections and limits), created on the loop that runs the notifier."""

    def __init__(self) -> None:
        self._client = AsyncHTTPClient(force_instance=True, max_body_size=RESPONSE_LIMIT)

    async def post(self, request: HttpPost) -> int:
        outgoing = HTTPRequest(
            request.url,
            method="POST",
            headers=dict(request.headers),
            body=request.body,
            request_timeout=request.timeout,
            connect_timeout=request.timeout,
            follow_redirects=False,
        )
        try:
            response: HTTPResponse = await self._client.fetch(outgoing, raise_error=False)
        except HTTPClientError as failure:  # 599: no answer (time-out, closed connection)
            raise TransportError(f"HTTP {failure.code}") from None
        except OSError as failure:
            raise TransportError(f"{type(failure).__name__}: {failure}") from None
        return response.code

    def close(self) -> None:
        self._client.close()


# ----------------------------------------------------------------------- delivery


@dataclass(frozen=True, slots=True)
class Outcome:
    delivered: bool
    attempts: int
    last_error: str = ""


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with full jitter before retry ``attempt`` (1 = first retry):
    spreads retries from many guardproxies instead of hammering a recovering receiver."""
    return random.uniform(0, min(cap, base * 2 ** (attempt - 1)))  # jitter, not a secret


class Notifier:
    """One target: a bounded queue and a task that delivers, retrying with backoff.

    ``transport`` is how messages travel; without one, :meth:`start` makes a
    :class:`TornadoTransport` (and :meth:`stop` closes it). A transport given is the
    caller's to close.
    """

    def __init__(
        self,
        target: NotificationTarget,
        secret: bytes,
        *,
        console_url: Callable[[], str],
        facts: Callable[[str], HoldFacts | None],
        transport: HttpTransport | None = None,
        queue_limit: int = QUEUE_LIMIT,
    ) -> None:
        self.target = target
        self.channel: Channel = channel(target.kind)
        self._secret = secret
        self._console_url = console_url
        self._facts = facts
        self._transport = transport
        self._owns_transport = transport is None
        self._queue_limit = queue_limit
        self._queue: asyncio.Queue[HoldEvent] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue(maxsize=self._queue_limit)
        if self._transport is None:
            self._transport = TornadoTransport()
        self._task = asyncio.create_task(self._run(), name=f"notify {self.target.label()}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._owns_transport and self._transport is not None:
            self._transport.close()
            self._transport = None

    def offer(self, event: HoldEvent) -> None:
        """HoldEvents subscriber: called on any thread, returns at once."""
        if event.kind not in self.target.events or self._loop is None:
            return
        try:
            self._loop.call_soon_threadsafe(self._enqueue, event)
        except RuntimeError:  # the loop is closing: guardproxy is stopping
            self.dropped += 1

    def _enqueue(self, event: HoldEvent) -> None:
        assert self._queue is not None
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning(
                "notify.dropped", target=self.target.label(), hold=event.hold_id,
                kind=event.kind, reason="queue full",
            )  # fmt: skip

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            event = await self._queue.get()
            try:
                outcome = await self.deliver(event)
            except Exception:  # a bug here must not stop later notifications
                log.exception("notify.failed", target=self.target.label(), hold=event.hold_id)
                continue
            if outcome.delivered:
                log.info(
                    "notify.sent", target=self.target.label(), hold=event.hold_id,
                    kind=event.kind, attempts=outcome.attempts,
                )  # fmt: skip
            else:
                log.warning(
                    "notify.gave_up", target=self.target.label(), hold=event.hold_id,
                    kind=event.kind, attempts=outcome.attempts, error=outcome.last_error,
                )  # fmt: skip

    async def deliver(self, event: HoldEvent) -> Outcome:
        """Send one event, retrying transient failures up to ``max_attempts`` times."""
        facts = await asyncio.to_thread(self._facts, event.hold_id)
        payload = self.channel.payload(event, facts, self._console_url())
        body = json.dumps(payload).encode("utf-8")
        delivery = secrets.token_hex(8)
        error = ""
        for attempt in range(1, self.target.max_attempts + 1):
            if attempt > 1:
                await asyncio.sleep(
                    backoff_delay(
                        attempt - 1, self.target.backoff_seconds, self.target.max_backoff_seconds
                    )
                )
            retry, error = await self._post(event, body, delivery)
            if not error:
                return Outcome(True, attempt)
            log.info(
                "notify.attempt_failed", target=self.target.label(), hold=event.hold_id,
                attempt=attempt, error=error, retry=retry,
            )  # fmt: skip
            if not retry:
                return Outcome(False, attempt, error)
        return Outcome(False, self.target.max_attempts, error)

    async def _post(self, event: HoldEvent, body: bytes, delivery: str) -> tuple[bool, str]:
        """One attempt: ("", …) on success, else (retry?, what went wrong)."""
        assert self._transport is not None, "start() the notifier first"
        headers = self.channel.headers(
            event, body, delivery=delivery, secret=self._secret, now=time.time()
        )
        request = HttpPost(self.target.url, headers, body, self.target.timeout_seconds)
        try:
            status = await self._transport.post(request)
        except TransportError as failure:
            return True, str(failure)
        if 200 <= status < 300:
            return False, ""
        return self.channel.retryable(status), f"HTTP {status}"


class Notifications:
    """Every configured target, subscribed to the hold events while started."""

    def __init__(self, notifiers: list[Notifier]) -> None:
        self.notifiers = notifiers
        self._unsubscribe: list[Callable[[], None]] = []

    @classmethod
    def from_config(
        cls,
        targets: list[NotificationTarget],
        *,
        console_url: Callable[[], str],
        facts: Callable[[str], HoldFacts | None],
        transport: Callable[[NotificationTarget], HttpTransport | None] = lambda _: None,
    ) -> Notifications:
        """Read every secret now, so a missing one stops startup instead of a hold's
        notification. ``transport`` gives a target's transport (None: the real one)."""
        return cls(
            [
                Notifier(
                    t, read_secret(t), console_url=console_url, facts=facts,
                    transport=transport(t),
                )
                for t in targets
            ]
        )  # fmt: skip

    def start(self, events: HoldEvents) -> None:
        for notifier in self.notifiers:
            notifier.start()
            self._unsubscribe.append(events.subscribe(notifier.offer))
        if self.notifiers:
            log.info("notify.started", targets=[n.target.label() for n in self.notifiers])

    async def stop(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()
        for notifier in self.notifiers:
            await notifier.stop()
