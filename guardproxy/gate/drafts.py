"""A decision's record as the gate drafts it, with what a shadow bundle or audit-mode
rules would have done.

The draft is not yet redacted (the writer redacts); the shadow decision is computed
where the draft is built, which for reads is off the request path.
"""

from __future__ import annotations

import json

from guardproxy.action import Action
from guardproxy.context import Context
from guardproxy.gate.recorder import DecisionDraft
from guardproxy.policy import Bundle, Decision, evaluate
from guardproxy.redact import redact_text


def decision_draft(
    decision_id: str,
    action: Action,
    context: Context,
    decision: Decision,
    *,
    outcome: str,
    hold_id: str | None,
    upstream_status: int | None,
    shadow_bundle: Bundle | None,
) -> DecisionDraft:
    """The decision's record, not yet redacted; ``outcome`` is what the gate did."""
    return DecisionDraft(
        id=decision_id,
        at=context.now,
        session_id=context.session.id,
        action_json=action.canonical_json(),
        context=context.json_parts(),
        decision_json=decision.model_dump_json(),
        outcome=outcome,
        hold_id=hold_id,
        upstream_status=upstream_status,
        provider=action.provider.value,
        shadow_json=shadow_json(shadow_bundle, action, context, decision),
    )


def shadow_json(
    shadow_bundle: Bundle | None, action: Action, context: Context, decision: Decision
) -> str | None:
    """What a shadow bundle or audit-mode rules would have done; None if neither ran.

    A shadow bundle (a candidate run alongside the enforced one) is evaluated on
    the same input; without one, audit-mode rules that fired (a rule, a provider
    or an environment trialled with ``mode: audit``) say what they would have done.
    A failing shadow is recorded as such; it never changes what is enforced.
    """
    if shadow_bundle is not None:
        try:
            shadow = evaluate(shadow_bundle, action, context)
        except Exception as error:  # the candidate's failure is a finding, not an outage
            return json.dumps(
                {"source": "bundle", "outcome": "error", "error": redact_text(str(error))}
            )
        return json.dumps(
            {
                "source": "bundle",
                "bundle_digest": shadow.bundle_digest,
                "outcome": shadow.outcome.value,
                "determining_rules": shadow.determining_rules,
                "message": redact_text(shadow.message),
            }
        )
    if not decision.audit_findings:
        return None
    worst = max(
        (decision.outcome, *(f.would for f in decision.audit_findings)),
        key=lambda outcome: outcome.severity,
    )
    rules = [f.rule for f in decision.audit_findings if f.would is worst]
    return json.dumps(
        {
            "source": "audit-rules",
            "bundle_digest": decision.bundle_digest,
            "outcome": worst.value,
            "determining_rules": rules or decision.determining_rules,
        }
    )
