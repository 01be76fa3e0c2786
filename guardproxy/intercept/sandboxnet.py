"""Root-mode enforced sessions on the guard's side, and where the guard may connect.

``guardproxy run --enforce`` started as root puts the agent in a network namespace
whose only link is a veth pair to this guard; nftables on the host side redirect every
TCP connection to the guard's transparent listener and every DNS query to its DNS
listener (guardproxy/sandbox/network.py). Here:

* :class:`SandboxClients`: a transparent connection carries no proxy credential; it
  belongs to the session whose sandbox owns its source address (one per session;
  the host side drops anything else the veth carries).
* :class:`SandboxDns`: the sandbox's DNS. Every name gets an address of its own
  (guardproxy/namemap.py) and is never looked up: the agent learns nothing, and
  nothing leaves, through DNS.
* :class:`SandboxDestinations`: a connection to such an address is to its name: the
  guard decides on the name and connects to it; an address no name stands behind is
  refused, never connected to.
* :class:`UpstreamAllow`: ``upstream_allow: loopback`` (``--upstream-allow loopback``):
  the guard connects to this machine only, decided on how the host is spelt and on
  /etc/hosts, before any DNS lookup, so a name that would resolve elsewhere is never
  even looked up. For machines (and tests) where nothing may leave.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
from pathlib import Path

import structlog
from mitmproxy import dns, http
from mitmproxy.net.dns import classes, response_codes, types
from mitmproxy.proxy import layer, mode_specs, server_hooks

from guardproxy.context import SessionInfo
from guardproxy.intercept.failsafe import (
    Failsafe,
    connection_hook,
    contained_hook,
    request_hook,
)
from guardproxy.namemap import NameAddresses

log = structlog.get_logger(__name__)

DNS_TTL = 60
HOSTS_FILE = Path("/etc/hosts")


def _plain_address(address: str) -> str:
    """``::ffff:10.0.0.2`` is ``10.0.0.2``."""
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


class SandboxClients:
    """The session of each sandbox source address this guard serves."""

    def __init__(self) -> None:
        self._sessions: dict[str, SessionInfo] = {}
        self._lock = threading.Lock()

    def bind(self, address: str, session: SessionInfo) -> None:
        with self._lock:
            self._sessions[_plain_address(address)] = session

    def session_for(self, address: str) -> SessionInfo | None:
        with self._lock:
            return self._sessions.get(_plain_address(address))


class SandboxDns:
    """Answers the sandbox's DNS queries from the name table, never upstream.

    A (IN): the name's own address; AAAA and every other type: no records (clients
    then use the IPv4 address); PTR: NXDOMAIN. A query that cannot be answered gets
    SERVFAIL: without an answer set here, mitmproxy would send it upstream.
    """

    def __init__(self, names: NameAddresses, *, failsafe: Failsafe) -> None:
        self._names = names
        self.failsafe = failsafe

    @contained_hook
    def dns_request(self, flow: dns.DNSFlow) -> None:
        try:
            flow.response = self.answer(flow.request)
        except Exception:
            try:
                flow.response = flow.request.fail(response_codes.SERVFAIL)
            except Exception:
                flow.kill()
            raise

    def answer(self, query: dns.DNSMessage) -> dns.DNSMessage:
        if not query.query or len(query.questions) != 1:
            return query.fail(response_codes.FORMERR)
        question = query.questions[0]
        if question.type == types.PTR:
            return query.fail(response_codes.NXDOMAIN)
        answers = []
        if question.type == types.A and question.class_ == classes.IN:
            address = self._names.address(question.name)
            answers.append(dns.ResourceRecord.A(question.name, address, ttl=DNS_TTL))
        return query.succeed(answers)


class SandboxDestinations:
    """The name behind each address the sandbox's DNS handed out.

    Transparent connections: the original destination is replaced by the name before
    any layer reads it (mitmproxy's HTTP layer takes a transparent request's host from
    it, its TLS layer the upstream SNI), exactly as if the client had sent ``CONNECT
    name:port``. Proxied requests (``CONNECT`` or absolute form) naming such an
    address: the same. Any connection still aimed at one of these addresses (the name
    is unknown) is refused: the network they come from is routed nowhere real.
    """

    def __init__(self, names: NameAddresses, *, failsafe: Failsafe) -> None:
        self._names = names
        self.failsafe = failsafe

    @contained_hook
    def next_layer(self, data: layer.NextLayer) -> None:
        context = data.context
        if not isinstance(context.client.proxy_mode, mode_specs.TransparentMode):
            return
        address = context.server.address
        if address is not None and self._names.covers(address[0]):
            name = self._names.name(address[0])
            if name is not None:
                context.server.address = (name, address[1])

    @request_hook
    def http_connect(self, flow: http.HTTPFlow) -> None:
        self._rename(flow)

    @request_hook
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        self._rename(flow)

    def _rename(self, flow: http.HTTPFlow) -> None:
        host = flow.request.host
        if self._names.covers(host):
            name = self._names.name(host)
            if name is not None:
                flow.request.host = name

    @connection_hook
    async def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        address = data.server.address
        if address is not None and not data.server.error and self._names.covers(address[0]):
            data.server.error = (
                f"guardproxy: no name stands behind {address[0]} (the sandbox's DNS did not "
                "hand it out); connect by name"
            )
            log.warning("sandbox.unknown_address", address=address[0])


class LoopbackHosts:
    """Names /etc/hosts gives loopback addresses only, and the address to use for each
    (IPv4 first). Read again when the file changes."""

    def __init__(self, path: Path = HOSTS_FILE) -> None:
        self._path = path
        self._seen: tuple[int, int] | None = None
        self._addresses: dict[str, str] = {}

    def address(self, name: str) -> str | None:
        self._refresh()
        return self._addresses.get(name.rstrip(".").lower())

    def _refresh(self) -> None:
        try:
            stat = os.stat(self._path)
        except OSError:
            self._seen, self._addresses = None, {}
            return
        if self._seen == (stat.st_mtime_ns, stat.st_size):
            return
        found: dict[str, list[ipaddress.IPv4Address | ipaddress.IPv6Address]] = {}
        try:
            text = self._path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            text = ""
        for line in text.splitlines():
            fields = line.split("#", 1)[0].split()
            if len(fields) < 2:
                continue
            try:
                ip = ipaddress.ip_address(fields[0].partition("%")[0])
            except ValueError:
                continue
            for name in fields[1:]:
                found.setdefault(name.rstrip(".").lower(), []).append(ip)
        self._addresses = {
            name: str(sorted(ips, key=lambda ip: ip.version)[0])
            for name, ips in found.items()
            if all(ip.is_loopback for ip in ips)
        }
        self._seen = (stat.st_mtime_ns, stat.st_size)


class UpstreamAllow:
    """``upstream_allow: loopback``: every upstream connection stays on this machine.

    Allowed: a loopback (or unspecified) address in any spelling, ``localhost`` and
    its subdomains (pinned to 127.0.0.1 unless /etc/hosts says otherwise), and names
    /etc/hosts maps to loopback addresses only (pinned to that address: the connection
    needs no lookup). Anything else is refused before it is resolved or connected to;
    an HTTP request to it is answered with a 502 naming the reason.
    """

    def __init__(self, allow: str, *, failsafe: Failsafe, hosts: LoopbackHosts | None = None):
        self._allow = allow
        self._hosts = hosts or LoopbackHosts()
        self.failsafe = failsafe

    @connection_hook
    async def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        if self._allow != "loopback" or data.server.address is None or data.server.error:
            return
        host, port = data.server.address
        pinned = self.loopback_address(host)
        if pinned is None:
            data.server.error = (
                f"guardproxy: {host} is not this machine, and this guard connects only to "
                "this machine (upstream_allow: loopback)"
            )
            log.warning("upstream.refused", host=host, port=port)
        elif pinned != host:
            data.server.address = (pinned, port)

    def loopback_address(self, host: str) -> str | None:
        """The loopback address to connect to for ``host``; None if it is not one."""
        name = host.strip("[]").rstrip(".").lower()
        listed = self._hosts.address(name)
        if listed is not None:
            return listed
        return _loopback_spelling(name)


def _loopback_spelling(name: str) -> str | None:
    """The loopback (or unspecified) address ``name`` spells, read as glibc reads an
    address (``127.1``, ``0x7f000001``, ``::ffff:127.0.0.1``); 127.0.0.1 for
    ``localhost`` and its subdomains (RFC 6761 6.3); None for anything else. No lookup."""
    if name == "localhost" or name.endswith(".localhost"):
        return "127.0.0.1"
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    try:
        ip = ipaddress.ip_address(name.partition("%")[0])
    except ValueError:
        try:
            ip = ipaddress.IPv4Address(socket.inet_aton(name))
        except (OSError, ValueError):  # not an address (ValueError: a NUL in it)
            return None
    plain = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped else ip
    return str(ip) if plain.is_loopback or plain.is_unspecified else None


__all__ = [
    "LoopbackHosts",
    "SandboxClients",
    "SandboxDestinations",
    "SandboxDns",
    "UpstreamAllow",
]
