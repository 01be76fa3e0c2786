"""Notification channels: what one kind of receiver is sent about a hold, and how.

A :class:`Channel` says, for its ``kind``, what body a hold event becomes
(:meth:`Channel.payload`), which headers go with it, signature included
(:meth:`Channel.headers`), and which answers are worth another attempt
(:meth:`Channel.retryable`). It does no I/O: the notifier (approvals/notify.py) queues,
posts through its HTTP transport and retries. A new kind of receiver is one subclass
decorated with :func:`register_channel`; a target's ``kind`` (approvals/targets.py) is
checked against the registry.

Webhook signing (documented for receivers in README.md)::

    X-Guardproxy-Timestamp: <unix seconds>
    X-Guardproxy-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>

A receiver recomputes the HMAC over the timestamp header, a dot and the raw body,
compares in constant time, and rejects timestamps more than five minutes from its clock
(a captured message cannot be replayed later). Every retry is signed afresh; the
``X-Guardproxy-Delivery`` id stays the same across retries so receivers can drop duplicates.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from guardproxy.approvals.events import HoldEvent

__all__ = [
    "DELIVERY_HEADER",
    "EVENT_HEADER",
    "REPLAY_WINDOW_SECONDS",
    "RETRYABLE_STATUSES",
    "SIGNATURE_HEADER",
    "SLACK_HEADLINES",
    "SLACK_TEXT_LIMIT",
    "TIMESTAMP_HEADER",
    "Channel",
    "HoldFacts",
    "SlackChannel",
    "UnknownChannelError",
    "WebhookChannel",
    "channel",
    "channel_kinds",
    "console_link",
    "register_channel",
    "sign",
    "slack_escape",
    "slack_payload",
    "verify",
    "webhook_payload",
]

SIGNATURE_HEADER = "X-Guardproxy-Signature"
TIMESTAMP_HEADER = "X-Guardproxy-Timestamp"
DELIVERY_HEADER = "X-Guardproxy-Delivery"
EVENT_HEADER = "X-Guardproxy-Event"
REPLAY_WINDOW_SECONDS = 300
RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
"""Answers that say "not now" (time-out, too early, rate limit, server trouble); any other
non-2xx answer says the message itself is refused, and sending it again would not help."""
SLACK_TEXT_LIMIT = 2900
"""Slack refuses section texts over 3000 characters."""


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


# ----------------------------------------------------------------------- messages


@dataclass(frozen=True, slots=True)
class HoldFacts:
    """What a notification says about a hold beyond the event: why it is held."""

    message: str
    rules: tuple[str, ...]
    impact: dict[str, Any] | None = None
    """The hold's impact preview (``status``, ``summary``, ``line``, ``facts``) once in."""


def console_link(console_url: str, hold_id: str) -> str:
    return f"{console_url.rstrip('/')}/#/holds/{hold_id}"


# ----------------------------------------------------------------------- channels


class Channel(ABC):
    """One kind of receiver. Stateless: one instance serves every target of its kind.

    Subclasses set ``kind`` (the ``kind`` of a notification target) and implement
    :meth:`payload`; they may set ``signed`` (a target must name a secret) and
    ``retryable_statuses``, or override :meth:`headers` and :meth:`retryable`.
    """

    kind: ClassVar[str]
    signed: ClassVar[bool] = False
    """Whether a target of this kind must name a signing secret (``secret_file`` or
    ``secret_env``); a target whose secret is optional is signed when it has one."""
    retryable_statuses: ClassVar[frozenset[int]] = RETRYABLE_STATUSES
    user_agent: ClassVar[str] = "guardproxy-notify"

    @abstractmethod
    def payload(
        self, event: HoldEvent, facts: HoldFacts | None, console_url: str
    ) -> dict[str, Any]:
        """The JSON body for ``event``; ``facts`` is None when the store could not say
        why the hold is held (the message goes out with the summary only)."""

    def headers(
        self, event: HoldEvent, body: bytes, *, delivery: str, secret: bytes, now: float
    ) -> dict[str, str]:
        """The headers of one attempt: the event kind, the delivery id (the same on every
        retry) and, with a secret, a fresh timestamp and the signature over it and the
        body (so each retry is signed anew and a captured one goes stale)."""
        headers = {
            "Content-Type": "application/json",
            "User-Agent": self.user_agent,
            EVENT_HEADER: event.kind,
            DELIVERY_HEADER: delivery,
        }
        if secret:
            timestamp = str(int(now))
            headers[TIMESTAMP_HEADER] = timestamp
            headers[SIGNATURE_HEADER] = sign(secret, timestamp, body)
        return headers

    def retryable(self, status: int) -> bool:
        """Whether a non-2xx answer ``status`` is worth another attempt."""
        return status in self.retryable_statuses


class UnknownChannelError(ValueError):
    """A target names a kind no channel is registered for."""


_CHANNELS: dict[str, Channel] = {}


def register_channel[C: type[Channel]](cls: C) -> C:
    """Class decorator: make ``cls`` the channel for targets of ``cls.kind``."""
    kind = cls.kind
    if kind in _CHANNELS:
        raise ValueError(f"a notification channel for {kind!r} is already registered")
    _CHANNELS[kind] = cls()
    return cls


def channel(kind: str) -> Channel:
    """The channel for ``kind``; :class:`UnknownChannelError` names the known kinds."""
    found = _CHANNELS.get(kind)
    if found is None:
        known = ", ".join(channel_kinds())
        raise UnknownChannelError(f"unknown notification kind {kind!r}; known kinds: {known}")
    return found


def channel_kinds() -> tuple[str, ...]:
    return tuple(sorted(_CHANNELS))


# ------------------------------------------------------------------------ webhook


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
            "impact": facts.impact if facts and facts.impact else None,
            "console_url": console_link(console_url, event.hold_id),
        },
    }


@register_channel
class WebhookChannel(Channel):
    """A generic JSON webhook, always signed (HMAC-SHA256 over timestamp and body)."""

    kind = "webhook"
    signed = True

    def payload(
        self, event: HoldEvent, facts: HoldFacts | None, console_url: str
    ) -> dict[str, Any]:
        return webhook_payload(event, facts, console_url)


# -------------------------------------------------------------------------- slack


SLACK_HEADLINES = {
    "held": ":raised_hand: Held for approval",
    "approval": ":ballot_box_with_check: Approval recorded (more needed)",
    "approved": ":white_check_mark: Approved",
    "denied": ":no_entry: Denied",
    "expired": ":hourglass: Expired without approval, denied",
    "escalated": ":rotating_light: Escalated, still waiting for approval",
    "released": ":arrow_forward: Released to upstream",
    "impact": ":mag: Impact preview",
    "step": ":floppy_disk: Safety step before release",
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
    if facts and facts.impact and event.kind != "impact":
        lines.append(f"Impact preview: {slack_escape(str(facts.impact.get('line', '')))}")
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


@register_channel
class SlackChannel(Channel):
    """A Slack incoming webhook: ``text`` and ``blocks`` with a console button. Its URL is
    its secret, so it needs no signing secret (one given is used to sign all the same)."""

    kind = "slack"

    def payload(
        self, event: HoldEvent, facts: HoldFacts | None, console_url: str
    ) -> dict[str, Any]:
        return slack_payload(event, facts, console_url)
