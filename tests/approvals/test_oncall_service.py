"""Verdicts on holds whose approval groups name an on-call schedule, through the real
approvals service on a real SQLite store, with the local rotation file and a clock the
test moves: whoever is on call at the moment of their verdict may decide, the person
before the hand-off may not; quorum, required groups and no self-approval still hold;
nobody gains rights from an ``oncall:`` group of their own or an unknown schedule."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from guardproxy.approvals.oncall import OnCallRouting
from guardproxy.approvals.rules import ApprovalRefused
from guardproxy.approvals.schedules import build_schedules
from guardproxy.approvals.service import ApprovalService
from guardproxy.approvals.settings import OnCallSettings
from guardproxy.approvals.webapi import LazyTransport
from guardproxy.store import Approver, HoldState, SqliteStore

from .rig import PEOPLE, T0, Rig, person, write_bundle

RULES = """\
apiVersion: guardproxy.dev/v1
kind: PolicySet
metadata: {name: oc}
spec:
  rules:
    - id: hold-oncall
      decision: hold
      match: {providers: [k8s], verbs: [delete], resourceNames: [oncall-cm]}
      message: Deleting {action.resource.name} needs whoever is on call.
      approval: {groups: [oncall:platform-primary], timeout: 30m}
    - id: hold-oncall-and-senior
      decision: hold
      match: {providers: [k8s], verbs: [delete], resourceNames: [pair-cm]}
      message: Two people, one of them on call.
      approval:
        groups: [oncall:platform-primary, senior]
        quorum: 2
        requiredGroups: [oncall:platform-primary]
        timeout: 30m
    - id: hold-unknown-schedule
      decision: hold
      match: {providers: [k8s], verbs: [delete], resourceNames: [nobody-cm]}
      message: A schedule nobody configured.
      approval: {groups: [oncall:nowhere], timeout: 30m}
"""

# T0 is 2025-03-01 12:00 UTC. bob's shift began 2025-02-28 12:05; alice takes over at
# 12:05 today, carol tomorrow.
ROTATIONS = """\
rotations:
  platform-primary:
    every: day
    hand_off: "12:05"
    time_zone: UTC
    start: 2025-02-28
    people: [bob, alice, carol]
"""
HAND_OFF = 5  # minutes after T0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    with SqliteStore(tmp_path / "guardproxy.db") as opened:
        yield opened


@pytest.fixture
def rig(tmp_path: Path, store: SqliteStore) -> Rig:
    rotations = tmp_path / "oncall.yaml"
    rotations.write_text(ROTATIONS)
    for name, groups in PEOPLE.items():
        store.add_approver(
            Approver(name=name, groups=groups, token_hash=f"t-{name}", created_at=T0)
        )
    rig = Rig(store, write_bundle(tmp_path / "policies", RULES))
    schedules = build_schedules(OnCallSettings(rotations=rotations), transport=LazyTransport)
    rig.service = ApprovalService(
        store, lambda: rig.bundle, clock=rig.clock, oncall=OnCallRouting(schedules, store)
    )
    rig.service.events.subscribe(rig.heard.append)
    return rig


def refused(rig: Rig, hold_id: str, who: str, *, approve: bool = True) -> ApprovalRefused:
    with pytest.raises(ApprovalRefused) as raised:
        rig.decide(hold_id, who, approve=approve)
    return raised.value


def test_the_person_on_call_at_the_verdict_may_approve_and_the_one_before_may_not(
    rig: Rig,
) -> None:
    hold_id = rig.hold("oncall-cm").id
    rig.clock.at(HAND_OFF - 1 / 60)  # 12:04:59: still bob's shift
    early = refused(rig, hold_id, "alice")
    assert early.status == 403
    assert "on call for platform-primary now: bob (rotation platform-primary" in early.error
    rig.clock.at(HAND_OFF)  # 12:05:00: alice's
    late = refused(rig, hold_id, "bob")
    assert late.status == 403 and "now: alice (rotation platform-primary" in late.error
    assert rig.store.list_approvals(hold_id) == []
    done = rig.decide(hold_id, "alice")
    assert done.hold.state is HoldState.APPROVED and done.hold.resolved_by == "alice"
    (approval,) = done.approvals
    # recorded with the groups alice had at that moment, on-call included
    assert approval.groups == ("senior", "sre-oncall", "oncall:platform-primary")


def test_before_the_hand_off_the_outgoing_person_decides(rig: Rig) -> None:
    hold_id = rig.hold("oncall-cm").id
    rig.clock.at(HAND_OFF - 1)
    denied = rig.decide(hold_id, "bob", approve=False, reason="not during the migration")
    assert denied.hold.state is HoldState.DENIED and denied.hold.resolved_by == "bob"


def test_a_required_on_call_group_counts_the_verdicts_given_while_on_call(rig: Rig) -> None:
    hold_id = rig.hold("pair-cm").id
    first = rig.decide(hold_id, "bob")  # on call at 12:00
    assert first.hold.state is HoldState.PENDING
    rig.clock.at(HAND_OFF + 1)  # bob is no longer on call: his approval still counts
    second = rig.decide(hold_id, "dave")
    assert second.hold.state is HoldState.APPROVED
    assert second.hold.resolved_by == "bob, dave"


def test_seniors_alone_do_not_meet_a_required_on_call_group(rig: Rig) -> None:
    hold_id = rig.hold("pair-cm").id
    rig.clock.at(HAND_OFF + 1)  # alice on call
    rig.decide(hold_id, "bob")  # a senior, no longer on call
    seniors = rig.decide(hold_id, "dave")
    assert seniors.hold.state is HoldState.PENDING
    assert seniors.progress.missing_groups == ("oncall:platform-primary",)
    assert "1 more approval, from oncall:platform-primary" in seniors.progress.text()
    done = rig.decide(hold_id, "alice")
    assert done.hold.state is HoldState.APPROVED


def test_the_session_user_on_call_cannot_approve_their_own_hold(rig: Rig) -> None:
    rig.store.remove_approver("carol")  # carol started the session; only on call gives her a say
    rig.store.add_approver(
        Approver(name="carol", groups=("developers",), token_hash="t-carol", created_at=T0)
    )
    rig.clock.now = T0 + timedelta(days=1, minutes=HAND_OFF)  # carol's shift
    hold_id = rig.hold("oncall-cm").id
    own = refused(rig, hold_id, "carol")
    assert own.status == 403 and "started the session" in own.error
    denied = rig.decide(hold_id, "carol", approve=False, reason="no")
    assert denied.hold.state is HoldState.DENIED


def test_an_oncall_group_of_ones_own_gives_nothing(rig: Rig) -> None:
    hold_id = rig.hold("oncall-cm").id
    pretender = Approver(
        name="mallory", groups=("oncall:platform-primary",), token_hash="m", created_at=T0
    )
    with pytest.raises(ApprovalRefused) as raised:
        asyncio.run(rig.service.decide_hold(hold_id, pretender, approve=True, reason="me"))
    assert raised.value.status == 403 and "mallory is in no group" in raised.value.error


def test_an_unknown_schedule_has_nobody_on_call(rig: Rig) -> None:
    hold_id = rig.hold("nobody-cm").id
    for name in ("alice", "bob"):
        answer = refused(rig, hold_id, name)
        assert answer.status == 403
        assert "on call for nowhere now: nobody (no schedule nowhere is configured" in (
            answer.error
        )


def test_without_routing_nobody_is_on_call(tmp_path: Path, store: SqliteStore) -> None:
    rig = Rig(store, write_bundle(tmp_path / "policies", RULES))
    hold_id = rig.hold("oncall-cm").id
    answer = refused(rig, hold_id, "bob")
    assert answer.status == 403 and "on call for platform-primary now: nobody" in answer.error
    assert person("bob").groups == ("senior",)
