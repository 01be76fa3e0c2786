"""The engine's answer: enough to act on, to explain, and to replay exactly."""

from __future__ import annotations

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


class ApprovalRequirement(_Frozen):
    """Combined approval requirements of every hold rule that determined a hold."""

    groups: list[str]
    quorum: int
    required_groups: list[str] = Field(default_factory=list)
    prevent_self_approval: bool = True
    timeout_seconds: int
    on_timeout: Literal["deny", "escalate"] = "deny"
    grant: str = "once"
    rules: list[str] = Field(default_factory=list, description="Hold rules combined here.")


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
