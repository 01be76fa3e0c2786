"""Paging through fakes of PagerDuty's Events API v2 and Opsgenie's Alert API on loopback,
driven by the real approvals service on a real SQLite store with a clock the test moves:
a hold's page is triggered once and resolved once (whatever repeats its events, even a
second replica), escalation half-way pages the next level whose on-call may then decide,
expiry resolves, failures are retried or shown, and a page that raced a decision on
another replica is resolved after all."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from guardproxy.approvals.events import hold_event
from guardproxy.approvals.oncall import OnCallRouting
from guardproxy.approvals.paging import Paging, build_pagers
from guardproxy.approvals.rules import ApprovalRefused
from guardproxy.approvals.schedules import build_schedules
from guardproxy.approvals.service import ApprovalService
from guardproxy.approvals.settings import OnCallSettings
from guardproxy.approvals.webapi import LazyTransport
from guardproxy.store import Approver, Hold, HoldState, SqliteStore

from .fakes import Answer, FakeOpsgenie, FakePagerDuty, Seen
from .rig import PEOPLE, T0, Rig, person, write_bundle

PRIMARY_KEY = "R0UTINGKEYPRIMARY000000000000001"
SECONDARY_KEY = "R0UTINGKEYSECONDARY0000000000002"

RULES = """\
apiVersion: guardproxy.dev/v1
kind: PolicySet
metadata: {name: pg}
spec:
  rules:
    - id: page-primary
      decision: hold
      match: {providers: [k8s], verbs: [delete], resourceNames: [paged-cm]}
      message: Deleting {action.resource.name} wakes the platform on-call.
      approval:
        groups: [oncall:primary]
        page: oncall:primary
        timeout: 20m
        onTimeout: escalate
    - id: page-ops
      decision: hold
      match: {providers: [k8s], verbs: [delete], resourceNames: [ops-cm]}
      message: Deleting {action.resource.name} pages through Opsgenie.
      approval: {groups: [oncall:ops, senior], page: oncall:ops, timeout: 20m}
"""

ROTATIONS = """\
rotations:
  primary:
    every: week
    time_zone: UTC
    hand_off: "09:00"
    start: 2025-02-24
    people: [bob]
  secondary:
    every: week
    time_zone: UTC
    hand_off: "09:00"
    start: 2025-02-24
    people: [dave]
  ops:
    every: week
    time_zone: UTC
    hand_off: "09:00"
    start: 2025-02-24
    people: [alice]
"""


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    with SqliteStore(tmp_path / "guardproxy.db") as opened:
        yield opened


@pytest.fixture
def pagerduty() -> Iterator[FakePagerDuty]:
    with FakePagerDuty() as fake:
        yield fake


@pytest.fixture
def opsgenie() -> Iterator[FakeOpsgenie]:
    with FakeOpsgenie() as fake:
        yield fake


@pytest.fixture(autouse=True)
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_PRIMARY_KEY", PRIMARY_KEY)
    monkeypatch.setenv("TEST_SECONDARY_KEY", SECONDARY_KEY)
    monkeypatch.setenv("TEST_OG_KEY", "og-api-key")


class Setup:
    """The rig with on-call routing and paging over the fakes."""

    def __init__(
        self, tmp_path: Path, store: SqliteStore, pagerduty: FakePagerDuty, opsgenie: FakeOpsgenie
    ) -> None:
        rotations = tmp_path / "oncall.yaml"
        rotations.write_text(ROTATIONS)
        for name, groups in PEOPLE.items():
            store.add_approver(Approver(name=name, groups=groups, token_hash=name, created_at=T0))
        self.settings = OnCallSettings.model_validate(
            {
                "rotations": str(rotations),
                "pagerduty": {"events_url": pagerduty.url},
                "opsgenie": {"api_url": opsgenie.url, "api_key_env": "TEST_OG_KEY"},
                "schedules": {
                    "primary": {
                        "pager": {"kind": "pagerduty", "routing_key_env": "TEST_PRIMARY_KEY"},
                        "escalate_to": "secondary",
                    },
                    "secondary": {
                        "pager": {
                            "kind": "pagerduty",
                            "routing_key_env": "TEST_SECONDARY_KEY",
                            "severity": "critical",
                        },
                    },
                    "ops": {
                        "pager": {
                            "kind": "opsgenie",
                            "priority": "P1",
                            "responders": [{"type": "schedule", "name": "ops_schedule"}],
                        },
                    },
                },
            }
        )
        self.rig = Rig(store, write_bundle(tmp_path / "policies", RULES))
        self.rig.clock.at(0)
        self.schedules = build_schedules(self.settings, transport=LazyTransport)
        self.routing = OnCallRouting(self.schedules, store)
        self.rig.service = ApprovalService(
            store, lambda: self.rig.bundle, clock=self.rig.clock, oncall=self.routing
        )
        self.rig.service.events.subscribe(self.rig.heard.append)
        self.transport = LazyTransport()
        self.paging = self.new_paging()

    def new_paging(self) -> Paging:
        return Paging(
            self.rig.store,
            self.schedules,
            build_pagers(self.settings, self.transport),
            clock=self.rig.clock,
            console_url=lambda: "https://guard.example/console",
            max_attempts=3,
            backoff_seconds=0.01,
            max_backoff_seconds=0.02,
        )

    def held(self, name: str) -> Hold:
        """A hold as the gate makes it, and its ``held`` event."""
        hold = self.rig.hold(name)
        self.rig.service.events.publish(hold_event("held", hold, self.rig.clock()))
        return hold

    async def decide(self, hold_id: str, who: str, *, approve: bool = True) -> HoldState:
        outcome = await self.rig.service.decide_hold(
            hold_id, person(who), approve=approve, reason="looked at it"
        )
        await self.paging.idle()
        return outcome.hold.state


@pytest.fixture
def setup(
    tmp_path: Path, store: SqliteStore, pagerduty: FakePagerDuty, opsgenie: FakeOpsgenie
) -> Setup:
    return Setup(tmp_path, store, pagerduty, opsgenie)


def run(setup: Setup, story: Callable[[], Awaitable[None]]) -> None:
    async def main() -> None:
        setup.paging.start(setup.rig.service.events)
        try:
            await story()
        finally:
            await setup.paging.stop()
            setup.transport.close()

    asyncio.run(main())


def test_a_hold_is_paged_once_and_resolved_once_when_approved(
    setup: Setup, pagerduty: FakePagerDuty
) -> None:
    async def story() -> None:
        hold = setup.held("paged-cm")
        await setup.paging.idle()
        # the same event again (a repeated publication) pages nobody twice
        setup.rig.service.events.publish(hold_event("held", hold, setup.rig.clock()))
        await setup.paging.idle()
        assert pagerduty.actions(hold.id) == ["trigger"]
        statuses = await setup.rig.service.on_call_statuses([hold])
        (status,) = statuses[hold.id]
        assert status.approvers == ("bob",)
        assert status.paged_text().startswith("level 1 (primary) paged via pagerduty at ")
        assert await setup.decide(hold.id, "bob") is HoldState.APPROVED
        assert pagerduty.actions(hold.id) == ["trigger", "resolve"]
        assert pagerduty.incidents == {hold.id: "resolved"}

    run(setup, story)
    trigger = pagerduty.events[0]
    assert trigger["routing_key"] == PRIMARY_KEY and trigger["dedup_key"]
    payload = trigger["payload"]
    assert payload["summary"] == "guardproxy: approve or deny k8s core delete paged-cm"
    assert payload["source"] == "guardproxy" and payload["severity"] == "error"
    assert payload["custom_details"]["impact"] == (
        "delete k8s:core:configmaps paged-cm (k8s, cluster localhost:6443, namespace default): "
        "Deleting paged-cm wakes the platform on-call."
    )
    assert trigger["links"][0]["href"].startswith("https://guard.example/console/#/holds/")


def test_two_replicas_seeing_the_same_events_page_once_and_resolve_once(
    setup: Setup, pagerduty: FakePagerDuty
) -> None:
    other = setup.new_paging()  # a second guardproxy on the same store

    async def story() -> None:
        other.start(setup.rig.service.events)
        hold = setup.held("paged-cm")
        await asyncio.gather(setup.paging.idle(), other.idle())
        state = await setup.decide(hold.id, "bob", approve=False)
        await other.idle()
        await other.stop()
        assert state is HoldState.DENIED
        assert pagerduty.actions(hold.id) == ["trigger", "resolve"]

    run(setup, story)


def test_expiry_resolves_the_page(setup: Setup, opsgenie: FakeOpsgenie) -> None:
    async def story() -> None:
        hold = setup.held("ops-cm")  # no escalation: just the time-out
        await setup.paging.idle()
        assert opsgenie.alerts[hold.id]["status"] == "open"
        setup.rig.clock.at(21)
        await setup.rig.service.sweep()
        await setup.paging.idle()
        stored = setup.rig.store.get_hold(hold.id)
        assert stored is not None and stored.state is HoldState.EXPIRED
        assert opsgenie.alerts[hold.id]["status"] == "closed"
        assert len(opsgenie.requests("/v2/alerts")) == 2

    run(setup, story)


def test_escalation_half_way_pages_the_next_level_who_may_then_decide(
    setup: Setup, pagerduty: FakePagerDuty
) -> None:
    async def story() -> None:
        hold = setup.held("paged-cm")
        await setup.paging.idle()
        setup.rig.clock.at(9)
        with pytest.raises(ApprovalRefused) as refused:
            await setup.decide(hold.id, "dave")  # secondary is not paged yet
        assert "on call for primary now: bob (rotation primary" in refused.value.error
        setup.rig.clock.at(10)  # half of the 20 minutes
        await setup.rig.service.sweep()
        await setup.paging.idle()
        await setup.rig.service.sweep()  # once only
        await setup.paging.idle()
        (status,) = (await setup.rig.service.on_call_statuses([hold]))[hold.id]
        assert status.approvers == ("bob", "dave")
        assert [p.level for p in status.pages] == [1, 2]
        assert await setup.decide(hold.id, "dave") is HoldState.APPROVED
        second = f"{hold.id}:secondary:2"
        assert pagerduty.actions(hold.id) == ["trigger", "resolve"]
        assert pagerduty.actions(second) == ["trigger", "resolve"]

    run(setup, story)
    escalated = [e for e in pagerduty.events if e["event_action"] == "trigger"][1]
    assert escalated["routing_key"] == SECONDARY_KEY
    assert escalated["payload"]["severity"] == "critical"
    assert escalated["payload"]["custom_details"]["level"] == 2


def test_opsgenie_alert_is_created_then_closed(setup: Setup, opsgenie: FakeOpsgenie) -> None:
    async def story() -> None:
        hold = setup.held("ops-cm")
        await setup.paging.idle()
        assert opsgenie.alerts[hold.id]["status"] == "open"
        assert await setup.decide(hold.id, "alice", approve=False) is HoldState.DENIED
        assert opsgenie.alerts[hold.id]["status"] == "closed"

    run(setup, story)
    (alert,) = opsgenie.alerts.values()
    assert alert["message"] == "guardproxy: approve or deny k8s core delete ops-cm"
    assert alert["responders"] == [{"type": "schedule", "name": "ops_schedule"}]
    assert alert["priority"] == "P1" and alert["count"] == 1
    (close,) = opsgenie.requests("/v2/alerts/")
    assert close.query == {"identifierType": ["alias"]}
    assert close.json()["note"].startswith("hold denied: looked at it")


def test_a_refused_page_is_not_retried_and_is_shown(
    setup: Setup, pagerduty: FakePagerDuty, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_PRIMARY_KEY", "too-short-a-key")
    setup.paging = setup.new_paging()

    async def story() -> None:
        hold = setup.held("paged-cm")
        await setup.paging.idle()
        (status,) = (await setup.rig.service.on_call_statuses([hold]))[hold.id]
        assert "page failed: PagerDuty answered HTTP 400" in status.paged_text()
        assert await setup.decide(hold.id, "bob") is HoldState.APPROVED  # still decidable

    run(setup, story)
    assert len(pagerduty.requests("/v2/enqueue")) == 1  # one attempt, no resolve of nothing


def test_a_busy_pager_is_retried(setup: Setup, pagerduty: FakePagerDuty) -> None:
    answers = iter([Answer(503, {"message": "busy"}), Answer(429, {"message": "slow down"})])
    real = pagerduty._enqueue

    def flaky(seen: Seen) -> Answer:
        return next(answers, None) or real(seen)

    pagerduty._routes = [("POST", "/v2/enqueue", flaky)]

    async def story() -> None:
        hold = setup.held("paged-cm")
        await setup.paging.idle()
        assert pagerduty.actions(hold.id) == ["trigger"]

    run(setup, story)
    assert len(pagerduty.requests("/v2/enqueue")) == 3


def test_a_hold_decided_elsewhere_while_it_was_paged_is_resolved_after_all(
    setup: Setup, pagerduty: FakePagerDuty
) -> None:
    real = pagerduty._enqueue
    decided: list[Any] = []

    def meanwhile(seen: Seen) -> Answer:
        event = seen.json()
        if event["event_action"] == "trigger" and not decided:
            # another replica decides the hold and claims the resolutions first
            decided.append(setup.rig.store.claim_page_resolutions(event["dedup_key"], T0))
        return real(seen)

    pagerduty._routes = [("POST", "/v2/enqueue", meanwhile)]

    async def story() -> None:
        hold = setup.held("paged-cm")
        await setup.paging.idle()
        assert pagerduty.actions(hold.id) == ["trigger", "resolve"]
        assert pagerduty.incidents[hold.id] == "resolved"

    run(setup, story)
    assert [p.level for p in decided[0]] == [1]


def test_a_page_deadline_is_the_holds(setup: Setup) -> None:
    hold = setup.rig.hold("paged-cm")
    assert hold.expires_at - hold.created_at == timedelta(minutes=20)
