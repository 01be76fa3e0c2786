"""Notifiers against real HTTP receivers on 127.0.0.1: signed, retried, bounded, escaped."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from guardproxy.approvals.channels import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    HoldFacts,
    sign,
    verify,
)
from guardproxy.approvals.events import HoldEvent, HoldEvents
from guardproxy.approvals.notify import (
    QUEUE_LIMIT,
    Notifications,
    NotifyConfigError,
    backoff_delay,
    read_secret,
)
from guardproxy.approvals.targets import NotificationTarget

from .receiver import Receiver

SECRET = b"s3cr3t-shared-with-the-receiver"
CONSOLE = "https://guard.example/console"
FACTS = HoldFacts("Deleting namespace prod deletes everything in it.", ("k8s/hold-prod",))


def held(hold_id: str = "h-abc", summary: str = "k8s core delete prod") -> HoldEvent:
    return HoldEvent(
        kind="held", hold_id=hold_id, at=datetime.now(UTC), summary=summary, session_id="s-1"
    )


class LoopThread:
    """An asyncio loop on its own thread, like guardproxy's: tests publish from theirs."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run[R](self, coroutine: Coroutine[Any, Any, R]) -> R:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(10)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    running = LoopThread()
    yield running
    running.close()


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "webhook-secret"
    path.write_bytes(SECRET + b"\n")
    return path


def started(loop: LoopThread, *targets: NotificationTarget) -> tuple[HoldEvents, Notifications]:
    events = HoldEvents()
    notifications = Notifications.from_config(
        list(targets), console_url=lambda: CONSOLE, facts=lambda _: FACTS
    )

    async def start() -> None:
        notifications.start(events)

    loop.run(start())
    return events, notifications


def webhook(url: str, secret_file: Path, **overrides: Any) -> NotificationTarget:
    values: dict[str, Any] = {
        "kind": "webhook",
        "url": url,
        "secret_file": secret_file,
        "backoff_seconds": 0.05,
        "max_backoff_seconds": 0.2,
        "timeout_seconds": 2,
    }
    values.update(overrides)
    return NotificationTarget.model_validate(values)


def test_a_failing_webhook_is_retried_and_every_attempt_is_signed(
    loop: LoopThread, secret_file: Path
) -> None:
    with Receiver(fail_first=2) as receiver:
        events, notifications = started(loop, webhook(receiver.url, secret_file))
        events.publish(held())
        attempts = receiver.wait_for(3)
        time.sleep(0.3)
        loop.run(notifications.stop())
    assert [a.status for a in attempts] == [503, 503, 200]
    assert len(receiver.received) == 3, "delivered once, then no more attempts"
    assert len({a.headers[DELIVERY_HEADER] for a in attempts}) == 1
    for attempt in attempts:
        timestamp = attempt.headers[TIMESTAMP_HEADER]
        signature = attempt.headers[SIGNATURE_HEADER]
        assert signature.startswith("sha256=")
        assert verify(SECRET, timestamp, attempt.body, signature)
        assert not verify(b"another secret", timestamp, attempt.body, signature)
        assert not verify(SECRET, timestamp, attempt.body + b" ", signature)
        assert abs(int(timestamp) - time.time()) < 30
    payload = attempts[-1].json()
    assert payload["event"] == "held"
    assert payload["hold"] == {
        "id": "h-abc",
        "summary": "k8s core delete prod",
        "session": "s-1",
        "message": FACTS.message,
        "rules": ["k8s/hold-prod"],
        "impact": None,
        "console_url": "https://guard.example/console/#/holds/h-abc",
    }
    assert datetime.fromisoformat(payload["at"]).tzinfo is not None


def test_the_signature_covers_the_timestamp_so_old_messages_cannot_be_replayed() -> None:
    body = b'{"event": "held"}'
    then = "1700000000"
    signature = sign(SECRET, then, body)
    assert verify(SECRET, then, body, signature, now=1700000000 + 60)
    assert not verify(SECRET, then, body, signature, now=1700000000 + 3600)
    # moving the signature to a fresh timestamp breaks it
    assert not verify(SECRET, str(int(time.time())), body, signature)
    assert not verify(SECRET, "not-a-number", body, signature)


def test_a_rejected_webhook_is_not_retried(loop: LoopThread, secret_file: Path) -> None:
    with Receiver(always_fail=True, fail_status=400) as receiver:
        events, notifications = started(loop, webhook(receiver.url, secret_file))
        events.publish(held())
        receiver.wait_for(1)
        time.sleep(0.5)
        loop.run(notifications.stop())
    assert len(receiver.received) == 1


def test_retries_are_bounded(loop: LoopThread, secret_file: Path) -> None:
    with Receiver(always_fail=True) as receiver:
        events, notifications = started(loop, webhook(receiver.url, secret_file, max_attempts=3))
        events.publish(held())
        receiver.wait_for(3)
        time.sleep(0.6)
        loop.run(notifications.stop())
    assert len(receiver.received) == 3


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (8, 30.0)]:
        delays = [backoff_delay(attempt, 1.0, 30.0) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling / 2, "jitter spreads over the whole window"
        assert len(set(delays)) > 100


def test_a_receiver_that_is_down_blocks_nobody_and_its_queue_is_bounded(
    loop: LoopThread, secret_file: Path
) -> None:
    with Receiver() as gone:
        url = gone.url  # a port that was just closed: connection refused
    slow = webhook(url, secret_file, backoff_seconds=30, max_backoff_seconds=30, max_attempts=20)
    with Receiver() as healthy:
        events, notifications = started(loop, slow, webhook(healthy.url, secret_file))
        began = time.monotonic()
        for number in range(QUEUE_LIMIT + 500):
            events.publish(held(f"h-{number}"))
        publishing = time.monotonic() - began
        # the healthy target is not held up by the dead one
        healthy.wait_for(50, timeout=30)
        loop.run(notifications.stop())
    assert publishing < 2.0
    down = notifications.notifiers[0]
    assert 499 <= down.dropped <= 500


def test_slack_gets_text_blocks_and_a_console_link_with_agent_text_escaped(
    loop: LoopThread,
) -> None:
    sneaky = "k8s delete <!channel> <https://evil.example|click me> & more"
    with Receiver() as receiver:
        events, notifications = started(
            loop, NotificationTarget(kind="slack", url=receiver.url, backoff_seconds=0.05)
        )
        events.publish(held("h-slack", sneaky))
        (message,) = receiver.wait_for(1)
        loop.run(notifications.stop())
    assert SIGNATURE_HEADER not in message.headers
    payload = message.json()
    assert "Held for approval" in payload["text"]
    everything = str(payload)
    assert "<!channel>" not in everything and "<https://evil" not in everything
    assert "&lt;!channel&gt;" in payload["text"]
    section, context, actions = payload["blocks"]
    assert section["type"] == "section" and FACTS.message in section["text"]["text"]
    assert "h-slack" in context["elements"][0]["text"]
    (button,) = actions["elements"]
    assert button["url"] == "https://guard.example/console/#/holds/h-slack"


def test_secrets_come_from_a_file_or_the_environment_and_are_never_inline(
    tmp_path: Path, secret_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert read_secret(webhook("http://127.0.0.1:9/h", secret_file)) == SECRET
    monkeypatch.setenv("GP_TEST_SECRET", "from-env")
    from_env = NotificationTarget(
        kind="webhook", url="http://127.0.0.1:9/h", secret_env="GP_TEST_SECRET"
    )
    assert read_secret(from_env) == b"from-env"
    with pytest.raises(NotifyConfigError, match="cannot read the secret file"):
        read_secret(webhook("http://127.0.0.1:9/h", tmp_path / "missing"))
    monkeypatch.setenv("GP_TEST_SECRET", "")
    with pytest.raises(NotifyConfigError, match="GP_TEST_SECRET is empty or unset"):
        read_secret(from_env)
    with pytest.raises(ValueError, match="a webhook is signed"):
        NotificationTarget(kind="webhook", url="http://127.0.0.1:9/h")
    slack = NotificationTarget(
        kind="slack", url="https://hooks.slack.example/services/T0/B0/XyZsecret"
    )
    assert "XyZsecret" not in repr(slack) and "XyZsecret" not in slack.label()
