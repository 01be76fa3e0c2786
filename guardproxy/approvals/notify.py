"""Tell people about holds: a signed generic webhook and Slack incoming webhooks.

Each notification target has its own bounded queue and its own asyncio task. The gate
publishes an event and moves on; a slow or failing receiver delays only its own
messages. A message that cannot be delivered after its retries is logged and dropped:
the hold itself lives in the store, stays pending and approvable from the console or
CLI, and expires to a deny, so no notification failure can release or lose it.

Webhook signing (documented for receivers in README.md)::

    X-Guardproxy-Timestamp: <unix seconds>
    X-Guardproxy-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>

A receiver recomputes the HMAC over the timestamp header, a dot and the raw body,
compares in constant time, and rejects timestamps more than five minutes from its clock
(a captured message cannot be replayed later). Every retry is signed afresh; the
``X-Guardproxy-Delivery`` id stays the same across retries so receivers can drop duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest, HTTPResponse

from guardproxy.approvals.events import HoldEvent, HoldEvents
from guardproxy.config import NotificationTarget
from guardproxy.store.base import Store, StoreError

log = structlog.get_logger(__name__)

SIGNATURE_HEADER = "X-Guardproxy-Signature"
TIMESTAMP_HEADER = "X-Guardproxy-Timestamp"
DELIVERY_HEADER = "X-Guardproxy-Delivery"
EVENT_HEADER = "X-Guardproxy-Event"
REPLAY_WINDOW_SECONDS = 300
QUEUE_LIMIT = 1000
"""Events waiting per target; beyond it new ones are dropped (and logged), never waited for."""
RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
SLACK_TEXT_LIMIT = 2900
"""Slack refuses section texts over 3000 characters."""


class NotifyConfigError(Exception):
    """A notification target cannot be used; the message says which and what to do."""


# ------------------------------------------------------------------------ signing


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The ``X-Guardproxy-Signature`` value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def verify(
    secret: bytes,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    now: float | None = None,
    window: float = REPLAY_WINDOW_SECONDS,
) -> bool:
    """What a receiver does: a fresh timestamp and a matching signature (constant time)."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    current = time.time() if now is None else now
    if abs(current - sent) > window:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


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


# ----------------------------------------------------------------------- messages


@dataclass(frozen=True, slots=True)
class HoldFacts:
    """What a notification says about a hold beyond the event: why it is held."""

    message: str
    rules: tuple[str, ...]


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
    return HoldFacts(str(decision.get("message", "")), tuple(str(r) for r in rules))


def console_link(console_url: str, hold_id: str) -> str:
    return f"{console_url.rstrip('/')}/#/holds/{hold_id}"


def webhook_payload(event: HoldEvent, facts: HoldFacts | None, console_url: str) -> dict[str, Any]:
    return {
        "event": event.kind,
        "at": event.at.isoformat(),
        "actor": event.actor,
        "reason": event.reason,
        "hold": {
            "id": event.hold_id,
            "summary": event.summary,
            "session": event.session_id,
            "message": facts.message if facts else "",
            "rules": list(facts.rules) if facts else [],
            "console_url": console_link(console_url, event.hold_id),
        },
    }


SLACK_HEADLINES = {
    "held": ":raised_hand: Held for approval",
    "approval": ":ballot_box_with_check: Approval recorded (more needed)",
    "approved": ":white_check_mark: Approved",
    "denied": ":no_entry: Denied",
    "expired": ":hourglass: Expired without approval, denied",
    "escalated": ":rotating_light: Escalated, still waiting for approval",
    "released": ":arrow_forward: Released to upstream",
}


def slack_escape(text: str) -> str:
    """Agent-written text as Slack shows it: no links, mentions or `<!channel>` pings."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int = SLACK_TEXT_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def slack_payload(event: HoldEvent, facts: HoldFacts | None, console_url: str) -> dict[str, Any]:
    headline = SLACK_HEADLINES.get(event.kind, event.kind)
    by = f" by {slack_escape(event.actor)}" if event.actor else ""
    summary = slack_escape(event.summary)
    lines = [f"*{headline}{by}*: `{summary}`"]
    if facts and facts.message:
        lines.append(slack_escape(facts.message))
    if event.reason:
        lines.append(f"Reason: {slack_escape(event.reason)}")
    details = [f"hold {event.hold_id}", f"session {slack_escape(event.session_id)}"]
    if facts and facts.rules:
        details.append("rules " + ", ".join(slack_escape(r) for r in facts.rules))
    link = console_link(console_url, event.hold_id)
    return {
        "text": _clip(f"{headline}{by}: {summary}", 3000),
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": _clip("\n".join(lines))}},
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": _clip(" · ".join(details))}],
            },
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Open in console"},
                        "url": link,
                        **({"style": "primary"} if event.kind in ("held", "escalated") else {}),
                    }
                ],
            },
        ],
    }


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
    """One target: a bounded queue and a task that delivers, retrying with backoff."""

    def __init__(
        self,
        target: NotificationTarget,
        secret: bytes,
        *,
        console_url: Callable[[], str],
        facts: Callable[[str], HoldFacts | None],
    ) -> None:
        self.target = target
        self._secret = secret
        self._console_url = console_url
        self._facts = facts
        self._queue: asyncio.Queue[HoldEvent] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._client: AsyncHTTPClient | None = None
        self.dropped = 0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue(maxsize=QUEUE_LIMIT)
        self._client = AsyncHTTPClient(force_instance=True, max_body_size=1024 * 1024)
        self._task = asyncio.create_task(self._run(), name=f"notify {self.target.label()}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._client is not None:
            self._client.close()
            self._client = None

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
        build = slack_payload if self.target.kind == "slack" else webhook_payload
        body = json.dumps(build(event, facts, self._console_url())).encode("utf-8")
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
        assert self._client is not None
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "guardproxy-notify",
            EVENT_HEADER: event.kind,
            DELIVERY_HEADER: delivery,
        }
        if self._secret:
            timestamp = str(int(time.time()))
            headers[TIMESTAMP_HEADER] = timestamp
            headers[SIGNATURE_HEADER] = sign(self._secret, timestamp, body)
        request = HTTPRequest(
            self.target.url,
            method="POST",
            headers=headers,
            body=body,
            request_timeout=self.target.timeout_seconds,
            connect_timeout=self.target.timeout_seconds,
            follow_redirects=False,
        )
        try:
            response: HTTPResponse = await self._client.fetch(request, raise_error=False)
        except HTTPClientError as failure:
            return True, f"HTTP {failure.code}"
        except OSError as failure:
            return True, f"{type(failure).__name__}: {failure}"
        if 200 <= response.code < 300:
            return False, ""
        return response.code in RETRYABLE_STATUSES, f"HTTP {response.code}"


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
    ) -> Notifications:
        """Read every secret now, so a missing one stops startup instead of a hold's
        notification."""
        return cls(
            [Notifier(t, read_secret(t), console_url=console_url, facts=facts) for t in targets]
        )

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
