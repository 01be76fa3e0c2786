"""The control API's session routes, for the admin token: register a session (`guardproxy
run`), or re-open an ended one, with its brokered credentials; list active sessions;
end one. Their registration is in api.py (``make_app``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import structlog
from pydantic import BaseModel, ConfigDict, Field

from guardproxy.broker import CredentialError
from guardproxy.control.handler import ControlHandler
from guardproxy.control.views import (
    session_json,
)
from guardproxy.session.registry import SessionCredential, SessionRefused
from guardproxy.store.base import (
    NotFoundError,
    Session,
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
