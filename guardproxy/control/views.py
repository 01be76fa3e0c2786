"""The control API's answers built from the store's records: a hold with its approval
progress, impact preview and safety steps, a decision of the log, a session.

Shared by the hold routes (hold_routes.py) and the session routes (session_routes.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from guardproxy.action import Action
from guardproxy.approvals.carry import release_note
from guardproxy.approvals.oncall import OnCallStatus
from guardproxy.approvals.rules import progress, requirement_of
from guardproxy.approvals.safety import step_text
from guardproxy.control.schema import (
    ApprovalOut,
    DecisionOut,
    HoldDetailOut,
    HoldOut,
    ImpactOut,
    OnCallOut,
    ProgressOut,
    SafetyStepOut,
)
from guardproxy.store.base import (
    Approval,
    DecisionRecord,
    Hold,
    HoldImpact,
    SafetyStepRecord,
    Session,
    SessionEvent,
    Store,
)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


@dataclass(frozen=True)
class HoldExtras:
    """What the store keeps beside a hold: its impact preview and its safety steps."""

    impact: HoldImpact | None = None
    steps: tuple[SafetyStepRecord, ...] = ()


def hold_extras(store: Store, hold_ids: list[str]) -> dict[str, HoldExtras]:
    impacts = store.hold_impacts(hold_ids)
    steps: dict[str, list[SafetyStepRecord]] = {}
    for record in store.list_safety_steps(hold_ids):
        steps.setdefault(record.hold_id, []).append(record)
    return {h: HoldExtras(impacts.get(h), tuple(steps.get(h, []))) for h in hold_ids}


def impact_out(impact: HoldImpact | None) -> ImpactOut:
    if impact is None:
        return ImpactOut(
            status="pending", summary="being gathered", line="impact: being gathered",
            impact={}, gathered_at=None,
        )  # fmt: skip
    line = impact.summary if impact.status == "known" else f"impact unknown: {impact.summary}"
    return ImpactOut(
        status="known" if impact.status == "known" else "unknown",
        summary=impact.summary,
        line=line,
        impact=_json_object(impact.impact_json),
        gathered_at=impact.gathered_at.isoformat(),
    )


def step_out(record: SafetyStepRecord) -> SafetyStepOut:
    result = _json_object(record.result_json)
    seconds = (record.finished_at - record.started_at).total_seconds()
    if record.state == "succeeded":
        text = step_text(record.step, result, seconds)
    elif record.state == "failed":
        text = f"{record.step} failed: {record.error}"
    else:
        text = f"{record.step} chosen by {record.actor}"
    return SafetyStepOut(
        step=record.step, state=record.state,
        actor=record.actor, result=result, error=record.error,
        started_at=record.started_at.isoformat(), finished_at=record.finished_at.isoformat(),
        seconds=round(seconds, 3), text=text,
    )  # fmt: skip


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def hold_out(
    hold: Hold,
    approvals: list[Approval],
    session: Session | None,
    oncall: list[OnCallStatus] | None = None,
    extras: HoldExtras | None = None,
) -> HoldOut:
    """``session``: the hold's session as stored (None if unknown or anonymous);
    ``oncall``: who is on call in its ``oncall:`` groups now (pending holds);
    ``extras``: its impact preview and safety steps."""
    decision = json.loads(hold.decision_json)
    requirement = requirement_of(hold)
    counted = progress(requirement, approvals)
    extras = extras or HoldExtras()
    ended = session.ended_at if session is not None else None
    return HoldOut(
        id=hold.id,
        state=hold.state.value,
        summary=hold.summary,
        session=hold.session_id,
        created_at=hold.created_at.isoformat(),
        expires_at=hold.expires_at.isoformat(),
        message=decision.get("message", ""),
        rules=decision.get("determining_rules", []),
        approval=decision.get("approval"),
        progress=ProgressOut.model_validate(counted.as_json()),
        grant=hold.grant,
        resolved_by=hold.resolved_by,
        resolved_at=_iso(hold.resolved_at),
        reason=hold.reason,
        action=json.loads(hold.action_json),
        session_ended=ended is not None,
        session_ended_at=_iso(ended),
        release=release_note(hold, session),
        oncall=[OnCallOut.model_validate(status.as_json()) for status in oncall or []],
        impact=impact_out(extras.impact),
        safety_steps_offered=[offer.model_dump() for offer in requirement.safety_steps],
        safety_steps=[step_out(record) for record in extras.steps],
    )


def hold_detail_out(
    hold: Hold,
    approvals: list[Approval],
    session: Session | None,
    recent: list[SessionEvent],
    oncall: list[OnCallStatus] | None = None,
    extras: HoldExtras | None = None,
) -> HoldDetailOut:
    detail = json.loads(hold.detail_json)
    context = detail.get("context") or {}
    return HoldDetailOut(
        **hold_out(hold, approvals, session, oncall, extras).model_dump(),
        request=detail.get("request") or {},
        session_info=session_json(session) if session else context.get("session", {}),
        history=context.get("history", {}),
        recent=[
            {"at": e.at.isoformat(), "summary": e.summary, "outcome": e.outcome} for e in recent
        ],
        signals=context.get("signals", {}),
        resource=context.get("resource", {}),
        approvals=[
            ApprovalOut(
                approver=a.approver,
                groups=list(a.groups),
                verdict=a.verdict.value,
                reason=a.reason,
                at=a.at.isoformat(),
            )
            for a in approvals
        ],
    )


def decision_out(record: DecisionRecord) -> DecisionOut:
    action = json.loads(record.action_json)
    decision = json.loads(record.decision_json)
    return DecisionOut(
        id=record.id,
        at=record.at.isoformat(),
        session=record.session_id,
        outcome=record.outcome,
        hold_id=record.hold_id,
        upstream_status=record.upstream_status,
        summary=_action_summary(action),
        provider=str(action.get("provider", "")),
        rules=decision.get("determining_rules", []),
        message=decision.get("message", ""),
    )


def _action_summary(action: dict[str, Any]) -> str:
    try:
        return Action.model_validate(action).summary()
    except ValidationError:
        return str(action.get("operation", ""))


def session_json(session: Session) -> dict[str, Any]:
    return {
        "id": session.id,
        "name": session.name,
        "user": session.user,
        "agent": session.agent,
        "command": list(session.command),
        "cwd": session.cwd,
        "labels": list(session.labels),
        "started_at": session.started_at.isoformat(),
        "ended_at": session.ended_at.isoformat() if session.ended_at else None,
    }
