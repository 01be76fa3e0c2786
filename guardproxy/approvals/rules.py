"""Who may approve a hold, and whether the approvals so far release it.

Pure functions over the policy's requirement, the approvals recorded and the person
asking: the gate does the storing, these say yes or no and why.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from guardproxy.policy.decision import ApprovalRequirement, RuleApproval
from guardproxy.store.base import Approval, Approver, Hold, Verdict

ANY_GROUP = "*"
"""Groups of the requirement used when a hold's decision carried none: any approver."""


class ApprovalRefused(Exception):  # noqa: N818 - a refusal, not a failure
    """An approver may not do what they asked; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, error: str, hint: str = "") -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.hint = hint


def requirement_of(hold: Hold) -> ApprovalRequirement:
    """The hold's approval requirement as decided; any single approver if it had none."""
    decision = json.loads(hold.decision_json)
    approval = decision.get("approval") if isinstance(decision, dict) else None
    if approval:
        return ApprovalRequirement.model_validate(approval)
    timeout = int((hold.expires_at - hold.created_at).total_seconds())
    return ApprovalRequirement(
        all_of=[RuleApproval(rule="", groups=[ANY_GROUP], quorum=1)],
        groups=[ANY_GROUP],
        quorum=1,
        timeout_seconds=max(timeout, 1),
    )


def _eligible_groups(requirement: ApprovalRequirement, groups: Collection[str]) -> set[str]:
    if ANY_GROUP in requirement.groups:
        return set(groups) or {ANY_GROUP}
    return set(groups) & set(requirement.groups)


def check_may_decide(
    requirement: ApprovalRequirement,
    approver: Approver,
    *,
    session_user: str,
    approvals: Sequence[Approval],
    approve: bool,
    reason: str,
) -> None:
    """Raise :class:`ApprovalRefused` unless ``approver`` may give this verdict now."""
    if not reason.strip():
        raise ApprovalRefused(
            422,
            "a reason is required",
            'say why in {"reason": "..."} (the CLI: --reason); it is kept in the audit trail',
        )
    if not _eligible_groups(requirement, approver.groups):
        raise ApprovalRefused(
            403,
            f"{approver.name} is not in a group that may decide this hold "
            f"(needs one of {', '.join(requirement.groups)}; "
            f"{approver.name} is in {', '.join(approver.groups) or 'no group'})",
            "ask someone in one of those groups, or an admin to add you to one "
            "(guardproxy approvers add)",
        )
    if approve and requirement.prevent_self_approval and session_user == approver.name:
        raise ApprovalRefused(
            403,
            f"{approver.name} started the session that made this request and cannot approve "
            "its holds",
            "ask another approver; you can still deny it",
        )
    if approve and any(
        a.approver == approver.name and a.verdict is Verdict.APPROVE for a in approvals
    ):
        raise ApprovalRefused(
            409,
            f"{approver.name} already approved this hold; each person counts once",
            f"it still needs {progress(requirement, approvals).needs()}",
        )


@dataclass(frozen=True, slots=True)
class Progress:
    """How far the approvals are from releasing the hold."""

    approvers: tuple[str, ...]
    """Distinct people whose approval counts."""
    quorum: int
    missing_groups: tuple[str, ...]
    met: bool

    def text(self) -> str:
        """``1 of 2 approvals``, plus the required groups still missing."""
        line = f"{min(len(self.approvers), self.quorum)} of {self.quorum} approvals"
        if self.missing_groups:
            line += f"; needs one from {', '.join(self.missing_groups)}"
        return line

    def needs(self) -> str:
        """What is still needed, for messages."""
        parts: list[str] = []
        more = self.quorum - len(self.approvers)
        if more > 0:
            parts.append(f"{more} more approval{'s' if more > 1 else ''} from another person")
        if self.missing_groups:
            parts.append(f"one from {', '.join(self.missing_groups)}")
        return " and ".join(parts) or "nothing more"

    def as_json(self) -> dict[str, object]:
        return {
            "approvers": list(self.approvers),
            "quorum": self.quorum,
            "missing_groups": list(self.missing_groups),
            "met": self.met,
            "text": self.text(),
        }


def progress(requirement: ApprovalRequirement, approvals: Sequence[Approval]) -> Progress:
    """Approvals counted once per person, against every rule's requirement."""
    people: dict[str, set[str]] = {}
    for approval in approvals:
        if approval.verdict is Verdict.APPROVE:
            groups = set(approval.groups)
            if ANY_GROUP in requirement.groups:
                groups = groups | {ANY_GROUP}
            people.setdefault(approval.approver, set()).update(groups)
    counted = tuple(who for who, groups in people.items() if _eligible_groups(requirement, groups))
    missing = tuple(
        group
        for group in requirement.required_groups
        if not any(group in people[who] for who in counted)
    )
    return Progress(
        approvers=counted,
        quorum=requirement.quorum,
        missing_groups=missing,
        met=requirement.is_met(people),
    )
