"""The control API: list holds, approve or deny them, register sessions.

It listens on its own loopback port, separate from the proxy; the proxy refuses to
forward guarded sessions' requests to it.  Two kinds of bearer token: the admin
token kept in the data directory (never in a session's environment) registers
sessions and reads the runtime; each approver's own token (``guardproxy approvers
add``) lists, approves and denies holds, so every verdict has a person behind it.
The admin token is not an approver.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog
import tornado.netutil
import tornado.routing
import tornado.web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from guardproxy import __version__
from guardproxy.action import Action
from guardproxy.approvals.carry import release_note
from guardproxy.approvals.oncall import OnCallStatus
from guardproxy.approvals.rules import ApprovalRefused, progress, requirement_of
from guardproxy.approvals.service import HoldDecision
from guardproxy.broker import CredentialError
from guardproxy.control.console import console_routes
from guardproxy.control.handler import ControlContext, ControlHandler
from guardproxy.control.schema import (
    ApprovalOut,
    DecisionOut,
    DecisionsOut,
    Endpoint,
    HoldDetailOut,
    HoldOut,
    HoldsOut,
    OnCallOut,
    ProgressOut,
    ResolveBody,
    ResolveOut,
    WhoamiOut,
    openapi_document,
)
from guardproxy.httpserver import AppServer
from guardproxy.ops.http import ops_routes
from guardproxy.session.registry import SessionCredential, SessionRefused
from guardproxy.store.base import (
    Approval,
    DecisionRecord,
    Hold,
    HoldState,
    NotFoundError,
    Session,
    SessionEvent,
    Store,
    StoreError,
)

log = structlog.get_logger(__name__)


class SessionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field("", max_length=200)
    user: str = Field("", max_length=200)
    agent: str = Field("", max_length=100)
    command: list[str] = Field(default_factory=list)
    cwd: str = ""
    labels: list[str] = Field(default_factory=list)
    resume: str = Field(
        "", max_length=100, description="An ended session of the same user to re-open."
    )
    kubeconfig: list[str] = Field(
        default_factory=list,
        description="The session's kubeconfig files: the guard keeps their users' credentials "
        "and the session gets a token for each (`broker.kubernetes.users`).",
    )


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def hold_out(
    hold: Hold,
    approvals: list[Approval],
    session: Session | None,
    oncall: list[OnCallStatus] | None = None,
) -> HoldOut:
    """``session``: the hold's session as stored (None if unknown or anonymous);
    ``oncall``: who is on call in its ``oncall:`` groups now (pending holds)."""
    decision = json.loads(hold.decision_json)
    counted = progress(requirement_of(hold), approvals)
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
    )


def hold_detail_out(
    hold: Hold,
    approvals: list[Approval],
    session: Session | None,
    recent: list[SessionEvent],
    oncall: list[OnCallStatus] | None = None,
) -> HoldDetailOut:
    detail = json.loads(hold.detail_json)
    context = detail.get("context") or {}
    return HoldDetailOut(
        **hold_out(hold, approvals, session, oncall).model_dump(),
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


class OpenApiHandler(ControlHandler):
    audience = "none"

    def get(self) -> None:
        self.write_json(openapi_document(ENDPOINTS, __version__))


class WhoamiHandler(ControlHandler):
    audience = "any"

    def get(self) -> None:
        if self.approver is None:
            self.write_json(WhoamiOut(kind="admin", name="admin", groups=[]))
        else:
            self.write_json(
                WhoamiOut(
                    kind="approver", name=self.approver.name, groups=list(self.approver.groups)
                )
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
            oncall = await self.ctx.approvals.on_call_statuses(
                [hold for hold, _, _ in holds if hold.state is HoldState.PENDING]
            )
        except StoreError as error:
            self.fail(503, f"the store failed: {error}", "check guardproxy's log")
            return
        self.write_json(
            HoldsOut(
                holds=[
                    hold_out(hold, approvals, owner, oncall.get(hold.id))
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
        self.write_json(hold_detail_out(*found, oncall))


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
                hold_id, self.approver, approve=verb == "approve", reason=body.reason
            )
            found = await self.in_thread(lambda: _hold_with_context(self.ctx.store, hold_id))
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
                hold=hold_detail_out(hold, outcome.approvals, session, recent, oncall),
                outcome=said,
            )
        )


async def _pending_on_call(context: ControlContext, hold: Hold | None) -> list[OnCallStatus]:
    if hold is None or hold.state is not HoldState.PENDING:
        return []
    return (await context.approvals.on_call_statuses([hold])).get(hold.id, [])


def _resolution_text(outcome: HoldDecision, session: Session | None) -> str:
    """What a verdict did and what happens next, for the approver."""
    hold = outcome.hold
    if hold.state is HoldState.PENDING:
        return f"approval recorded; {outcome.progress.text()}; the hold stays pending"
    if hold.state is HoldState.DENIED:
        return f"denied{' by ' + hold.resolved_by if hold.resolved_by else ''}: {hold.reason}"
    said = f"approved by {hold.resolved_by}"
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


class SessionsHandler(ControlHandler):
    audience = "admin"

    async def get(self) -> None:
        sessions = await self.in_thread(lambda: self.ctx.store.list_sessions(active_only=True))
        self.write_json({"sessions": [session_json(s) for s in sessions]})

    async def post(self) -> None:
        body = self.body_as(SessionBody)
        if body is None:
            return
        try:
            session, credential = await self.in_thread(lambda: self._register(body))
        except SessionRefused as refused:
            self.fail(refused.status, refused.error, refused.hint)
            return
        except StoreError as error:
            self.fail(503, f"the store failed: {error}", "check guardproxy's log")
            return
        offer: dict[str, Any] = {}
        broker = self.ctx.broker
        if broker is not None:
            sources = [Path(p) for p in body.kubeconfig]
            try:
                offer = await self.in_thread(lambda: broker.register_session(session.id, sources))
            except (CredentialError, OSError, ValueError) as error:
                await self.in_thread(lambda: self.ctx.registry.end(session.id, self.ctx.clock()))
                self.fail(422, f"the session's credentials cannot be brokered: {error}",
                          "fix the kubeconfig or the brokers: configuration")  # fmt: skip
                return
        started = "session.resumed" if body.resume else "session.started"
        log.info(started, session=session.id, agent=session.agent, name=session.name)
        self.write_json(
            {
                **session_json(session),
                "token": credential.token,
                "proxy_port": self.ctx.proxy_port(),
                "broker": offer,
            },
            201,
        )

    def _register(self, body: SessionBody) -> tuple[Session, SessionCredential]:
        if body.resume:
            return self.ctx.registry.resume(body.resume, user=body.user)
        return self.ctx.registry.create(
            name=body.name, user=body.user, command=body.command, cwd=body.cwd,
            labels=body.labels, now=self.ctx.clock(), agent=body.agent,
        )  # fmt: skip


class SessionEndHandler(ControlHandler):
    audience = "admin"

    async def post(self, session_id: str) -> None:
        try:
            session = await self.in_thread(
                lambda: self.ctx.registry.end(session_id, self.ctx.clock())
            )
        except NotFoundError:
            self.fail(404, f"no session {session_id}", "list sessions: GET /v1/sessions")
            return
        if self.ctx.broker is not None:
            self.ctx.broker.end_session(session_id)
        log.info("session.ended", session=session_id)
        self.write_json(session_json(session))


class RuntimeHandler(ControlHandler):
    """Where the proxy listens and which CA it uses, for `run --proxy` and `env`."""

    audience = "admin"

    def get(self) -> None:
        self.write_json(self.ctx.runtime())


class TlsReloadHandler(ControlHandler):
    """A session attached with new cluster CAs or client certificates: pick them up."""

    audience = "admin"

    def post(self) -> None:
        self.ctx.reload_tls()
        self.write_json({"ok": True})


class PolicyReloadHandler(ControlHandler):
    """Load and lint the policy bundle again; an invalid one is refused (409) and the
    last good one stays in force."""

    audience = "admin"

    async def post(self) -> None:
        report = await self.ctx.ops.reload_policies("api")
        self.write_json(report.as_json(), 200 if report.ok else 409)


def _state(name: str) -> HoldState | None:
    try:
        return HoldState(name)
    except ValueError:
        return None


_HOLD_ERRORS = (401, 403, 404, 503)
ENDPOINTS: list[Endpoint] = [
    Endpoint("get", "/healthz", "Liveness", "none"),
    Endpoint("get", "/readyz", "Readiness: policies loaded, store answering, proxy listening "
             "(503 otherwise)", "none", errors=(503,)),
    Endpoint("get", "/metrics", "Prometheus metrics (text exposition format)", "none",
             media_type="text/plain"),
    Endpoint("post", "/v1/policies/reload", "Load and lint the policy bundle again; an "
             "invalid one is refused (409) and the last good one stays", "admin",
             errors=(401, 403, 409)),
    Endpoint("get", "/openapi.json", "This document", "none"),
    Endpoint("get", "/v1/whoami", "Who the token belongs to", "any", WhoamiOut, errors=(401,)),
    Endpoint(
        "get", "/v1/holds", "Held actions, newest first, with approval progress", "approver",
        HoldsOut, query=(("state", "pending (default), approved, denied, expired, released, all"),
                         ("session", "only this session's holds")),
        errors=(401, 403, 422, 503),
    ),
    Endpoint(
        "get", "/v1/holds/{hold_id}",
        "A hold in full: action, rules, message, redacted request, session, history, "
        "signals, approvals so far, progress", "approver", HoldDetailOut, errors=_HOLD_ERRORS,
    ),
    Endpoint(
        "post", "/v1/holds/{hold_id}/approve",
        "Approve as the token's person; releases the hold once its requirement is met and "
        "the current policy still agrees", "approver", ResolveOut, ResolveBody,
        errors=(401, 403, 404, 409, 422, 503),
    ),
    Endpoint(
        "post", "/v1/holds/{hold_id}/deny", "Deny as the token's person; final", "approver",
        ResolveOut, ResolveBody, errors=(401, 403, 404, 409, 422, 503),
    ),
    Endpoint(
        "get", "/v1/decisions", "The decision log, newest first", "approver", DecisionsOut,
        query=(("session", "session id"), ("outcome", "allow, deny or hold"),
               ("provider", "aws, k8s, gcp, ..."), ("since", "ISO 8601 time with zone"),
               ("limit", "1 to 1000, default 100")),
        errors=(401, 403, 422, 503),
    ),
    Endpoint("get", "/v1/sessions", "Active sessions", "admin", errors=(401, 403)),
    Endpoint("post", "/v1/sessions", "Register a session (guardproxy run), or re-open an "
             "ended one of the same user (`resume`)", "admin", errors=(401, 403, 404, 409, 422)),
    Endpoint("post", "/v1/sessions/{session_id}/end", "End a session", "admin",
             errors=(401, 403, 404)),
    Endpoint("post", "/v1/tls/reload", "Trust newly attached CAs", "admin", errors=(401, 403)),
    Endpoint("get", "/v1/runtime", "Proxy address and CA", "admin", errors=(401, 403)),
    Endpoint("get", "/v1/events", "Hold events as they happen (Server-Sent Events: `event: hold`, "
             "`data:` HoldEvent JSON)", "approver", errors=(401, 403, 503),
             media_type="text/event-stream"),
    Endpoint("get", "/console", "The web console (sign in with an approver token)", "none",
             media_type="text/html"),
    Endpoint("get", "/console/{asset}", "The console's script and style", "none",
             errors=(404,), media_type="text/javascript"),
]  # fmt: skip
"""Every route, for the OpenAPI document (a test checks none is missing)."""


def make_app(context: ControlContext) -> tornado.web.Application:
    with_context = {"context": context}
    routes: list[Any] = [
        *ops_routes(context.ops),
        (r"/openapi.json", OpenApiHandler, with_context),
        (r"/v1/whoami", WhoamiHandler, with_context),
        (r"/v1/holds", HoldsHandler, with_context),
        (r"/v1/holds/([\w-]+)", HoldHandler, with_context),
        (r"/v1/holds/([\w-]+)/(approve|deny)", ResolveHandler, with_context),
        (r"/v1/decisions", DecisionsHandler, with_context),
        (r"/v1/sessions", SessionsHandler, with_context),
        (r"/v1/sessions/([\w:.-]+)/end", SessionEndHandler, with_context),
        (r"/v1/tls/reload", TlsReloadHandler, with_context),
        (r"/v1/runtime", RuntimeHandler, with_context),
        (r"/v1/policies/reload", PolicyReloadHandler, with_context),
    ]
    routes += console_routes(context)
    return tornado.web.Application(routes, autoreload=False, debug=False)


class ControlServer(AppServer):
    def __init__(self, context: ControlContext, host: str, port: int) -> None:
        super().__init__(make_app(context), host, port, name="control")

    def routes(self) -> list[tuple[re.Pattern[str], list[str]]]:
        """Each served path pattern with the HTTP methods its handler implements."""
        served: list[tuple[re.Pattern[str], list[str]]] = []
        for rule in self._app.wildcard_router.rules:
            handler = rule.target
            matcher = rule.matcher
            if not isinstance(matcher, tornado.routing.PathMatches) or not isinstance(
                handler, type
            ):
                continue
            methods = [
                method
                for method in ("get", "post", "put", "patch", "delete")
                if getattr(handler, method) is not getattr(tornado.web.RequestHandler, method)
            ]
            served.append((matcher.regex, methods))
        return served
