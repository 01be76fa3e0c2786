"""The approvals service on a real SQLite store: verdicts, quorum, required groups, who
may decide, the re-check against the current policy at release, expiry and escalation
on a clock the test moves, concurrent verdicts, holds of several rules, and the
resolutions it publishes to the gate."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from guardproxy.approvals.rules import ApprovalRefused
from guardproxy.approvals.service import HoldDecision
from guardproxy.store import HoldState, SqliteStore

from .rig import RULES, T0, Rig, write_bundle

DENY_ONCE = """\
apiVersion: guardproxy.dev/v1
kind: PolicySet
metadata: {name: freeze}
spec:
  rules:
    - id: deny-during-freeze
      decision: deny
      match: {providers: [k8s], verbs: [delete], resourceNames: [once-cm]}
      message: Change freeze; nothing is deleted.
"""
UNRELATED = """\
apiVersion: guardproxy.dev/v1
kind: PolicySet
metadata: {name: more}
spec:
  rules:
    - id: deny-other
      decision: deny
      match: {providers: [k8s], verbs: [delete], resourceNames: [other-cm]}
      message: Not that one.
"""


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    with SqliteStore(tmp_path / "guardproxy.db") as opened:
        yield opened


@pytest.fixture
def rig(tmp_path: Path, store: SqliteStore) -> Rig:
    return Rig(store, write_bundle(tmp_path / "policies"))


def refused(
    rig: Rig, hold_id: str, who: str, *, approve: bool = True, reason: str = "ok"
) -> ApprovalRefused:
    with pytest.raises(ApprovalRefused) as raised:
        rig.decide(hold_id, who, approve=approve, reason=reason)
    return raised.value


def state_of(rig: Rig, hold_id: str) -> HoldState:
    hold = rig.store.get_hold(hold_id)
    assert hold is not None
    return hold.state


# -- quorum and who may decide


def test_quorum_counts_distinct_people(rig: Rig) -> None:
    hold_id = rig.hold("quorum-cm").id
    first = rig.decide(hold_id, "alice")
    assert first.hold.state is HoldState.PENDING
    assert first.progress.text() == (
        "1 of 2 approvals; needs 1 more approval from senior or sre-oncall (rule t/hold-quorum)"
    )
    again = refused(rig, hold_id, "alice")
    assert again.status == 409 and "each person counts once" in again.error
    assert [a.approver for a in rig.store.list_approvals(hold_id)] == ["alice"]
    done = rig.decide(hold_id, "bob")
    assert done.hold.state is HoldState.APPROVED and done.hold.resolved_by == "alice, bob"
    assert done.progress.met and [a.approver for a in done.approvals] == ["alice", "bob"]
    assert rig.kinds(hold_id) == ["approval", "approval", "approved"]


def test_a_required_group_must_be_among_the_approvers(rig: Rig) -> None:
    hold_id = rig.hold("quorum-cm").id
    rig.decide(hold_id, "bob")
    seniors = rig.decide(hold_id, "dave")
    assert seniors.hold.state is HoldState.PENDING
    assert seniors.progress.missing_groups == ("sre-oncall",)
    assert seniors.progress.needs() == "1 more approval, from sre-oncall (rule t/hold-quorum)"
    done = rig.decide(hold_id, "alice")
    assert done.hold.state is HoldState.APPROVED
    assert done.hold.resolved_by == "bob, dave, alice"


def test_someone_outside_the_groups_is_refused_and_nothing_is_recorded(rig: Rig) -> None:
    hold_id = rig.hold("once-cm").id
    outsider = refused(rig, hold_id, "eve")
    assert outsider.status == 403 and "needs one of senior" in outsider.error
    assert rig.store.list_approvals(hold_id) == [] and rig.heard == []


def test_the_session_user_cannot_approve_but_can_deny(rig: Rig) -> None:
    hold_id = rig.hold("once-cm").id
    own = refused(rig, hold_id, "carol")
    assert own.status == 403 and "started the session" in own.error
    denied = rig.decide(hold_id, "carol", approve=False, reason="not now")
    assert denied.hold.state is HoldState.DENIED and denied.hold.resolved_by == "carol"


@pytest.mark.parametrize("reason", ["", "   "])
def test_a_reason_is_required(rig: Rig, reason: str) -> None:
    hold_id = rig.hold("once-cm").id
    for approve in (True, False):
        missing = refused(rig, hold_id, "bob", approve=approve, reason=reason)
        assert missing.status == 422 and missing.error == "a reason is required"
    assert rig.store.list_approvals(hold_id) == []
    assert state_of(rig, hold_id) is HoldState.PENDING


def test_a_deny_ends_the_hold(rig: Rig) -> None:
    hold_id = rig.hold("quorum-cm").id
    rig.decide(hold_id, "alice")
    denied = rig.decide(hold_id, "bob", approve=False, reason="wrong cluster")
    assert denied.hold.state is HoldState.DENIED
    assert (denied.hold.resolved_by, denied.hold.reason) == ("bob", "wrong cluster")
    late = refused(rig, hold_id, "dave")
    assert late.status == 409 and late.error.endswith(
        "is denied by bob; it can no longer be decided"
    )
    assert rig.kinds(hold_id) == ["approval", "denied"]


def test_an_unknown_hold_is_404(rig: Rig) -> None:
    assert refused(rig, "h-nothing", "bob").status == 404


# -- the re-check against the policy in force at release


@pytest.mark.parametrize(
    ("change", "state", "said"),
    [
        ("denies", HoldState.DENIED, "the current policy denies this request now "
         "(freeze/deny-during-freeze): Change freeze; nothing is deleted."),
        ("asks more", HoldState.DENIED, "the current policy holds this request for a "
         "different approval now (t/hold-once)"),
        ("unrelated", HoldState.APPROVED, ""),
        ("allows", HoldState.APPROVED, ""),
    ],
)  # fmt: skip
def test_the_policy_in_force_at_release_is_checked_again(
    rig: Rig, tmp_path: Path, change: str, state: HoldState, said: str
) -> None:
    hold_id = rig.hold("once-cm").id
    policies = tmp_path / "policies-now"
    if change == "denies":
        rig.bundle = write_bundle(policies, RULES, DENY_ONCE)
    elif change == "asks more":
        rules = RULES.replace("approval: {groups: [senior], timeout: 10m}\n", "approval: "
                              "{groups: [senior], quorum: 2, timeout: 10m}\n", 1)  # fmt: skip
        assert rules != RULES
        rig.bundle = write_bundle(policies, rules)
    elif change == "unrelated":
        rig.bundle = write_bundle(policies, RULES, UNRELATED)
    else:
        rig.bundle = write_bundle(policies, RULES.replace("[once-cm]", "[renamed-cm]"))
    decided = rig.decide(hold_id, "bob")
    assert decided.hold.state is state
    if state is HoldState.DENIED:
        assert decided.hold.resolved_by == "policy"
        assert decided.hold.reason is not None and decided.hold.reason.startswith(said)
        assert rig.kinds(hold_id) == ["approval", "denied"]
    else:
        assert decided.hold.resolved_by == "bob"
        assert rig.kinds(hold_id) == ["approval", "approved"]


def test_a_hold_without_its_context_is_not_released(rig: Rig, store: SqliteStore) -> None:
    """A hold the re-check cannot read (no context kept) is denied, not released blind."""
    made = rig.hold("once-cm")
    bare = store.create_hold(
        session_id=made.session_id, request_digest="other", action_json=made.action_json,
        decision_json=made.decision_json, summary=made.summary, grant="once",
        created_at=T0, expires_at=made.expires_at,
    )  # fmt: skip
    decided = rig.decide(bare.id, "bob")
    assert decided.hold.state is HoldState.DENIED and decided.hold.resolved_by == "policy"
    assert "kept no decision context" in (decided.hold.reason or "")


# -- time: escalation half-way, expiry at the time-out


def test_escalation_half_way_once_then_expiry(rig: Rig) -> None:
    escalating, quiet = rig.hold("escalate-cm").id, rig.hold("once-cm").id
    resolved: list[tuple[str, HoldState]] = []

    def resolution(hold_id: str, state: HoldState) -> int:
        resolved.append((hold_id, state))
        return 0

    rig.service.on_resolved(resolution)
    rig.clock.at(4.99)
    asyncio.run(rig.service.sweep())
    assert rig.heard == []
    for minutes in (5, 6, 9.99):
        rig.clock.at(minutes)
        asyncio.run(rig.service.sweep())
    [escalated] = rig.heard
    assert (escalated.kind, escalated.hold_id) == ("escalated", escalating)
    assert escalated.reason.startswith("half its time-out passed with 0 of 2 approvals; needs")
    assert resolved == []
    rig.clock.at(10)
    asyncio.run(rig.service.sweep())
    assert sorted((e.kind, e.hold_id) for e in rig.heard[1:]) == sorted(
        [("expired", escalating), ("expired", quiet)]
    )
    assert sorted(resolved) == sorted([(escalating, HoldState.EXPIRED), (quiet, HoldState.EXPIRED)])
    assert (
        refused(rig, quiet, "bob").error == f"hold {quiet} is expired; it can no longer be decided"
    )


def test_a_verdict_after_the_time_out_is_refused_before_the_sweep(rig: Rig) -> None:
    hold_id = rig.hold("once-cm").id
    rig.clock.at(10)
    late = refused(rig, hold_id, "bob")
    assert late.status == 409 and "expired at" in late.error
    assert rig.store.list_approvals(hold_id) == []


def test_escalation_says_what_the_hold_still_needs(rig: Rig) -> None:
    hold_id = rig.hold("escalate-cm").id
    rig.clock.at(1)
    rig.decide(hold_id, "bob")
    rig.clock.at(5)
    asyncio.run(rig.service.sweep())
    assert rig.kinds(hold_id) == ["approval", "escalated"]
    assert rig.heard[-1].reason == (
        "half its time-out passed with 1 of 2 approvals; needs 1 more approval from senior "
        "(rule t/hold-escalate); it needs 1 more approval from senior (rule t/hold-escalate) "
        "before 2025-03-01T12:10:00+00:00 or it is denied"
    )
    assert state_of(rig, hold_id) is HoldState.PENDING


# -- concurrency


def approve_together(rig: Rig, hold_id: str, people: list[str]) -> list[object]:
    """Each person's approval from a thread of their own, all released at once; what
    each got back (a HoldDecision, or the exception raised)."""
    start = threading.Barrier(len(people))
    outcomes: list[object] = []
    lock = threading.Lock()

    def approve(who: str) -> None:
        start.wait()
        try:
            result: object = rig.decide(hold_id, who)
        except BaseException as error:
            result = error
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=approve, args=(who,)) for who in people]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return outcomes


def test_concurrent_verdicts_keep_the_quorum_exact(rig: Rig) -> None:
    """Six approvals of a two-senior hold at once, from six threads: exactly two are
    recorded, the hold is approved once, by those two, and the others are told it can
    no longer be decided (a 409, not a store error)."""
    seniors = ["alice", "bob", "dave", "frank", "grace", "alice"]  # alice twice: a double click
    for _ in range(5):
        hold_id = rig.hold("crowd-cm").id
        outcomes = approve_together(rig, hold_id, seniors)
        decided = [o for o in outcomes if isinstance(o, HoldDecision)]
        refusals = [o for o in outcomes if isinstance(o, ApprovalRefused)]
        assert len(decided) + len(refusals) == len(seniors), outcomes
        assert [d.hold.state for d in decided].count(HoldState.APPROVED) == 1
        assert all(r.status == 409 for r in refusals), [r.error for r in refusals]
        approvals = rig.store.list_approvals(hold_id)
        assert len(approvals) == 2 and len({a.approver for a in approvals}) == 2
        hold = rig.store.get_hold(hold_id)
        assert hold is not None and hold.state is HoldState.APPROVED
        assert hold.resolved_by == ", ".join(a.approver for a in approvals)
        assert rig.kinds(hold_id) == ["approval", "approval", "approved"]


# -- a hold of several rules


def test_a_hold_of_two_rules_needs_both_requirements(rig: Rig) -> None:
    requirement = rig.decision("both-cm").approval
    assert requirement is not None
    assert [(r.rule, r.groups, r.quorum) for r in requirement.all_of] == [
        ("t/hold-both-dba", ["dba"], 1),
        ("t/hold-both-senior", ["senior"], 2),
    ]
    hold_id = rig.hold("both-cm").id
    rig.decide(hold_id, "bob")
    seniors = rig.decide(hold_id, "dave")
    assert seniors.hold.state is HoldState.PENDING
    assert [r.met for r in seniors.progress.requirements] == [False, True]
    assert seniors.progress.needs() == "1 more approval from dba (rule t/hold-both-dba)"
    done = rig.decide(hold_id, "dan")
    assert done.hold.state is HoldState.APPROVED and done.hold.resolved_by == "bob, dave, dan"


def test_one_person_counts_toward_each_rule_they_qualify_for(rig: Rig) -> None:
    hold_id = rig.hold("both-cm").id
    first = rig.decide(hold_id, "frank")  # dba and senior
    assert [r.met for r in first.progress.requirements] == [True, False]
    assert first.progress.text() == (
        "1 approval, 1 of 2 rule requirements met; "
        "needs 1 more approval from senior (rule t/hold-both-senior)"
    )
    done = rig.decide(hold_id, "bob")
    assert done.hold.state is HoldState.APPROVED and done.hold.resolved_by == "frank, bob"


# -- resolutions published to the gate


def test_listeners_hear_resolutions_and_report_who_they_woke(rig: Rig) -> None:
    heard: list[tuple[str, HoldState]] = []

    def gate(hold_id: str, state: HoldState) -> int:
        heard.append((hold_id, state))
        return 1  # one request was waiting live on it

    def broken(hold_id: str, state: HoldState) -> int:
        raise RuntimeError("a subscriber's bug")

    rig.service.on_resolved(broken)
    unsubscribe = rig.service.on_resolved(gate)
    quorum = rig.hold("quorum-cm").id
    pending = rig.decide(quorum, "alice")
    assert heard == [] and pending.woken == 0  # a pending hold wakes nobody
    approved = rig.decide(quorum, "bob")
    assert heard == [(quorum, HoldState.APPROVED)] and approved.woken == 1
    once = rig.hold("once-cm").id
    denied = rig.decide(once, "bob", approve=False, reason="no")
    assert heard[-1] == (once, HoldState.DENIED) and denied.woken == 1
    unsubscribe()
    later = rig.decide(rig.hold("once-cm").id, "bob")
    assert later.hold.state is HoldState.APPROVED and later.woken == 0 and len(heard) == 2
