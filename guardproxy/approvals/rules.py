"""Who may approve a hold, and whether the approvals so far release it.

Pure functions over the policy's requirement, the approvals recorded and the person
asking: the approvals service does the storing, these say yes or no and why.

An ``oncall:<schedule>`` group has no members of its own: who is in it is resolved by
the service just before a verdict (:class:`OnCallGroup`, from the schedule at that
moment) and passed in, so these rules stay pure. A verdict is recorded with the groups
the person was in at that moment, ``oncall:`` ones included, so the quorum and required
groups count what was true when each person decided.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from guardproxy.policy.decision import ApprovalRequirement, RuleApproval
from guardproxy.policy.model import ONCALL_PREFIX
from guardproxy.store.base import Approval, Approver, Hold, Verdict

ANY_GROUP = "*"
"""Groups of the requirement used when a hold's decision carried none: any approver."""


@dataclass(frozen=True, slots=True)
class OnCallGroup:
    """Who is in an ``oncall:`` group at the moment of a verdict."""

    approvers: frozenset[str]
    """Approver names on call there now (at the levels the hold has reached)."""
    summary: str = ""
    """For people: ``bob (rotation platform-primary)``, ``nobody (...)``."""


OnCallNow = Mapping[str, OnCallGroup]
"""``oncall:<schedule>`` group -> who is in it now; a group missing here has nobody."""


def oncall_groups(requirement: ApprovalRequirement) -> tuple[str, ...]:
    """The requirement's ``oncall:`` groups (eligibility and paging), in order."""
    named = [*requirement.groups, *requirement.required_groups, *requirement.page]
    for rule in requirement.all_of:
        named += [*rule.groups, *rule.required_groups]
    return tuple(dict.fromkeys(g for g in named if g.startswith(ONCALL_PREFIX)))


def effective_groups(approver: Approver, on_call: OnCallNow) -> tuple[str, ...]:
    """The approver's groups now: their own (never an ``oncall:`` one: only a schedule
    makes someone on call) and each ``oncall:`` group whose schedule has them on call."""
    own = [g for g in approver.groups if not g.startswith(ONCALL_PREFIX)]
    now = [g for g, group in on_call.items() if approver.name in group.approvers]
    return tuple(dict.fromkeys([*own, *now]))


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
    on_call: OnCallNow | None = None,
) -> tuple[str, ...]:
    """Raise :class:`ApprovalRefused` unless ``approver`` may give this verdict now;
    return the groups to record it with (:func:`effective_groups`). ``on_call``: who is
    in each ``oncall:`` group of the requirement at this moment."""
    if not reason.strip():
        raise ApprovalRefused(
            422,
            "a reason is required",
            'say why in {"reason": "..."} (the CLI: --reason); it is kept in the audit trail',
        )
    now = on_call or {}
    groups = effective_groups(approver, now)
    if not _eligible_groups(requirement, groups):
        scheduled = [g for g in requirement.groups if g.startswith(ONCALL_PREFIX)]
        on_call_text = "; ".join(
            f"on call for {g.removeprefix(ONCALL_PREFIX)} now: "
            f"{now[g].summary if g in now and now[g].summary else 'nobody'}"
            for g in scheduled
        )
        raise ApprovalRefused(
            403,
            f"{approver.name} is not in a group that may decide this hold "
            f"(needs one of {', '.join(requirement.groups)}; "
            f"{approver.name} is in {', '.join(groups) or 'no group'}"
            f"{'; ' + on_call_text if on_call_text else ''})",
            "ask someone in one of those groups (or whoever is on call), or an admin to "
            "add you to one (guardproxy approvers add)",
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
    return groups


@dataclass(frozen=True, slots=True)
class RuleProgress:
    """One rule's requirement (``quorum`` people from ``groups``) against the approvals."""

    rule: str
    """The hold rule, or empty for the bundle's default requirement."""
    groups: tuple[str, ...]
    quorum: int
    approvers: tuple[str, ...]
    """Distinct people whose approval counts toward this requirement."""
    missing_groups: tuple[str, ...]
    """Required groups none of those people is in."""
    met: bool

    @property
    def more(self) -> int:
        """How many more people this requirement needs at least."""
        return max(self.quorum - len(self.approvers), 1 if self.missing_groups else 0)

    def needs(self) -> str:
        """``1 more approval from sre-oncall or senior (rule common/hold-prod-destroy)``;
        empty once met."""
        if self.met:
            return ""
        who = "any approver" if ANY_GROUP in self.groups else " or ".join(self.groups)
        short = self.quorum - len(self.approvers)
        required = " and ".join(f"one from {group}" for group in self.missing_groups)
        if short > 0:
            line = f"{short} more approval{'s' if short > 1 else ''} from {who}"
            line += f", including {required}" if required else ""
        elif len(self.missing_groups) == 1:
            line = f"1 more approval, from {self.missing_groups[0]}"
        else:  # several required groups missing (is_met's rule: quorum alone is not enough)
            line = f"more approvals: {required or 'one meeting the requirement'}"
        return line + (f" (rule {self.rule})" if self.rule else "")

    def as_json(self) -> dict[str, object]:
        return {
            "rule": self.rule,
            "groups": list(self.groups),
            "quorum": self.quorum,
            "approvers": list(self.approvers),
            "missing_groups": list(self.missing_groups),
            "more": 0 if self.met else self.more,
            "met": self.met,
            "needs": self.needs(),
        }


@dataclass(frozen=True, slots=True)
class Progress:
    """How far the approvals are from releasing the hold: each rule's requirement must
    be met (a hold of several rules, or several readings, needs all of them)."""

    approvers: tuple[str, ...]
    """Distinct people whose approval counts toward at least one requirement."""
    quorum: int
    """The largest single quorum."""
    requirements: tuple[RuleProgress, ...]
    met: bool

    @property
    def missing_groups(self) -> tuple[str, ...]:
        """Groups an approval is still needed from: of each unmet requirement, its missing
        required groups, else (short of its quorum) any of its groups."""
        missing: dict[str, None] = {}
        for requirement in self.requirements:
            if requirement.met:
                continue
            missing.update(dict.fromkeys(requirement.missing_groups or requirement.groups))
        return tuple(missing)

    def text(self) -> str:
        """``1 of 2 approvals; needs 1 more approval from senior (rule aws/x)`` for one
        rule; for several, how many people approved and how many rules are satisfied."""
        if len(self.requirements) == 1:
            only = self.requirements[0]
            line = f"{min(len(only.approvers), only.quorum)} of {only.quorum} approvals"
        else:
            people = len(self.approvers)
            done = sum(r.met for r in self.requirements)
            line = (
                f"{people} approval{'' if people == 1 else 's'}, {done} of "
                f"{len(self.requirements)} rule requirements met"
            )
        return line if self.met else f"{line}; needs {self.needs()}"

    def needs(self) -> str:
        """Everything still needed, rule by rule (``nothing more`` only once met)."""
        if self.met:
            return "nothing more"
        return " and ".join(r.needs() for r in self.requirements if not r.met)

    def as_json(self) -> dict[str, object]:
        return {
            "approvers": list(self.approvers),
            "quorum": self.quorum,
            "missing_groups": list(self.missing_groups),
            "met": self.met,
            "needs": "" if self.met else self.needs(),
            "requirements": [r.as_json() for r in self.requirements],
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
    rules: list[RuleProgress] = []
    for rule in requirement.all_of:
        eligible = tuple(who for who, groups in people.items() if groups & set(rule.groups))
        rules.append(
            RuleProgress(
                rule=rule.rule,
                groups=tuple(rule.groups),
                quorum=rule.quorum,
                approvers=eligible,
                missing_groups=tuple(
                    group
                    for group in rule.required_groups
                    if not any(group in people[who] for who in eligible)
                ),
                met=rule.is_met(people),
            )
        )
    counted = tuple(who for who, groups in people.items() if _eligible_groups(requirement, groups))
    return Progress(
        approvers=counted,
        quorum=requirement.quorum,
        requirements=tuple(rules),
        met=requirement.is_met(people),
    )
