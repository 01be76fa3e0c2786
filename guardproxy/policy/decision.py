"""The engine's answer: enough to act on, to explain, and to replay exactly."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from guardproxy.policy.model import Outcome


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RuleError(_Frozen):
    """A CEL failure; in a deny or hold rule it made the rule fire (fail closed)."""

    rule: str
    stage: str = Field(description="matchCondition:<name>, condition, messageExpression, ...")
    error: str
    fired: bool = Field(description="Whether the error made the rule fire.")


class AuditFinding(_Frozen):
    """An audit-mode rule that fired: what it would have done if enforced."""

    rule: str
    would: Outcome
    message: str = ""


class RuleApproval(_Frozen):
    """One hold rule's own requirement: ``quorum`` distinct people from ``groups``."""

    rule: str = Field(description="The hold rule, or empty for the bundle's default.")
    groups: list[str]
    quorum: int
    required_groups: list[str] = Field(default_factory=list)

    def is_met(self, approvers: Mapping[str, Collection[str]]) -> bool:
        eligible = {who for who, groups in approvers.items() if set(groups) & set(self.groups)}
        if len(eligible) < self.quorum:
            return False
        return all(
            any(required in approvers[who] for who in eligible) for required in self.required_groups
        )


class ApprovalRequirement(_Frozen):
    """What releases a hold: every determining hold rule's requirement, all at once.

    One person's approval counts toward every requirement their groups make them
    eligible for, but only once in each (quorum counts people, not approvals).
    """

    all_of: list[RuleApproval] = Field(min_length=1)
    groups: list[str] = Field(description="Everyone who can contribute: union of all groups.")
    quorum: int = Field(description="The largest single quorum.")
    required_groups: list[str] = Field(default_factory=list)
    prevent_self_approval: bool = True
    timeout_seconds: int
    on_timeout: Literal["deny", "escalate"] = "deny"
    grant: str = "once"
    page: list[str] = Field(
        default_factory=list, description="`oncall:<schedule>` groups paged when it is held."
    )

    def is_met(self, approvers: Mapping[str, Collection[str]]) -> bool:
        """Whether approvals by ``approvers`` (person -> their groups) release the hold."""
        return all(requirement.is_met(approvers) for requirement in self.all_of)


class Decision(_Frozen):
    outcome: Outcome
    basis: Literal["rule", "default", "unclassified"]
    determining_rules: list[str] = Field(default_factory=list)
    message: str = ""
    approval: ApprovalRequirement | None = None
    audit_findings: list[AuditFinding] = Field(default_factory=list)
    errors: list[RuleError] = Field(default_factory=list)
    excepted: list[str] = Field(
        default_factory=list, description="Rules that fired but a PolicyException suppressed."
    )
    truncated: bool = Field(False, description="Input was cut to the bundle's limits.")
    bundle_digest: str
    engine_version: str
    input_hash: str
