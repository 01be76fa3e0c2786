"""Notifications from a real guardproxy holding a real request.

One webhook fails twice before it accepts, one is down entirely, and a Slack-style
receiver takes everything. The held client keeps waiting, the hold stays pending and
approvable whatever the receivers do, and approval releases exactly that request.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from approvals.receiver import Received, Receiver

from guardproxy.approvals.channels import (
    EVENT_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    verify,
)

from .servers import EchoServer
from .test_guard import NAMESPACE_PROD, ROOT, start_guard

pytestmark = pytest.mark.slow

SECRET = b"shared-with-the-receiver"
CONSOLE = "https://guard.example/console"


def kinds(received: list[Received]) -> list[str]:
    """The events delivered, in order, but the impact preview's (it comes whenever the
    preview is in; :func:`impacts`)."""
    return [r.headers[EVENT_HEADER] for r in received if r.status == 200
            and r.headers[EVENT_HEADER] != "impact"]  # fmt: skip


def impacts(received: list[Received]) -> list[dict[str, Any]]:
    return [r.json() for r in received if r.status == 200 and r.headers[EVENT_HEADER] == "impact"]


def wait_until(check: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_failing_notifications_never_release_or_lose_a_hold(
    tmp_path: Path, echo_server: EchoServer
) -> None:
    secret = tmp_path / "webhook-secret"
    secret.write_bytes(SECRET)
    with Receiver() as gone:
        down_url = gone.url  # closed again: connection refused from now on
    fast = {"backoff_seconds": 0.05, "max_backoff_seconds": 0.2, "timeout_seconds": 2}
    with Receiver(fail_first=2) as flaky, Receiver() as slack:
        guard = start_guard(
            tmp_path,
            echo_server,
            hold_window_seconds=60,
            console_url=CONSOLE,
            notifications=[
                {"kind": "webhook", "url": flaky.url, "secret_file": secret, **fast},
                {
                    "kind": "webhook",
                    "url": down_url,
                    "secret_file": secret,
                    "max_attempts": 3,
                    **fast,
                },
                {"kind": "slack", "url": slack.url, **fast},
            ],
        )
        try:
            result: dict[str, Any] = {}

            def held_delete() -> None:
                with httpx.Client(proxy=guard.proxy_url, timeout=90) as client:
                    result["response"] = client.delete(f"{echo_server.url}{NAMESPACE_PROD}")

            thread = threading.Thread(target=held_delete, daemon=True)
            thread.start()
            first_three = flaky.wait_for(3)
            (hold,) = guard.holds("pending")

            # the flaky webhook: two failures, then delivered; every attempt signed
            assert [r.status for r in first_three] == [503, 503, 200]
            for attempt in first_three:
                assert verify(
                    SECRET, attempt.headers[TIMESTAMP_HEADER], attempt.body,
                    attempt.headers[SIGNATURE_HEADER],
                )  # fmt: skip
            payload = first_three[-1].json()
            assert payload["event"] == "held"
            assert payload["hold"]["id"] == hold["id"]
            assert payload["hold"]["summary"] == hold["summary"]
            assert "Deleting namespace prod" in payload["hold"]["message"]
            assert "k8s/hold-prod-namespace-delete" in payload["hold"]["rules"]
            assert payload["hold"]["console_url"] == f"{CONSOLE}/#/holds/{hold['id']}"

            # Slack: text, blocks and a button to the console's page for this hold
            (message,) = slack.wait_for(1)
            button = message.json()["blocks"][-1]["elements"][0]
            assert button["url"] == f"{CONSOLE}/#/holds/{hold['id']}"

            # the dead webhook gave up (3 attempts, under a second) and nothing moved
            time.sleep(1.5)
            assert thread.is_alive(), "the held client is still waiting"
            assert echo_server.requests == []
            assert [h["id"] for h in guard.holds("pending")] == [hold["id"]]

            approved = guard.approve(hold["id"])
            assert approved["state"] in ("approved", "released")
            thread.join(15)
            assert result["response"].status_code == 200
            assert [r.method for r in echo_server.requests] == ["DELETE"]
            wait_until(lambda: "approved" in kinds(flaky.received))
            assert kinds(flaky.received)[0] == "held"
            assert "approval" in kinds(flaky.received)  # the first of two seniors
            wait_until(lambda: "approved" in kinds(slack.received))
        finally:
            guard.background.stop()


SHORT_FUSE = """\
apiVersion: guardproxy.dev/v1
kind: PolicySet
metadata: {name: short-fuse}
spec:
  rules:
    - id: hold-with-a-short-fuse
      decision: hold
      match: {providers: [k8s], verbs: [delete]}
      message: Deleting {action.resource.name} needs on-call within two seconds.
      approval: {groups: [sre-oncall], timeout: 2s, onTimeout: escalate}
"""


def test_silence_is_notified_as_an_escalation_then_an_expiry_and_the_request_is_denied(
    tmp_path: Path, echo_server: EchoServer
) -> None:
    bundle = tmp_path / "short-fuse"
    bundle.mkdir()
    shutil.copy(ROOT / "policies" / "bundle.yaml", bundle)
    (bundle / "short-fuse.yaml").write_text(SHORT_FUSE)
    secret = tmp_path / "webhook-secret"
    secret.write_bytes(SECRET)
    with Receiver() as receiver:
        guard = start_guard(
            tmp_path,
            echo_server,
            policies=bundle,
            hold_window_seconds=30,
            notifications=[{"url": receiver.url, "secret_file": secret, "backoff_seconds": 0.05}],
        )
        try:
            with httpx.Client(proxy=guard.proxy_url, timeout=30) as client:
                response = client.delete(
                    f"{echo_server.url}/api/v1/namespaces/dev/configmaps/settings"
                )
            assert response.status_code == 403
            assert response.json()["kind"] == "Status"
            assert echo_server.requests == []
            wait_until(lambda: "expired" in kinds(receiver.received))
        finally:
            guard.background.stop()
    assert kinds(receiver.received) == ["held", "escalated", "expired"]
    [impact] = impacts(receiver.received)
    assert impact["hold"]["impact"]["status"] == "unknown"
    assert impact["reason"] == impact["hold"]["impact"]["line"]
    escalated = next(r.json() for r in receiver.received if r.headers[EVENT_HEADER] == "escalated")
    assert "settings" in escalated["hold"]["summary"]
    assert escalated["hold"]["rules"] == ["short-fuse/hold-with-a-short-fuse"]
