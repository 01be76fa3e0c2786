"""The control API's hold routes, for approvers: list holds, read one in full, approve or
deny it, read the decision log. Their registration is in api.py (``make_app``).
"""

from __future__ import annotations

from datetime import datetime

from guardproxy.approvals.carry import release_note
from guardproxy.approvals.oncall import OnCallStatus
from guardproxy.approvals.rules import ApprovalRefused
from guardproxy.approvals.safety import step_text
from guardproxy.approvals.service import HoldDecision
from guardproxy.control.handler import ControlContext, ControlHandler
from guardproxy.control.schema import (
    DecisionsOut,
    HoldsOut,
    ResolveBody,
    ResolveOut,
)
from guardproxy.control.views import (
    decision_out,
    hold_detail_out,
    hold_extras,
    hold_out,
)
from guardproxy.store.base import (
    Approval,
    Hold,
    HoldState,
    NotFoundError,
    Session,
    SessionEvent,
    Store,
    StoreError,
)


class HoldsHandler(ControlHandler):
    async def get(self) -> None:
        state_name = self.get_query_argument("state", "pending")
        session = self.get_query_argument("session", None)
        state = None if state_name == "all" else _state(state_name)
        if state_name != "all" and state is None:
            states = ", ".join(s.value for s in HoldState)
            self.fail(422, f"state must be all or one of {states}", "e.g. ?state=pending")
            return
        store = self.ctx.store
        try:
            await self.ctx.approvals.sweep()
            holds = await self.in_thread(lambda: _holds_with_sessions(store, state, session))
            ids = [hold.id for hold, _, _ in holds]
            extras = await self.in_thread(lambda: hold_extras(store, ids))
            oncall = await self.ctx.approvals.on_call_statuses(
                [hold for hold, _, _ in holds if hold.state is HoldState.PENDING]
            )
        except StoreError as error:
            self.fail(503, f"the store failed: {error}", "check guardproxy's log")
            return
        self.write_json(
            HoldsOut(
                holds=[
                    hold_out(hold, approvals, owner, oncall.get(hold.id), extras.get(hold.id))
                    for hold, approvals, owner in holds
                ]
            )
        )


def _holds_with_sessions(
    store: Store, state: HoldState | None, session_id: str | None
) -> list[tuple[Hold, list[Approval], Session | None]]:
    """The holds with their approvals and sessions (each session read once)."""
    sessions: dict[str, Session | None] = {}
    out: list[tuple[Hold, list[Approval], Session | None]] = []
    for hold in store.list_holds(state=state, session_id=session_id, limit=200):
        if hold.session_id not in sessions:
            sessions[hold.session_id] = store.get_session(hold.session_id)
        out.append((hold, store.list_approvals(hold.id), sessions[hold.session_id]))
    return out


class HoldHandler(ControlHandler):
    async def get(self, hold_id: str) -> None:
        store = self.ctx.store
        try:
            found = await self.in_thread(lambda: _hold_with_context(store, hold_id))
            oncall = await _pending_on_call(self.ctx, found[0] if found else None)
        except StoreError as error:
            self.fail(503, f"the store failed: {error}", "check guardproxy's log")
            return
        if found is None:
            self.fail(404, f"no hold {hold_id}", "list holds: GET /v1/holds?state=all")
            return
        extras = await self.in_thread(lambda: hold_extras(store, [hold_id]))
        self.write_json(hold_detail_out(*found, oncall, extras.get(hold_id)))


_RECENT = 20


def _hold_with_context(
    store: Store, hold_id: str
) -> tuple[Hold, list[Approval], Session | None, list[SessionEvent]] | None:
    hold = store.get_hold(hold_id)
    if hold is None:
        return None
    events = store.session_events(hold.session_id, limit=_RECENT * 5)
    recent = [e for e in events if e.at <= hold.created_at][:_RECENT]
    recent.reverse()
    return hold, store.list_approvals(hold_id), store.get_session(hold.session_id), recent


class ResolveHandler(ControlHandler):
    async def post(self, hold_id: str, verb: str) -> None:
        body = self.body_as(ResolveBody)
        if body is None:
            return
        assert self.approver is not None  # prepare() let only approvers through
        try:
            outcome = await self.ctx.approvals.decide_hold(
                hold_id, self.approver, approve=verb == "approve", reason=body.reason,
                steps=body.steps,
            )  # fmt: skip
            found = await self.in_thread(lambda: _hold_with_context(self.ctx.store, hold_id))
            extras = await self.in_thread(lambda: hold_extras(self.ctx.store, [hold_id]))
            oncall = await _pending_on_call(self.ctx, outcome.hold)
        except ApprovalRefused as refused:
            self.fail(refused.status, refused.error, refused.hint)
            return
        except NotFoundError:
            self.fail(404, f"no hold {hold_id}", "list holds: GET /v1/holds")
            return
        except StoreError as error:
            self.fail(503, f"the store failed: {error}", "check guardproxy's log")
            return
        hold = outcome.hold
        _, _, session, recent = found or (hold, [], None, [])
        said = _resolution_text(outcome, session)
        self.write_json(
            ResolveOut(
                hold=hold_detail_out(
                    hold, outcome.approvals, session, recent, oncall, extras.get(hold_id)
                ),
                outcome=said,
                step_failed=(
                    f"{outcome.step_failed.step}: {outcome.step_failed.error}"
                    if outcome.step_failed is not None
                    else ""
                ),
            )
        )


async def _pending_on_call(context: ControlContext, hold: Hold | None) -> list[OnCallStatus]:
    if hold is None or hold.state is not HoldState.PENDING:
        return []
    return (await context.approvals.on_call_statuses([hold])).get(hold.id, [])


def _resolution_text(outcome: HoldDecision, session: Session | None) -> str:
    """What a verdict did and what happens next, for the approver."""
    hold = outcome.hold
    failed = outcome.step_failed
    if failed is not None:
        return (
            f"safety step {failed.step} failed: {failed.error}; no approval was recorded, "
            "the hold stays pending and nothing was released"
        )
    ran = "".join(step_text(step.step, step.result, step.seconds) + "; " for step in outcome.steps)
    if hold.state is HoldState.PENDING:
        return f"{ran}approval recorded; {outcome.progress.text()}; the hold stays pending"
    if hold.state is HoldState.DENIED:
        return f"denied{' by ' + hold.resolved_by if hold.resolved_by else ''}: {hold.reason}"
    said = f"{ran}approved by {hold.resolved_by}"
    if outcome.woken and hold.grant_seconds is None:
        return f"{said}; the request waiting for it was released"
    return f"{said}; {release_note(hold, session)}"


class DecisionsHandler(ControlHandler):
    async def get(self) -> None:
        since_text = self.get_query_argument("since", None)
        try:
            since = datetime.fromisoformat(since_text) if since_text else None
            limit = int(self.get_query_argument("limit", "100"))
            if since is not None and since.tzinfo is None:
                raise ValueError("since needs a time zone")
            if not 1 <= limit <= 1000:
                raise ValueError("limit must be 1 to 1000")
        except ValueError as error:
            self.fail(422, str(error), "since: ISO 8601 with zone (2025-01-31T12:00:00Z)")
            return
        session = self.get_query_argument("session", None)
        outcome = self.get_query_argument("outcome", None)
        provider = self.get_query_argument("provider", None)
        try:
            records = await self.in_thread(
                lambda: self.ctx.store.list_decisions(
                    session_id=session, outcome=outcome, provider=provider, since=since,
                    limit=limit,
                )
            )  # fmt: skip
        except StoreError as error:
            self.fail(503, f"the store failed: {error}", "check guardproxy's log")
            return
        self.write_json(DecisionsOut(decisions=[decision_out(r) for r in records]))


def _state(name: str) -> HoldState | None:
    try:
        return HoldState(name)
    except ValueError:
        return None
