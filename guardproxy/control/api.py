"""The control API: list holds, approve or deny them, register sessions.

It listens on its own loopback port, separate from the proxy; the proxy refuses to
forward guarded sessions' requests to it.  Two kinds of bearer token: the admin
token kept in the data directory (never in a session's environment) registers
sessions and reads the runtime; each approver's own token (``guardproxy approvers
add``) lists, approves and denies holds, so every verdict has a person behind it.
The admin token is not an approver.

This module holds the routes' registration (``make_app``, ``ENDPOINTS`` for the OpenAPI
document), the server, and the admin's runtime and reload routes; the hold routes are in
hold_routes.py, the session routes in session_routes.py, the answers they build from the
store's records in views.py.
"""

from __future__ import annotations

import re
from typing import Any

import tornado.netutil
import tornado.routing
import tornado.web

from guardproxy import __version__
from guardproxy.control.console import console_routes
from guardproxy.control.handler import ControlContext, ControlHandler
from guardproxy.control.hold_routes import (
    DecisionsHandler,
    HoldHandler,
    HoldsHandler,
    ResolveHandler,
)
from guardproxy.control.schema import (
    DecisionsOut,
    Endpoint,
    HoldDetailOut,
    HoldsOut,
    ResolveBody,
    ResolveOut,
    WhoamiOut,
    openapi_document,
)
from guardproxy.control.session_routes import SessionEndHandler, SessionsHandler
from guardproxy.httpserver import AppServer
from guardproxy.ops.http import ops_routes


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
