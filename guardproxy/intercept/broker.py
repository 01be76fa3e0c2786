"""The broker's two places in the addon chain (guardproxy/broker does the work).

``BrokerAuth`` sits before Guard: a request carrying a session credential is
authenticated by it (a SigV4 signature verified against the exact bytes received, a
placeholder token that must be the flow's own session's, for a host its provider's real
credential may go to), and refused in the API's own format if it is not, before any
decision. ``BrokerSign`` sits after Guard: a request Guard let through (allowed, or
released from a hold: signed then, with a fresh date) gets its real authentication, the
only change made to it, just before it goes upstream; a client certificate is presented
on the upstream connection of that client to that server, and only there.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from functools import cache
from typing import Any

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from mitmproxy import connection, http, tls

from guardproxy.broker import AuthError, Broker, CredentialError, Grant, LocalAnswer, Rewrite
from guardproxy.context import SessionInfo
from guardproxy.gate.responses import native_answer
from guardproxy.intercept.failsafe import (
    Failsafe,
    async_request_hook,
    contained_hook,
    request_hook,
)
from guardproxy.intercept.flows import ACTION, SESSION, http_request, respond
from guardproxy.recognise import recognise
from guardproxy.recognise.request import HttpRequest, RecogniseSettings

log = structlog.get_logger(__name__)

GRANT = "guardproxy.broker.grant"
"""The flow's Grant: how BrokerSign authenticates it upstream once it is let through."""


def _refuse(flow: http.HTTPFlow, request: HttpRequest, settings: RecogniseSettings, why: str,
            *, reference: str) -> None:  # fmt: skip
    action = flow.metadata.get(ACTION)
    if action is None:
        action = recognise(request, settings)
    respond(flow, native_answer(request, action, why, decision="deny", reference=reference))


class BrokerAuth:
    """Before the decision: a session credential must authenticate its request."""

    def __init__(
        self,
        broker: Broker,
        settings: RecogniseSettings,
        *,
        clock: Any,
        failsafe: Failsafe,
    ) -> None:
        self._broker = broker
        self._settings = settings
        self._clock = clock
        self.failsafe = failsafe

    @request_hook
    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or flow.error is not None:
            return
        session = flow.metadata.get(SESSION)
        session_id = (
            session.id if isinstance(session, SessionInfo) and not session.anonymous else None
        )
        request = http_request(flow)
        now: datetime = self._clock()
        try:
            outcome = self._broker.authenticate(session_id, request, now)
        except AuthError as error:
            log.warning("broker.refused", session=session_id or "", host=request.host,
                        code=error.code, reason=error.message)  # fmt: skip
            why = (
                f"guardproxy: {error.code}: {error.message}, so it was not sent. Use the "
                "credentials `guardproxy run` gave this session; do not work around the guard."
            )
            _refuse(flow, request, self._settings, why, reference="broker")
            return
        if isinstance(outcome, LocalAnswer):
            headers = [(name.encode(), value.encode()) for name, value in outcome.headers]
            flow.response = http.Response.make(outcome.status, outcome.body, headers)
            log.info("broker.answered", session=session_id or "", provider=outcome.provider)
        elif isinstance(outcome, Grant):
            flow.metadata[GRANT] = outcome


@cache
def _loaded_pair(certificate: bytes, key: bytes) -> tuple[Any, Any]:
    return (
        x509.load_pem_x509_certificate(certificate),
        serialization.load_pem_private_key(key, password=None),
    )


class BrokerSign:
    """After the decision: the approved request's real authentication."""

    def __init__(self, settings: RecogniseSettings, *, failsafe: Failsafe) -> None:
        self._settings = settings
        self.failsafe = failsafe
        self._bindings: dict[tuple[str, tuple[str, int]], tuple[object, tuple[bytes, bytes]]] = {}

    @async_request_hook
    async def request(self, flow: http.HTTPFlow) -> None:
        grant = flow.metadata.get(GRANT)
        if not isinstance(grant, Grant) or flow.response is not None or flow.error is not None:
            return
        request = http_request(flow)
        try:
            if grant.needs_io():
                rewrite = await asyncio.to_thread(grant.reauthenticate, request)
            else:
                rewrite = grant.reauthenticate(request)
        except (CredentialError, AuthError) as error:
            log.error("broker.credential_failed", provider=grant.provider, error=str(error))
            why = (
                f"guardproxy: this request was approved, but guardproxy could not authenticate it "
                f"at {grant.provider}: {error}. Nothing was sent. Tell the user."
            )
            _refuse(flow, request, self._settings, why, reference="broker")
            return
        if rewrite.client_certificate is not None and not self._bind(flow, grant, rewrite):
            why = (
                "guardproxy: this connection already presents another Kubernetes user's "
                "certificate upstream; use one connection per user. Nothing was sent."
            )
            _refuse(flow, request, self._settings, why, reference="broker")
            return
        _apply(flow.request, rewrite)

    def _bind(self, flow: http.HTTPFlow, grant: Grant, rewrite: Rewrite) -> bool:
        assert rewrite.client_certificate is not None
        key = (flow.client_conn.id, (flow.request.host, flow.request.port))
        bound = self._bindings.get(key)
        if bound is not None and bound[0] is not grant.binding:
            return False
        self._bindings[key] = (grant.binding, rewrite.client_certificate)
        return True

    @contained_hook
    def tls_start_server(self, tls_start: tls.TlsData) -> None:
        """Present the bound client certificate (TlsConfig, earlier in the chain, made the
        connection; this only adds the certificate to it)."""
        server = tls_start.conn
        if tls_start.ssl_conn is None or not isinstance(server, connection.Server):
            return
        if server.address is None:
            return
        bound = self._bindings.get((tls_start.context.client.id, (server.address[0],
                                                                  server.address[1])))  # fmt: skip
        if bound is None:
            return
        certificate, key = _loaded_pair(*bound[1])
        tls_start.ssl_conn.use_certificate(certificate)
        tls_start.ssl_conn.use_privatekey(key)

    @contained_hook
    def client_disconnected(self, client: connection.Client) -> None:
        for key in [k for k in self._bindings if k[0] == client.id]:
            del self._bindings[key]


def _apply(request: http.Request, rewrite: Rewrite) -> None:
    """The re-authentication, and nothing else, onto the outgoing request."""
    for name in rewrite.remove_headers:
        request.headers.pop(name, None)
    for name, value in rewrite.set_headers:
        request.headers[name] = value
    if rewrite.path is not None:
        request.path = rewrite.path
    if rewrite.body is not None:
        if len(rewrite.body) != len(request.raw_content or b""):
            raise ValueError("a re-signed body changed length")
        request.raw_content = rewrite.body


__all__ = ["GRANT", "BrokerAuth", "BrokerSign"]
