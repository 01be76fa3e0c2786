"""The console shows who is on call for a pending hold and whether they were paged
(headless chromium, a real guardproxy with the rotation file and the PagerDuty fake);
someone not on call is told who is, the on-call approves from the console."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from approvals.fakes import FakePagerDuty

from .servers import EchoServer
from .test_console import HeldClient, approver_token, browser, sign_in  # noqa: F401
from .test_guard import ROOT, Guard, start_guard

playwright_sync = pytest.importorskip("playwright.sync_api")
from playwright.sync_api import Browser, expect  # noqa: E402

pytestmark = pytest.mark.slow

ROUTING_KEY = "R0UTINGKEYCONSOLE000000000000001"
RULES = """\
apiVersion: guardproxy.dev/v1
kind: PolicySet
metadata: {name: oncall}
spec:
  rules:
    - id: hold-paged
      decision: hold
      match: {providers: [k8s], verbs: [delete], resourceNames: [oncall-cm]}
      message: Deleting {action.resource.name} needs whoever is on call for the platform.
      approval: {groups: [oncall:platform-primary], page: oncall:platform-primary}
"""
ROTATIONS = """\
rotations:
  platform-primary: {every: week, time_zone: UTC, start: 2025-01-06, people: [bob]}
"""


@pytest.fixture
def oncall_guard(
    tmp_path: Path, echo_server: EchoServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Guard]:
    monkeypatch.setenv("CONSOLE_ROUTING_KEY", ROUTING_KEY)
    policies = tmp_path / "oncall-policies"  # start_guard writes its own to policies/
    policies.mkdir()
    shutil.copy(ROOT / "policies" / "bundle.yaml", policies / "bundle.yaml")
    (policies / "oncall.yaml").write_text(RULES)
    rotations = tmp_path / "oncall.yaml"
    rotations.write_text(ROTATIONS)
    with FakePagerDuty() as pagerduty:
        guard = start_guard(
            tmp_path, echo_server, hold_window_seconds=60, policies=policies,
            oncall={
                "rotations": str(rotations),
                "pagerduty": {"events_url": pagerduty.url},
                "schedules": {"platform-primary": {
                    "pager": {"kind": "pagerduty", "routing_key_env": "CONSOLE_ROUTING_KEY"}
                }},
            },
        )  # fmt: skip
        try:
            yield guard
        finally:
            guard.background.stop()


def test_the_console_shows_who_is_on_call_and_the_page_and_the_on_call_decides(
    browser: Browser,  # noqa: F811
    oncall_guard: Guard,
    echo_server: EchoServer,
) -> None:
    guard = oncall_guard
    context = browser.new_context()
    alice = context.new_page()
    sign_in(alice, guard, approver_token(guard, "alice"))
    client = HeldClient(guard, f"{echo_server.url}/api/v1/namespaces/default/configmaps/oncall-cm")
    card = alice.locator("#queue li.card")
    expect(card).to_have_count(1, timeout=15_000)
    on_call = card.locator(".oncall li")
    expect(on_call).to_contain_text("On call (platform-primary): bob (rotation platform-primary")
    # the page goes out after the hold is shown: the list is reloaded by the next event
    alice.reload()
    expect(alice.locator("#queue-view")).to_be_visible()
    expect(card.locator(".oncall li")).to_contain_text(
        "level 1 (platform-primary) paged via pagerduty at", timeout=15_000
    )
    card.locator("a").click()
    body = alice.locator("#detail-body")
    expect(body).to_contain_text("Who is on call for it now")
    expect(body).to_contain_text("bob (rotation platform-primary (oncall.yaml))")
    alice.fill("#reason", "I am not on call but I try")
    alice.click("#approve")
    expect(alice.locator("#resolve-error")).to_contain_text("on call for platform-primary now: bob")
    assert not client.done and echo_server.requests == []

    bob = context.new_page()
    sign_in(bob, guard, approver_token(guard, "bob"))
    bob.locator("#queue li.card a").click()
    bob.fill("#reason", "on call, checked")
    bob.click("#approve")
    result = client.wait()
    assert result.get("status") == 200, result
    assert [r.method for r in echo_server.requests] == ["DELETE"]
    context.close()
