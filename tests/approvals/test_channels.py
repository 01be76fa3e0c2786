"""Notification channels and the notifier's retry loop, driven through a scripted HTTP
transport: payloads, signatures, which answers are retried, bounded queues, and a new
channel added as one class. The real receiver-server tests are in test_notify.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest

from guardproxy.approvals import channels
from guardproxy.approvals.channels import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    RETRYABLE_STATUSES,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Channel,
    HoldFacts,
    SlackChannel,
    UnknownChannelError,
    WebhookChannel,
    channel,
    channel_kinds,
    register_channel,
    slack_payload,
    verify,
)
from guardproxy.approvals.events import HoldEvent, HoldEvents
from guardproxy.approvals.notify import (
    HttpPost,
    Notifications,
    Notifier,
    Outcome,
    TransportError,
)
from guardproxy.approvals.targets import NotificationTarget

SECRET = b"shared-with-the-receiver"
CONSOLE = "https://guard.example/console/"
FACTS = HoldFacts("Deleting namespace prod deletes everything in it.", ("k8s/hold-prod",))
WEBHOOK_URL = "https://hooks.example/guardproxy/Zsecretpath"
SLACK_URL = "https://hooks.slack.example/services/T0/B0/XyZsecret"


def event(kind: Any = "held", hold_id: str = "h-abc", **fields: str) -> HoldEvent:
    values = {"summary": "k8s core delete namespaces prod", "session_id": "s-1", **fields}
    return HoldEvent(kind=kind, hold_id=hold_id, at=datetime(2025, 3, 1, 12, tzinfo=UTC), **values)


def target(kind: str = "webhook", **overrides: Any) -> NotificationTarget:
    values: dict[str, Any] = {
        "kind": kind,
        "url": WEBHOOK_URL if kind != "slack" else SLACK_URL,
        "backoff_seconds": 0.001,
        "max_backoff_seconds": 0.001,
    }
    if kind == "webhook":
        values["secret_env"] = "UNUSED_HERE"  # the secret is handed to the Notifier below
    values.update(overrides)
    return NotificationTarget.model_validate(values)


class ScriptedTransport:
    """Answers each POST with the next scripted answer (a status, or a TransportError to
    raise), then ``then`` forever; records every request."""

    def __init__(self, *answers: int | TransportError, then: int = 200) -> None:
        self.answers = list(answers)
        self.then = then
        self.posts: list[HttpPost] = []
        self.closed = False

    async def post(self, request: HttpPost) -> int:
        self.posts.append(request)
        answer = self.answers.pop(0) if self.answers else self.then
        if isinstance(answer, TransportError):
            raise answer
        return answer

    def close(self) -> None:
        self.closed = True


def deliver(
    notification: NotificationTarget, transport: ScriptedTransport, secret: bytes = SECRET
) -> Outcome:
    notifier = Notifier(
        notification, secret, console_url=lambda: CONSOLE, facts=lambda _: FACTS,
        transport=transport,
    )  # fmt: skip
    return asyncio.run(notifier.deliver(event()))


# ------------------------------------------------------------------------ webhook


def test_a_webhook_posts_the_hold_as_json_signed_over_timestamp_and_body() -> None:
    transport = ScriptedTransport()
    outcome = deliver(target(), transport)
    assert outcome == Outcome(delivered=True, attempts=1)
    (post,) = transport.posts
    assert post.url == WEBHOOK_URL and post.timeout == 10.0
    assert json.loads(post.body) == {
        "event": "held",
        "at": "2025-03-01T12:00:00+00:00",
        "actor": "",
        "reason": "",
        "hold": {
            "id": "h-abc",
            "summary": "k8s core delete namespaces prod",
            "session": "s-1",
            "message": FACTS.message,
            "rules": ["k8s/hold-prod"],
            "impact": None,
            "console_url": "https://guard.example/console/#/holds/h-abc",
        },
    }
    headers = post.headers
    assert headers["Content-Type"] == "application/json"
    assert headers[EVENT_HEADER] == "held"
    assert len(headers[DELIVERY_HEADER]) == 16
    timestamp, signature = headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER]
    assert verify(SECRET, timestamp, post.body, signature)
    assert not verify(b"another secret", timestamp, post.body, signature)
    assert not verify(SECRET, timestamp, post.body.replace(b"prod", b"dev"), signature)


def test_the_impact_preview_goes_with_the_hold_once_it_is_in() -> None:
    line = "namespace prod: 2 deployments"
    impact = {
        "status": "known",
        "summary": line,
        "line": line,
        "facts": {"counts": {"deployments": 2}},
    }
    facts = HoldFacts(FACTS.message, FACTS.rules, impact)
    body = WebhookChannel().payload(event("impact", reason=line), facts, CONSOLE)
    assert body["event"] == "impact" and body["hold"]["impact"] == impact
    held = slack_payload(event("held"), facts, CONSOLE)
    assert "Impact preview: namespace prod: 2 deployments" in held["blocks"][0]["text"]["text"]
    unknown = HoldFacts(
        FACTS.message,
        FACTS.rules,
        {**impact, "status": "unknown", "line": "impact unknown: timed out"},
    )
    said = slack_payload(event("held"), unknown, CONSOLE)["blocks"][0]["text"]["text"]
    assert "Impact preview: impact unknown: timed out" in said


def test_the_webhook_payload_without_facts_still_names_the_hold() -> None:
    body = WebhookChannel().payload(event("denied", actor="alice", reason="no"), None, CONSOLE)
    assert body["actor"] == "alice" and body["reason"] == "no"
    assert body["hold"]["message"] == "" and body["hold"]["rules"] == []
    assert body["hold"]["id"] == "h-abc"


def test_each_attempt_is_signed_at_its_own_time_under_one_delivery_id() -> None:
    webhook = channel("webhook")
    body = b'{"event":"held"}'
    first = webhook.headers(event(), body, delivery="d-1", secret=SECRET, now=1_700_000_000)
    later = webhook.headers(event(), body, delivery="d-1", secret=SECRET, now=1_700_000_090)
    assert first[DELIVERY_HEADER] == later[DELIVERY_HEADER] == "d-1"
    assert first[TIMESTAMP_HEADER] == "1700000000" and later[TIMESTAMP_HEADER] == "1700000090"
    assert first[SIGNATURE_HEADER] != later[SIGNATURE_HEADER]
    for headers, now in ((first, 1_700_000_000), (later, 1_700_000_090)):
        assert verify(SECRET, headers[TIMESTAMP_HEADER], body, headers[SIGNATURE_HEADER], now=now)
    # an old attempt is stale once outside the receiver's window
    stale = first[TIMESTAMP_HEADER], body, first[SIGNATURE_HEADER]
    assert not verify(SECRET, *stale, now=1_700_000_000 + 301)


def test_retries_reuse_the_delivery_id_and_sign_every_attempt() -> None:
    transport = ScriptedTransport(503, TransportError("ConnectionRefusedError: refused"))
    assert deliver(target(), transport) == Outcome(delivered=True, attempts=3)
    assert len({p.headers[DELIVERY_HEADER] for p in transport.posts}) == 1
    assert len({p.body for p in transport.posts}) == 1
    for post in transport.posts:
        assert verify(SECRET, post.headers[TIMESTAMP_HEADER], post.body,
                      post.headers[SIGNATURE_HEADER])  # fmt: skip


# ---------------------------------------------------------------------- retrying


@pytest.mark.parametrize("status", sorted(RETRYABLE_STATUSES))
@pytest.mark.parametrize("kind", ["webhook", "slack"])
def test_a_not_now_answer_is_retried_until_delivered(kind: str, status: int) -> None:
    transport = ScriptedTransport(status, status)
    assert deliver(target(kind), transport) == Outcome(delivered=True, attempts=3)
    assert len(transport.posts) == 3


@pytest.mark.parametrize("status", [301, 302, 400, 401, 403, 404, 410, 413, 422, 501])
@pytest.mark.parametrize("kind", ["webhook", "slack"])
def test_a_refusal_is_not_retried(kind: str, status: int) -> None:
    transport = ScriptedTransport(status)
    outcome = deliver(target(kind), transport)
    assert outcome == Outcome(delivered=False, attempts=1, last_error=f"HTTP {status}")
    assert len(transport.posts) == 1


def test_no_answer_at_all_is_retried() -> None:
    transport = ScriptedTransport(TransportError("HTTP 599"), TransportError("OSError: reset"))
    assert deliver(target(), transport) == Outcome(delivered=True, attempts=3)


def test_attempts_are_bounded_and_the_last_error_is_kept() -> None:
    transport = ScriptedTransport(then=503)
    outcome = deliver(target(max_attempts=4), transport)
    assert outcome == Outcome(delivered=False, attempts=4, last_error="HTTP 503")
    assert len(transport.posts) == 4


# -------------------------------------------------------------------------- slack


def test_slack_gets_escaped_text_and_blocks_and_no_signature_without_a_secret() -> None:
    transport = ScriptedTransport()
    sneaky = event(summary="delete <!channel> <https://evil.example|x> & more")
    notifier = Notifier(
        target("slack"), b"", console_url=lambda: CONSOLE, facts=lambda _: None,
        transport=transport,
    )  # fmt: skip
    assert asyncio.run(notifier.deliver(sneaky)).delivered
    (post,) = transport.posts
    assert post.url == SLACK_URL
    assert SIGNATURE_HEADER not in post.headers and TIMESTAMP_HEADER not in post.headers
    payload = json.loads(post.body)
    assert "<!channel>" not in post.body.decode() and "<https://evil" not in post.body.decode()
    assert payload["text"].startswith(":raised_hand: Held for approval: delete &lt;!channel&gt;")
    section, context, actions = payload["blocks"]
    assert section["type"] == "section" and context["type"] == "context"
    (button,) = actions["elements"]
    assert button["url"] == "https://guard.example/console/#/holds/h-abc"
    assert button["style"] == "primary"


def test_slack_clips_long_texts_to_what_it_accepts() -> None:
    long = HoldFacts("x" * 10_000, ())
    payload = SlackChannel().payload(event(), long, CONSOLE)
    assert len(payload["blocks"][0]["text"]["text"]) == channels.SLACK_TEXT_LIMIT
    assert payload["blocks"][0]["text"]["text"].endswith("…")


def test_a_slack_target_needs_no_secret_but_a_webhook_does() -> None:
    assert not channel("slack").signed and channel("webhook").signed
    NotificationTarget(kind="slack", url=SLACK_URL)
    with pytest.raises(ValueError, match="a webhook is signed: give secret_file"):
        NotificationTarget(kind="webhook", url=WEBHOOK_URL)


# ---------------------------------------------------------------- queue, filter


class BlockedTransport(ScriptedTransport):
    """Every POST waits until ``release`` is set: a receiver that does not answer."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def post(self, request: HttpPost) -> int:
        self.posts.append(request)
        await self.release.wait()
        return 200


def test_a_receiver_that_does_not_answer_fills_only_its_bounded_queue() -> None:
    async def scenario() -> tuple[int, int, bool]:
        transport = BlockedTransport()
        notifier = Notifier(
            target(), SECRET, console_url=lambda: CONSOLE, facts=lambda _: FACTS,
            transport=transport, queue_limit=3,
        )  # fmt: skip
        notifier.start()
        for number in range(10):
            notifier.offer(event(hold_id=f"h-{number}"))  # returns at once
        while not transport.posts:
            await asyncio.sleep(0.001)
        dropped = notifier.dropped
        transport.release.set()
        for _ in range(1000):
            if len(transport.posts) == 10 - dropped:
                break
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.01)
        await notifier.stop()
        return dropped, len(transport.posts), transport.closed

    dropped, posted, closed = asyncio.run(scenario())
    # three wait in the queue; the one the task already took may have left room for one more
    assert dropped in (6, 7)
    assert posted == 10 - dropped, "every queued event is delivered, no more"
    assert not closed, "a transport given to the notifier stays the caller's to close"


def test_only_the_target_s_events_are_sent_through_its_transport() -> None:
    transport = ScriptedTransport()

    async def scenario() -> None:
        events = HoldEvents()
        notifications = Notifications.from_config(
            [target("slack", events=["held", "expired"])],
            console_url=lambda: CONSOLE,
            facts=lambda _: FACTS,
            transport=lambda _: transport,
        )
        notifications.start(events)
        for kind in ("held", "approval", "approved", "expired", "released"):
            events.publish(event(kind, hold_id=f"h-{kind}"))
        for _ in range(1000):
            if len(transport.posts) == 2:
                break
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.01)
        await notifications.stop()

    asyncio.run(scenario())
    assert [p.headers[EVENT_HEADER] for p in transport.posts] == ["held", "expired"]


# ---------------------------------------------------------------- a new channel


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A copy of the channel registry for the test, so a test channel does not outlive it."""
    monkeypatch.setattr(channels, "_CHANNELS", dict(channels._CHANNELS))
    yield


def test_a_new_channel_is_one_class(registry: None) -> None:
    @register_channel
    class TeamsChannel(Channel):
        kind = "teams"
        retryable_statuses: ClassVar[frozenset[int]] = frozenset({409})

        def payload(
            self, event: HoldEvent, facts: HoldFacts | None, console_url: str
        ) -> dict[str, Any]:
            return {"title": event.summary, "link": channels.console_link(console_url, "x")}

    assert "teams" in channel_kinds()
    teams = NotificationTarget(kind="teams", url="https://teams.example/hook")
    transport = ScriptedTransport(409)
    assert deliver(teams, transport, secret=b"") == Outcome(delivered=True, attempts=2)
    assert json.loads(transport.posts[0].body)["title"] == "k8s core delete namespaces prod"
    assert SIGNATURE_HEADER not in transport.posts[0].headers
    # its own idea of what is worth retrying
    refused = ScriptedTransport(503)
    assert deliver(teams, refused, secret=b"") == Outcome(False, 1, "HTTP 503")
    with pytest.raises(ValueError, match="'teams' is already registered"):
        register_channel(TeamsChannel)


def test_an_unknown_kind_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(UnknownChannelError, match="unknown notification kind 'teams'"):
        channel("teams")
    with pytest.raises(ValueError, match="known kinds: slack, webhook"):
        NotificationTarget(kind="teams", url="https://teams.example/hook")
