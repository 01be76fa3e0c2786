"""The control API: list holds, approve or deny them, register sessions.

It listens on its own loopback port, separate from the proxy, behind a bearer token
kept in the data directory (never in a session's environment); the proxy refuses
to forward guarded sessions' requests to it.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
import tornado.netutil
import tornado.web
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from tornado.httpserver import HTTPServer

from guardproxy.gate.gate import Gate
from guardproxy.ops.http import Operations, ops_routes
from guardproxy.session.registry import SessionRegistry
from guardproxy.store.base import (
    Hold,
    HoldConflict,
    HoldState,
    NotFoundError,
    Session,
    Store,
    StoreError,
)

log = structlog.get_logger(__name__)


class ResolveBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=1000)
    by: str = Field("", max_length=200)


class SessionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field("", max_length=200)
    user: str = Field("", max_length=200)
    agent: str = Field("", max_length=100)
    command: list[str] = Field(default_factory=list)
    cwd: str = ""
    labels: list[str] = Field(default_factory=list)


def hold_json(hold: Hold) -> dict[str, Any]:
    decision = json.loads(hold.decision_json)
    return {
        "id": hold.id,
        "state": hold.state.value,
        "summary": hold.summary,
        "session": hold.session_id,
        "created_at": hold.created_at.isoformat(),
        "expires_at": hold.expires_at.isoformat(),
        "message": decision.get("message", ""),
        "rules": decision.get("determining_rules", []),
        "approval": decision.get("approval"),
        "grant": hold.grant,
        "resolved_by": hold.resolved_by,
        "resolved_at": hold.resolved_at.isoformat() if hold.resolved_at else None,
        "reason": hold.reason,
        "action": json.loads(hold.action_json),
    }


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


@dataclass(frozen=True)
class ControlContext:
    store: Store
    gate: Gate
    registry: SessionRegistry
    token: str
    clock: Callable[[], datetime]
    proxy_port: Callable[[], int]
    reload_tls: Callable[[], None]
    runtime: Callable[[], dict[str, Any]]
    ops: Operations


class _Handler(tornado.web.RequestHandler):
    def initialize(self, context: ControlContext) -> None:
        self.ctx = context

    def prepare(self) -> None:
        given = self.request.headers.get("Authorization", "")
        expected = f"Bearer {self.ctx.token}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            self._fail(401, "missing or wrong bearer token")

    def _fail(self, status: int, message: str) -> None:
        self.set_status(status)
        self.finish({"error": message})

    def write_json(self, value: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(value))

    def body_as[T: BaseModel](self, model: type[T]) -> T | None:
        try:
            return model.model_validate_json(self.request.body or b"{}")
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            self._fail(400, f"{where}: {first['msg']}")
            return None

    async def in_thread[R](self, call: Callable[[], R]) -> R:
        return await asyncio.to_thread(call)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.finish({"error": self._reason})


class HoldsHandler(_Handler):
    async def get(self) -> None:
        state_name = self.get_query_argument("state", "pending")
        session = self.get_query_argument("session", None)
        state = None if state_name == "all" else _state(state_name)
        if state_name != "all" and state is None:
            self._fail(400, f"state must be one of all, {', '.join(s.value for s in HoldState)}")
            return
        await self.in_thread(lambda: self.ctx.store.expire_holds(self.ctx.clock()))
        holds = await self.in_thread(
            lambda: self.ctx.store.list_holds(state=state, session_id=session, limit=200)
        )
        self.write_json({"holds": [hold_json(h) for h in holds]})


class HoldHandler(_Handler):
    async def get(self, hold_id: str) -> None:
        hold = await self.in_thread(lambda: self.ctx.store.get_hold(hold_id))
        if hold is None:
            self._fail(404, f"no hold {hold_id}")
            return
        self.write_json(hold_json(hold))


class ResolveHandler(_Handler):
    async def post(self, hold_id: str, verb: str) -> None:
        body = self.body_as(ResolveBody)
        if body is None:
            return
        try:
            hold = await self.ctx.gate.resolve(
                hold_id, approve=verb == "approve", by=body.by or "admin", reason=body.reason
            )
        except HoldConflict as conflict:
            self.write_json({"error": str(conflict), "hold": hold_json(conflict.hold)}, 409)
            return
        except NotFoundError:
            self._fail(404, f"no hold {hold_id}")
            return
        except StoreError as error:
            self._fail(503, f"the store failed: {error}")
            return
        self.write_json(hold_json(hold))


class SessionsHandler(_Handler):
    async def get(self) -> None:
        sessions = await self.in_thread(lambda: self.ctx.store.list_sessions(active_only=True))
        self.write_json({"sessions": [session_json(s) for s in sessions]})

    async def post(self) -> None:
        body = self.body_as(SessionBody)
        if body is None:
            return
        session, credential = await self.in_thread(
            lambda: self.ctx.registry.create(
                name=body.name, user=body.user, command=body.command, cwd=body.cwd,
                labels=body.labels, now=self.ctx.clock(), agent=body.agent,
            )
        )  # fmt: skip
        log.info("session.started", session=session.id, agent=session.agent, name=session.name)
        self.write_json(
            {
                **session_json(session),
                "token": credential.token,
                "proxy_port": self.ctx.proxy_port(),
            },
            201,
        )


class SessionEndHandler(_Handler):
    async def post(self, session_id: str) -> None:
        try:
            session = await self.in_thread(
                lambda: self.ctx.registry.end(session_id, self.ctx.clock())
            )
        except NotFoundError:
            self._fail(404, f"no session {session_id}")
            return
        log.info("session.ended", session=session_id)
        self.write_json(session_json(session))


class RuntimeHandler(_Handler):
    """Where the proxy listens and which CA it uses, for `run --proxy` and `env`."""

    def get(self) -> None:
        self.write_json(self.ctx.runtime())


class TlsReloadHandler(_Handler):
    """A session attached with new cluster CAs or client certificates: pick them up."""

    def post(self) -> None:
        self.ctx.reload_tls()
        self.write_json({"ok": True})


class PolicyReloadHandler(_Handler):
    """Load and lint the policy bundle again; an invalid one is refused (409) and the
    last good one stays in force."""

    async def post(self) -> None:
        report = await self.ctx.ops.reload_policies("api")
        self.write_json(report.as_json(), 200 if report.ok else 409)


def _state(name: str) -> HoldState | None:
    try:
        return HoldState(name)
    except ValueError:
        return None


def make_app(context: ControlContext) -> tornado.web.Application:
    routes: list[Any] = [
        *ops_routes(context.ops),
        (r"/v1/holds", HoldsHandler, {"context": context}),
        (r"/v1/holds/([\w-]+)", HoldHandler, {"context": context}),
        (r"/v1/holds/([\w-]+)/(approve|deny)", ResolveHandler, {"context": context}),
        (r"/v1/sessions", SessionsHandler, {"context": context}),
        (r"/v1/sessions/([\w:.-]+)/end", SessionEndHandler, {"context": context}),
        (r"/v1/tls/reload", TlsReloadHandler, {"context": context}),
        (r"/v1/runtime", RuntimeHandler, {"context": context}),
        (r"/v1/policies/reload", PolicyReloadHandler, {"context": context}),
    ]
    return tornado.web.Application(routes, autoreload=False, debug=False)


class ControlServer:
    def __init__(self, context: ControlContext, host: str, port: int) -> None:
        self._app = make_app(context)
        self._host = host
        self._port = port
        self._server: HTTPServer | None = None

    async def start(self) -> int:
        server = HTTPServer(self._app, xheaders=False)
        sockets = tornado.netutil.bind_sockets(self._port, address=self._host)
        server.add_sockets(sockets)
        self._server = server
        self._port = sockets[0].getsockname()[1]
        log.info("control.listening", address=f"{self._host}:{self._port}")
        return self._port

    @property
    def port(self) -> int:
        return self._port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            await self._server.close_all_connections()
            self._server = None
