"""From decision to effect: forward, answer with a protocol-native 403, or hold.

A held request waits here, live, for up to the hold window; an approval given in
that time forwards the original request. After the window the client gets a 403
that names the hold and asks the agent to retry the same call later: once the
hold is approved, the next identical request of the session passes, once.
Retries of a pending hold join it; retries of a denied hold get the same denial.
Every decision is recorded before anything is forwarded; if it cannot be
recorded, nothing that can change state is forwarded.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import structlog

from guardproxy.action import Action, Verb
from guardproxy.audit.redact import redact_json_text, redact_text
from guardproxy.context import Context
from guardproxy.gate.digest import request_digest
from guardproxy.gate.recorder import DecisionRecorder
from guardproxy.gate.responses import NativeAnswer, native_answer
from guardproxy.policy import Bundle, Decision, evaluate
from guardproxy.policy.model import Outcome, duration_seconds
from guardproxy.recognise.request import HttpRequest
from guardproxy.store.base import (
    DecisionRecord,
    Hold,
    HoldState,
    Store,
    StoreError,
)

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]


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


class Gate:
    def __init__(
        self,
        store: Store,
        bundle: Callable[[], Bundle],
        *,
        hold_window: float,
        clock: Clock = utc_now,
        shadow: Callable[[], Bundle | None] | None = None,
    ) -> None:
        self._store = store
        self._bundle = bundle
        self._shadow_bundle = shadow
        self._hold_window = hold_window
        self._clock = clock
        self._waiters = _Waiters()
        self._recorder = DecisionRecorder(store)
        self._closing = False

    # -- the request path

    def decide(self, action: Action, context: Context) -> Decision:
        """The policy decision (pure; callers run it off the event loop)."""
        return evaluate(self._bundle(), action, context)

    def reads_history(self, verb: Verb) -> bool:
        """Whether the current bundle (or the shadow bundle) can read history for ``verb``.

        The shadow bundle counts so that its recorded decisions see the same input a
        live rollout would.
        """
        if self._bundle().reads_history(verb):
            return True
        shadow = self._shadow_bundle() if self._shadow_bundle is not None else None
        return shadow is not None and shadow.reads_history(verb)

    async def handle(
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

        def record() -> DecisionRecord:
            return DecisionRecord(
                id=decision_id,
                at=context.now,
                session_id=context.session.id,
                action_json=redact_json_text(action.model_dump_json()),
                context_json=redact_json_text(context.model_dump_json()),
                decision_json=redact_json_text(decision.model_dump_json()),
                outcome=outcome,
                hold_id=verdict.hold_id,
                provider=action.provider.value,
                shadow_json=self._shadow(action, context, decision),
            )

        if isinstance(verdict, Forward) and action.verb is Verb.READ:
            self._recorder.record(record)  # serialised and written off the request path
        else:
            try:  # built in the worker too: redaction and a shadow decision cost CPU
                await asyncio.to_thread(lambda: self._store.append_decision(record()))
            except Exception as error:  # any failure to record: not forwarded (fail closed)
                bound.error("decision.not_recorded", error=str(error))
                if isinstance(verdict, Forward):
                    return self._fail_closed(request, action, decision_id)
        bound.info(
            "decision",
            outcome=outcome,
            rules=decision.determining_rules,
            basis=decision.basis,
            hold=verdict.hold_id,
        )
        return verdict

    def _shadow(self, action: Action, context: Context, decision: Decision) -> str | None:
        """What a shadow bundle or audit-mode rules would have done; None if neither ran.

        A shadow bundle (a candidate run alongside the enforced one) is evaluated on
        the same input; without one, audit-mode rules that fired (a rule, a provider
        or an environment trialled with ``mode: audit``) say what they would have done.
        Runs where the record is built: off the request path for reads.  A failing
        shadow is recorded as such; it never changes what is enforced.
        """
        shadow_bundle = self._shadow_bundle() if self._shadow_bundle is not None else None
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

    def _fail_closed(self, request: HttpRequest, action: Action, decision_id: str) -> Answer:
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
        session_id = context.session.id
        now = self._clock()
        try:
            granted = await asyncio.to_thread(self._store.consume_approval, session_id, digest, now)
            if granted is not None:
                return Forward(decision_id, granted.id)
            hold = await asyncio.to_thread(self._store.find_hold, session_id, digest, now)
            if hold is None or hold.state is not HoldState.PENDING:
                if hold is not None and hold.state is HoldState.DENIED:
                    return self._denied_hold(request, action, hold, decision_id)
                hold = await asyncio.to_thread(
                    self._create_hold, action, decision, session_id, digest, now
                )
        except StoreError as error:
            log.error("hold.store_failed", error=str(error))
            return self._fail_closed(request, action, decision_id)
        return await self._wait(request, action, decision, hold, decision_id, digest)

    def _create_hold(
        self, action: Action, decision: Decision, session_id: str, digest: str, now: datetime
    ) -> Hold:
        approval = decision.approval
        timeout = approval.timeout_seconds if approval else 1800
        hold = self._store.create_hold(
            session_id=session_id,
            request_digest=digest,
            action_json=redact_json_text(action.model_dump_json()),
            decision_json=redact_json_text(decision.model_dump_json()),
            summary=redact_text(action.summary()),
            grant=store_grant(approval.grant if approval else "once"),
            created_at=now,
            expires_at=now + timedelta(seconds=timeout),
        )
        log.info("hold.created", hold=hold.id, session=session_id, action=hold.summary)
        return hold

    async def _wait(
        self,
        request: HttpRequest,
        action: Action,
        decision: Decision,
        hold: Hold,
        decision_id: str,
        digest: str,
    ) -> Verdict:
        remaining = (hold.expires_at - self._clock()).total_seconds()
        window = max(0.0, min(self._hold_window, remaining))
        future = self._waiters.add(hold.id)
        try:
            state = await asyncio.wait_for(future, timeout=window) if not self._closing else None
        except TimeoutError:
            state = None
        finally:
            self._waiters.remove(hold.id, future)
        if state is HoldState.APPROVED:
            try:
                granted = await asyncio.to_thread(
                    self._store.consume_approval, hold.session_id, digest, self._clock()
                )
            except StoreError as error:
                log.error("hold.store_failed", error=str(error))
                return self._fail_closed(request, action, decision_id)
            if granted is not None:
                log.info("hold.released", hold=hold.id)
                return Forward(decision_id, hold.id)
        if state is HoldState.DENIED:
            current = await asyncio.to_thread(self._store.get_hold, hold.id)
            return self._denied_hold(request, action, current or hold, decision_id)
        if self._clock() >= hold.expires_at:
            return self._expired(request, action, hold, decision_id)
        return self._pending_answer(request, action, decision, hold, decision_id)

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
    ) -> Answer:
        lead = "guardproxy is shutting down; " if self._closing else ""
        message = (
            f"guardproxy: {lead}{decision.message} This request is held for human approval "
            f"(hold {hold.id}). Do not retry it in another form or with another tool. "
            "Tell the user it needs approval, wait, then retry exactly the same call "
            "once it is approved."
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

    # -- approvals

    async def resolve(self, hold_id: str, *, approve: bool, by: str, reason: str) -> Hold:
        """Approve or deny a pending hold and wake the requests waiting on it at once.

        Raises the store's HoldConflict when the hold is no longer pending.
        """
        state = HoldState.APPROVED if approve else HoldState.DENIED
        hold = await asyncio.to_thread(
            self._store.resolve_hold, hold_id, state=state, by=by, reason=reason, now=self._clock()
        )
        woken = self._waiters.wake(hold_id, state)
        log.info("hold.resolved", hold=hold_id, state=state.value, by=by, woken=woken)
        return hold

    def close(self) -> None:
        """Answer every live held request now (with the pending message), e.g. on shutdown."""
        self._closing = True
        self._waiters.wake_all(HoldState.PENDING)

    def flush(self) -> None:
        """Write queued decision records (blocking); the gate is unusable afterwards."""
        self._recorder.close()
