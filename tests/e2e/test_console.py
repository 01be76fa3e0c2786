"""The web console in a real headless chromium (Debian's, driven by Playwright).

A real guardproxy holds a live request from a real HTTP client; an approver signs in to
the console with their token, sees the hold appear without reloading, opens it, approves
with a reason, and the held client gets the upstream's answer.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .servers import EchoServer
from .test_guard import Guard, start_guard

playwright_sync = pytest.importorskip("playwright.sync_api")
from playwright.sync_api import (  # noqa: E402
    Browser,
    Page,
    ViewportSize,
    expect,
    sync_playwright,
)

pytestmark = pytest.mark.slow

PHONE: ViewportSize = {"width": 390, "height": 844}
NAMESPACE_PROD = "/api/v1/namespaces/prod"


def chromium_path() -> str:
    """Debian's chromium (apt-get install chromium); skip with the reason if absent,
    except in CI (``GUARDPROXY_REQUIRE_CHROMIUM``), where ``.ci/run`` installs it."""
    found = os.environ.get("GUARDPROXY_CHROMIUM") or shutil.which("chromium")
    if not found:
        reason = "chromium is not installed (apt-get install -y chromium)"
        if os.environ.get("GUARDPROXY_REQUIRE_CHROMIUM"):
            pytest.fail(reason)
        pytest.skip(reason)
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium_path(), args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def console_guard(tmp_path: Path, echo_server: EchoServer) -> Iterator[Guard]:
    guard = start_guard(tmp_path, echo_server, hold_window_seconds=60)
    try:
        yield guard
    finally:
        guard.background.stop()


def approver_token(guard: Guard, name: str = "alice") -> str:
    """The token of an on-call approver the guard's store knows (see approvers.py)."""
    return guard.on_call.clients[name].token


def console_url(guard: Guard) -> str:
    service = guard.background.service
    assert service.control is not None
    return f"http://127.0.0.1:{service.control.port}/console"


def sign_in(page: Page, guard: Guard, token: str) -> None:
    page.goto(console_url(guard))
    page.fill("#token", token)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#queue-view")).to_be_visible()
    expect(page.locator("#live")).to_have_text("live")


def wait_for_decision(guard: Guard, outcome: str, timeout: float = 10.0) -> None:
    """Until the decision log has one with ``outcome`` (records are written in batches)."""
    approver = guard.on_call.clients["alice"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = httpx.get(
            f"{approver.url}/v1/decisions",
            params={"outcome": outcome},
            headers={"Authorization": f"Bearer {approver.token}"},
            timeout=5,
        )
        if response.json()["decisions"]:
            return
        time.sleep(0.05)
    raise AssertionError(f"no {outcome} decision was recorded within {timeout} s")


class HeldClient:
    """A DELETE through the proxy on its own thread, waiting live while it is held."""

    def __init__(self, guard: Guard, url: str, headers: dict[str, str] | None = None) -> None:
        self.result: dict[str, Any] = {}
        self._thread = threading.Thread(
            target=self._run, args=(guard, url, headers or {}), daemon=True
        )
        self._thread.start()

    def _run(self, guard: Guard, url: str, headers: dict[str, str]) -> None:
        try:
            with httpx.Client(proxy=guard.proxy_url, timeout=90) as client:
                response = client.delete(url, headers=headers)
            self.result["status"] = response.status_code
            self.result["body"] = response.json()
        except Exception as error:  # reported by the asserting test
            self.result["error"] = repr(error)

    def wait(self, timeout: float = 20) -> dict[str, Any]:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the held client did not complete"
        return self.result

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()


def test_two_approvers_sign_in_see_the_hold_live_and_approve_it_from_the_console(
    browser: Browser, console_guard: Guard, echo_server: EchoServer
) -> None:
    """Namespace deletion needs two seniors: alice approves, the request still waits and
    her page shows what is missing; bob approves, and the held client gets the answer."""
    guard = console_guard
    alice_token = approver_token(guard, "alice")
    alice_context = browser.new_context()
    alice = alice_context.new_page()
    console_responses: list[dict[str, str]] = []
    alice.on(
        "response",
        lambda r: console_responses.append(r.headers) if r.url.endswith("/console") else None,
    )
    sign_in(alice, guard, alice_token)
    expect(alice.locator("#who")).to_contain_text("alice")
    expect(alice.locator("#queue-empty")).to_be_visible()
    # the token stays out of URLs and out of persistent storage
    assert alice_token not in alice.url
    assert alice.evaluate("sessionStorage.getItem('guardproxy.token')") == alice_token
    assert alice.evaluate("localStorage.length") == 0
    csp = console_responses[0]["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp

    client = HeldClient(guard, f"{echo_server.url}{NAMESPACE_PROD}")
    card = alice.locator("#queue li.card")
    expect(card).to_have_count(1, timeout=15_000)  # pushed by the event stream, no reload
    expect(card).to_contain_text("prod")
    expect(card).to_contain_text("0 of 2")
    assert not client.done
    card.locator("a").click()

    expect(alice.locator("#detail-state")).to_contain_text("pending")
    body = alice.locator("#detail-body")
    expect(body).to_contain_text("hold-prod-namespace-delete")
    expect(body).to_contain_text("Deleting namespace prod")
    expect(body).to_contain_text("DELETE")  # the redacted request that would be sent
    # a reason is required: approving without one sends nothing
    alice.click("#approve")
    expect(alice.locator("#resolve-error")).to_contain_text("reason is required")
    alice.fill("#reason", "planned teardown of the prod namespace, ticket OPS-1")
    alice.click("#approve")
    expect(alice.locator("#detail-body")).to_contain_text("1 of 2")
    expect(alice.locator("#detail-state")).to_contain_text("pending")
    expect(body).to_contain_text("planned teardown")  # approvals so far
    assert not client.done and echo_server.requests == []

    bob_context = browser.new_context()
    bob = bob_context.new_page()
    sign_in(bob, guard, approver_token(guard, "bob"))
    bob.locator("#queue li.card a").click()
    bob.fill("#reason", "second senior: agreed, OPS-1")
    bob.click("#approve")
    result = client.wait()
    assert result.get("status") == 200, result
    assert result["body"]["method"] == "DELETE"
    assert result["body"]["path"] == NAMESPACE_PROD
    assert [r.method for r in echo_server.requests] == ["DELETE"]
    # alice's open page follows along live
    expect(alice.locator("#detail-state")).not_to_contain_text("pending")
    (hold,) = guard.holds("all")
    assert hold["state"] in ("approved", "released")
    bob_context.close()

    # the decision history, filtered by outcome, provider and session
    wait_for_decision(guard, "allow")
    alice.click("nav a[data-route=history]")
    rows = alice.locator("#history tbody tr")
    expect(rows.filter(has_text=hold["id"])).not_to_have_count(0)
    alice.select_option("#history-form select[name=outcome]", "allow")
    alice.click("#history-form button[type=submit]")
    expect(rows).not_to_have_count(0)
    for outcome in alice.locator("#history tbody .outcome").all_text_contents():
        assert outcome == "allow"
    assert "outcome=allow" in alice.url
    alice.select_option("#history-form select[name=outcome]", "deny")
    alice.click("#history-form button[type=submit]")
    expect(alice.locator("#history-empty")).to_be_visible()
    alice.select_option("#history-form select[name=outcome]", "")
    alice.fill("#history-form input[name=provider]", "aws")
    alice.click("#history-form button[type=submit]")
    expect(alice.locator("#history-empty")).to_be_visible()
    expect(rows).to_have_count(0)
    alice.goto(console_url(guard) + "#/history?session=no-such-session")
    expect(alice.locator("#history-empty")).to_be_visible()
    alice_context.close()


def test_on_a_phone_the_approve_button_is_reachable_without_horizontal_scrolling(
    browser: Browser, console_guard: Guard, echo_server: EchoServer
) -> None:
    guard = console_guard
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    page = context.new_page()
    client = HeldClient(guard, f"{echo_server.url}{NAMESPACE_PROD}")
    sign_in(page, guard, approver_token(guard))
    card = page.locator("#queue li.card")
    expect(card).to_have_count(1, timeout=15_000)
    card.locator("a").tap()
    approve = page.locator("#approve")
    expect(approve).to_be_visible()
    box = approve.bounding_box()
    assert box is not None
    assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
    assert box["y"] + box["height"] <= PHONE["height"], "approve is below the fold"
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    page.fill("#reason", "from my phone")
    page.locator("#deny").tap()
    result = client.wait()
    assert result.get("status") == 403, result
    assert echo_server.requests == []
    # the history reads as stacked cards on a phone, not a table to scroll sideways
    wait_for_decision(guard, "deny")
    page.locator("nav a[data-route=history]").tap()
    expect(page.locator("#history tbody tr")).not_to_have_count(0)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    context.close()


def test_sign_in_refuses_unknown_and_admin_tokens_with_what_to_do(
    browser: Browser, console_guard: Guard
) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.goto(console_url(console_guard))
    page.fill("#token", "gpa_not-a-real-token")
    page.click("#login-form button[type=submit]")
    expect(page.locator("#login-error")).to_have_text("That token is not valid.")
    page.fill("#token", console_guard.control.token)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#login-error")).to_contain_text("admin token")
    expect(page.locator("#queue-view")).to_be_hidden()
    assert page.evaluate("sessionStorage.length") == 0
    # signing out forgets the token
    sign_in(page, console_guard, approver_token(console_guard))
    page.click("#logout")
    expect(page.locator("#login-view")).to_be_visible()
    expect(page.locator("#live")).to_have_text("offline")
    assert page.evaluate("sessionStorage.length") == 0
    context.close()


def test_agent_text_is_shown_as_text_never_run(
    browser: Browser, console_guard: Guard, echo_server: EchoServer
) -> None:
    """Markup an agent controls (its User-Agent, shown in the request) stays text."""
    guard = console_guard
    markup = '<img src=x onerror="window.pwned=1">'
    context = browser.new_context()
    page = context.new_page()
    sign_in(page, guard, approver_token(guard))
    client = HeldClient(guard, f"{echo_server.url}{NAMESPACE_PROD}", {"User-Agent": markup})
    card = page.locator("#queue li.card")
    expect(card).to_have_count(1, timeout=15_000)
    card.locator("a").click()
    page.locator("details.panel summary", has_text="Action").click()
    expect(page.locator("#detail-body")).to_contain_text(markup)
    assert page.locator("#detail-body img").count() == 0
    assert page.evaluate("window.pwned") is None
    page.fill("#reason", "not a real namespace")
    page.click("#deny")
    assert client.wait().get("status") == 403
    context.close()
