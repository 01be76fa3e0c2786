"""Two-way Slack against a fake of Slack's Web API, with the real chat listener on
loopback receiving what Slack would send (signed interactivity payloads): a hold is posted
with Approve and Deny, a click opens the reason dialog, the submitted verdict goes through
the approvals service (on-call, quorum, required groups, no self-approval), the message
shows progress and then the outcome; a bad signature, an old timestamp and a replayed
body are refused, and an unlinked Slack user cannot decide."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from guardproxy.approvals.events import hold_event
from guardproxy.approvals.oncall import OnCallRouting
from guardproxy.approvals.schedules import build_schedules
from guardproxy.approvals.service import ApprovalService
from guardproxy.approvals.settings import OnCallSettings
from guardproxy.approvals.slack import (
    APPROVE_ACTION,
    DENY_ACTION,
    SlackApi,
    SlackChat,
    SlackInteractions,
    slack_signature,
    verify_slack_request,
)
from guardproxy.approvals.webapi import LazyTransport
from guardproxy.control.chat import SLACK_PATH, ChatServer
from guardproxy.gate.gate import utc_now
from guardproxy.store import Approver, ApproverLink, Hold, HoldState, SqliteStore

from .background import LoopThread
from .fakes import (
    FakeSlack,
    block_action,
    interaction_body,
    post_interaction,
    signed_headers,
    view_submission,
)
from .rig import PEOPLE, T0, Rig, write_bundle

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"  # Slack's documentation example shape
CHANNEL = "C0HOLDS01"
RULES = """\
apiVersion: guardproxy.dev/v1
kind: PolicySet
metadata: {name: sl}
spec:
  rules:
    - id: hold-pair
      decision: hold
      match: {providers: [k8s], verbs: [delete], resourceNames: [pair-cm]}
      message: Deleting {action.resource.name} needs the on-call and a senior.
      approval:
        groups: [oncall:primary, senior]
        quorum: 2
        requiredGroups: [oncall:primary]
        timeout: 30m
"""
ROTATIONS = """\
rotations:
  primary:
    every: week
    time_zone: UTC
    start: 2025-02-24
    people: [bob]
"""
SLACK_IDS = {"alice": "U0ALICE01", "bob": "U0BOB0001", "carol": "U0CAROL01"}


class Chat:
    """The service, SlackChat and the chat listener on a loop thread, the fake Slack."""

    def __init__(self, tmp_path: Path, store: SqliteStore, slack: FakeSlack, loop: LoopThread):
        rotations = tmp_path / "oncall.yaml"
        rotations.write_text(ROTATIONS)
        for name, groups in PEOPLE.items():
            store.add_approver(Approver(name=name, groups=groups, token_hash=name, created_at=T0))
        for name, user in SLACK_IDS.items():
            store.link_approver(
                ApproverLink(approver=name, kind="slack", external_id=user, created_at=T0)
            )
        self.rig = Rig(store, write_bundle(tmp_path / "policies", RULES))
        schedules = build_schedules(OnCallSettings(rotations=rotations), transport=LazyTransport)
        self.rig.service = ApprovalService(
            store, lambda: self.rig.bundle, clock=self.rig.clock,
            oncall=OnCallRouting(schedules, store),
        )  # fmt: skip
        self.slack = slack
        self.loop = loop
        self.transport = LazyTransport()
        api = SlackApi(api=f"{slack.url}/api", token=slack.token, transport=self.transport,
                       backoff_seconds=0.01)  # fmt: skip
        self.chat = SlackChat(
            api, CHANNEL, store, self.rig.service, console_url=lambda: "https://guard.example"
        )
        interactions = SlackInteractions(
            signing_secret=SECRET, store=store, approvals=self.rig.service, api=api,
            clock=utc_now,
        )  # fmt: skip
        self.server = ChatServer(interactions, "127.0.0.1", 0)

        async def start() -> None:
            await self.server.start()
            self.chat.start(self.rig.service.events)

        loop.call(start())
        self.url = f"http://127.0.0.1:{self.server.port}{SLACK_PATH}"

    def stop(self) -> None:
        async def stop() -> None:
            await self.chat.stop()
            await self.server.stop()
            self.transport.close()

        self.loop.call(stop())

    def settle(self) -> None:
        self.loop.call(self.chat.idle())

    def held(self) -> Hold:
        hold = self.rig.hold("pair-cm")
        self.rig.service.events.publish(hold_event("held", hold, self.rig.clock()))
        self.settle()
        return hold

    def message(self) -> dict[str, Any]:
        return self.slack.message(CHANNEL)

    def click(self, who: str, hold: Hold, action: str = APPROVE_ACTION) -> httpx.Response:
        ((channel, ts),) = self.slack.messages
        payload = block_action(
            SLACK_IDS.get(who, who), action, hold.id, trigger=self.slack.new_trigger(),
            channel=channel, ts=ts,
        )  # fmt: skip
        return post_interaction(self.url, SECRET, payload)

    def submit(self, who: str, reason: str = "checked the runbook") -> httpx.Response:
        view = self.slack.views[-1]
        answer = post_interaction(
            self.url, SECRET, view_submission(SLACK_IDS.get(who, who), view, {"reason": reason})
        )
        self.settle()
        return answer

    def decide(self, who: str, hold: Hold, action: str = APPROVE_ACTION) -> httpx.Response:
        clicked = self.click(who, hold, action)
        assert clicked.status_code == 200 and clicked.content == b""
        return self.submit(who)


@pytest.fixture
def chat(tmp_path: Path) -> Iterator[Chat]:
    with (
        SqliteStore(tmp_path / "guardproxy.db") as store,
        FakeSlack() as slack,
        LoopThread() as loop,
    ):
        running = Chat(tmp_path, store, slack, loop)
        try:
            yield running
        finally:
            running.stop()


def section(message: dict[str, Any]) -> str:
    text: str = message["blocks"][0]["text"]["text"]
    return text


def buttons(message: dict[str, Any]) -> list[str]:
    return [e["action_id"] for e in message["blocks"][2]["elements"]]


def test_a_hold_is_posted_approved_in_slack_and_the_message_follows(chat: Chat) -> None:
    hold = chat.held()
    posted = chat.message()
    assert buttons(posted) == [APPROVE_ACTION, DENY_ACTION, "guardproxy_console"]
    assert "0 of 2 approvals; needs 2 more approvals" in section(posted)
    assert "*On call (primary):* bob (rotation primary (oncall.yaml)); not paged" in section(posted)
    # bob, on call, clicks Approve: the reason dialog opens
    assert chat.click("bob", hold).status_code == 200
    (dialog,) = chat.slack.views
    assert dialog["callback_id"] == "guardproxy_verdict"
    assert dialog["title"]["text"] == "Approve hold"
    answer = chat.submit("bob", "on call, looked at the dashboards")
    assert answer.status_code == 200 and answer.content == b""  # the dialog closes
    (approval,) = chat.rig.store.list_approvals(hold.id)
    assert (approval.approver, approval.reason) == ("bob", "on call, looked at the dashboards")
    assert "oncall:primary" in approval.groups
    progress = section(chat.message())
    assert "1 of 2 approvals; needs 1 more approval from oncall:primary or senior" in progress
    assert "• bob approved: on call, looked at the dashboards" in progress
    # alice, a senior, completes it
    assert chat.decide("alice", hold).status_code == 200
    stored = chat.rig.store.get_hold(hold.id)
    assert stored is not None and stored.state is HoldState.APPROVED
    done = chat.message()
    assert section(done).startswith("*:white_check_mark: Approved by bob, alice*")
    assert buttons(done) == ["guardproxy_console"]  # nothing left to decide


def test_a_denial_in_slack_ends_the_hold(chat: Chat) -> None:
    hold = chat.held()
    assert chat.decide("alice", hold, DENY_ACTION).status_code == 200
    stored = chat.rig.store.get_hold(hold.id)
    assert stored is not None and stored.state is HoldState.DENIED
    assert stored.resolved_by == "alice"
    assert section(chat.message()).startswith("*:no_entry: Denied by alice*")
    # a later click on the old message says it is decided
    assert chat.click("bob", hold).status_code == 200
    assert chat.slack.views[-1]["title"]["text"] == "Already decided"


def test_the_session_user_cannot_approve_from_slack(chat: Chat) -> None:
    hold = chat.held()
    answer = chat.decide("carol", hold)
    assert answer.status_code == 200
    body = answer.json()
    assert body["response_action"] == "errors"
    assert "carol started the session that made this request" in body["errors"]["reason"]
    assert chat.rig.store.list_approvals(hold.id) == []


def test_someone_not_on_call_and_not_senior_is_told_why(chat: Chat) -> None:
    chat.rig.store.link_approver(
        ApproverLink(approver="eve", kind="slack", external_id="U0EVE0001", created_at=T0)
    )
    hold = chat.held()
    answer = chat.decide("U0EVE0001", hold)
    error = answer.json()["errors"]["reason"]
    assert "eve is not in a group that may decide this hold" in error
    assert "on call for primary now: bob" in error


def test_an_unlinked_slack_user_cannot_decide(chat: Chat) -> None:
    hold = chat.held()
    assert chat.click("U0STRANGER", hold).status_code == 200
    notice = chat.slack.views[-1]
    assert notice["title"]["text"] == "Not linked" and "submit" not in notice
    assert (
        "guardproxy approvers link NAME --slack U0STRANGER" in (notice["blocks"][0]["text"]["text"])
    )
    # a submission of the real dialog by an unlinked user is refused too
    assert chat.click("bob", hold).status_code == 200
    answer = chat.submit("U0STRANGER")
    assert answer.json()["response_action"] == "errors"
    assert "is not linked to a guardproxy approver" in answer.json()["errors"]["reason"]
    assert chat.rig.store.list_approvals(hold.id) == []


def test_a_bad_signature_an_old_timestamp_and_a_replay_are_refused(chat: Chat) -> None:
    hold = chat.held()
    ((channel, ts),) = chat.slack.messages
    trigger = chat.slack.new_trigger()
    payload = block_action(SLACK_IDS["bob"], APPROVE_ACTION, hold.id, trigger=trigger,
                           channel=channel, ts=ts)  # fmt: skip
    body = interaction_body(payload)

    def send(headers: dict[str, str], content: bytes = body) -> httpx.Response:
        return httpx.post(chat.url, content=content, headers=headers, timeout=10)

    wrong_secret = signed_headers("not-the-secret", body)
    assert send(wrong_secret).status_code == 401
    tampered = interaction_body({**payload, "user": {"id": SLACK_IDS["alice"]}})
    assert send(signed_headers(SECRET, body), tampered).status_code == 401
    unsigned = {"Content-Type": "application/x-www-form-urlencoded"}
    assert send(unsigned).status_code == 401
    old = int(time.time()) - 301
    assert send(signed_headers(SECRET, body, old)).status_code == 401
    future = int(time.time()) + 305  # int() drops up to a second: well past the window
    assert send(signed_headers(SECRET, body, future)).status_code == 401
    assert chat.slack.views == []  # nothing got through
    fresh = signed_headers(SECRET, body)
    assert send(fresh).status_code == 200
    assert len(chat.slack.views) == 1
    replayed = send(fresh)
    assert replayed.status_code == 409 and len(chat.slack.views) == 1
    # a replayed verdict is refused before it is read
    chat.slack.triggers.add(trigger)
    submission = interaction_body(view_submission(SLACK_IDS["bob"], chat.slack.views[-1],
                                                  {"reason": "ok"}))  # fmt: skip
    signed = signed_headers(SECRET, submission)
    assert send(signed, submission).status_code == 200
    assert send(signed, submission).status_code == 409
    assert len(chat.rig.store.list_approvals(hold.id)) == 1


def test_only_the_slack_route_is_served(chat: Chat) -> None:
    base = chat.url.removesuffix(SLACK_PATH)
    for path in ("/", "/v1/holds", "/console", "/metrics", "/slack/interactions/x"):
        answer = httpx.get(base + path, timeout=10)
        assert answer.status_code == 404, path
    assert httpx.get(chat.url, timeout=10).status_code == 405
    too_big = b"payload=" + b"x" * (2 * 1024 * 1024)
    try:  # tornado refuses a body over the limit before reading it, closing the connection
        refused = httpx.post(chat.url, content=too_big, headers=signed_headers(SECRET, too_big))
    except httpx.TransportError:
        return
    assert refused.status_code in (400, 413)


def test_verify_slack_request_follows_slacks_recipe() -> None:
    body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&command=%2Fweather"
    stamp = "1531420618"
    signature = slack_signature(SECRET, stamp, body)
    assert signature.startswith("v0=") and len(signature) == 67
    assert verify_slack_request(SECRET, stamp, signature, body, now=1531420618 + 299) == ""
    assert "from the clock" in verify_slack_request(
        SECRET, stamp, signature, body, now=1531420618 + 301
    )
    assert verify_slack_request(SECRET, stamp, signature, body + b"x", now=1531420618) == (
        "the signature does not match"
    )
    assert verify_slack_request(SECRET, "1e9", signature, body, now=1e9) == (
        "the timestamp is not a number"
    )
    assert verify_slack_request(SECRET, None, signature, body, now=0).startswith("unsigned")
