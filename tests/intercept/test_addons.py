"""guardproxy's security addons, tested the way mitmproxy tests its own.

As in mitmproxy's ``test/mitmproxy/addons/test_proxyauth.py``: flows from
``mitmproxy.test.tflow``, addons in a ``taddons.context`` master. Hooks run through
``AddonManager.trigger_event`` as the proxy runs them (every addon of the chain, each
under ``safecall``). Requests are read by mitmproxy's own HTTP/1 parser from the bytes
a client sends, and :class:`Proxy` does between two hooks what mitmproxy's HTTP layer
does (``mitmproxy/proxy/layers/http/__init__.py``): the body is read after
``requestheaders`` unless the request streams, and ``responseheaders`` fires for an
answer a request hook made. TLS ClientHellos are written by OpenSSL (Python's ``ssl``).
Nothing of guardproxy is faked: the session store is a SQLite file; the registry, the
recogniser, the gate and the name cache are the real ones.

Guard's decisions are tested end to end (tests/e2e/test_guard.py). Here only its
control-port protection, through its hooks, so that these tests stand through a
refactor of its internals: only the ``guard`` fixture builds one. The same concerns on
real sockets: tests/e2e/test_guard.py, tests/e2e/test_ops.py, tests/adversarial/.
"""

from __future__ import annotations

import base64
import fcntl
import ipaddress
import json
import socket
import ssl
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from mitmproxy import connection, hooks, http, tls
from mitmproxy.net.http.http1 import read_request_head
from mitmproxy.proxy import context, server_hooks
from mitmproxy.proxy.layers import tls as tls_layer
from mitmproxy.proxy.layers.http import _hooks as http_layer
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import taddons, tflow
from mitmproxy.test.tutils import tresp
from policy_helpers import rules_bundle

from guardproxy.gate.gate import Gate
from guardproxy.intercept.addons import (
    BodyGuard,
    Guard,
    Passthrough,
    ResponseStreaming,
    SessionAuth,
)
from guardproxy.intercept.failsafe import Failsafe, SafeStream
from guardproxy.intercept.flows import DECISION, LEARNER, SESSION, http_request
from guardproxy.recognise import recognise
from guardproxy.recognise.providers.aws.responses import instance_key
from guardproxy.recognise.request import RecogniseSettings
from guardproxy.session.history import SessionHistory
from guardproxy.session.names import NameCache, learner_for
from guardproxy.session.registry import SessionCredential, SessionRegistry
from guardproxy.store import SqliteStore
from guardproxy.store.base import Session

KUBE = "kube.test"
SETTINGS = RecogniseSettings(kubernetes_hosts=(f"{KUBE}:443",))
T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
LIMIT = 4096
"""BodyGuard's limit in these tests (the proxy's is max_body_bytes)."""
CONTROL_PORT = 8081
PROXY_PORT = 8080


# -- mitmproxy's side: requests as its parser reads them, hooks as its layers fire them


def head(text: str) -> http.Request:
    """The request head of ``text`` (lines joined by newlines) as mitmproxy's HTTP/1
    server reads it: no body yet (``content`` None until the body has been read)."""
    lines = [line.encode() + b"\r\n" for line in text.strip("\n").split("\n")]
    return read_request_head(lines)


def client(mode: str = "regular") -> connection.Client:
    """A client connection to a listener in ``mode`` (``regular`` or ``reverse:URL``)."""
    conn = tflow.tclient_conn()
    conn.proxy_mode = ProxyMode.parse(mode)
    return conn


def flow_of(text: str, conn: connection.Client | None = None) -> http.HTTPFlow:
    return tflow.tflow(client_conn=conn or client(), req=head(text))


def inside(tunnel: http.HTTPFlow, text: str) -> http.HTTPFlow:
    """A request sent inside the tunnel ``tunnel`` opened: on the same client connection,
    addressed to the CONNECT target (the tunnel's HTTP layer runs in transparent mode)."""
    flow = tflow.tflow(client_conn=tunnel.client_conn, req=head(text))
    flow.request.data.host = tunnel.request.host
    flow.request.data.port = tunnel.request.port
    flow.request.scheme = "https"
    return flow


def basic(credential: SessionCredential | tuple[str, str]) -> str:
    user, password = (
        (credential.session_id, credential.token)
        if isinstance(credential, SessionCredential)
        else credential
    )
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@dataclass(frozen=True)
class Sent:
    """What became of a request after its hooks."""

    streamed: bool
    """Its body went on to the upstream before the ``request`` hook could decide."""
    forwarded: bool
    """It goes to the upstream (no addon answered it or killed it)."""


class Proxy:
    """Addons in a ``taddons`` master, driven by the hooks mitmproxy's layers fire."""

    def __init__(self, *addons: object) -> None:
        self.context = taddons.context(*addons)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        self.context.__exit__(None, None, None)  # type: ignore[no-untyped-call]

    def trigger(self, event: hooks.Hook) -> None:
        master = self.context.master
        master.event_loop.run_until_complete(master.addons.trigger_event(event))

    def connect(self, flow: http.HTTPFlow) -> bool:
        """``http_connect`` for a CONNECT request; whether the tunnel opens (an addon's
        answer is sent instead: ``handle_connect_finish``)."""
        assert flow.request.method == "CONNECT"
        self.trigger(http_layer.HttpConnectHook(flow))
        return flow.response is None and flow.error is None

    def send(self, flow: http.HTTPFlow, body: bytes = b"") -> Sent:
        """A request with ``body``, hook by hook as ``HttpStream`` runs them
        (``state_wait_for_request_headers``, ``state_consume_request_body``)."""
        flow.request.data.content = None
        self.trigger(http_layer.HttpRequestHeadersHook(flow))
        if flow.error is not None:  # killed
            return Sent(streamed=False, forwarded=False)
        streamed = bool(flow.request.stream) and bool(body)
        if streamed and flow.response is not None:
            raise AssertionError("mitmproxy cannot stream a request that has an answer")
        flow.request.data.content = body
        self.trigger(http_layer.HttpRequestHook(flow))
        if flow.error is not None:
            return Sent(streamed=streamed, forwarded=streamed)
        if flow.response is not None:
            self.trigger(http_layer.HttpResponseHeadersHook(flow))  # emulated for an answer
        return Sent(streamed=streamed, forwarded=streamed or flow.response is None)

    def respond(self, flow: http.HTTPFlow, response: http.Response) -> None:
        """The upstream's response headers arrive."""
        response.data.content = None
        flow.response = response
        self.trigger(http_layer.HttpResponseHeadersHook(flow))

    def passes(self, flow: http.HTTPFlow) -> bool:
        """Whether a CONNECT opens its tunnel, or another request is forwarded."""
        if flow.request.method == "CONNECT":
            return self.connect(flow)
        return self.send(flow).forwarded

    def disconnect(self, conn: connection.Client) -> None:
        self.trigger(server_hooks.ClientDisconnectedHook(conn))


@pytest.fixture
def proxy() -> Iterator[Callable[..., Proxy]]:
    made: list[Proxy] = []

    def make(*addons: object) -> Proxy:
        made.append(Proxy(*addons))
        return made[-1]

    yield make
    for each in made:
        each.close()


FAILSAFE = Failsafe(SETTINGS)


# -- SessionAuth: a real registry on a real SQLite store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    opened = SqliteStore(tmp_path / "guardproxy.db")
    yield opened
    opened.close()


@pytest.fixture
def registry(store: SqliteStore) -> SessionRegistry:
    return SessionRegistry(store)


@pytest.fixture
def session(registry: SessionRegistry) -> tuple[Session, SessionCredential]:
    return registry.create(
        name="fix-tests", user="alice", command=["claude"], cwd="/work", labels=[], now=T0
    )


def auth(registry: SessionRegistry, *, allow_anonymous: bool) -> SessionAuth:
    return SessionAuth(registry, allow_anonymous=allow_anonymous, failsafe=FAILSAFE)


def assert_407(flow: http.HTTPFlow, why: str) -> None:
    assert flow.response is not None
    assert flow.response.status_code == 407
    assert flow.response.headers["Proxy-Authenticate"] == 'Basic realm="guardproxy"'
    assert why in (flow.response.text or "")
    assert SESSION not in flow.metadata


CONNECT_KUBE = f"CONNECT {KUBE}:443 HTTP/1.1\nHost: {KUBE}:443"
LIST_PODS = f"GET /api/v1/namespaces/default/pods HTTP/1.1\nHost: {KUBE}"
PLAIN_GET = "GET http://api.test/v1/items HTTP/1.1\nHost: api.test"


def test_a_valid_credential_on_connect_covers_the_tunnel(
    proxy: Callable[..., Proxy],
    registry: SessionRegistry,
    session: tuple[Session, SessionCredential],
) -> None:
    found, credential = session
    wire = proxy(auth(registry, allow_anonymous=False))
    tunnel = flow_of(f"{CONNECT_KUBE}\nProxy-Authorization: {basic(credential)}")
    assert wire.connect(tunnel)
    assert tunnel.metadata[SESSION].id == found.id
    for _ in range(2):  # every request of the tunnel, none of which carries the credential
        request = inside(tunnel, LIST_PODS)
        assert wire.send(request).forwarded
        assert request.metadata[SESSION].id == found.id
        assert not request.metadata[SESSION].anonymous


def test_a_tunnel_s_credential_covers_only_its_own_connection(
    proxy: Callable[..., Proxy],
    registry: SessionRegistry,
    session: tuple[Session, SessionCredential],
) -> None:
    _, credential = session
    wire = proxy(auth(registry, allow_anonymous=False))
    tunnel = flow_of(f"{CONNECT_KUBE}\nProxy-Authorization: {basic(credential)}")
    assert wire.connect(tunnel)
    other = flow_of(CONNECT_KUBE)  # another connection from the same address and port
    assert not wire.connect(other)
    assert_407(other, "needs a guardproxy session credential")
    wire.disconnect(tunnel.client_conn)  # the tunnel ends: nothing is attributed by it
    late = inside(tunnel, LIST_PODS)
    assert not wire.send(late).forwarded
    assert_407(late, "needs a guardproxy session credential")


def test_a_credential_is_checked_on_each_proxied_request(
    proxy: Callable[..., Proxy],
    registry: SessionRegistry,
    session: tuple[Session, SessionCredential],
) -> None:
    """Outside a tunnel nothing carries over: the next request on the same connection
    without a credential is refused, not attributed to the session."""
    found, credential = session
    wire = proxy(auth(registry, allow_anonymous=False))
    first = flow_of(f"{PLAIN_GET}\nProxy-Authorization: {basic(credential)}")
    assert wire.send(first).forwarded
    assert first.metadata[SESSION].id == found.id
    second = flow_of(PLAIN_GET, first.client_conn)
    assert not wire.send(second).forwarded
    assert_407(second, "needs a guardproxy session credential")


@pytest.mark.parametrize("allow_anonymous", [True, False])
@pytest.mark.parametrize("wrong", ["token", "session", "ended"])
@pytest.mark.parametrize("request_text", [CONNECT_KUBE, PLAIN_GET])
def test_a_wrong_credential_is_refused_with_407_never_served_anonymously(
    proxy: Callable[..., Proxy],
    registry: SessionRegistry,
    session: tuple[Session, SessionCredential],
    allow_anonymous: bool,
    wrong: str,
    request_text: str,
) -> None:
    found, credential = session
    if wrong == "token":
        presented: SessionCredential | tuple[str, str] = (found.id, credential.token + "x")
    elif wrong == "session":
        presented = ("s-0000000000", credential.token)
    else:
        registry.end(found.id, T0)
        presented = credential
    wire = proxy(auth(registry, allow_anonymous=allow_anonymous))
    flow = flow_of(f"{request_text}\nProxy-Authorization: {basic(presented)}")
    assert not wire.passes(flow)
    assert_407(flow, "unknown or ended guardproxy session")


@pytest.mark.parametrize("request_text", [CONNECT_KUBE, PLAIN_GET])
def test_no_credential_is_the_client_s_anonymous_session_only_when_allowed(
    proxy: Callable[..., Proxy], registry: SessionRegistry, request_text: str
) -> None:
    allowed = proxy(auth(registry, allow_anonymous=True))
    flow = flow_of(request_text)
    assert allowed.passes(flow)
    assert flow.metadata[SESSION].anonymous
    assert flow.metadata[SESSION].id == "anonymous:127.0.0.1"
    if flow.request.method == "CONNECT":  # and so is every request of its tunnel
        request = inside(flow, LIST_PODS)
        assert allowed.send(request).forwarded
        assert request.metadata[SESSION].id == "anonymous:127.0.0.1"

    refused = proxy(auth(registry, allow_anonymous=False))
    flow = flow_of(request_text)
    assert not refused.passes(flow)
    assert_407(flow, "needs a guardproxy session credential")


@pytest.mark.parametrize(
    "header",
    [
        "Basic",
        "Basic !!!not-base64",
        "Bearer gps_abc",
        "Digest username=s-1",
        "Basic a b",
        "Basic " + base64.b64encode(b"no-colon").decode(),
    ],
)
@pytest.mark.parametrize("allow_anonymous", [True, False])
def test_a_malformed_credential_is_refused_never_served_anonymously(
    proxy: Callable[..., Proxy], registry: SessionRegistry, header: str, allow_anonymous: bool
) -> None:
    wire = proxy(auth(registry, allow_anonymous=allow_anonymous))
    flow = flow_of(f"{PLAIN_GET}\nProxy-Authorization: {header}")
    assert not wire.send(flow).forwarded
    assert_407(flow, "malformed Proxy-Authorization")


def test_two_credentials_are_refused(
    proxy: Callable[..., Proxy],
    registry: SessionRegistry,
    session: tuple[Session, SessionCredential],
) -> None:
    """A second Proxy-Authorization beside a valid one: not one of them picked."""
    _, credential = session
    wire = proxy(auth(registry, allow_anonymous=True))
    flow = flow_of(
        f"{PLAIN_GET}\nProxy-Authorization: {basic(credential)}\n"
        f"Proxy-Authorization: {basic(('s-0000000000', 'other'))}"
    )
    assert not wire.send(flow).forwarded
    assert_407(flow, "malformed Proxy-Authorization")


@pytest.mark.parametrize("request_text", [CONNECT_KUBE, PLAIN_GET])
def test_a_credential_that_cannot_be_checked_is_refused_not_served_anonymously(
    proxy: Callable[..., Proxy],
    store: SqliteStore,
    registry: SessionRegistry,
    session: tuple[Session, SessionCredential],
    request_text: str,
) -> None:
    _, credential = session
    store.close()  # the store fails every call from now on (StoreError)
    wire = proxy(auth(registry, allow_anonymous=True))
    flow = flow_of(f"{request_text}\nProxy-Authorization: {basic(credential)}")
    assert not wire.passes(flow)
    assert flow.response is not None and flow.response.status_code == 403
    assert "store is unreachable, so nothing was sent" in (flow.response.text or "")
    assert SESSION not in flow.metadata


def test_the_credential_is_removed_before_the_request_is_forwarded(
    proxy: Callable[..., Proxy],
    registry: SessionRegistry,
    session: tuple[Session, SessionCredential],
) -> None:
    found, credential = session
    wire = proxy(auth(registry, allow_anonymous=False))
    flow = flow_of(
        f"{PLAIN_GET}\nProxy-Authorization: {basic(credential)}\nAuthorization: Bearer upstream"
    )
    assert wire.send(flow).forwarded
    assert flow.metadata[SESSION].id == found.id
    assert "Proxy-Authorization" not in flow.request.headers
    assert flow.request.headers["Authorization"] == "Bearer upstream"  # the upstream's own
    assert credential.token.encode() not in bytes(flow.request.headers)
    tunnel = flow_of(f"{CONNECT_KUBE}\nProxy-Authorization: {basic(credential)}")
    assert wire.connect(tunnel)
    assert "Proxy-Authorization" not in tunnel.request.headers


@pytest.mark.parametrize("allow_anonymous", [True, False])
def test_a_reverse_listener_serves_its_clients_as_their_anonymous_session(
    proxy: Callable[..., Proxy],
    registry: SessionRegistry,
    session: tuple[Session, SessionCredential],
    allow_anonymous: bool,
) -> None:
    """A reverse listener (``--reverse PORT=URL``) carries no proxy credential: its
    requests are the client's anonymous session, and a session's credential sent there
    does not make them that session's. allow_anonymous does not apply to it (the
    operator configured the listener); its requests are decided like any other."""
    _, credential = session
    wire = proxy(auth(registry, allow_anonymous=allow_anonymous))
    reverse = client(f"reverse:https://{KUBE}:6443")
    flow = flow_of(
        f"GET /api/v1/namespaces HTTP/1.1\nHost: 127.0.0.1:9443\n"
        f"Proxy-Authorization: {basic(credential)}",
        reverse,
    )
    assert wire.send(flow).forwarded
    assert flow.metadata[SESSION].anonymous
    assert flow.metadata[SESSION].id == "anonymous:127.0.0.1"


# -- Passthrough: a ClientHello written by OpenSSL, the CONNECT target as mitmproxy keeps it


def client_hello(sni: str | None) -> tls.ClientHello:
    """The ClientHello a TLS client (OpenSSL) sends for ``sni``, parsed by mitmproxy."""
    settings = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    settings.check_hostname = False
    settings.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    handshake = settings.wrap_bio(incoming, outgoing, server_hostname=sni)
    with pytest.raises(ssl.SSLWantReadError):
        handshake.do_handshake()
    parsed = tls_layer.parse_client_hello(outgoing.read())
    assert parsed is not None
    return parsed


def tls_start(wire: Proxy, target: str | None, sni: str | None) -> tls.ClientHelloData:
    """``tls_clienthello`` in a tunnel to ``target`` (``handle_connect`` set the server
    address from the CONNECT request); the data as the TLS layer passes it."""
    tunnel = context.Context(client(), wire.context.options)
    tunnel.server.address = (target, 443) if target is not None else None
    data = tls.ClientHelloData(tunnel, client_hello(sni))
    wire.trigger(tls_layer.TlsClienthelloHook(data))
    return data


def passthrough(*patterns: str) -> Passthrough:
    return Passthrough(list(patterns), failsafe=FAILSAFE)


def test_a_configured_host_is_tunnelled_when_its_sni_names_it(
    proxy: Callable[..., Proxy],
) -> None:
    wire = proxy(passthrough("pinned.test", "*.bank.test"))
    assert tls_start(wire, "pinned.test", "pinned.test").ignore_connection
    assert tls_start(wire, "api.bank.test", "api.bank.test").ignore_connection
    assert tls_start(wire, "a.b.bank.test", "a.b.bank.test").ignore_connection


@pytest.mark.parametrize(
    ("target", "sni"),
    [
        (KUBE, "pinned.test"),  # a guarded host, an SNI that names a tunnelled one
        ("pinned.test", KUBE),  # the other way round
        ("pinned.test", "api.bank.test"),  # two tunnelled hosts, still not the same
        ("pinned.test", None),  # no SNI at all
        ("pinned.test", "pinned.test.evil.test"),
        (None, "pinned.test"),  # no CONNECT target known
    ],
)
def test_a_tls_connection_is_intercepted_unless_target_and_sni_agree(
    proxy: Callable[..., Proxy], target: str | None, sni: str | None
) -> None:
    wire = proxy(passthrough("pinned.test", "*.bank.test"))
    assert not tls_start(wire, target, sni).ignore_connection


@pytest.mark.parametrize(
    ("pattern", "host"),
    [
        ("pinned.test", "pinned.test.evil.test"),
        ("pinned.test", "evilpinned.test"),
        ("pinned.test", "evil.pinned.test"),
        ("pinned.test", "pinnedxtest"),  # the dot is a dot, not any character
        ("pinned.test", "pinned.tes"),
        ("*.bank.test", "bank.test"),
        ("*.bank.test", "evilbank.test"),
        ("*.bank.test", "api.bank.test.evil.test"),
    ],
)
def test_patterns_are_anchored(proxy: Callable[..., Proxy], pattern: str, host: str) -> None:
    wire = proxy(passthrough(pattern))
    assert not tls_start(wire, host, host).ignore_connection


def test_hosts_and_patterns_are_compared_without_case(proxy: Callable[..., Proxy]) -> None:
    wire = proxy(passthrough("Pinned.Test", "*.BANK.test"))
    assert tls_start(wire, "PINNED.test", "pinned.TEST").ignore_connection
    assert tls_start(wire, "Api.Bank.Test", "api.bank.test").ignore_connection
    assert not tls_start(wire, "PINNED.test", "API.bank.test").ignore_connection


@pytest.mark.parametrize(
    ("pattern", "target", "sni"),
    [
        ("pinned.test", "PINNED.TEST.", "pinned.test"),  # a trailing dot, upper case
        ("pinned.test.", "pinned.test", "Pinned.Test"),
        ("bücher.test", "xn--bcher-kva.test", "xn--bcher-kva.test"),  # IDNA
        ("xn--bcher-kva.test", "bücher.test", "xn--bcher-kva.test"),
        ("*.bank.test", "API.bank.test.", "api.bank.test"),
    ],
)
def test_a_pattern_and_the_sni_name_the_host_by_any_spelling(
    proxy: Callable[..., Proxy], pattern: str, target: str, sni: str
) -> None:
    """guardproxy/hosts.py: the target, its SNI and the pattern compared as one host."""
    wire = proxy(passthrough(pattern))
    assert tls_start(wire, target, sni).ignore_connection


def test_an_address_without_sni_is_intercepted_whatever_the_pattern(
    proxy: Callable[..., Proxy],
) -> None:
    """A pattern naming an address matches every spelling of it, but a client connecting
    by address sends no SNI, and without an SNI that agrees nothing is tunnelled."""
    wire = proxy(passthrough("10.0.0.5", "127.0.0.1"))
    for target in ("10.0.0.5", "0x0a.0.0.5", "127.1", "localhost"):
        assert not tls_start(wire, target, None).ignore_connection


def test_without_patterns_everything_is_intercepted(proxy: Callable[..., Proxy]) -> None:
    wire = proxy(passthrough())
    assert not tls_start(wire, "pinned.test", "pinned.test").ignore_connection


# -- BodyGuard


def body_guard() -> BodyGuard:
    return BodyGuard(LIMIT, SETTINGS, failsafe=FAILSAFE)


def create_configmap(size: int, *, chunked: bool = False) -> tuple[str, bytes]:
    """A Kubernetes create with a ``size``-byte body, its length declared or chunked."""
    length = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}"
    text = (
        f"POST https://{KUBE}/api/v1/namespaces/default/configmaps HTTP/1.1\nHost: {KUBE}\n"
        f"Content-Type: application/json\n{length}"
    )
    return text, b"x" * size


def assert_refused_for_size(flow: http.HTTPFlow, size: int) -> None:
    assert flow.response is not None
    assert flow.response.status_code == 403
    assert flow.response.headers["X-Guardproxy-Decision"] == "deny"
    assert flow.response.headers["X-Guardproxy-Id"] == "body-limit"
    status = json.loads(flow.response.content or b"")
    assert status["kind"] == "Status"  # in the Kubernetes API's own words: kubectl prints it
    assert f"is {size} bytes, over the {LIMIT}-byte limit" in status["message"]


def test_a_declared_length_over_the_limit_is_refused_at_the_headers(
    proxy: Callable[..., Proxy],
) -> None:
    wire = proxy(body_guard())
    text, body = create_configmap(LIMIT + 1)
    flow = flow_of(text)
    flow.request.data.content = None
    wire.trigger(http_layer.HttpRequestHeadersHook(flow))  # before a byte of the body
    assert_refused_for_size(flow, LIMIT + 1)
    flow = flow_of(text)
    assert wire.send(flow, body) == Sent(streamed=False, forwarded=False)
    assert_refused_for_size(flow, LIMIT + 1)


def test_a_chunked_body_over_the_limit_is_refused_once_buffered(
    proxy: Callable[..., Proxy],
) -> None:
    wire = proxy(body_guard())
    text, body = create_configmap(LIMIT + 1, chunked=True)
    flow = flow_of(text)
    flow.request.data.content = None
    wire.trigger(http_layer.HttpRequestHeadersHook(flow))
    assert flow.response is None  # nothing declared: known only once the body is read
    assert flow.request.stream is False
    flow = flow_of(text)
    assert wire.send(flow, body) == Sent(streamed=False, forwarded=False)
    assert_refused_for_size(flow, LIMIT + 1)


@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_at_the_limit_goes_on_buffered(proxy: Callable[..., Proxy], chunked: bool) -> None:
    wire = proxy(body_guard())
    text, body = create_configmap(LIMIT, chunked=chunked)
    flow = flow_of(text)
    assert wire.send(flow, body) == Sent(streamed=False, forwarded=True)
    assert flow.request.raw_content == body  # the whole body is there when Guard decides


@pytest.mark.parametrize("stream", [True, lambda chunk: chunk])
def test_a_request_body_never_streams_past_the_request_hook(
    proxy: Callable[..., Proxy], stream: bool | Callable[[bytes], bytes]
) -> None:
    """mitmproxy streams a request whose body is over ``stream_large_bodies`` (it sets
    ``request.stream`` before ``requestheaders``), and so may an addon: the body would
    reach the upstream before the request could be decided or held."""

    class Streams:
        def requestheaders(self, flow: http.HTTPFlow) -> None:
            flow.request.stream = stream

    wire = proxy(Streams(), body_guard())
    text, body = create_configmap(LIMIT // 2)
    flow = flow_of(text)
    assert wire.send(flow, body) == Sent(streamed=False, forwarded=True)
    assert flow.request.stream is False


def test_an_earlier_refusal_is_kept(proxy: Callable[..., Proxy], registry: SessionRegistry) -> None:
    """SessionAuth's 407 is not replaced: BodyGuard runs after it (proxy.py's order)."""
    wire = proxy(auth(registry, allow_anonymous=False), body_guard())
    text, body = create_configmap(LIMIT + 1)
    flow = flow_of(text)
    assert not wire.send(flow, body).forwarded
    assert_407(flow, "needs a guardproxy session credential")


# -- ResponseStreaming


@dataclass
class StatusLog:
    """What ResponseStreaming reports: the upstream's status of each forwarded decision."""

    seen: list[tuple[str, int]]

    def __call__(self, decision_id: str, status: int) -> None:
        self.seen.append((decision_id, status))


def streaming(log: StatusLog) -> ResponseStreaming:
    return ResponseStreaming(log, failsafe=FAILSAFE)


def test_every_response_streams_and_the_upstream_status_is_recorded(
    proxy: Callable[..., Proxy],
) -> None:
    log = StatusLog([])
    wire = proxy(streaming(log))
    watch = flow_of(f"GET https://{KUBE}/api/v1/pods?watch=1 HTTP/1.1\nHost: {KUBE}")
    watch.metadata[DECISION] = "d-1"  # what Guard leaves on a forwarded request
    wire.respond(watch, tresp(status_code=200))
    assert watch.response is not None and watch.response.stream is True
    failed = flow_of(PLAIN_GET)
    failed.metadata[DECISION] = "d-2"
    wire.respond(failed, tresp(status_code=503))
    assert failed.response is not None and failed.response.stream is True
    assert log.seen == [("d-1", 200), ("d-2", 503)]


def test_guardproxy_s_own_answer_is_not_recorded_as_the_upstream_s(
    proxy: Callable[..., Proxy], registry: SessionRegistry
) -> None:
    log = StatusLog([])
    wire = proxy(auth(registry, allow_anonymous=False), body_guard(), streaming(log))
    flow = flow_of(PLAIN_GET)
    assert not wire.send(flow).forwarded  # 407: responseheaders fires for the answer
    assert flow.response is not None and flow.response.stream is True
    assert log.seen == []


EC2_RUN = "Action=RunInstances&Version=2016-11-15&ImageId=ami-1&MinCount=1&MaxCount=1"
EC2_RESPONSE = b"""<?xml version="1.0" encoding="UTF-8"?>
<RunInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
  <instancesSet><item><instanceId>i-0abc1234</instanceId>
    <tagSet><item><key>Name</key><value>web-1</value></item>
      <item><key>environment</key><value>dev</value></item></tagSet>
  </item></instancesSet>
</RunInstancesResponse>"""


def run_instances(cache: NameCache) -> http.HTTPFlow:
    """An EC2 RunInstances forwarded by Guard, with the learner it leaves for the response."""
    flow = flow_of(
        "POST https://ec2.eu-west-1.amazonaws.com/ HTTP/1.1\nHost: ec2.eu-west-1.amazonaws.com\n"
        "Content-Type: application/x-www-form-urlencoded; charset=utf-8\n"
        "Authorization: AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261125/eu-west-1/ec2/"
        "aws4_request, SignedHeaders=host, Signature=abc\n"
        f"Content-Length: {len(EC2_RUN)}"
    )
    flow.request.data.content = EC2_RUN.encode()
    learner = learner_for(recognise(http_request(flow), SETTINGS), cache)
    assert learner is not None
    flow.metadata[LEARNER] = learner
    return flow


def stream_body(flow: http.HTTPFlow, body: bytes) -> bytes:
    """The body through the response's stream callable, chunk by chunk, then its end."""
    assert flow.response is not None
    stream = flow.response.stream
    assert isinstance(stream, SafeStream)
    chunks = [body[i : i + 64] for i in range(0, len(body), 64)] + [b""]
    return b"".join(stream(chunk) for chunk in chunks)


def test_names_are_learned_from_a_successful_response_as_it_streams(
    proxy: Callable[..., Proxy],
) -> None:
    cache = NameCache()
    wire = proxy(streaming(StatusLog([])))
    flow = run_instances(cache)
    wire.respond(flow, tresp(status_code=200))
    assert stream_body(flow, EC2_RESPONSE) == EC2_RESPONSE  # passed on untouched
    learned = cache.get(instance_key("eu-west-1", "i-0abc1234"))
    assert learned is not None and learned.name == "web-1"


@pytest.mark.parametrize("status", [302, 403, 500])
def test_an_error_response_teaches_no_names(proxy: Callable[..., Proxy], status: int) -> None:
    """Only the API's answer to the request names its resources; an error page (or a
    redirect, or something in between) could claim any name and environment."""
    cache = NameCache()
    wire = proxy(streaming(StatusLog([])))
    flow = run_instances(cache)
    wire.respond(flow, tresp(status_code=status))
    assert flow.response is not None and flow.response.stream is True
    assert len(cache) == 0


# -- control-port protection (Guard): on the request, and on the connection made


@pytest.fixture
def guard(tmp_path: Path, store: SqliteStore) -> Iterator[Guard]:
    """Guard as the proxy builds it, on an allow-everything bundle; the protected
    addresses are what guardproxy's server gives it when listening on loopback."""
    bundle = rules_bundle(
        tmp_path / "bundle",
        """
        - id: nothing-here
          decision: deny
          match: {resourceNames: [never-named]}
          message: Never matched.
        """,
    )
    gate = Gate(store, bundle, hold_window=1.0, clock=lambda: T0)
    yield Guard(
        gate,
        SETTINGS,
        SessionHistory(store),
        protected=lambda: {("127.0.0.1", CONTROL_PORT), ("127.0.0.1", PROXY_PORT)},
        clock=lambda: T0,
        failsafe=FAILSAFE,
    )
    gate.close()
    gate.flush()


def _interface_addresses() -> list[str]:
    """This host's own non-loopback addresses (from its interfaces, no traffic)."""
    found = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            try:
                answer = fcntl.ioctl(probe.fileno(), 0x8915, struct.pack("256s", name.encode()))
            except OSError:  # SIOCGIFADDR: the interface has no IPv4 address
                continue
            found.append(socket.inet_ntoa(answer[20:24]))
    try:
        with open("/proc/net/if_inet6", encoding="ascii") as table:
            for line in table:
                address, _, _, scope, *_ = line.split()
                if scope == "00":  # global scope: usable without a zone id
                    found.append(str(ipaddress.IPv6Address(bytes.fromhex(address))))
    except OSError:
        pass
    return [a for a in found if not ipaddress.ip_address(a).is_loopback]


INTERFACES = _interface_addresses()
LOOPBACK_SPELLINGS = [
    "127.0.0.1",
    "localhost",
    "LocalHost",
    "localhost.",
    "LOCALHOST.",
    "api.localhost",
    "127.1",
    "127.0.1",
    "0x7f000001",
    "0x7f.1",
    "2130706433",
    "0177.0.0.1",
    "127.0.0.2",
    "::1",
    "0:0:0:0:0:0:0:1",
    "::ffff:127.0.0.1",
    "::ffff:7f00:1",
    "0.0.0.0",
    "0",
    "::",
]
"""Ways to write this host: what glibc's resolver (mitmproxy's connection uses it) reads
as a loopback or unspecified address, and ``localhost`` with its subdomains and trailing
dots (RFC 6761), which some resolvers answer with loopback and others not at all. Each
is recognised without a DNS lookup (none is sent by these tests)."""
OWN_ADDRESSES = INTERFACES + [f"::ffff:{a}" for a in INTERFACES if ":" not in a]


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def control_request(host: str, port: int = CONTROL_PORT, *, approve: bool = True) -> http.HTTPFlow:
    """An approval (or a read of the holds) sent through the proxy to ``host:port``."""
    authority = f"{url_host(host)}:{port}"
    line = "POST /v1/holds/h-1/approve" if approve else "GET /v1/holds"
    method, path = line.split()
    return flow_of(
        f"{method} http://{authority}{path} HTTP/1.1\nHost: {authority}\n"
        "Authorization: Bearer gpc_stolen" + ("\nContent-Length: 2" if approve else "")
    )


def assert_control_refused(flow: http.HTTPFlow) -> None:
    assert flow.response is not None, f"{flow.request.host} reached the control API"
    assert flow.response.status_code == 403
    assert flow.response.headers["X-Guardproxy-Id"] == "control"
    assert "cannot reach guardproxy's own control API" in (flow.response.text or "")


def connect_to(wire: Proxy, host: str, port: int) -> connection.Server:
    """``server_connect`` for a connection to ``(host, port)`` (host as mitmproxy keeps
    it: IPv6 without brackets); the server connection after the hook."""
    server = connection.Server(address=(host, port))
    wire.trigger(server_hooks.ServerConnectHook(server_hooks.ServerConnectionHookData(
        server, client())))  # fmt: skip
    return server


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS + OWN_ADDRESSES)
@pytest.mark.parametrize("port", [CONTROL_PORT, PROXY_PORT])
def test_no_spelling_of_this_host_reaches_a_protected_port_in_a_request(
    proxy: Callable[..., Proxy], guard: Guard, host: str, port: int
) -> None:
    wire = proxy(guard)
    approval = control_request(host, port)
    assert not wire.send(approval, b"{}").forwarded
    assert_control_refused(approval)
    read = control_request(host, port, approve=False)
    assert not wire.send(read).forwarded
    assert_control_refused(read)


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS + OWN_ADDRESSES)
@pytest.mark.parametrize("port", [CONTROL_PORT, PROXY_PORT])
def test_no_spelling_of_this_host_gets_a_connection_to_a_protected_port(
    proxy: Callable[..., Proxy], guard: Guard, host: str, port: int
) -> None:
    """The connection itself (a raw TCP tunnel passes no request hook): decided on
    the address connected to."""
    wire = proxy(guard)
    server = connect_to(wire, host, port)
    assert server.error is not None and "cannot reach guardproxy itself" in server.error


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", *INTERFACES])
def test_other_ports_of_this_host_are_not_protected(
    proxy: Callable[..., Proxy], guard: Guard, host: str
) -> None:
    wire = proxy(guard)
    flow = control_request(host, 6443, approve=False)
    assert wire.send(flow).forwarded  # decided by the bundle: allowed
    assert connect_to(wire, host, 6443).error is None


@pytest.mark.parametrize("host", ["198.51.100.7", "2001:db8::7"])
def test_another_machine_s_protected_port_number_is_not_this_host_s(
    proxy: Callable[..., Proxy], guard: Guard, host: str
) -> None:
    """Documentation addresses (RFC 5737, RFC 3849): nothing is sent to them, the hooks
    only look at the address."""
    wire = proxy(guard)
    flow = control_request(host, approve=False)
    assert wire.send(flow).forwarded
    assert connect_to(wire, host, CONTROL_PORT).error is None
