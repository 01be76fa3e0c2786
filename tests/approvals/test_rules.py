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
    assert counted.text() == (
        "1 of 2 approvals; needs 1 more approval from senior or sre-oncall (rule k8s/x)"
    )
    assert counted.needs() == "1 more approval from senior or sre-oncall (rule k8s/x)"


def test_a_required_group_must_be_among_the_approvers() -> None:
    seniors = [approval("bob", "senior"), approval("dave", "senior")]
    counted = progress(TWO_WITH_ONCALL, seniors)
    assert not counted.met and counted.missing_groups == ("sre-oncall",)
    assert counted.text() == "2 of 2 approvals; needs 1 more approval, from sre-oncall (rule k8s/x)"
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


SENIOR_AND_ONCALL = ApprovalRequirement(
    all_of=[
        RuleApproval(rule="aws/hold-prod-environment-teardown", groups=["senior"], quorum=1),
        RuleApproval(rule="common/hold-prod-destroy", groups=["sre-oncall"], quorum=1),
    ],
    groups=["senior", "sre-oncall"],
    quorum=1,
    timeout_seconds=600,
)
"""A hold of two rules (or two readings): one needs a senior, the other someone on call."""


def test_a_hold_of_two_rules_says_what_each_still_needs() -> None:
    counted = progress(SENIOR_AND_ONCALL, [approval("bob", "senior")])
    assert not counted.met
    assert counted.missing_groups == ("sre-oncall",)
    assert counted.needs() == "1 more approval from sre-oncall (rule common/hold-prod-destroy)"
    assert counted.text() == (
        "1 approval, 1 of 2 rule requirements met; "
        "needs 1 more approval from sre-oncall (rule common/hold-prod-destroy)"
    )
    senior, oncall = (r.as_json() for r in counted.requirements)
    assert senior["met"] and not oncall["met"] and oncall["more"] == 1

    nobody = progress(SENIOR_AND_ONCALL, [])
    assert nobody.needs() == (
        "1 more approval from senior (rule aws/hold-prod-environment-teardown) and "
        "1 more approval from sre-oncall (rule common/hold-prod-destroy)"
    )
    both = progress(SENIOR_AND_ONCALL, [approval("bob", "senior"), approval("al", "sre-oncall")])
    assert both.met and both.missing_groups == () and both.needs() == "nothing more"
    assert both.text() == "2 approvals, 2 of 2 rule requirements met"


def test_progress_never_says_nothing_more_while_unmet() -> None:
    """Every combination of approvals of the two-rule hold and the quorum hold: unmet
    progress names a rule and a group, met progress agrees with the requirement."""
    people = [("bob", ("senior",)), ("al", ("sre-oncall",)), ("cy", ("senior", "sre-oncall"))]
    for requirement in (SENIOR_AND_ONCALL, TWO_WITH_ONCALL):
        for mask in range(1 << len(people)):
            chosen = [approval(n, *g) for i, (n, g) in enumerate(people) if mask >> i & 1]
            counted = progress(requirement, chosen)
            groups = {a.approver: set(a.groups) for a in chosen}
            assert counted.met == requirement.is_met(groups)
            if not counted.met:
                assert "nothing" not in counted.text() and "(rule " in counted.needs()
                assert counted.missing_groups
