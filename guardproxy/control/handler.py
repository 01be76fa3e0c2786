"""What every control API handler shares: the running guardproxy's parts, token checks,
JSON errors as ``{"error", "hint"}``.

The API's handlers (control/api.py, hold_routes.py, session_routes.py) and the console's
event stream (control/console.py) all derive from :class:`ControlHandler`; it lives here,
apart from them, so that none imports another for it.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Literal

import tornado.web
from pydantic import BaseModel, ValidationError

from guardproxy.approvals.events import HoldEvents
from guardproxy.approvals.service import ApprovalService
from guardproxy.broker import Broker
from guardproxy.control.schema import ErrorOut
from guardproxy.ops.http import Operations
from guardproxy.session.registry import SessionRegistry
from guardproxy.store.base import Approver, Store, StoreError, hash_token

__all__ = ["Audience", "ControlContext", "ControlHandler"]


@dataclass(frozen=True)
class ControlContext:
    store: Store
    approvals: ApprovalService
    registry: SessionRegistry
    token: str
    """The admin token: sessions and runtime, never a verdict on a hold."""
    clock: Callable[[], datetime]
    proxy_port: Callable[[], int]
    reload_tls: Callable[[], None]
    runtime: Callable[[], dict[str, Any]]
    events: HoldEvents
    """Hold lifecycle events, for live views (the console's event stream)."""
    ops: Operations
    broker: Broker | None = None
    """Session credentials: a registered session's offer, its kubeconfig users."""


Audience = Literal["none", "admin", "approver", "any"]


class ControlHandler(tornado.web.RequestHandler):
    """JSON in and out, errors as ``{"error", "hint"}``, and who is calling.

    ``audience`` says which token a handler accepts; ``self.approver`` is the
    approver the token belongs to (None for the admin token).
    """

    audience: ClassVar[Audience] = "approver"

    def initialize(self, context: ControlContext) -> None:
        self.ctx = context
        self.approver: Approver | None = None
        self.is_admin = False

    async def prepare(self) -> None:
        if self.audience == "none":
            return
        given = self.request.headers.get("Authorization", "")
        scheme, _, token = given.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            self.fail(401, "missing bearer token", "send Authorization: Bearer <token>")
            return
        if hmac.compare_digest(token.encode(), self.ctx.token.encode()):
            self.is_admin = True
        else:
            try:
                self.approver = await self.in_thread(
                    lambda: self.ctx.store.find_approver_by_token(hash_token(token))
                )
            except StoreError as error:
                self.fail(503, f"the store failed: {error}", "check guardproxy's log")
                return
            if self.approver is None:
                self.fail(
                    401,
                    "unknown token",
                    "use your approver token (guardproxy approvers add prints it once)",
                )
                return
        if self.audience == "approver" and self.is_admin:
            self.fail(
                403,
                "the admin token cannot list or decide holds: verdicts need a person",
                "use an approver token (guardproxy approvers add NAME --group G)",
            )
        elif self.audience == "admin" and not self.is_admin:
            self.fail(403, "this needs the admin token", "run it on the guardproxy host")

    def fail(self, status: int, error: str, hint: str = "") -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(ErrorOut(error=error, hint=hint).model_dump_json())

    def write_json(self, value: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        if isinstance(value, BaseModel):
            self.finish(value.model_dump_json())
        else:
            self.finish(json.dumps(value))

    def body_as[T: BaseModel](self, model: type[T]) -> T | None:
        try:
            return model.model_validate_json(self.request.body or b"{}")
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            self.fail(422, f"{where}: {first['msg']}", "see GET /openapi.json for the body")
            return None

    async def in_thread[R](self, call: Callable[[], R]) -> R:
        return await asyncio.to_thread(call)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.fail(status_code, self._reason)
