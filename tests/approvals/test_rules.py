"""The approval rules as pure functions: who may decide, and what the verdicts add up to."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from guardproxy.approvals.rules import ApprovalRefused, check_may_decide, progress
from guardproxy.policy.decision import ApprovalRequirement, RuleApproval
from guardproxy.store import Approval, Approver, Verdict

T0 = datetime(2025, 3, 1, tzinfo=UTC)
TWO_WITH_ONCALL = ApprovalRequirement(
    all_of=[
        RuleApproval(
            rule="k8s/x", groups=["senior", "sre-oncall"], quorum=2, required_groups=["sre-oncall"]
        )
    ],
    groups=["senior", "sre-oncall"],
    quorum=2,
    required_groups=["sre-oncall"],
    timeout_seconds=600,
)


def approval(who: str, *groups: str, verdict: Verdict = Verdict.APPROVE) -> Approval:
    return Approval(
        id=0, hold_id="h-1", approver=who, groups=groups, verdict=verdict, reason="r", at=T0
    )


def person(name: str, *groups: str) -> Approver:
    return Approver(name=name, groups=groups, token_hash=name, created_at=T0)


def test_one_person_twice_counts_once() -> None:
    counted = progress(TWO_WITH_ONCALL, [approval("alice", "sre-oncall")] * 2)
    assert counted.approvers == ("alice",) and not counted.met
    assert counted.text() == "1 of 2 approvals"
    assert counted.needs() == "1 more approval from another person"


def test_a_required_group_must_be_among_the_approvers() -> None:
    seniors = [approval("bob", "senior"), approval("dave", "senior")]
    counted = progress(TWO_WITH_ONCALL, seniors)
    assert not counted.met and counted.missing_groups == ("sre-oncall",)
    assert counted.text() == "2 of 2 approvals; needs one from sre-oncall"
    assert progress(TWO_WITH_ONCALL, [*seniors, approval("alice", "sre-oncall")]).met


def test_denials_and_ineligible_people_do_not_count() -> None:
    counted = progress(
        TWO_WITH_ONCALL,
        [approval("eve", "developers"), approval("bob", "senior", verdict=Verdict.DENY)],
    )
    assert counted.approvers == () and not counted.met


@pytest.mark.parametrize(
    ("who", "approve", "reason", "status", "words"),
    [
        (person("bob", "senior"), True, " ", 422, "a reason is required"),
        (person("eve", "developers"), True, "ok", 403, "not in a group"),
        (person("carol", "senior"), True, "ok", 403, "started the session"),
        (person("alice", "sre-oncall"), True, "ok", 409, "already approved"),
    ],
)
def test_refusals(who: Approver, approve: bool, reason: str, status: int, words: str) -> None:
    with pytest.raises(ApprovalRefused) as refused:
        check_may_decide(
            TWO_WITH_ONCALL,
            who,
            session_user="carol",
            approvals=[approval("alice", "sre-oncall")],
            approve=approve,
            reason=reason,
        )
    assert refused.value.status == status and words in refused.value.error
    assert refused.value.hint


def test_the_session_user_may_deny_their_own_hold() -> None:
    check_may_decide(
        TWO_WITH_ONCALL,
        person("carol", "senior"),
        session_user="carol",
        approvals=[],
        approve=False,
        reason="not what I meant",
    )
