"""Approvals as a service: approvers' verdicts, quorum, the re-check against the current
policy at release, expiry and escalation.

The control API calls :meth:`ApprovalService.decide_hold` (and :meth:`~ApprovalService.sweep`
before listing holds); the server runs :meth:`~ApprovalService.run_sweeper`.  The gate
only holds requests and waits on them: it subscribes with
:meth:`~ApprovalService.on_resolved`, so a request waiting live on a hold this instance
resolves is answered at once (resolutions made by another replica sharing the store
reach it through ``Store.watch_holds``).

Everything is kept in the store.  Within one instance, one verdict (or sweep) is
decided at a time, so the approvals a verdict counts are exactly those recorded before
it; the store refuses a verdict on a hold that is no longer pending (HoldConflict).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Protocol

import structlog

from guardproxy.approvals.events import HoldEvent, HoldEvents, hold_event
from guardproxy.approvals.holds import held_request
from guardproxy.approvals.oncall import OnCallRouting, OnCallStatus
from guardproxy.approvals.rules import (
    ApprovalRefused,
    OnCallNow,
    Progress,
    check_may_decide,
    oncall_groups,
    progress,
    requirement_of,
)
from guardproxy.policy import Bundle, evaluate
from guardproxy.policy.model import Outcome
from guardproxy.store.base import Approval, Approver, Hold, HoldConflict, HoldState, Store, Verdict

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]

SWEEP_BATCH = 1000
"""Pending holds looked at per sweep for escalation."""

EXPIRED_REASON = "no approval within the time-out; the request is denied"


def utc_now() -> datetime:
    return datetime.now(UTC)


class ApprovalMetrics(Protocol):
    """What the service counts (``guardproxy.metrics.Metrics`` is one)."""

    def hold_resolved(self, state: str, waited_seconds: float) -> None: ...

    def store_error(self, operation: str) -> None: ...


class _Uncounted:
    def hold_resolved(self, state: str, waited_seconds: float) -> None:
        pass

    def store_error(self, operation: str) -> None:
        pass


ResolutionListener = Callable[[str, HoldState], int]
"""Told that this instance resolved hold ``hold_id`` to ``state`` (approved, denied or
expired); returns how many requests waiting live on it it released.  Called on the
event loop the service's coroutines run on, after the resolution is stored."""


@dataclass(frozen=True)
class HoldDecision:
    """A hold after an approver's verdict, with the approvals so far and what is missing."""

    hold: Hold
    approvals: list[Approval]
    progress: Progress
    woken: int = 0
    """Requests of this instance waiting live on the hold that its resolution woke."""


def policy_change(bundle: Bundle, hold: Hold) -> str:
    """Why ``bundle`` no longer releases the held action ("" if it does): it denies the
    request now, or holds it for a different approval.  A hold that kept no context
    cannot be re-checked, so it is not released either."""
    held = held_request(hold)
    if held is None:
        return (
            "guardproxy kept no decision context for this hold, so it cannot re-check it "
            "against the current policy; the request must be made again"
        )
    now = evaluate(bundle, held.action, held.context)
    rules = ", ".join(now.determining_rules) or now.basis
    if now.outcome is Outcome.DENY:
        return f"the current policy denies this request now ({rules}): {now.message}"
    if now.outcome is Outcome.HOLD and now.approval != held.decision.approval:
        return (
            f"the current policy holds this request for a different approval now ({rules}); "
            "the request must be made again and approved under the new rules"
        )
    return ""


class ApprovalService:
    """Decides holds on people's verdicts and on time; publishes what happened."""

    def __init__(
        self,
        store: Store,
        bundle: Callable[[], Bundle],
        *,
        clock: Clock = utc_now,
        events: HoldEvents | None = None,
        metrics: ApprovalMetrics | None = None,
        oncall: OnCallRouting | None = None,
    ) -> None:
        """``bundle`` returns the bundle in force now: a hold whose requirement is met is
        released only if that bundle still agrees (:func:`policy_change`). ``oncall``
        says who is in ``oncall:`` groups; without it nobody is."""
        self.events = events or HoldEvents()
        self.oncall = oncall
        self._store = store
        self._bundle = bundle
        self._clock = clock
        self._metrics: ApprovalMetrics = metrics or _Uncounted()
        self._deciding = threading.Lock()  # one verdict at a time: quorum counts stay exact
        self._escalated: set[str] = set()
        self._listeners: list[ResolutionListener] = []

    def now(self) -> datetime:
        """The service's clock (what verdicts, expiry and on-call resolution read)."""
        return self._clock()

    def on_resolved(self, listener: ResolutionListener) -> Callable[[], None]:
        """Call ``listener`` for every hold this service resolves from now on; returns the
        unsubscribe function."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def _resolved(self, hold_id: str, state: HoldState, waited: float) -> int:
        """Count the resolution and tell the listeners; how many live requests they woke.
        A listener that raises is logged and skipped: the resolution is stored already."""
        self._metrics.hold_resolved(state.value, waited)
        woken = 0
        for listener in list(self._listeners):
            try:
                woken += listener(hold_id, state)
            except Exception:
                log.exception("hold.listener_failed", hold=hold_id, state=state.value)
        return woken

    # -- verdicts

    async def decide_hold(
        self, hold_id: str, approver: Approver, *, approve: bool, reason: str
    ) -> HoldDecision:
        """One approver's verdict on a pending hold, checked against its requirement.

        A deny ends the hold. An approval counts once per person; when the requirement
        is met the action is re-evaluated against the current policy and released only
        if that still allows it or holds it for the same approval. Raises
        :class:`ApprovalRefused` (with the HTTP status to answer) when the verdict is
        not allowed, and :class:`StoreError` when the store fails.

        Who is on call in the hold's ``oncall:`` groups is resolved first, at the
        service's clock; the verdict is recorded with the groups the approver is in then.
        """
        on_call = await self._on_call_for(hold_id)
        outcome, events = await asyncio.to_thread(
            self._decide_hold, hold_id, approver, approve, reason.strip(), on_call
        )
        for event in events:
            self.events.publish(event)
        hold = outcome.hold
        if hold.state is not HoldState.PENDING:
            resolved_at = hold.resolved_at or self._clock()
            waited = (resolved_at - hold.created_at).total_seconds()
            woken = self._resolved(hold_id, hold.state, waited)
            log.info("hold.resolved", hold=hold_id, state=hold.state.value, woken=woken)
            outcome = replace(outcome, woken=woken)
        return outcome

    async def _on_call_for(self, hold_id: str) -> OnCallNow:
        """Who is in the hold's ``oncall:`` groups now (nobody without routing)."""
        if self.oncall is None:
            return {}
        hold = await asyncio.to_thread(self._store.get_hold, hold_id)
        if hold is None or not oncall_groups(requirement_of(hold)):
            return {}
        return await self.oncall.on_call_now(hold, self._clock())

    async def on_call_statuses(self, holds: list[Hold]) -> dict[str, list[OnCallStatus]]:
        """For each hold, who is on call in its ``oncall:`` groups now and its pages."""
        if self.oncall is None:
            return {hold.id: [] for hold in holds}
        return await self.oncall.statuses(holds, self._clock())

    def _decide_hold(
        self, hold_id: str, approver: Approver, approve: bool, reason: str, on_call: OnCallNow
    ) -> tuple[HoldDecision, list[HoldEvent]]:
        with self._deciding:
            now = self._clock()
            hold = self._store.get_hold(hold_id)
            if hold is None:
                raise ApprovalRefused(404, f"no hold {hold_id}", "list holds: guardproxy holds")
            if hold.state is HoldState.PENDING and hold.expires_at <= now:
                raise ApprovalRefused(
                    409,
                    f"hold {hold_id} expired at {hold.expires_at.isoformat()}; "
                    "the request was denied",
                    "the agent must make the request again to get a new hold",
                )  # the sweeper marks it expired and tells the subscribers
            if hold.state is not HoldState.PENDING:
                raise _conflict(hold)
            events: list[HoldEvent] = []
            requirement = requirement_of(hold)
            session = self._store.get_session(hold.session_id)
            approvals = self._store.list_approvals(hold_id)
            groups = check_may_decide(
                requirement,
                approver,
                session_user=session.user if session else "",
                approvals=approvals,
                approve=approve,
                reason=reason,
                on_call=on_call,
            )
            verdict = Verdict.APPROVE if approve else Verdict.DENY
            try:
                self._store.record_approval(
                    hold_id, approver=approver.name, groups=groups, verdict=verdict,
                    reason=reason, at=now,
                )  # fmt: skip
            except HoldConflict as conflict:
                raise _conflict(conflict.hold) from None
            # read back, not appended: an approver on another replica may have just voted
            approvals = self._store.list_approvals(hold_id)
            counted = progress(requirement, approvals)
            if not approve:
                hold = self._store.resolve_hold(
                    hold_id, state=HoldState.DENIED, by=approver.name, reason=reason, now=now
                )
                events.append(hold_event("denied", hold, now, approver.name, reason))
            else:
                events.append(hold_event("approval", hold, now, approver.name, reason))
                if counted.met:
                    changed = policy_change(self._bundle(), hold)
                    if changed:
                        hold = self._store.resolve_hold(
                            hold_id, state=HoldState.DENIED, by="policy", reason=changed, now=now
                        )
                        events.append(hold_event("denied", hold, now, reason=changed))
                    else:
                        hold = self._store.resolve_hold(
                            hold_id, state=HoldState.APPROVED, by=", ".join(counted.approvers),
                            reason=reason, now=now,
                        )  # fmt: skip
                        events.append(hold_event("approved", hold, now, approver.name, reason))
            return HoldDecision(hold, approvals, counted), events

    # -- time

    async def sweep(self) -> None:
        """Expire holds past their time-out (a deny) and escalate those half-way there."""
        events, expired = await asyncio.to_thread(self._sweep)
        for event in events:
            self.events.publish(event)
        for hold_id, waited in expired:
            self._resolved(hold_id, HoldState.EXPIRED, waited)

    async def run_sweeper(self, interval: float = 0.5) -> None:
        """Sweep until cancelled; any failure is logged and the next sweep tries again
        (one that ended the loop would leave holds unexpired and unescalated for good)."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sweep()
            except Exception as error:
                log.error("hold.sweep_failed", error=repr(error))
                self._metrics.store_error("sweep")

    def _sweep(self) -> tuple[list[HoldEvent], list[tuple[str, float]]]:
        """Events to publish, and each expired hold with how long it waited."""
        expired: list[Hold] = []
        with self._deciding:
            now = self._clock()
            pending = self._store.list_holds(state=HoldState.PENDING, limit=SWEEP_BATCH)
            self._escalated &= {hold.id for hold in pending}
            # escalations first, so even a late sweep tells people before the deny
            events = [e for e in (self._escalation(h, now) for h in pending) if e is not None]
            # a read first: the write transaction only when something may be due
            if len(pending) == SWEEP_BATCH or any(h.expires_at <= now for h in pending):
                expired = self._store.expire_holds(now)
                for hold in expired:
                    log.info("hold.expired", hold=hold.id)
                events.extend(
                    hold_event("expired", hold, now, reason=EXPIRED_REASON) for hold in expired
                )
        return events, [(h.id, (now - h.created_at).total_seconds()) for h in expired]

    def _escalation(self, hold: Hold, now: datetime) -> HoldEvent | None:
        """The escalation notice of a hold half-way to its time-out, once."""
        requirement = requirement_of(hold)
        halfway = hold.created_at + (hold.expires_at - hold.created_at) / 2
        if requirement.on_timeout != "escalate" or hold.id in self._escalated or now < halfway:
            return None
        self._escalated.add(hold.id)
        counted = progress(requirement, self._store.list_approvals(hold.id))
        reason = (
            f"half its time-out passed with {counted.text()}; it needs "
            f"{counted.needs()} before {hold.expires_at.isoformat()} or it is denied"
        )
        log.warning("hold.escalated", hold=hold.id, progress=counted.text())
        return hold_event("escalated", hold, now, reason=reason)


def _conflict(hold: Hold) -> ApprovalRefused:
    by = f" by {hold.resolved_by}" if hold.resolved_by else ""
    return ApprovalRefused(
        409,
        f"hold {hold.id} is {hold.state.value}{by}; it can no longer be decided",
        "list pending holds: guardproxy holds",
    )
