"""What the gate does with a decided request, and the words it answers with.

Either :class:`Forward` (send it upstream untouched) or :class:`Answer` (a
protocol-native 403 built by :mod:`guardproxy.gate.responses`; nothing reaches the
upstream).  The messages are written for the agent: what happened, whether to retry,
and to tell the user; never to try another way.
"""

from __future__ import annotations

from dataclasses import dataclass

from guardproxy.action import Action
from guardproxy.gate.responses import NativeAnswer, native_answer
from guardproxy.policy import Decision
from guardproxy.recognise.request import HttpRequest
from guardproxy.store.base import Hold


@dataclass(frozen=True)
class Forward:
    """Send the request upstream untouched."""

    decision_id: str
    hold_id: str | None = None
    note: str = ""
    """For the agent, beside the upstream's answer: the safety steps run before a held
    request was released (``X-Guardproxy-Safety-Steps``)."""


@dataclass(frozen=True)
class Answer:
    """Answer the client ourselves; nothing reaches the upstream."""

    answer: NativeAnswer
    kind: str  # deny | hold
    decision_id: str
    hold_id: str | None = None


Verdict = Forward | Answer


def answer(
    request: HttpRequest,
    action: Action,
    message: str,
    *,
    kind: str,
    decision_id: str,
    hold_id: str | None = None,
) -> Answer:
    """``message`` as the client's protocol says no; it names the hold, else the decision."""
    reference = hold_id or decision_id
    native = native_answer(request, action, message, decision=kind, reference=reference)
    return Answer(native, kind, decision_id, hold_id)


def denied(request: HttpRequest, action: Action, decision: Decision, decision_id: str) -> Answer:
    """The policy denied the request."""
    message = (
        f"guardproxy denied this request: {decision.message} "
        "Do not retry it, and do not try to achieve it another way."
    )
    return answer(request, action, message, kind="deny", decision_id=decision_id)


def not_recorded(request: HttpRequest, action: Action, decision_id: str) -> Answer:
    """The decision could not be recorded, so the request is not sent (fail closed)."""
    message = (
        "guardproxy could not record this request, so it was not sent. "
        "Tell the user guardproxy's store is failing; do not retry it another way."
    )
    return answer(request, action, message, kind="deny", decision_id=decision_id)


def expired(request: HttpRequest, action: Action, hold: Hold, decision_id: str) -> Answer:
    """The hold timed out without approval."""
    message = (
        f"guardproxy: hold {hold.id} expired without approval, so this request was not "
        "sent. Do not retry it in another form; tell the user it needs approval."
    )
    return answer(request, action, message, kind="deny", decision_id=decision_id, hold_id=hold.id)


def still_pending(
    request: HttpRequest,
    action: Action,
    decision: Decision,
    hold: Hold,
    decision_id: str,
    note: str,
    *,
    closing: bool,
) -> Answer:
    """The hold is still pending when the live wait ends (or the guard shuts down:
    ``closing``); ``note`` (:func:`~guardproxy.approvals.carry.agent_note`) says where
    and until when an approval applies."""
    if closing:
        message = (
            f"guardproxy is shutting down; the hold {hold.id} stays pending; retry the "
            f"same call later. {decision.message} Do not retry it in another form or "
            f"with another tool; tell the user it needs approval. Once approved, {note}."
        )
    else:
        message = (
            f"guardproxy: {decision.message} This request is held for human approval "
            f"(hold {hold.id}). Do not retry it in another form or with another tool. "
            "Tell the user it needs approval, wait, then retry exactly the same call "
            f"once it is approved: {note}."
        )
    return answer(request, action, message, kind="hold", decision_id=decision_id, hold_id=hold.id)


def hold_denied(request: HttpRequest, action: Action, hold: Hold, decision_id: str) -> Answer:
    """The hold was denied: by an approver, or by the policy re-check at release."""
    by = f" by {hold.resolved_by}" if hold.resolved_by else ""
    reason = f": {hold.reason}" if hold.reason else ""
    message = (
        f"guardproxy: a human denied this request (hold {hold.id}){by}{reason}. "
        "Do not retry it, and do not try to achieve it another way."
    )
    return answer(request, action, message, kind="deny", decision_id=decision_id, hold_id=hold.id)
