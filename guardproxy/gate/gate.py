"""From decision to effect: forward, answer with a protocol-native 403, or hold.

A held request waits here, live, for up to the hold window; an approval given in
that time forwards the original request. After the window the client gets a 403
that names the hold and asks the agent to retry the same call later: once the
hold is approved, the next identical request of the session passes, once.
Retries of a pending hold join it; retries of a denied hold get the same denial.
Every decision is recorded before anything is forwarded; if it cannot be
recorded, nothing that can change state is forwarded.  Reads are recorded in the
background unless ``reads_on_store_failure`` is ``deny``: then they too wait for
their record, and a lost store stops them as well.

Holds are resolved through any replica sharing the store: the store announces hold
changes (``Store.watch_holds``) and the gate wakes the requests waiting here; it
also re-reads a waiting hold every few seconds, in case an announcement was lost.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import structlog

from guardproxy.action import Action, Verb
from guardproxy.approvals.carry import agent_note
from guardproxy.approvals.events import HoldEvent, HoldEventKind, HoldEvents
from guardproxy.approvals.rules import (
    ApprovalRefused,
    Progress,
    check_may_decide,
    progress,
    requirement_of,
)
from guardproxy.approvals.snapshot import hold_detail
from guardproxy.context import Context, SessionInfo
from guardproxy.gate.digest import request_digest
from guardproxy.gate.recorder import DecisionDraft, DecisionRecorder, Writer
from guardproxy.gate.responses import NativeAnswer, native_answer
from guardproxy.gate.writer import StoreWriter
from guardproxy.metrics import Metrics
from guardproxy.policy import Bundle, Decision, evaluate
from guardproxy.policy.model import Outcome, duration_seconds
from guardproxy.recognise.request import HttpRequest
from guardproxy.redact import redact_json_text, redact_text
from guardproxy.store.base import (
    Approval,
    Approver,
    Hold,
    HoldConflict,
    HoldState,
    Session,
    Store,
    StoreError,
)
from guardproxy.store.base import Verdict as ApprovalVerdict

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]

RECHECK_SECONDS = 3.0
"""How often a live held request re-reads its hold, should a notification be lost."""

_SWEEP_BATCH = 1000
"""Pending holds looked at per sweep for escalation."""


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Forward:
    """Send the request upstream untouched."""

    decision_id: str
    hold_id: str | None = None


@dataclass(frozen=True)
class Answer:
    """Answer the client ourselves; nothing reaches the upstream."""

    answer: NativeAnswer
    kind: str  # deny | hold
    decision_id: str
    hold_id: str | None = None


def _answer(
    request: HttpRequest,
    action: Action,
    message: str,
    *,
    kind: str,
    decision_id: str,
    hold_id: str | None = None,
) -> Answer:
    reference = hold_id or decision_id
    native = native_answer(request, action, message, decision=kind, reference=reference)
    return Answer(native, kind, decision_id, hold_id)


Verdict = Forward | Answer


def store_grant(policy_grant: str) -> str:
    """The policy's `once` / `session:30m` as the store's `once` / `session:<seconds>`."""
    if policy_grant == "once":
        return "once"
    return f"session:{duration_seconds(policy_grant.partition(':')[2])}"


@dataclass(frozen=True)
class HoldDecision:
    """A hold after an approver's verdict, with the approvals so far and what is missing."""

    hold: Hold
    approvals: list[Approval]
    progress: Progress
    woken: int = 0
    """Requests of this instance waiting live on the hold that its resolution woke."""


def _event(
    kind: HoldEventKind, hold: Hold, at: datetime, actor: str = "", reason: str = ""
) -> HoldEvent:
    return HoldEvent(
        kind=kind,
        hold_id=hold.id,
        at=at,
        summary=hold.summary,
        session_id=hold.session_id,
        actor=actor,
        reason=reason,
    )


@dataclass
class _Waiters:
    """Live requests waiting on holds, woken when a hold is resolved."""

    futures: dict[str, set[asyncio.Future[HoldState]]] = field(default_factory=dict)

    def add(self, hold_id: str) -> asyncio.Future[HoldState]:
        future: asyncio.Future[HoldState] = asyncio.get_running_loop().create_future()
        self.futures.setdefault(hold_id, set()).add(future)
        return future

    def remove(self, hold_id: str, future: asyncio.Future[HoldState]) -> None:
        waiting = self.futures.get(hold_id)
        if waiting is not None:
            waiting.discard(future)
            if not waiting:
                del self.futures[hold_id]

    def wake(self, hold_id: str, state: HoldState) -> int:
        woken = 0
        for future in self.futures.get(hold_id, set()):
            if not future.done():
                future.set_result(state)
                woken += 1
        return woken

    def wake_all(self, state: HoldState) -> None:
        for hold_id in list(self.futures):
            self.wake(hold_id, state)


_EXPIRED = "no approval within the time-out; the request is denied"


class Gate:
    def __init__(
        self,
        store: Store,
        bundle: Bundle,
        *,
        hold_window: float,
        clock: Clock = utc_now,
        reads_on_store_failure: str = "allow",
        events: HoldEvents | None = None,
        metrics: Metrics | None = None,
        shadow: Callable[[], Bundle | None] | None = None,
        writer: Writer | None = None,
    ) -> None:
        """``writer`` takes the batched read records (default: written in this
        process, to ``store``)."""
        self.events = events or HoldEvents()
        self.metrics = metrics or Metrics()
        self._store = store
        self._bundle = bundle
        self._shadow_bundle = shadow
        self._hold_window = hold_window
        self._clock = clock
        self._waiters = _Waiters()
        self._recorder = DecisionRecorder(writer or StoreWriter(store, self.metrics.store_error))
        self._closing = False
        self._deciding = threading.Lock()  # one verdict at a time: quorum counts stay exact
        self._escalated: set[str] = set()
        self._in_flight = 0
        self.metrics.count_waiting(self.waiting)
        self.metrics.bundle_in_force(bundle.digest)
        self._reads_in_background = reads_on_store_failure == "allow"

    # -- the policy bundle

    @property
    def bundle(self) -> Bundle:
        """The bundle new decisions use; each decision records its digest."""
        return self._bundle

    def swap_bundle(self, bundle: Bundle) -> Bundle:
        """Make ``bundle`` the one in force (one reference assignment: a decision being
        evaluated keeps the bundle it started with); returns the previous one."""
        previous, self._bundle = self._bundle, bundle
        self.metrics.bundle_in_force(bundle.digest)
        return previous

    def watch_store(self) -> None:
        """Wake waiting requests when another replica resolves their hold (call on the loop)."""
        loop = asyncio.get_running_loop()

        def changed(hold_id: str, state: HoldState) -> None:  # the store's listener thread
            loop.call_soon_threadsafe(self._waiters.wake, hold_id, state)

        self._store.watch_holds(changed)

    # -- the request path

    def decide(self, action: Action, context: Context, bundle: Bundle | None = None) -> Decision:
        """The policy decision by ``bundle`` (default: the one in force); pure, so
        callers run it off the event loop."""
        return evaluate(bundle or self._bundle, action, context)

    def waiting(self) -> int:
        """Live requests waiting on holds now."""
        return sum(len(futures) for futures in self._waiters.futures.values())

    def reads_history(self, verb: Verb, bundle: Bundle | None = None) -> bool:
        """Whether ``bundle`` (default: the one in force) or the shadow bundle can read
        history for ``verb``.

        The shadow bundle counts so that its recorded decisions see the same input a
        live rollout would.
        """
        if (bundle or self._bundle).reads_history(verb):
            return True
        shadow = self._shadow_in_force()
        return shadow is not None and shadow.reads_history(verb)

    def _shadow_in_force(self) -> Bundle | None:
        """The shadow bundle decisions are recorded under now, if any."""
        return self._shadow_bundle() if self._shadow_bundle is not None else None

    async def handle(
        self, request: HttpRequest, action: Action, context: Context, decision: Decision
    ) -> Verdict:
        self._in_flight += 1
        try:
            return await self._handle(request, action, context, decision)
        finally:
            self._in_flight -= 1

    async def _handle(
        self, request: HttpRequest, action: Action, context: Context, decision: Decision
    ) -> Verdict:
        decision_id = "d-" + secrets.token_hex(6)
        bound = log.bind(
            decision=decision_id,
            session=context.session.id,
            action=action.summary(),
            verb=action.verb.value,
            environment=action.environment.value,
        )
        if decision.outcome is Outcome.HOLD:
            digest = request_digest(request)
            verdict = await self._hold(request, action, context, decision, decision_id, digest)
        elif decision.outcome is Outcome.DENY:
            verdict = self._deny(request, action, decision, decision_id)
        else:
            verdict = Forward(decision_id)
        outcome = "allow" if isinstance(verdict, Forward) else verdict.kind

        def draft(upstream_status: int | None = None) -> DecisionDraft:
            return self._draft(
                decision_id, action, context, decision, outcome, verdict.hold_id, upstream_status
            )

        if isinstance(verdict, Forward) and action.verb is Verb.READ and self._reads_in_background:
            if self._shadow_in_force() is not None:
                self._recorder.record(decision_id, draft)  # the shadow decides off the request path
            else:  # built now: what waits for the batch is a few strings, not the request's objects
                self._recorder.record(decision_id, draft())
        else:
            try:  # built in the worker too: redaction and a shadow decision cost CPU
                await asyncio.to_thread(lambda: self._store.append_decision(draft().redacted()))
            except Exception as error:  # any failure to record: not forwarded (fail closed)
                bound.error("decision.not_recorded", error=str(error))
                self.metrics.store_error("append_decision")
                if isinstance(verdict, Forward):
                    return self.fail_closed(request, action, decision_id)
        self.metrics.decision(action, outcome)
        bound.info(
            "decision",
            outcome=outcome,
            rules=decision.determining_rules,
            basis=decision.basis,
            hold=verdict.hold_id,
        )
        return verdict

    def _draft(
        self,
        decision_id: str,
        action: Action,
        context: Context,
        decision: Decision,
        outcome: str,
        hold_id: str | None,
        upstream_status: int | None,
    ) -> DecisionDraft:
        """The decision's record, not yet redacted (the writer redacts)."""
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
            shadow_json=self._shadow(action, context, decision),
        )

    def _shadow(self, action: Action, context: Context, decision: Decision) -> str | None:
        """What a shadow bundle or audit-mode rules would have done; None if neither ran.

        A shadow bundle (a candidate run alongside the enforced one) is evaluated on
        the same input; without one, audit-mode rules that fired (a rule, a provider
        or an environment trialled with ``mode: audit``) say what they would have done.
        Runs where the record is built: off the request path for reads.  A failing
        shadow is recorded as such; it never changes what is enforced.
        """
        shadow_bundle = self._shadow_in_force()
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

    def record_status(self, decision_id: str, status: int) -> None:
        self._recorder.status(decision_id, status)

    def _deny(
        self, request: HttpRequest, action: Action, decision: Decision, decision_id: str
    ) -> Answer:
        message = (
            f"guardproxy denied this request: {decision.message} "
            "Do not retry it, and do not try to achieve it another way."
        )
        return _answer(request, action, message, kind="deny", decision_id=decision_id)

    def fail_closed(self, request: HttpRequest, action: Action, decision_id: str) -> Answer:
        self.metrics.failed_closed("store")
        message = (
            "guardproxy could not record this request, so it was not sent. "
            "Tell the user guardproxy's store is failing; do not retry it another way."
        )
        return _answer(request, action, message, kind="deny", decision_id=decision_id)

    async def _hold(
        self,
        request: HttpRequest,
        action: Action,
        context: Context,
        decision: Decision,
        decision_id: str,
        digest: str,
    ) -> Verdict:
        session = context.session
        now = self._clock()
        try:
            granted = await asyncio.to_thread(self._grant, session, digest, now)
            if granted is not None:
                self._released(granted)
                return Forward(decision_id, granted.id)
            hold = await asyncio.to_thread(self._joinable, session, digest, now)
            if hold is None or hold.state is not HoldState.PENDING:
                if hold is not None and hold.state is HoldState.DENIED:
                    return self._denied_hold(request, action, hold, decision_id)
                hold = await asyncio.to_thread(
                    self._create_hold, request, action, context, decision, digest, now
                )
                self.events.publish(_event("held", hold, now, reason=decision.message))
        except StoreError as error:
            log.error("hold.store_failed", error=str(error))
            self.metrics.store_error("hold")
            return self.fail_closed(request, action, decision_id)
        note = agent_note(hold, await self._stored_session(session))
        return await self._wait(request, action, decision, hold, decision_id, digest, session, note)

    async def _stored_session(self, session: SessionInfo) -> Session | None:
        """The session as registered (user, working directory) for the hold message; None
        for an anonymous client or when the store cannot say (the message then promises
        only what holds for this session)."""
        if session.anonymous:
            return None
        try:
            return await asyncio.to_thread(self._store.get_session, session.id)
        except StoreError:
            return None

    def _grant(self, session: SessionInfo, digest: str, now: datetime) -> Hold | None:
        """An approval that lets this exact request through now: the session's own, else
        one given to an earlier session of the same user and working directory."""
        granted = self._store.consume_approval(session.id, digest, now)
        if granted is None and not session.anonymous:
            granted = self._store.consume_carried_approval(session.id, digest, now)
        return granted

    def _joinable(self, session: SessionInfo, digest: str, now: datetime) -> Hold | None:
        """The hold a retry of this request joins: the session's own (pending, approved or
        denied), else one pending for an earlier session of the same user and directory."""
        hold = self._store.find_hold(session.id, digest, now)
        if hold is None and not session.anonymous:
            hold = self._store.find_carried_hold(session.id, digest, now)
        return hold

    def _create_hold(
        self,
        request: HttpRequest,
        action: Action,
        context: Context,
        decision: Decision,
        digest: str,
        now: datetime,
    ) -> Hold:
        approval = decision.approval
        timeout = approval.timeout_seconds if approval else 1800
        session_id = context.session.id
        hold = self._store.create_hold(
            session_id=session_id,
            request_digest=digest,
            action_json=redact_json_text(action.model_dump_json()),
            decision_json=redact_json_text(decision.model_dump_json()),
            summary=redact_text(action.summary()),
            grant=store_grant(approval.grant if approval else "once"),
            created_at=now,
            expires_at=now + timedelta(seconds=timeout),
            detail_json=redact_json_text(json.dumps(hold_detail(request, context))),
        )
        log.info("hold.created", hold=hold.id, session=session_id, action=hold.summary)
        self.metrics.hold_created()
        return hold

    async def _wait(
        self,
        request: HttpRequest,
        action: Action,
        decision: Decision,
        hold: Hold,
        decision_id: str,
        digest: str,
        session: SessionInfo,
        note: str,
    ) -> Verdict:
        remaining = (hold.expires_at - self._clock()).total_seconds()
        window = max(0.0, min(self._hold_window, remaining))
        state = await self._resolution(hold, window)
        if state is HoldState.APPROVED:
            try:
                granted = await asyncio.to_thread(self._grant, session, digest, self._clock())
            except StoreError as error:
                log.error("hold.store_failed", error=str(error))
                self.metrics.store_error("consume_approval")
                return self.fail_closed(request, action, decision_id)
            if granted is not None:
                self._released(granted)
                return Forward(decision_id, hold.id)
        if state is HoldState.DENIED:
            try:
                current = await asyncio.to_thread(self._store.get_hold, hold.id)
            except StoreError:
                current = None  # the denial stands; only who gave it is unknown
            return self._denied_hold(request, action, current or hold, decision_id)
        if state is HoldState.EXPIRED or self._clock() >= hold.expires_at:
            return self._expired(request, action, hold, decision_id)
        return self._pending_answer(request, action, decision, hold, decision_id, note)

    async def _resolution(self, hold: Hold, window: float) -> HoldState | None:
        """The hold's new state once resolved within ``window`` seconds, else None."""
        if self._closing:
            return None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + window
        future = self._waiters.add(hold.id)
        try:
            while (left := deadline - loop.time()) > 0:
                try:
                    return await asyncio.wait_for(
                        asyncio.shield(future), timeout=min(left, RECHECK_SECONDS)
                    )
                except TimeoutError:
                    pass
                try:
                    current = await asyncio.to_thread(self._store.get_hold, hold.id)
                except StoreError as error:
                    log.warning("hold.recheck_failed", hold=hold.id, error=str(error))
                    continue
                if current is not None and current.state is not HoldState.PENDING:
                    return current.state
            return None
        finally:
            self._waiters.remove(hold.id, future)

    def _expired(
        self, request: HttpRequest, action: Action, hold: Hold, decision_id: str
    ) -> Answer:
        message = (
            f"guardproxy: hold {hold.id} expired without approval, so this request was not "
            "sent. Do not retry it in another form; tell the user it needs approval."
        )
        return _answer(
            request, action, message, kind="deny", decision_id=decision_id, hold_id=hold.id
        )

    def _pending_answer(
        self,
        request: HttpRequest,
        action: Action,
        decision: Decision,
        hold: Hold,
        decision_id: str,
        note: str,
    ) -> Answer:
        """``note`` (:func:`agent_note`) says where and until when an approval applies."""
        if self._closing:
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
        return _answer(
            request, action, message, kind="hold", decision_id=decision_id, hold_id=hold.id
        )

    def _denied_hold(
        self, request: HttpRequest, action: Action, hold: Hold, decision_id: str
    ) -> Answer:
        by = f" by {hold.resolved_by}" if hold.resolved_by else ""
        reason = f": {hold.reason}" if hold.reason else ""
        message = (
            f"guardproxy: a human denied this request (hold {hold.id}){by}{reason}. "
            "Do not retry it, and do not try to achieve it another way."
        )
        return _answer(
            request, action, message, kind="deny", decision_id=decision_id, hold_id=hold.id
        )

    def _released(self, hold: Hold) -> None:
        log.info("hold.released", hold=hold.id, grant=hold.grant)
        self.events.publish(_event("released", hold, self._clock()))

    # -- approvals

    async def decide_hold(
        self, hold_id: str, approver: Approver, *, approve: bool, reason: str
    ) -> HoldDecision:
        """One approver's verdict on a pending hold, checked against its requirement.

        A deny ends the hold. An approval counts once per person; when the requirement
        is met the action is re-evaluated against the current policy and released only
        if that still allows it or holds it for the same approval. Raises
        :class:`ApprovalRefused` (with the HTTP status to answer) when the verdict is
        not allowed, and :class:`StoreError` when the store fails.
        """
        outcome, events = await asyncio.to_thread(
            self._decide_hold, hold_id, approver, approve, reason.strip()
        )
        for event in events:
            self.events.publish(event)
        hold = outcome.hold
        if hold.state is not HoldState.PENDING:
            woken = self._waiters.wake(hold_id, hold.state)
            log.info("hold.resolved", hold=hold_id, state=hold.state.value, woken=woken)
            resolved_at = hold.resolved_at or self._clock()
            waited = (resolved_at - hold.created_at).total_seconds()
            self.metrics.hold_resolved(hold.state.value, waited)
            outcome = replace(outcome, woken=woken)
        return outcome

    def _decide_hold(
        self, hold_id: str, approver: Approver, approve: bool, reason: str
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
            check_may_decide(
                requirement,
                approver,
                session_user=session.user if session else "",
                approvals=approvals,
                approve=approve,
                reason=reason,
            )
            verdict = ApprovalVerdict.APPROVE if approve else ApprovalVerdict.DENY
            try:
                self._store.record_approval(
                    hold_id, approver=approver.name, groups=approver.groups, verdict=verdict,
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
                events.append(_event("denied", hold, now, approver.name, reason))
            else:
                events.append(_event("approval", hold, now, approver.name, reason))
                if counted.met:
                    changed = self._policy_change(hold)
                    if changed:
                        hold = self._store.resolve_hold(
                            hold_id, state=HoldState.DENIED, by="policy", reason=changed, now=now
                        )
                        events.append(_event("denied", hold, now, reason=changed))
                    else:
                        hold = self._store.resolve_hold(
                            hold_id, state=HoldState.APPROVED, by=", ".join(counted.approvers),
                            reason=reason, now=now,
                        )  # fmt: skip
                        events.append(_event("approved", hold, now, approver.name, reason))
            return HoldDecision(hold, approvals, counted), events

    def _policy_change(self, hold: Hold) -> str:
        """Why the current policy no longer releases the held action ("" if it does)."""
        try:
            action = Action.model_validate_json(hold.action_json)
            context = Context.model_validate(json.loads(hold.detail_json)["context"])
            held = Decision.model_validate_json(hold.decision_json)
        except (KeyError, TypeError, ValueError):
            return (
                "guardproxy kept no decision context for this hold, so it cannot re-check it "
                "against the current policy; the request must be made again"
            )
        now = evaluate(self._bundle, action, context)
        rules = ", ".join(now.determining_rules) or now.basis
        if now.outcome is Outcome.DENY:
            return f"the current policy denies this request now ({rules}): {now.message}"
        if now.outcome is Outcome.HOLD and now.approval != held.approval:
            return (
                f"the current policy holds this request for a different approval now ({rules}); "
                "the request must be made again and approved under the new rules"
            )
        return ""

    async def sweep(self) -> None:
        """Expire holds past their time-out (a deny) and escalate those half-way there."""
        events, expired = await asyncio.to_thread(self._sweep)
        for event in events:
            self.events.publish(event)
        for hold_id, waited in expired:
            self._waiters.wake(hold_id, HoldState.EXPIRED)
            self.metrics.hold_resolved(HoldState.EXPIRED.value, waited)

    async def run_sweeper(self, interval: float = 0.5) -> None:
        """Sweep until cancelled; any failure is logged and the next sweep tries again
        (one that ended the loop would leave holds unexpired and unescalated for good)."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sweep()
            except Exception as error:
                log.error("hold.sweep_failed", error=repr(error))
                self.metrics.store_error("sweep")

    def _sweep(self) -> tuple[list[HoldEvent], list[tuple[str, float]]]:
        """Events to publish, and each expired hold with how long it waited."""
        expired: list[Hold] = []
        with self._deciding:
            now = self._clock()
            pending = self._store.list_holds(state=HoldState.PENDING, limit=_SWEEP_BATCH)
            self._escalated &= {hold.id for hold in pending}
            # escalations first, so even a late sweep tells people before the deny
            events = [e for e in (self._escalation(h, now) for h in pending) if e is not None]
            # a read first: the write transaction only when something may be due
            if len(pending) == _SWEEP_BATCH or any(h.expires_at <= now for h in pending):
                expired = self._expire(now)
                events.extend(_event("expired", hold, now, reason=_EXPIRED) for hold in expired)
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
        return _event("escalated", hold, now, reason=reason)

    def _expire(self, now: datetime) -> list[Hold]:
        expired = self._store.expire_holds(now)
        for hold in expired:
            log.info("hold.expired", hold=hold.id)
        return expired

    def close(self) -> None:
        """Answer every live held request now (with the pending message), e.g. on shutdown.

        The holds stay pending in the store: an approval given later lets the retry pass.
        """
        self._closing = True
        self._waiters.wake_all(HoldState.PENDING)

    async def drain(self, timeout: float) -> bool:
        """Wait (bounded) until no request is between decision and answer."""
        deadline = time.monotonic() + timeout
        while self._in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return not self._in_flight

    def flush(self) -> None:
        """Write queued decision records (blocking); the gate is unusable afterwards."""
        self._recorder.close()


def _conflict(hold: Hold) -> ApprovalRefused:
    by = f" by {hold.resolved_by}" if hold.resolved_by else ""
    return ApprovalRefused(
        409,
        f"hold {hold.id} is {hold.state.value}{by}; it can no longer be decided",
        "list pending holds: guardproxy holds",
    )
