"""Root-mode enforced sessions on the guard's side, and ``upstream_allow: loopback``.

In mitmproxy's style, as test_addons.py: ``tflow`` flows, the addons in a ``taddons``
master, hooks through ``trigger_event``; DNS queries built by mitmproxy's own codec; the
session registry on a real SQLite store. End to end (nftables, veth, a real agent):
tests/e2e/test_enforce_root.py.
"""

from __future__ import annotations

import inspect
import ipaddress
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from mitmproxy import dns, hooks, http
from mitmproxy.net.dns import response_codes, types
from mitmproxy.proxy import context, layer, server_hooks
from mitmproxy.proxy.layers import dns as dns_layer
from mitmproxy.test import tflow

from guardproxy.intercept import sandboxnet
from guardproxy.intercept.addons import SessionAuth
from guardproxy.intercept.failsafe import is_failsafe
from guardproxy.intercept.flows import SESSION
from guardproxy.intercept.sandboxnet import (
    LoopbackHosts,
    SandboxClients,
    SandboxDestinations,
    SandboxDns,
    UpstreamAllow,
)
from guardproxy.namemap import ROOT_NETWORK, NameAddresses
from guardproxy.session.registry import SessionCredential, SessionRegistry, session_info
from guardproxy.store.base import Session

from .test_addons import FAILSAFE, Proxy, basic, client, flow_of

SANDBOX = "10.231.0.2"


@pytest.fixture
def names() -> NameAddresses:
    return NameAddresses(ROOT_NETWORK)


def query(name: str, kind: int) -> dns.DNSFlow:
    flow = tflow.tdnsflow()
    flow.request = dns.DNSMessage(
        id=7, query=True, op_code=0, authoritative_answer=False, truncation=False,
        recursion_desired=True, recursion_available=False, reserved=0, response_code=0,
        questions=[dns.Question(name, kind, 1)], answers=[], authorities=[], additionals=[],
    )  # fmt: skip
    flow.response = None
    return flow


def ask(wire: Proxy, flow: dns.DNSFlow) -> dns.DNSMessage:
    wire.trigger(dns_layer.DnsRequestHook(flow))
    assert flow.response is not None, "unanswered: mitmproxy would send it upstream"
    return flow.response


def test_every_name_gets_an_address_of_its_own_and_nothing_is_looked_up(
    proxy: Callable[..., Proxy], names: NameAddresses, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_lookups(*args: object, **kwargs: object) -> object:
        raise AssertionError(f"a lookup: {args}")

    monkeypatch.setattr(socket, "getaddrinfo", no_lookups)
    monkeypatch.setattr(socket, "gethostbyname", no_lookups)
    wire = proxy(SandboxDns(names, failsafe=FAILSAFE))
    first = ask(wire, query("api.anthropic.com", types.A))
    again = ask(wire, query("API.anthropic.com.", types.A))
    other = ask(wire, query("sts.amazonaws.com", types.A))
    address = first.answers[0].ipv4_address
    assert ipaddress.ip_address(address) in ROOT_NETWORK
    assert again.answers[0].ipv4_address == address
    assert other.answers[0].ipv4_address != address
    assert names.name(str(address)) == "api.anthropic.com"
    assert ask(wire, query("api.anthropic.com", types.AAAA)).answers == []
    assert ask(wire, query("api.anthropic.com", types.HTTPS)).answers == []
    ptr = ask(wire, query("1.0.18.198.in-addr.arpa", types.PTR))
    assert ptr.response_code == response_codes.NXDOMAIN


def test_a_query_that_cannot_be_answered_gets_servfail_never_upstream(
    proxy: Callable[..., Proxy], monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = NameAddresses(ROOT_NETWORK)
    monkeypatch.setattr(broken, "address", lambda name: 1 / 0)
    wire = proxy(SandboxDns(broken, failsafe=FAILSAFE))
    answer = ask(wire, query("api.anthropic.com", types.A))
    assert answer.response_code == response_codes.SERVFAIL


def next_layer_for(wire: Proxy, conn_mode: str, host: str, port: int) -> context.Context:
    """``next_layer`` for a connection in ``conn_mode`` whose destination is (host, port)."""
    from mitmproxy import connection, options  # noqa: PLC0415

    ctx = context.Context(client(conn_mode), options.Options())
    ctx.server = connection.Server(address=(host, port))
    wire.trigger(layer.NextLayerHook(layer.NextLayer(ctx)))
    return ctx


def test_a_transparent_connection_to_a_handed_out_address_is_to_its_name(
    proxy: Callable[..., Proxy], names: NameAddresses
) -> None:
    wire = proxy(SandboxDestinations(names, failsafe=FAILSAFE))
    address = str(names.address("api.anthropic.com"))
    assert next_layer_for(wire, "transparent", address, 443).server.address == (
        "api.anthropic.com", 443,
    )  # fmt: skip
    # a literal address is kept, and a regular client's destination is its own business
    assert next_layer_for(wire, "transparent", "10.232.77.2", 8080).server.address == (
        "10.232.77.2", 8080,
    )  # fmt: skip
    assert next_layer_for(wire, "regular", address, 443).server.address == (address, 443)


def test_a_proxied_request_to_a_handed_out_address_is_to_its_name(
    proxy: Callable[..., Proxy], names: NameAddresses
) -> None:
    wire = proxy(SandboxDestinations(names, failsafe=FAILSAFE))
    address = str(names.address("registry.npmjs.org"))
    tunnel = flow_of(f"CONNECT {address}:443 HTTP/1.1\nHost: {address}:443")
    assert wire.connect(tunnel)
    assert (tunnel.request.host, tunnel.request.port) == ("registry.npmjs.org", 443)
    absolute = flow_of(f"GET http://{address}/x HTTP/1.1\nHost: {address}")
    assert wire.send(absolute).forwarded
    assert absolute.request.host == "registry.npmjs.org"


def connect_to(wire: Proxy, host: str, port: int) -> server_hooks.ServerConnectionHookData:
    from mitmproxy import connection  # noqa: PLC0415

    data = server_hooks.ServerConnectionHookData(connection.Server(address=(host, port)),
                                                 client())  # fmt: skip
    wire.trigger(server_hooks.ServerConnectHook(data))
    return data


def test_an_address_no_name_stands_behind_is_never_connected_to(
    proxy: Callable[..., Proxy], names: NameAddresses
) -> None:
    wire = proxy(SandboxDestinations(names, failsafe=FAILSAFE))
    names.address("api.anthropic.com")
    unknown = connect_to(wire, "198.18.200.7", 443)  # in the network, never handed out
    assert unknown.server.error and "no name stands behind" in unknown.server.error
    assert connect_to(wire, "api.anthropic.com", 443).server.error is None


# -- upstream_allow: loopback


@pytest.fixture
def hosts_file(tmp_path: Path) -> LoopbackHosts:
    path = tmp_path / "hosts"
    path.write_text(
        "127.0.0.1 localhost vm\n::1 localhost ip6-localhost\n"
        "127.0.0.1 api.anthropic.com # the test's fake\n"
        "10.0.0.5 db.internal\n127.0.0.1 split.example\n10.0.0.6 split.example\n"
    )
    return LoopbackHosts(path)


@pytest.mark.parametrize(
    ("host", "pinned"),
    [
        ("127.0.0.1", "127.0.0.1"), ("::1", "::1"), ("127.0.0.2", "127.0.0.2"),
        ("127.1", "127.0.0.1"), ("0x7f000001", "127.0.0.1"), ("0.0.0.0", "0.0.0.0"),
        ("localhost", "127.0.0.1"), ("LOCALHOST.", "127.0.0.1"),
        ("api.localhost", "127.0.0.1"), ("vm", "127.0.0.1"),
        ("api.anthropic.com", "127.0.0.1"), ("::ffff:127.0.0.1", "::ffff:7f00:1"),
    ],
)  # fmt: skip
def test_loopback_upstreams_are_allowed_and_pinned_without_a_lookup(
    proxy: Callable[..., Proxy],
    hosts_file: LoopbackHosts,
    monkeypatch: pytest.MonkeyPatch,
    host: str,
    pinned: str,
) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: pytest.fail(f"lookup {a}"))
    wire = proxy(UpstreamAllow("loopback", failsafe=FAILSAFE, hosts=hosts_file))
    data = connect_to(wire, host, 8443)
    assert data.server.error is None
    assert data.server.address == (pinned, 8443)


@pytest.mark.parametrize(
    "host",
    ["example.com", "db.internal", "split.example", "10.0.0.5", "192.0.2.7", "::2",
     "169.254.169.254", "localhost.example.com", "198.18.0.1"],
)  # fmt: skip
def test_anything_else_is_refused_before_it_is_looked_up(
    proxy: Callable[..., Proxy],
    hosts_file: LoopbackHosts,
    monkeypatch: pytest.MonkeyPatch,
    host: str,
) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: pytest.fail(f"lookup {a}"))
    wire = proxy(UpstreamAllow("loopback", failsafe=FAILSAFE, hosts=hosts_file))
    data = connect_to(wire, host, 443)
    assert data.server.error is not None and "upstream_allow: loopback" in data.server.error


def test_upstream_allow_any_changes_nothing(
    proxy: Callable[..., Proxy], hosts_file: LoopbackHosts
) -> None:
    wire = proxy(UpstreamAllow("any", failsafe=FAILSAFE, hosts=hosts_file))
    data = connect_to(wire, "example.com", 443)
    assert data.server.error is None and data.server.address == ("example.com", 443)


def test_a_changed_hosts_file_is_read_again(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text("127.0.0.1 first.test\n")
    hosts = LoopbackHosts(path)
    assert hosts.address("first.test") == "127.0.0.1"
    path.write_text("127.0.0.1 second.test second-alias\n")
    assert hosts.address("first.test") is None
    assert hosts.address("second-alias") == "127.0.0.1"


# -- who a sandbox's flows belong to


@pytest.fixture
def sandboxed(
    registry: SessionRegistry, session: tuple[Session, SessionCredential]
) -> SandboxClients:
    clients = SandboxClients()
    clients.bind(SANDBOX, session_info(session[0]))
    return clients


def from_address(text: str, address: str, mode: str = "transparent") -> http.HTTPFlow:
    conn = client(mode)
    conn.peername = (address, 40000)
    return flow_of(text, conn)


def test_a_sandbox_s_flows_are_its_session_s_whatever_they_carry(
    proxy: Callable[..., Proxy],
    registry: SessionRegistry,
    session: tuple[Session, SessionCredential],
    sandboxed: SandboxClients,
) -> None:
    found, _ = session
    other, other_credential = registry.create(
        name="other", user="bob", command=["sh"], cwd="/", labels=[], now=found.started_at
    )
    wire = proxy(SessionAuth(registry, allow_anonymous=False, failsafe=FAILSAFE,
                             sandbox=sandboxed))  # fmt: skip
    plain = from_address("GET /v1/items HTTP/1.1\nHost: api.test", SANDBOX)
    assert wire.send(plain).forwarded
    assert plain.metadata[SESSION].id == found.id
    # through its proxy listener, even with another session's credential: its own
    borrowed = from_address(
        f"GET http://api.test/x HTTP/1.1\nHost: api.test\n"
        f"Proxy-Authorization: {basic(other_credential)}", f"::ffff:{SANDBOX}", "regular",
    )  # fmt: skip
    assert wire.send(borrowed).forwarded
    assert borrowed.metadata[SESSION].id == found.id != other.id
    assert "Proxy-Authorization" not in borrowed.request.headers


def test_a_transparent_flow_from_no_sandbox_is_refused(
    proxy: Callable[..., Proxy], registry: SessionRegistry, sandboxed: SandboxClients
) -> None:
    wire = proxy(SessionAuth(registry, allow_anonymous=True, failsafe=FAILSAFE,
                             sandbox=sandboxed))  # fmt: skip
    stranger = from_address("GET /v1/items HTTP/1.1\nHost: api.test", "10.231.0.6")
    assert not wire.send(stranger).forwarded
    assert stranger.response is not None and stranger.response.status_code == 403
    assert SESSION not in stranger.metadata


def test_every_hook_of_the_sandbox_addons_is_wrapped() -> None:
    found = []
    for _, cls in inspect.getmembers(sandboxnet, inspect.isclass):
        if cls.__module__ != sandboxnet.__name__:
            continue
        for name in hooks.all_hooks:
            hook = getattr(cls, name, None)
            if hook is not None and name not in ("load", "configure", "running", "done"):
                found.append(f"{cls.__name__}.{name}")
                assert is_failsafe(hook), f"{cls.__name__}.{name} can fail open"
    assert {"SandboxDns.dns_request", "SandboxDestinations.server_connect",
            "UpstreamAllow.server_connect"} <= set(found)  # fmt: skip
