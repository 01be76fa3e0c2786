"""Host identity: when two spellings of a destination are the same server.

A configured host (``--kube-host 127.0.0.1:6443``, a protected port, a ``host:``
environment selector) must match every spelling a client can use to reach it, or a
request written differently slips past the match: ``localhost``, ``127.1``,
``0x7f.1``, ``2130706433``, ``[::ffff:127.0.0.1]``, ``LOCALHOST.`` all reach the same
loopback server. :func:`canonical_host` maps every spelling to one form, with the
semantics the operating system's resolver gives them, and without DNS:

* IPv4 literals are read as ``inet_aton`` reads them (glibc's ``getaddrinfo``, which
  the proxy's upstream connection uses, accepts the same forms): ``127.1``,
  ``0x7f.0.0.1``, ``0177.0.0.1`` and ``2130706433`` are ``127.0.0.1``;
* IPv6 literals are compressed, brackets and zone ids dropped, and an IPv4-mapped
  address (``::ffff:127.0.0.1``) is the IPv4 address it maps;
* every loopback address (``127.0.0.0/8``, ``::1``), the unspecified addresses
  (``0.0.0.0`` and ``::``, which Linux connects to the local host) and ``localhost`` with
  its subdomains (RFC 6761 section 6.3; glibc's and systemd's resolvers answer them
  with loopback) are one host, :data:`LOOPBACK`: a server bound to all addresses is
  reached through any of them, so for matching they must count as the same;
* names are lower-cased, their trailing dots dropped, and non-ASCII labels
  IDNA-encoded.

Names that resolve elsewhere by DNS or ``/etc/hosts`` are not followed (no I/O here).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

__all__ = [
    "LOOPBACK",
    "HostSet",
    "canonical_host",
    "is_loopback",
    "same_host",
    "split_host_port",
]

LOOPBACK = "localhost"
"""The canonical form of every loopback or unspecified address and of ``localhost``."""

_INET_ATON = re.compile(r"^[0-9a-fx.]+$")
_PORT = re.compile(r"^\d{1,5}$")


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address ``text`` spells (brackets and zone already removed), or None."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        address = None
    if isinstance(address, ipaddress.IPv6Address):
        return address.ipv4_mapped or address
    if address is not None:
        return address
    if _INET_ATON.match(text) and any(c.isdigit() for c in text):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(text))
        except OSError:
            return None
    return None


@lru_cache(maxsize=4096)
def canonical_host(host: str) -> str:
    """The one spelling of ``host`` (a name or IP literal, without port) that every
    spelling of the same server maps to; see the module docstring for the rules.

    Never raises: text that is neither an address nor a valid name is returned
    lower-cased and stripped, so it only ever equals itself.
    """
    text = host.strip().lower()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    text = text.partition("%")[0] if ":" in text else text  # IPv6 zone id
    text = text.rstrip(".")
    address = _address(text)
    if address is not None:
        if address.is_loopback or address.is_unspecified:
            return LOOPBACK
        return str(address)
    if text == LOOPBACK or text.endswith("." + LOOPBACK):
        return LOOPBACK
    if not text.isascii():
        try:
            text = text.encode("idna").decode("ascii")
        except UnicodeError:
            return text
    return text


def same_host(first: str, second: str) -> bool:
    """Whether two host spellings reach the same server (loopback spellings all do)."""
    return canonical_host(first) == canonical_host(second)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine by any spelling."""
    return canonical_host(host) == LOOPBACK


def split_host_port(text: str) -> tuple[str, int | None]:
    """``(host, port)`` of ``host``, ``host:port``, ``[v6]``, ``[v6]:port``, a bare IPv6
    literal or a URL (``https://k8s.corp:6443/``); port None when not given.

    The host is returned as written (not canonical); a port that is not a number in
    0-65535 stays part of the host, so a malformed entry matches nothing.
    """
    value = text.strip()
    if "://" in value:
        value = value.split("://", 1)[1]
    value = value.split("/", 1)[0].rpartition("@")[2]
    if value.startswith("["):
        inside, _, rest = value[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
        port = int(port_text) if _PORT.match(port_text) and int(port_text) <= 65535 else None
        return inside, port
    if value.count(":") == 1:
        name, _, port_text = value.partition(":")
        if _PORT.match(port_text) and int(port_text) <= 65535:
            return name, int(port_text)
    return value, None


@dataclass(frozen=True)
class HostSet:
    """Configured ``host[:port]`` entries, matched by canonical host.

    An entry without a port matches the host on every port.
    """

    entries: frozenset[tuple[str, int | None]]

    @classmethod
    def of(cls, configured: Iterable[str]) -> HostSet:
        entries: set[tuple[str, int | None]] = set()
        for item in configured:
            host, port = split_host_port(item)
            if host:
                entries.add((canonical_host(host), port))
        return cls(frozenset(entries))

    def __contains__(self, destination: object) -> bool:
        if not isinstance(destination, tuple) or len(destination) != 2:
            return False
        host, port = destination
        if not isinstance(host, str):
            return False
        canonical = canonical_host(host)
        return (canonical, port) in self.entries or (canonical, None) in self.entries

    def __bool__(self) -> bool:
        return bool(self.entries)
