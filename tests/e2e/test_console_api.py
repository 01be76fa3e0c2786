"""The console's server side over real HTTP: static files under a strict CSP, and the
hold event stream (approver tokens only, events as they happen, closed on shutdown)."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from guardproxy.control import console

from .servers import EchoServer
from .test_guard import NAMESPACE_PROD, Guard, start_guard


@pytest.fixture
def guard(tmp_path: Path, echo_server: EchoServer) -> Iterator[Guard]:
    running = start_guard(tmp_path, echo_server, hold_window_seconds=30)
    yield running
    running.background.stop()


def control_url(guard: Guard) -> str:
    return guard.control.url


def test_the_console_is_served_with_a_strict_content_security_policy(guard: Guard) -> None:
    with httpx.Client(base_url=control_url(guard), timeout=5) as client:
        page = client.get("/console")
        script = client.get("/console/app.js")
        style = client.get("/console/style.css")
        missing = client.get("/console/../control-token")
        other = client.get("/console/secrets.txt")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp and "form-action 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    html = page.text
    assert '<meta name="viewport"' in html
    assert re.findall(r"<script[^>]*>", html) == ['<script src="/console/app.js" defer>']
    assert not re.search(r"<[^>]*\son[a-z]+\s*=", html), "no inline event handlers"
    assert "style=" not in html
    assert '<script src="/console/app.js" defer></script>' in html
    assert script.headers["content-type"].startswith("text/javascript")
    assert "innerHTML" not in script.text and "eval(" not in script.text
    assert "localStorage.setItem" not in script.text
    assert style.headers["content-type"].startswith("text/css")
    assert missing.status_code == 404 and other.status_code == 404


def test_the_event_stream_needs_an_approver_token(guard: Guard) -> None:
    admin = guard.control.token
    with httpx.Client(base_url=control_url(guard), timeout=5) as client:
        assert client.get("/v1/events").status_code == 401
        wrong = client.get("/v1/events", headers={"Authorization": "Bearer not-a-token"})
        assert wrong.status_code == 401
        as_admin = client.get("/v1/events", headers={"Authorization": f"Bearer {admin}"})
        assert as_admin.status_code == 403


def test_the_event_stream_tells_an_approver_about_a_hold_as_it_happens(
    guard: Guard, echo_server: EchoServer
) -> None:
    token = guard.on_call.clients["alice"].token
    events: list[dict[str, Any]] = []
    impacts: list[dict[str, Any]] = []
    connected = threading.Event()

    def listen() -> None:
        headers = {"Authorization": f"Bearer {token}"}
        with (
            httpx.Client(base_url=control_url(guard), timeout=30) as client,
            client.stream("GET", "/v1/events", headers=headers) as response,
        ):
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["cache-control"] == "no-store"
            for line in response.iter_lines():
                if line == ": connected":
                    connected.set()
                if line.startswith("data: "):
                    event = json.loads(line[6:])
                    if event["kind"] == "impact":  # the preview's, whenever it comes
                        impacts.append(event)
                        continue
                    events.append(event)
                    if events[-1]["kind"] == "approved":
                        return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert connected.wait(10)
    result: dict[str, int] = {}

    def held_delete() -> None:
        with httpx.Client(proxy=guard.proxy_url, timeout=60) as client:
            result["status"] = client.delete(f"{echo_server.url}{NAMESPACE_PROD}").status_code

    client = threading.Thread(target=held_delete, daemon=True)
    client.start()
    deadline = time.monotonic() + 10
    while not events and time.monotonic() < deadline:
        time.sleep(0.05)
    (held,) = events
    (hold,) = guard.holds("pending")
    assert held["kind"] == "held" and held["hold_id"] == hold["id"]
    assert held["summary"] == hold["summary"] and held["session"] == hold["session"]
    guard.approve(hold["id"])
    listener.join(10)
    client.join(10)
    assert result["status"] == 200
    assert [e["kind"] for e in events] == ["held", "approval", "approval", "approved"]
    assert [e["actor"] for e in events[1:3]] == ["alice", "bob"]
    assert events[1]["reason"] == "test"
    # the echo server is no Kubernetes API: the preview says so, never "nothing"
    assert [e["hold_id"] for e in impacts] == [hold["id"]]
    assert impacts[0]["reason"].startswith("impact unknown: ")


def test_an_open_event_stream_does_not_keep_guardproxy_from_stopping(
    tmp_path: Path, echo_server: EchoServer
) -> None:
    guard = start_guard(tmp_path, echo_server)
    token = guard.on_call.clients["alice"].token
    ended = threading.Event()

    def listen() -> None:
        try:
            with (
                httpx.Client(base_url=control_url(guard), timeout=30) as client,
                client.stream(
                    "GET", "/v1/events", headers={"Authorization": f"Bearer {token}"}
                ) as response,
            ):
                for _ in response.iter_lines():
                    pass
        except httpx.HTTPError:
            pass
        ended.set()

    threading.Thread(target=listen, daemon=True).start()
    time.sleep(0.5)
    began = time.monotonic()
    guard.background.stop()
    assert time.monotonic() - began < 5
    assert ended.wait(5), "the stream was closed when guardproxy stopped"


def test_a_removed_approver_stops_hearing_events_within_a_heartbeat(
    guard: Guard, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(console, "HEARTBEAT_SECONDS", 0.2)
    token = guard.on_call.clients["alice"].token
    lines: list[str] = []
    ended = threading.Event()

    def listen() -> None:
        headers = {"Authorization": f"Bearer {token}"}
        with (
            httpx.Client(base_url=control_url(guard), timeout=30) as client,
            client.stream("GET", "/v1/events", headers=headers) as response,
        ):
            lines.extend(response.iter_lines())
        ended.set()

    threading.Thread(target=listen, daemon=True).start()
    deadline = time.monotonic() + 5
    while ": keep-alive" not in lines and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ": keep-alive" in lines, "heartbeats flow while alice is an approver"
    assert not ended.is_set()
    guard.background.service.store.remove_approver("alice")
    assert ended.wait(5), "the stream ended after alice was removed"
