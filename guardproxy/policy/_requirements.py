"""Approval requirements: one hold rule's approval block as a requirement, and the merge of
several (several hold rules fire, or the holds of several readings of one request): every
rule requirement of each, the shortest timeout, the narrowest grant, every page and
safety step. Pure functions, used by :mod:`guardproxy.policy.engine`.
"""

from __future__ import annotations

from pydantic import BaseModel

from guardproxy.policy.decision import (
    ApprovalRequirement,
    RuleApproval,
    StepOffer,
)
from guardproxy.policy.model import (
    Approval,
    duration_seconds,
)


def combine_approvals(approvals: list[tuple[str, Approval]]) -> ApprovalRequirement:
    """Every requirement must be met; the shortest timeout and narrowest grant apply."""
    return merge_requirements([_requirement(rule, approval) for rule, approval in approvals])


def _requirement(rule: str, approval: Approval) -> ApprovalRequirement:
    """One hold rule's approval block as a requirement of its own."""
    return ApprovalRequirement(
        all_of=[
            RuleApproval(
                rule=rule,
                groups=approval.groups,
                quorum=approval.quorum,
                required_groups=approval.required_groups,
            )
        ],
        groups=sorted(set(approval.groups)),
        quorum=approval.quorum,
        required_groups=sorted(set(approval.required_groups)),
        prevent_self_approval=approval.prevent_self_approval,
        timeout_seconds=duration_seconds(approval.timeout),
        on_timeout=approval.on_timeout,
        grant=approval.grant,
        page=[approval.page] if approval.page else [],
        safety_steps=[
            StepOffer(name=s.name, required=s.required, include_secrets=s.include_secrets)
            for s in approval.safety_steps
        ],
    )


def unique_models[M: BaseModel](models: list[M]) -> list[M]:
    """``models`` without repeats, in order (frozen models holding lists do not hash)."""
    seen: dict[str, M] = {}
    for model in models:
        seen.setdefault(model.model_dump_json(), model)
    return list(seen.values())


def merge_requirements(requirements: list[ApprovalRequirement]) -> ApprovalRequirement:
    """Requirements that must all be met at once (several hold rules, or the holds of
    several readings): every rule requirement of each, the shortest timeout, the
    narrowest grant, every page."""
    if len(requirements) == 1:
        return requirements[0]
    grants = [r.grant for r in requirements]
    grant = (
        "once"
        if "once" in grants
        else min(grants, key=lambda g: duration_seconds(g.partition(":")[2]))
    )
    return ApprovalRequirement(
        all_of=unique_models([a for r in requirements for a in r.all_of]),
        groups=sorted({g for r in requirements for g in r.groups}),
        quorum=max(r.quorum for r in requirements),
        required_groups=sorted({g for r in requirements for g in r.required_groups}),
        prevent_self_approval=any(r.prevent_self_approval for r in requirements),
        timeout_seconds=min(r.timeout_seconds for r in requirements),
        on_timeout="escalate" if any(r.on_timeout == "escalate" for r in requirements) else "deny",
        grant=grant,
        page=sorted({p for r in requirements for p in r.page}),
        safety_steps=merge_steps([s for r in requirements for s in r.safety_steps]),
    )


def merge_steps(offers: list[StepOffer]) -> list[StepOffer]:
    """One offer per step: required if any rule requires it, Secrets exported if any
    rule opts in."""
    merged: dict[str, StepOffer] = {}
    for offer in offers:
        seen = merged.get(offer.name)
        merged[offer.name] = (
            offer
            if seen is None
            else StepOffer(
                name=offer.name,
                required=seen.required or offer.required,
                include_secrets=seen.include_secrets or offer.include_secrets,
            )
        )
    return [merged[name] for name in sorted(merged)]
