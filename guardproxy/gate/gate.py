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

Verdicts, quorum, expiry and escalation belong to the approvals service
(:mod:`guardproxy.approvals.service`); the gate subscribes to its resolutions
(:meth:`Gate.watch_approvals`) to wake the requests waiting here.  Holds resolved by
another replica sharing the store are announced by the store (``Store.watch_holds``);
a waiting hold is also re-read every few seconds, in case an announcement was lost.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime

import structlog

from guardproxy.action import Action, Verb
from guardproxy.approvals.carry import agent_note
from guardproxy.approvals.events import HoldEvents, hold_event
from guardproxy.approvals.holds import create_hold
from guardproxy.approvals.safety import ImpactPreviews, release_text
from guardproxy.approvals.service import ApprovalService, Clock, utc_now
from guardproxy.context import Context, SessionInfo
from guardproxy.gate import answers
from guardproxy.gate.answers import Answer, Forward, Verdict
from guardproxy.gate.digest import request_digest
from guardproxy.gate.drafts import decision_draft
from guardproxy.gate.recorder import DecisionDraft, DecisionRecorder, Writer
from guardproxy.gate.waiters import Waiters
from guardproxy.gate.writer import StoreWriter
from guardproxy.metrics import Metrics
from guardproxy.policy import Bundle, Decision, evaluate
from guardproxy.policy.model import Outcome
from guardproxy.recognise.request import HttpRequest
from guardproxy.store.base import (
    Hold,
    HoldState,
    InvalidValueError,
    Session,
    SessionEvent,
    Store,
    StoreError,
)

__all__ = [
    "RECHECK_SECONDS",
    "Answer",
    "Clock",
    "Forward",
    "Gate",
    "Journal",
    "Verdict",
    "utc_now",
]

log = structlog.get_logger(__name__)

Journal = Callable[[str, Callable[[Sequence[SessionEvent]], None]], None]
"""The session history of a request, as the gate sees it: called with the gate's outcome
and a function that stores events together with the decision record, it builds the
events, hands them to that function and, once it returned, counts them; if that function
raises, it lets the exception through and counts nothing."""

RECHECK_SECONDS = 3.0
"""How often a live held request re-reads its hold, should a notification be lost."""


class Gate:
    """Applies decisions to requests: records them, forwards, answers, or holds and waits."""

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
        impact: ImpactPreviews | None = None,
        settles_inline: bool = False,
    ) -> None:
        """``writer`` takes the batched read records (default: written in this
        process, to ``store``); ``impact`` is told of each new hold (its preview is
        gathered in the background: the hold never waits for it); ``settles_inline``:
        ``store``'s commits wait for no disk and no network, so :meth:`settle` may run
        on the event loop."""
        self.impact = impact
        self.settles_inline = settles_inline
        self.events = events or HoldEvents()
        self.metrics = metrics or Metrics()
        self._store = store
        self._bundle = bundle
        self._shadow_bundle = shadow
        self._hold_window = hold_window
        self._clock = clock
        self._waiters = Waiters()
        self._recorder = DecisionRecorder(writer or StoreWriter(store, self.metrics.store_error))
        self._closing = False
        self._in_flight = 0
        self._in_flight_lock = threading.Lock()
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

    def watch_approvals(self, approvals: ApprovalService) -> Callable[[], None]:
        """Wake waiting requests when ``approvals`` (this instance's service, on this
        loop) resolves their hold; returns the unsubscribe function."""
        return approvals.on_resolved(self._waiters.wake)

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
        self,
        request: HttpRequest,
        action: Action,
        context: Context,
        decision: Decision,
        journal: Journal | None = None,
    ) -> Verdict:
        """Apply ``decision``; a decision recorded before the answer is recorded together
        with what ``journal`` (the session history) adds for its outcome, in one
        transaction, when one is given (see :data:`Journal`)."""
        self._count_in_flight(1)
        try:
            return await self._handle(request, action, context, decision, journal)
        finally:
            self._count_in_flight(-1)

    def settle(
        self,
        request: HttpRequest,
        action: Action,
        context: Context,
        decision: Decision,
        journal: Journal | None = None,
    ) -> Verdict | None:
        """:meth:`handle` in the worker thread that decided, for a decision that waits
        for nothing but its record (an allow or a deny recorded before the answer): one
        thread hop per request instead of two.  None for one that needs the event loop
        (a hold, or a read recorded in the background): :meth:`handle` it there."""
        if decision.outcome is Outcome.HOLD or (
            decision.outcome is Outcome.ALLOW
            and action.verb is Verb.READ
            and self._reads_in_background
        ):
            return None
        self._count_in_flight(1)
        try:
            decision_id = "d-" + secrets.token_hex(6)
            bound = self._bound(decision_id, action, context)
            verdict: Verdict = (
                answers.denied(request, action, decision, decision_id)
                if decision.outcome is Outcome.DENY
                else Forward(decision_id)
            )
            outcome, draft = self._draft_builder(decision_id, action, context, decision, verdict)
            try:
                self._append(draft, outcome, journal)
            except Exception as error:  # any failure to record: not forwarded (fail closed)
                refused = self._not_recorded(bound, error, request, action, verdict)
                if refused is not None:
                    return refused
            return self._applied(bound, action, decision, outcome, verdict)
        finally:
            self._count_in_flight(-1)

    def _count_in_flight(self, change: int) -> None:
        with self._in_flight_lock:  # worker threads settle too
            self._in_flight += change

    async def _handle(
        self,
        request: HttpRequest,
        action: Action,
        context: Context,
        decision: Decision,
        journal: Journal | None,
    ) -> Verdict:
        decision_id = "d-" + secrets.token_hex(6)
        bound = self._bound(decision_id, action, context)
        verdict: Verdict
        if decision.outcome is Outcome.HOLD:
            digest = request_digest(request)
            verdict = await self._hold(request, action, context, decision, decision_id, digest)
        elif decision.outcome is Outcome.DENY:
            verdict = answers.denied(request, action, decision, decision_id)
        else:
            verdict = Forward(decision_id)
        outcome, draft = self._draft_builder(decision_id, action, context, decision, verdict)
        if isinstance(verdict, Forward) and action.verb is Verb.READ and self._reads_in_background:
            if self._shadow_in_force() is not None:
                self._recorder.record(decision_id, draft)  # the shadow decides off the request path
            else:  # built now: what waits for the batch is a few strings, not the request's objects
                self._recorder.record(decision_id, draft(None))
        else:
            try:  # built in the worker too: redaction and a shadow decision cost CPU
                await asyncio.to_thread(self._append, draft, outcome, journal)
            except Exception as error:  # any failure to record: not forwarded (fail closed)
                refused = self._not_recorded(bound, error, request, action, verdict)
                if refused is not None:
                    return refused
        return self._applied(bound, action, decision, outcome, verdict)

    @staticmethod
    def _bound(decision_id: str, action: Action, context: Context) -> structlog.BoundLogger:
        return log.bind(  # type: ignore[no-any-return]
            decision=decision_id,
            session=context.session.id,
            action=action.summary(),
            verb=action.verb.value,
            environment=action.environment.value,
        )

    def _draft_builder(
        self,
        decision_id: str,
        action: Action,
        context: Context,
        decision: Decision,
        verdict: Verdict,
    ) -> tuple[str, Callable[[int | None], DecisionDraft]]:
        """The outcome ``verdict`` records, and the builder of its record's draft."""
        outcome = "allow" if isinstance(verdict, Forward) else verdict.kind

        def draft(upstream_status: int | None = None) -> DecisionDraft:
            """Reads the shadow bundle in force where the draft is built."""
            return decision_draft(
                decision_id, action, context, decision, outcome=outcome,
                hold_id=verdict.hold_id, upstream_status=upstream_status,
                shadow_bundle=self._shadow_in_force(),
            )  # fmt: skip

        return outcome, draft

    def _not_recorded(
        self,
        bound: structlog.BoundLogger,
        error: Exception,
        request: HttpRequest,
        action: Action,
        verdict: Verdict,
    ) -> Answer | None:
        """A record that failed: the refusal to send instead of a forward, else None
        (a deny or a hold answers anyway)."""
        bound.error("decision.not_recorded", error=str(error))
        self.metrics.store_error("append_decision")
        if isinstance(verdict, Forward):
            return self.fail_closed(request, action, verdict.decision_id)
        return None

    def _applied(
        self,
        bound: structlog.BoundLogger,
        action: Action,
        decision: Decision,
        outcome: str,
        verdict: Verdict,
    ) -> Verdict:
        self.metrics.decision(action, outcome)
        bound.info(
            "decision",
            outcome=outcome,
            rules=decision.determining_rules,
            basis=decision.basis,
            hold=verdict.hold_id,
        )
        return verdict

    def _append(
        self, draft: Callable[[int | None], DecisionDraft], outcome: str, journal: Journal | None
    ) -> None:
        """Write the decision record (a worker thread), with the session history's events
        for ``outcome`` in the same transaction if a ``journal`` is given.

        Should that transaction fail for what the events hold (a value the store
        refuses, an error building them), the record is written alone, as without a
        journal (the journal records its events on its own afterwards): a history the
        store refuses must not refuse the request.  A store that fails (locked, full,
        gone) fails the record at once: trying it again alone would only wait again.
        """
        record = draft(None).redacted()
        if journal is not None:
            written = False

            def write(events: Sequence[SessionEvent]) -> None:
                nonlocal written
                self._store.append_decision(record, events)
                written = True

            try:
                journal(outcome, write)
                return
            except Exception as error:
                if written:  # stored: only the history's own bookkeeping failed
                    log.error("history.not_recorded", decision=record.id, error=repr(error))
                    return
                if isinstance(error, StoreError) and not isinstance(error, InvalidValueError):
                    raise
                log.warning("decision.history_not_joined", decision=record.id, error=str(error))
        self._store.append_decision(record)

    def record_status(self, decision_id: str, status: int) -> None:
        self._recorder.status(decision_id, status)

    def fail_closed(self, request: HttpRequest, action: Action, decision_id: str) -> Answer:
        """Refuse a request whose decision or hold the store could not keep."""
        self.metrics.failed_closed("store")
        return answers.not_recorded(request, action, decision_id)

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
                return Forward(decision_id, granted.id, await self._steps_note(granted))
            hold = await asyncio.to_thread(self._joinable, session, digest, now)
            if hold is None or hold.state is not HoldState.PENDING:
                if hold is not None and hold.state is HoldState.DENIED:
                    return answers.hold_denied(request, action, hold, decision_id)
                hold = await asyncio.to_thread(
                    create_hold, self._store, request, action, context, decision, digest, now
                )
                log.info("hold.created", hold=hold.id, session=session.id, action=hold.summary)
                self.metrics.hold_created()
                self.events.publish(hold_event("held", hold, now, reason=decision.message))
                if self.impact is not None:
                    self.impact.held(hold, request, action)
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
                return Forward(decision_id, hold.id, await self._steps_note(granted))
        if state is HoldState.DENIED:
            try:
                current = await asyncio.to_thread(self._store.get_hold, hold.id)
            except StoreError:
                current = None  # the denial stands; only who gave it is unknown
            return answers.hold_denied(request, action, current or hold, decision_id)
        if state is HoldState.EXPIRED or self._clock() >= hold.expires_at:
            return answers.expired(request, action, hold, decision_id)
        return answers.still_pending(
            request, action, decision, hold, decision_id, note, closing=self._closing
        )

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

    async def _steps_note(self, hold: Hold) -> str:
        """What the agent is told of the safety steps run before this release ("" if
        none, or if the store cannot say: the release stands either way)."""
        try:
            steps = await asyncio.to_thread(self._store.list_safety_steps, [hold.id])
        except StoreError:
            return ""
        return release_text(steps)

    def _released(self, hold: Hold) -> None:
        log.info("hold.released", hold=hold.id, grant=hold.grant)
        self.events.publish(hold_event("released", hold, self._clock()))

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
