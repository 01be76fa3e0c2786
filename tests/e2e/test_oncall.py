"""On-call routing and Slack approvals end to end: a real guardproxy configured with the
local rotation file, PagerDuty paging and a Slack app (fakes of both on loopback), a real
client's request held live through the proxy, the page triggered, the hold shown with
who is on call by the CLI, refused to the session's own user in Slack, approved in Slack
by the person on call, released to the upstream, the page resolved.

Also: a bundle naming a schedule nobody configured does not start, nor reload."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from approvals.fakes import (
    FakePagerDuty,
    FakeSlack,
    block_action,
    post_interaction,
    view_submission,
)

from guardproxy.config import ProxyConfig
from guardproxy.control.chat import SLACK_PATH
from guardproxy.control.client import ControlClient
from guardproxy.gate.gate import utc_now
from guardproxy.server import BackgroundGuardproxy, StartError
from guardproxy.session.environment import proxy_url
from guardproxy.store import ApproverLink

from .approvers import add_approver
from .guard_fixtures import describe, guardproxy_cli, run_client
from .servers import EchoServer

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
ROUTING_KEY = "R0UTINGKEYPLATFORM00000000000001"
SIGNING_SECRET = "e2e-slack-signing-secret"
CHANNEL = "C0HOLDS01"
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
      approval:
        groups: [oncall:platform-primary, sre-oncall]
        page: oncall:platform-primary
        timeout: 10m
"""
GHOST = """\
apiVersion: guardproxy.dev/v1
kind: PolicySet
metadata: {name: ghost}
spec:
  rules:
    - id: hold-ghost
      decision: hold
      match: {providers: [k8s], verbs: [delete], resourceNames: [ghost-cm]}
      message: Nobody configured this schedule.
      approval: {groups: [oncall:ghost-schedule]}
"""
ROTATIONS = """\
rotations:
  platform-primary:
    every: week
    time_zone: UTC
    start: 2025-01-06
    people: [alice]
"""


def wait_for[R](probe: Callable[[], R | None], timeout: float = 15.0) -> R:
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def config_for(
    tmp_path: Path, upstream: EchoServer, pagerduty: FakePagerDuty, slack: FakeSlack, *rules: str
) -> ProxyConfig:
    policies = tmp_path / "policies"
    policies.mkdir(parents=True)
    shutil.copy(ROOT / "policies" / "bundle.yaml", policies / "bundle.yaml")
    for n, text in enumerate(rules):
        (policies / f"rules-{n}.yaml").write_text(text)
    rotations = tmp_path / "oncall.yaml"
    rotations.write_text(ROTATIONS)
    return ProxyConfig.model_validate(
        {
            "data_dir": tmp_path / "data",
            "policies": policies,
            "listen": "127.0.0.1:0",
            "control": "127.0.0.1:0",
            "chat_listen": "127.0.0.1:0",
            "hold_window_seconds": 30,
            "kubernetes_hosts": [f"127.0.0.1:{upstream.port}"],
            "console_url": "https://guard.example/console",
            "oncall": {
                "rotations": str(rotations),
                "pagerduty": {"events_url": pagerduty.url},
                "schedules": {
                    "platform-primary": {
                        "pager": {"kind": "pagerduty", "routing_key_env": "E2E_ROUTING_KEY"}
                    }
                },
            },
            "slack": {
                "channel": CHANNEL,
                "api_url": f"{slack.url}/api",
                "bot_token_env": "E2E_SLACK_TOKEN",
                "signing_secret_env": "E2E_SLACK_SIGNING",
            },
        }
    )


@pytest.fixture(autouse=True)
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("E2E_ROUTING_KEY", ROUTING_KEY)
    monkeypatch.setenv("E2E_SLACK_TOKEN", "xoxb-test-token")
    monkeypatch.setenv("E2E_SLACK_SIGNING", SIGNING_SECRET)


@pytest.fixture
def pagerduty() -> Iterator[FakePagerDuty]:
    with FakePagerDuty() as fake:
        yield fake


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


def test_a_held_request_is_paged_shown_and_approved_in_slack_by_the_on_call(
    tmp_path: Path, echo_server: EchoServer, pagerduty: FakePagerDuty, slack: FakeSlack
) -> None:
    config = config_for(tmp_path, echo_server, pagerduty, slack, RULES)
    background = BackgroundGuardproxy(config).start()
    try:
        service = background.service
        assert service.control is not None and service.proxy is not None
        assert service.chat is not None
        store = service.store
        control = f"http://127.0.0.1:{service.control.port}"
        # alice may decide only as the on-call; carol, in sre-oncall, started the session
        tokens = {
            name: add_approver(store, name, (group,))
            for name, group in (("alice", "senior"), ("carol", "sre-oncall"))
        }
        for name, user in (("alice", "U0ALICE01"), ("carol", "U0CAROL01")):
            store.link_approver(
                ApproverLink(approver=name, kind="slack", external_id=user, created_at=utc_now())
            )
        assert service.registry is not None
        session, credential = service.registry.create(
            name="agent", user="carol", command=["agent"], cwd=str(tmp_path), labels=[],
            now=utc_now(),
        )  # fmt: skip
        session_proxy = proxy_url("127.0.0.1", service.proxy.port, session.id, credential.token)
        answer: dict[str, Any] = {}

        def agent() -> None:
            url = f"{echo_server.url}/api/v1/namespaces/default/configmaps/oncall-cm"
            with httpx.Client(proxy=session_proxy, timeout=40) as client:
                answer["response"] = client.delete(url)

        waiting = threading.Thread(target=agent)
        waiting.start()
        alice = ControlClient(control, tokens["alice"])

        def paged_hold() -> dict[str, Any] | None:
            holds = alice.holds("pending")
            if holds and holds[0]["oncall"] and holds[0]["oncall"][0]["paged"]:
                return holds[0]
            return None

        hold = wait_for(paged_hold)
        hold_id = hold["id"]
        (on_call,) = hold["oncall"]
        assert on_call["approvers"] == ["alice"] and on_call["schedule"] == "platform-primary"
        assert pagerduty.actions(hold_id) == ["trigger"]
        assert echo_server.requests == []  # held: nothing reached the upstream

        # the CLI shows who is on call for it and that they were paged
        env = {k: v for k, v in os.environ.items() if not k.startswith("GUARDPROXY_")}
        env.update(GUARDPROXY_APPROVER_TOKEN=tokens["alice"], XDG_CONFIG_HOME=str(tmp_path / "x"))
        listed = run_client([*guardproxy_cli(), "holds", "--control", control], env, timeout=60)
        assert listed.returncode == 0, describe(listed)
        assert "on call (platform-primary): alice (rotation platform-primary (oncall.yaml))" in (
            listed.stdout
        )
        assert "level 1 (platform-primary) paged via pagerduty at" in listed.stdout

        # Slack: the message with its buttons; carol (the session's user) is refused
        ((channel, ts),) = wait_for(lambda: list(slack.messages))
        chat_url = f"http://127.0.0.1:{service.chat.port}{SLACK_PATH}"

        def verdict(user: str) -> httpx.Response:
            clicked = post_interaction(
                chat_url, SIGNING_SECRET,
                block_action(user, "guardproxy_approve", hold_id, trigger=slack.new_trigger(),
                             channel=channel, ts=ts),
            )  # fmt: skip
            assert clicked.status_code == 200
            return post_interaction(
                chat_url, SIGNING_SECRET,
                view_submission(user, slack.views[-1], {"reason": "checked the change ticket"}),
            )  # fmt: skip

        # the agent's session cannot reach the chat listener through the proxy
        with httpx.Client(proxy=session_proxy, timeout=10) as client:
            blocked = client.post(chat_url, content=b"payload=%7B%7D")
        assert blocked.status_code == 403
        assert "cannot reach guardproxy's own control API" in blocked.json()["message"]

        own = verdict("U0CAROL01").json()
        assert own["response_action"] == "errors"
        assert "carol started the session" in own["errors"]["reason"]
        assert echo_server.requests == []
        done = verdict("U0ALICE01")
        assert done.status_code == 200 and done.content == b""
        waiting.join(40)
        assert answer["response"].status_code == 200
        assert len(echo_server.log.matching("DELETE")) == 1
        wait_for(lambda: pagerduty.actions(hold_id) == ["trigger", "resolve"] or None)
        wait_for(lambda: "Approved by alice" in slack.message(CHANNEL)["text"] or None)
    finally:
        background.stop()


def test_a_bundle_naming_an_unconfigured_schedule_neither_starts_nor_reloads(
    tmp_path: Path, echo_server: EchoServer, pagerduty: FakePagerDuty, slack: FakeSlack
) -> None:
    config = config_for(tmp_path / "a", echo_server, pagerduty, slack, RULES, GHOST)
    with pytest.raises(StartError) as refused:
        BackgroundGuardproxy(config).start()
    message = str(refused.value)
    assert "\n" not in message
    assert "names oncall:ghost-schedule, but no schedule ghost-schedule is configured" in message
    config = config_for(tmp_path / "b", echo_server, pagerduty, slack, RULES)
    background = BackgroundGuardproxy(config).start()
    try:
        digest = background.service.bundle.digest
        (config.policies / "ghost.yaml").write_text(GHOST)
        report = background.call(background.service.reload_policies("test"))
        assert report.result == "refused" and report.digest == digest
        assert "no schedule ghost-schedule is configured" in report.errors[0]
        assert background.service.bundle.digest == digest
    finally:
        background.stop()
