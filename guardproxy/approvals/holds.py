"""A hold's record: what the gate writes when it holds a request, and what the approvals
service reads back to decide it.

Both sides of the format live here, so they cannot drift apart: the approval
requirement is read from the stored decision (its ``approval``,
:func:`~guardproxy.approvals.rules.requirement_of`), the re-check at release from the
stored action, decision and the context kept in the detail snapshot
(``detail_json["context"]``, :func:`~guardproxy.approvals.snapshot.hold_detail`).
Everything stored is redacted first: a hold is shown to approvers and kept for good.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from guardproxy.action import Action
from guardproxy.approvals.snapshot import hold_detail
from guardproxy.context import Context
from guardproxy.policy import Decision
from guardproxy.policy.model import duration_seconds
from guardproxy.recognise.request import HttpRequest
from guardproxy.redact import redact_json_text, redact_text
from guardproxy.store.base import Hold, Store

DEFAULT_TIMEOUT_SECONDS = 1800
"""How long a hold waits for approval when its decision carried no requirement."""


def store_grant(policy_grant: str) -> str:
    """The policy's `once` / `session:30m` as the store's `once` / `session:<seconds>`."""
    if policy_grant == "once":
        return "once"
    return f"session:{duration_seconds(policy_grant.partition(':')[2])}"


def create_hold(
    store: Store,
    request: HttpRequest,
    action: Action,
    context: Context,
    decision: Decision,
    digest: str,
    now: datetime,
) -> Hold:
    """Store a pending hold for ``request`` (its digest ``digest``), held by ``decision``;
    it expires after the requirement's time-out. Raises StoreError if the store fails."""
    approval = decision.approval
    timeout = approval.timeout_seconds if approval else DEFAULT_TIMEOUT_SECONDS
    return store.create_hold(
        session_id=context.session.id,
        request_digest=digest,
        action_json=redact_json_text(action.model_dump_json()),
        decision_json=redact_json_text(decision.model_dump_json()),
        summary=redact_text(action.summary()),
        grant=store_grant(approval.grant if approval else "once"),
        created_at=now,
        expires_at=now + timedelta(seconds=timeout),
        detail_json=redact_json_text(json.dumps(hold_detail(request, context))),
    )


@dataclass(frozen=True, slots=True)
class HeldRequest:
    """What a hold kept of its request: enough to decide it again."""

    action: Action
    context: Context
    decision: Decision
    """The decision that held it."""


def held_request(hold: Hold) -> HeldRequest | None:
    """The held action, its context and the decision that held it, as stored; None when
    the hold kept no context (a record written before holds kept one) or does not parse."""
    try:
        return HeldRequest(
            action=Action.model_validate_json(hold.action_json),
            context=Context.model_validate(json.loads(hold.detail_json)["context"]),
            decision=Decision.model_validate_json(hold.decision_json),
        )
    except (KeyError, TypeError, ValueError):
        return None
