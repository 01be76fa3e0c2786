"""guardproxy's mitmproxy addons, one concern each.

Order matters and is set in proxy.py: SessionAuth attributes the flow to a session,
Passthrough decides which TLS is not intercepted, BodyGuard keeps request bodies
from streaming past the guard, Guard decides, ResponseStreaming keeps watches and
server-sent events flowing.

Every hook is wrapped by failsafe.py: mitmproxy forwards a request whose hook raised,
so an exception on the request path is turned into a refusal there.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

import structlog
from mitmproxy import connection, http, tls
from mitmproxy.addons.proxyauth import parse_http_basic_auth
from mitmproxy.proxy import mode_specs, server_hooks

from guardproxy.action import Action, Verb
from guardproxy.context import SessionInfo
from guardproxy.gate.gate import Answer, Gate
from guardproxy.gate.gate import Verdict as GateVerdict
from guardproxy.gate.responses import NativeAnswer, native_answer
from guardproxy.hosts import HostPattern, canonical_host, is_loopback, same_host
from guardproxy.intercept.failsafe import (
    Failsafe,
    SafeStream,
    async_request_hook,
    connection_hook,
    contained_hook,
    request_hook,
    response_hook,
    tls_hook,
)
from guardproxy.intercept.flows import (
    ACTION,
    DECISION,
    LEARNER,
    SESSION,
    STEPS_HEADER,
    STEPS_NOTE,
    http_request,
)
from guardproxy.intercept.flows import respond as _respond
from guardproxy.pipeline import LivePipeline, Pipeline, Verdict, learns_from
from guardproxy.pipeline.live import Journal
from guardproxy.recognise import recognise
from guardproxy.recognise.request import HttpRequest, RecogniseSettings
from guardproxy.session.history import FORWARDED, SessionHistory
from guardproxy.session.names import ResponseLearner
from guardproxy.session.registry import SessionRegistry, anonymous_session, session_info
from guardproxy.store.base import StoreError

log = structlog.get_logger(__name__)


class SandboxSessions(Protocol):
    """Which session a sandbox's source address belongs to (sandboxnet.SandboxClients)."""

    def session_for(self, address: str) -> SessionInfo | None: ...


class SessionAuth:
    """Attribute every flow to a session from its proxy credential.

    A valid credential on CONNECT covers the whole tunnel; a wrong one gets 407;
    none at all makes the flow part of the client's anonymous session (if allowed).
    Root-mode enforced sessions (``sandbox``): a flow from a sandbox's address is that
    session's, whatever credential it carries; a transparent flow from anywhere else
    is refused.
    """

    def __init__(
        self,
        registry: SessionRegistry,
        *,
        allow_anonymous: bool,
        failsafe: Failsafe,
        sandbox: SandboxSessions | None = None,
    ) -> None:
        self._registry = registry
        self._allow_anonymous = allow_anonymous
        self._tunnels: dict[connection.Client, SessionInfo] = {}
        self._sandbox = sandbox
        self.failsafe = failsafe

    @request_hook
    def http_connect(self, flow: http.HTTPFlow) -> None:
        session = self._sandboxed(flow) or self._authenticate(flow)
        if session is not None:
            self._tunnels[flow.client_conn] = session

    @request_hook
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        tunnel = self._tunnels.get(flow.client_conn)
        if tunnel is not None:
            flow.metadata[SESSION] = tunnel
            # the tunnel's credential decides; one sent inside it is never the upstream's
            flow.request.headers.pop("Proxy-Authorization", None)
            return
        if self._sandboxed(flow) is not None:
            return
        if isinstance(flow.client_conn.proxy_mode, mode_specs.TransparentMode):
            flow.response = http.Response.make(
                403,
                "guardproxy: this connection comes from no sandbox this guard serves.\n",
                {"Content-Type": "text/plain"},
            )
            return
        if not isinstance(flow.client_conn.proxy_mode, mode_specs.RegularMode):
            # reverse listeners carry no proxy credentials
            flow.metadata[SESSION] = anonymous_session(flow.client_conn.peername[0])
            return
        self._authenticate(flow)

    @contained_hook
    def client_disconnected(self, client: connection.Client) -> None:
        self._tunnels.pop(client, None)

    def _sandboxed(self, flow: http.HTTPFlow) -> SessionInfo | None:
        """The session of the sandbox this flow comes from (root mode), if any."""
        if self._sandbox is None:
            return None
        session = self._sandbox.session_for(flow.client_conn.peername[0])
        if session is not None:
            flow.request.headers.pop("Proxy-Authorization", None)
            flow.metadata[SESSION] = session
        return session

    def _authenticate(self, flow: http.HTTPFlow) -> SessionInfo | None:
        header = flow.request.headers.get("Proxy-Authorization", "")
        if not header:
            if self._allow_anonymous:
                session = anonymous_session(flow.client_conn.peername[0])
                flow.metadata[SESSION] = session
                return session
            self._refuse(flow, "this proxy needs a guardproxy session credential")
            return None
        try:
            _, session_id, token = parse_http_basic_auth(header)
        except ValueError:
            self._refuse(flow, "malformed Proxy-Authorization")
            return None
        try:
            found = self._registry.authenticate(session_id, token)
        except StoreError as error:
            # the credential cannot be checked: refuse rather than serve it as anonymous
            log.error("session.store_failed", session=session_id, error=str(error))
            flow.response = http.Response.make(
                403,
                "guardproxy: this session's credential cannot be checked because guardproxy's "
                "store is unreachable, so nothing was sent. Tell the user; do not work around "
                "the proxy.\n",
                {"Content-Type": "text/plain"},
            )
            return None
        if found is None:
            self._refuse(flow, "unknown or ended guardproxy session")
            return None
        del flow.request.headers["Proxy-Authorization"]
        info = session_info(found)
        flow.metadata[SESSION] = info
        return info

    @staticmethod
    def _refuse(flow: http.HTTPFlow, why: str) -> None:
        log.warning("session.refused", client=flow.client_conn.peername[0], reason=why)
        flow.response = http.Response.make(
            407,
            f"guardproxy: {why}. Start the tool with `guardproxy run -- ...`.\n",
            {"Proxy-Authenticate": 'Basic realm="guardproxy"', "Content-Type": "text/plain"},
        )


class Passthrough:
    """Tunnel TLS without interception, only for configured hosts, never for a lie.

    Decided on the CONNECT target (anchored), and only if the SNI the client sent
    names that same host: mitmproxy's own ignore_hosts matches unanchored against
    SNI and Host too, so `CONNECT guarded-host` + `SNI=allowed-host` would slip by.
    Hosts are compared by every spelling (guardproxy/hosts.py: `10.0.0.5` is
    `0x0a.0.0.5`, `api.example.com` is `API.example.com.`), patterns too.
    """

    def __init__(self, patterns: list[str], *, failsafe: Failsafe) -> None:
        self._patterns = [HostPattern.of(p) for p in patterns]
        self.failsafe = failsafe

    @tls_hook
    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        if not self._patterns or data.context.server.address is None:
            return
        target = data.context.server.address[0]
        sni = data.client_hello.sni or ""
        if same_host(sni, target) and any(p.matches(target) for p in self._patterns):
            data.ignore_connection = True
            log.debug("tls.passthrough", host=target)


class BodyGuard:
    """Never stream a request body past the guard, and refuse oversized bodies.

    A streamed request reaches the upstream before the request hook runs, so it
    could not be held. Bodies are buffered; one over the limit is refused in the
    API's own error format: at the headers when its length is declared, after
    buffering when it is chunked. mitmproxy's own body_size_limit (twice ours) is
    the backstop that stops a chunked body from growing without bound.
    """

    def __init__(self, max_bytes: int, settings: RecogniseSettings, *, failsafe: Failsafe) -> None:
        self._max = max_bytes
        self._settings = settings
        self.failsafe = failsafe

    @request_hook
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        flow.request.stream = False
        declared = flow.request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._max:
            self._refuse(flow, int(declared))

    @request_hook
    def request(self, flow: http.HTTPFlow) -> None:
        size = len(flow.request.raw_content or b"")
        if flow.response is None and size > self._max:
            self._refuse(flow, size)

    def _refuse(self, flow: http.HTTPFlow, size: int) -> None:
        request = http_request(flow, body=b"")
        action = recognise(request, self._settings)
        message = (
            f"guardproxy: the request body is {size} bytes, over the {self._max}-byte "
            "limit, so it was not sent. Send a smaller request."
        )
        log.warning("request.too_large", host=request.host, bytes=size)
        _respond(flow, native_answer(request, action, message, decision="deny",
                                     reference="body-limit"))  # fmt: skip


class ResponseStreaming:
    """Stream every response: watches, `logs -f` and server-sent events must not stall."""

    def __init__(self, record_status: Callable[[str, int], None], *, failsafe: Failsafe) -> None:
        self._record_status = record_status
        self.failsafe = failsafe

    @response_hook
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        assert flow.response is not None
        learner = flow.metadata.get(LEARNER)  # passes chunks on, learns names at the end
        if isinstance(learner, ResponseLearner) and learns_from(flow.response.status_code):
            flow.response.stream = SafeStream(learner)  # a learner's bug cannot stall it
        else:
            flow.response.stream = True
        decision = flow.metadata.get(DECISION)
        if isinstance(decision, str):
            self._record_status(decision, flow.response.status_code)
        note = flow.metadata.get(STEPS_NOTE)
        if isinstance(note, str) and note:
            one_line = " ".join(note.split())  # a header value: one line of ASCII
            flow.response.headers[STEPS_HEADER] = one_line.encode("ascii", "replace").decode()


class Guard:
    """Decide each request and apply the decision, before it goes out: a thin adapter from
    mitmproxy flows to the decision pipeline (guardproxy/pipeline/) and the gate."""

    def __init__(
        self,
        gate: Gate,
        settings: RecogniseSettings,
        history: SessionHistory,
        *,
        protected: Callable[[], set[tuple[str, int]]],
        clock: Callable[[], datetime],
        failsafe: Failsafe,
    ) -> None:
        self.failsafe = failsafe
        self._gate = gate
        self._settings = settings
        self._protected = protected
        self._protected_set: set[tuple[str, int]] = set()
        self._protected_ports: frozenset[int] = frozenset()
        self.pipeline = LivePipeline(
            Pipeline(gate, settings, history), clock, settle_inline=gate.settles_inline
        )

    @async_request_hook
    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or flow.error is not None:
            return
        session = flow.metadata.get(SESSION)
        if not isinstance(session, SessionInfo):
            session = anonymous_session(flow.client_conn.peername[0])
        request = http_request(flow)
        if await self._is_protected(request):
            action = recognise(request, self._settings)
            _respond(flow, self._refuse_control(request, action))
            log.warning("control.refused", session=session.id, host=request.host)
            return
        started = time.perf_counter()
        decided = started

        def settle(verdict: Verdict) -> tuple[GateVerdict | None, Journal | None]:
            """In the deciding thread: the gate applies what needs no waiting."""
            nonlocal decided
            decided = time.perf_counter()
            journal = self._journal(verdict)
            return self._gate.settle(
                request, verdict.action, verdict.context, verdict.decision, journal
            ), journal

        verdict, settled = await self.pipeline.decide_then(request, session, settle)
        action = verdict.action
        flow.metadata[ACTION] = action  # a failure from here on is refused in its API's format
        effect, journal = settled if settled is not None else (None, None)
        if settled is None:
            decided = time.perf_counter()
        self._gate.metrics.decision_latency(decided - started)
        if effect is None:
            journal = self._journal(verdict)
            effect = await self._gate.handle(
                request, action, verdict.context, verdict.decision, journal
            )
        if not isinstance(effect, Answer):  # only the upstream's own answer is its status
            flow.metadata[DECISION] = effect.decision_id
            if effect.note:
                flow.metadata[STEPS_NOTE] = effect.note
        # before the request goes out: the next decision of the session must see it
        learner = await self.pipeline.after(
            verdict, effect.kind if isinstance(effect, Answer) else FORWARDED, journal
        )
        if isinstance(effect, Answer):
            _respond(flow, effect.answer)
        elif learner is not None:
            flow.metadata[LEARNER] = learner

    def _journal(self, verdict: Verdict) -> Journal | None:
        """A change's history goes into its decision record's transaction (one commit)."""
        return self.pipeline.journal(verdict) if verdict.action.verb is not Verb.READ else None

    @connection_hook
    async def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        """Refuse a connection to guardproxy's own ports by any name that resolves here
        (`localhost.`, `127.1`, the container's own address...): decided on the address
        actually connected to, not on how the request spelt it."""
        if data.server.address is None or data.server.error:
            return
        host, port = data.server.address
        if not self._protected_ports:
            self._protected_ports = frozenset(p for _, p in self._protected())
        if port not in self._protected_ports:
            return
        if not is_loopback(host):
            try:
                resolved = await asyncio.get_running_loop().getaddrinfo(host, port)
            except OSError:
                return  # the connection attempt fails by itself
            if not any(_is_local_address(str(info[4][0])) for info in resolved):
                return
        data.server.error = "guardproxy: guarded sessions cannot reach guardproxy itself"
        log.warning("control.refused", host=host, port=port)

    async def _is_protected(self, request: HttpRequest) -> bool:
        host = request.host
        if not self._protected_set:
            self._protected_set = {(canonical_host(h), p) for h, p in self._protected()}
        targets = self._protected_set
        if (canonical_host(host), request.port) in targets:
            return True
        if all(port != request.port for _, port in targets):
            return False
        if is_loopback(host):
            return True
        # another name or address of this machine on a protected port: an /etc/hosts
        # alias (vm), 127.0.0.2, 0.0.0.0, ::ffff:127.0.0.1 all reach the control API
        try:
            found = await asyncio.get_running_loop().getaddrinfo(
                host, request.port, type=socket.SOCK_STREAM
            )
        except OSError:
            return False  # unresolvable: the upstream connection cannot be made either
        addresses = {str(info[4][0]) for info in found}
        return any(
            _is_local_address(a) or (canonical_host(a), request.port) in targets for a in addresses
        )

    @staticmethod
    def _refuse_control(request: HttpRequest, action: Action) -> NativeAnswer:
        message = (
            "guardproxy: guarded sessions cannot reach guardproxy's own control API. "
            "Approvals come from a human, not from the agent."
        )
        return native_answer(request, action, message, decision="deny", reference="control")


def _is_local_address(address: str) -> bool:
    """Whether ``address`` is this host's own (loopback, unspecified, or an interface's):
    only a local address can be bound."""
    ip = ipaddress.ip_address(address.partition("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    if ip.is_loopback or ip.is_unspecified:
        return True
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((str(ip), 0))
        except OSError:
            return False
    return True


class Ready:
    """Signals that the listeners are bound (mitmproxy fires `running` after that)."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def running(self) -> None:
        self.event.set()


__all__ = [
    "BodyGuard",
    "Guard",
    "Passthrough",
    "Ready",
    "ResponseStreaming",
    "SessionAuth",
    "http_request",
]
