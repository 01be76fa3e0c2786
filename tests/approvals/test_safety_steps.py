"""Safety steps at approval, in the approvals service on a real store and bundle: a step
due at release is performed (and waited for) before the approval is recorded and the
hold released; a failed step leaves the hold pending with nothing released; required
steps cannot be skipped; a step chosen by the first of two approvers runs at the
release; nobody who may not decide can make the guard run one.

The steps themselves (an RDS snapshot, a namespace export, a backup ref) are tested
against real upstreams in tests/e2e/test_impact_steps.py; here a step runner that
records its calls stands in, to pin the service's order of events."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from guardproxy.approvals.rules import ApprovalRefused
from guardproxy.approvals.safety import StepOutcome
from guardproxy.approvals.service import ApprovalService, HoldDecision
from guardproxy.policy.decision import StepOffer
from guardproxy.store import Hold, HoldState, SqliteStore

from .rig import Rig, person, write_bundle

STEP_RULES = """\
apiVersion: guardproxy.dev/v1
kind: PolicySet
metadata: {name: t}
spec:
  rules:
    - id: hold-offer
      decision: hold
      match: {providers: [k8s], verbs: [delete], resourceNames: [offer-cm]}
      message: Deleting {action.resource.name} needs a senior.
      approval:
        groups: [senior]
        timeout: 10m
        safetySteps: [{name: snapshot}]
    - id: hold-required
      decision: hold
      match: {providers: [k8s], verbs: [delete], resourceNames: [required-cm]}
      message: Deleting {action.resource.name} needs a senior and a snapshot.
      approval:
        groups: [senior]
        timeout: 10m
        safetySteps: [{name: snapshot, required: true}]
    - id: hold-two
      decision: hold
      match: {providers: [k8s], verbs: [delete], resourceNames: [two-cm]}
      message: Deleting {action.resource.name} needs two seniors.
      approval:
        groups: [senior]
        quorum: 2
        timeout: 10m
        safetySteps: [{name: snapshot}]
    - id: hold-plain
      decision: hold
      match: {providers: [k8s], verbs: [delete], resourceNames: [plain-cm]}
      message: Deleting {action.resource.name} needs a senior.
      approval: {groups: [senior], timeout: 10m}
"""


class RecordingSteps:
    """Performs nothing: records each call with the hold's state at that moment, and
    fails while ``failing`` says so."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.calls: list[tuple[str, str, HoldState, int]] = []
        self.failing = ""
        self.unavailable_because = ""

    def unavailable(self, hold: Hold, step: StepOffer) -> str:
        return self.unavailable_because

    async def perform(self, hold: Hold, step: StepOffer) -> StepOutcome:
        current = self.rig.store.get_hold(hold.id)
        assert current is not None
        approvals = len(self.rig.store.list_approvals(hold.id))
        self.calls.append((hold.id, step.name, current.state, approvals))
        start = self.rig.clock()
        end = start + timedelta(seconds=3)
        if self.failing:
            return StepOutcome(step.name, False, start, end, error=self.failing)
        return StepOutcome(step.name, True, start, end, result={"text": "rds snapshot snap-1"})


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    with SqliteStore(tmp_path / "guardproxy.db") as opened:
        yield opened


@pytest.fixture
def rig(tmp_path: Path, store: SqliteStore) -> Rig:
    return Rig(store, write_bundle(tmp_path / "policies", STEP_RULES))


@pytest.fixture
def steps(rig: Rig) -> RecordingSteps:
    runner = RecordingSteps(rig)
    rig.service = ApprovalService(rig.store, lambda: rig.bundle, clock=rig.clock, steps=runner)
    rig.service.events.subscribe(rig.heard.append)
    return runner


def approve(rig: Rig, hold_id: str, who: str, *steps: str) -> HoldDecision:
    return asyncio.run(
        rig.service.decide_hold(hold_id, person(who), approve=True, reason="ok", steps=steps)
    )


def refused(rig: Rig, hold_id: str, who: str, *steps: str, approve: bool = True) -> ApprovalRefused:
    with pytest.raises(ApprovalRefused) as raised:
        asyncio.run(
            rig.service.decide_hold(hold_id, person(who), approve=approve, reason="ok", steps=steps)
        )
    return raised.value


def step_states(rig: Rig, hold_id: str) -> list[tuple[str, str, str]]:
    return [(r.step, r.state, r.actor) for r in rig.store.list_safety_steps([hold_id])]


def test_a_chosen_step_runs_before_the_approval_is_recorded_and_the_hold_released(
    rig: Rig, steps: RecordingSteps
) -> None:
    hold_id = rig.hold("offer-cm").id
    done = approve(rig, hold_id, "alice", "snapshot")
    # performed while the hold was still pending and before any approval was recorded
    assert steps.calls == [(hold_id, "snapshot", HoldState.PENDING, 0)]
    assert done.hold.state is HoldState.APPROVED
    assert [(s.step, s.ok) for s in done.steps] == [("snapshot", True)]
    assert step_states(rig, hold_id) == [("snapshot", "succeeded", "alice")]
    assert rig.kinds(hold_id) == ["step", "approval", "approved"]
    kinds = [r.kind for r in rig.store.audit_for(hold_id)]
    assert kinds.index("hold.step") < kinds.index("hold.approval") < kinds.index("hold.approved")


def test_without_a_chosen_step_nothing_runs(rig: Rig, steps: RecordingSteps) -> None:
    hold_id = rig.hold("offer-cm").id
    assert approve(rig, hold_id, "alice").hold.state is HoldState.APPROVED
    assert steps.calls == [] and step_states(rig, hold_id) == []


def test_a_failed_step_leaves_the_hold_pending_and_records_no_approval(
    rig: Rig, steps: RecordingSteps
) -> None:
    hold_id = rig.hold("offer-cm").id
    steps.failing = "SnapshotQuotaExceeded: too many snapshots"
    failed = approve(rig, hold_id, "alice", "snapshot")
    assert failed.hold.state is HoldState.PENDING
    assert failed.step_failed is not None and "SnapshotQuotaExceeded" in failed.step_failed.error
    assert rig.store.list_approvals(hold_id) == []
    assert step_states(rig, hold_id) == [("snapshot", "failed", "alice")]
    assert rig.kinds(hold_id) == ["step"]
    # the same approver may try again; the optional step can be left out
    assert approve(rig, hold_id, "alice").hold.state is HoldState.APPROVED


def test_a_required_step_runs_unchosen_and_cannot_be_skipped(
    rig: Rig, steps: RecordingSteps
) -> None:
    hold_id = rig.hold("required-cm").id
    steps.failing = "the API answered 500"
    assert approve(rig, hold_id, "alice").hold.state is HoldState.PENDING
    assert approve(rig, hold_id, "alice").hold.state is HoldState.PENDING
    assert len(steps.calls) == 2
    steps.failing = ""
    done = approve(rig, hold_id, "alice")
    assert done.hold.state is HoldState.APPROVED
    assert [s for s, state, _ in step_states(rig, hold_id) if state == "succeeded"] == ["snapshot"]


def test_a_step_chosen_by_the_first_of_two_approvers_runs_at_the_release(
    rig: Rig, steps: RecordingSteps
) -> None:
    hold_id = rig.hold("two-cm").id
    first = approve(rig, hold_id, "alice", "snapshot")
    assert first.hold.state is HoldState.PENDING and steps.calls == []
    assert step_states(rig, hold_id) == [("snapshot", "chosen", "alice")]
    done = approve(rig, hold_id, "bob")
    assert steps.calls == [(hold_id, "snapshot", HoldState.PENDING, 1)]
    assert done.hold.state is HoldState.APPROVED
    assert step_states(rig, hold_id)[-1] == ("snapshot", "succeeded", "bob")


def test_steps_are_refused_where_they_cannot_apply(rig: Rig, steps: RecordingSteps) -> None:
    plain = rig.hold("plain-cm").id
    unknown = refused(rig, plain, "alice", "snapshot")
    assert unknown.status == 422 and "offers no safety step 'snapshot'" in unknown.error
    offer = rig.hold("offer-cm").id
    assert refused(rig, offer, "alice", "snapshot", approve=False).status == 422
    outsider = refused(rig, offer, "eve", "snapshot")
    assert outsider.status == 403
    steps.unavailable_because = "no snapshot for a configmap"
    cannot = refused(rig, offer, "alice", "snapshot")
    assert cannot.status == 409 and "no snapshot for a configmap" in cannot.error
    assert steps.calls == [] and rig.store.list_approvals(offer) == []
    assert step_states(rig, offer) == []


def test_a_hold_the_policy_now_denies_takes_no_snapshot(
    rig: Rig, steps: RecordingSteps, tmp_path: Path
) -> None:
    hold_id = rig.hold("offer-cm").id
    rig.bundle = write_bundle(
        tmp_path / "strict", STEP_RULES.replace("decision: hold", "decision: deny", 1)
    )
    done = approve(rig, hold_id, "alice", "snapshot")
    assert done.hold.state is HoldState.DENIED and steps.calls == []


def test_without_a_step_runner_a_due_step_refuses_the_approval(rig: Rig) -> None:
    hold_id = rig.hold("required-cm").id
    refusal = refused(rig, hold_id, "alice")
    assert refusal.status == 409 and "cannot perform them" in refusal.error
    assert rig.store.list_approvals(hold_id) == []
