"""Host identity: when two spellings of a destination are the same server.

A configured host (``--kube-host 127.0.0.1:6443``, a protected port, a ``host:``
environment selector, a passthrough pattern) must match every spelling a client can
use to reach it, or a request written differently slips past the match:
``localhost``, ``127.1``, ``0x7f.1``, ``2130706433``, ``[::ffff:127.0.0.1]``,
``LOCALHOST.`` all reach the same loopback server. :func:`canonical_host` maps every
spelling to one form, with the semantics the operating system's resolver gives them,
and without DNS:

* IPv4 literals are read as glibc's ``inet_aton`` reads them (``getaddrinfo``, which
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

Names that resolve elsewhere by DNS or ``/etc/hosts`` are not followed (no I/O here,
and no ``socket``: the policy engine, which may do no I/O, matches hosts too).

A leaf module: it imports nothing of guardproxy.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

__all__ = [
    "LOOPBACK",
    "HostPattern",
    "HostSet",
    "canonical_host",
    "host_port",
    "host_spellings",
    "inet_aton",
    "is_loopback",
    "same_host",
    "split_host_port",
]

LOOPBACK = "localhost"
"""The canonical form of every loopback or unspecified address and of ``localhost``."""

_INET_ATON = re.compile(r"^[0-9a-fx.]+$")
_PORT = re.compile(r"^\d{1,5}$")
_PART_LIMITS = (0xFFFFFFFF, 0xFFFFFF, 0xFFFF, 0xFF)
"""The last part's limit by the number of parts before it (``max[]`` in glibc)."""
_WILDCARDS = frozenset("*?[")


def _strtoul(text: str) -> tuple[int, str]:
    """``strtoul(text, &end, 0)`` on text that starts with a digit: the value and the rest.

    Base 0 as C reads it: ``0x`` and at least one hex digit is hexadecimal, a leading
    ``0`` octal, anything else decimal; digits are taken while they are digits of the
    base (``0x`` with no hex digit after it is the number 0, its ``x`` left over).
    """
    if text[:2] in ("0x", "0X") and text[2:3] and text[2] in "0123456789abcdefABCDEF":
        base, digits, start = 16, "0123456789abcdefABCDEF", 2
    elif text.startswith("0"):
        base, digits, start = 8, "01234567", 0
    else:
        base, digits, start = 10, "0123456789", 0
    end = start
    while end < len(text) and text[end] in digits:
        end += 1
    return int(text[start:end], base), text[end:]


def inet_aton(text: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address glibc's ``inet_aton`` reads in the whole of ``text``, or None.

    Follows glibc's ``inet_aton_end`` (sourceware.org glibc, resolv/inet_addr.c): up to
    four parts separated by dots, each starting with a digit and read by ``strtoul``
    with base 0 (hex, octal or decimal); every part but the last at most 255, the last
    filling the bytes left (``127.1`` is 127.0.0.1, ``2130706433`` is one 32-bit
    number). Unlike ``inet_aton``, nothing may follow the address (``getaddrinfo``
    reads numeric hosts with glibc's ``__inet_aton_exact``, which is this).
    ``tests/test_hosts.py`` compares it with the C library's own ``inet_aton``.
    """
    value = 0
    parts = 0
    rest = text
    while True:
        if not rest[:1].isdigit() or not rest[0].isascii():
            return None
        number, rest = _strtoul(rest)
        if number > 0xFFFFFFFF:
            return None
        if not rest.startswith("."):
            break
        if parts > 2 or number > 0xFF:
            return None
        value |= number << (24 - 8 * parts)
        parts += 1
        rest = rest[1:]
    if rest or number > _PART_LIMITS[parts]:
        return None
    return ipaddress.IPv4Address(value | number)


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
        return inet_aton(text)
    return None


def _stripped(host: str) -> str:
    """``host`` lower-cased, without brackets, IPv6 zone id or trailing dots."""
    text = host.strip().lower()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    text = text.partition("%")[0] if ":" in text else text  # IPv6 zone id
    return text.rstrip(".")


def _name(text: str) -> str:
    """A stripped name with its non-ASCII labels IDNA-encoded (unchanged if invalid)."""
    if text.isascii():
        return text
    try:
        return text.encode("idna").decode("ascii")
    except UnicodeError:
        return text


@lru_cache(maxsize=4096)
def canonical_host(host: str) -> str:
    """The one spelling of ``host`` (a name or IP literal, without port) that every
    spelling of the same server maps to; see the module docstring for the rules.

    Never raises: text that is neither an address nor a valid name is returned
    lower-cased and stripped, so it only ever equals itself.
    """
    text = _stripped(host)
    address = _address(text)
    if address is not None:
        if address.is_loopback or address.is_unspecified:
            return LOOPBACK
        return str(address)
    if text == LOOPBACK or text.endswith("." + LOOPBACK):
        return LOOPBACK
    return _name(text)


@lru_cache(maxsize=4096)
def host_spellings(host: str) -> tuple[str, ...]:
    """The forms a host *pattern* is matched against, each once: the name as written
    (lower-cased, stripped, IDNA-encoded: ``api.localhost``), the address of an IP
    literal in its standard text (``127.1`` -> ``127.0.0.1``) and the canonical host.

    A glob names hosts by their text, so it is tried on each: ``127.0.0.*`` matches
    ``127.1`` by its address, ``*.localhost`` matches ``api.localhost`` by its name,
    ``*.corp`` matches ``API.CORP.`` by either.
    """
    text = _stripped(host)
    address = _address(text)
    forms = [_name(text), str(address) if address is not None else "", canonical_host(host)]
    return tuple(dict.fromkeys(form for form in forms if form))


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


@dataclass(frozen=True, slots=True)
class HostPattern:
    """A configured host pattern, ``db.corp``, ``*.corp`` or ``10.0.0.5``, with an
    optional port (``db.corp:5432``, ``*:5432``), matched by every spelling of a host.

    A pattern without wildcards names one host: it matches every spelling of that host
    (``10.0.0.5`` matches ``0x0a.0.0.5``; ``localhost`` matches ``[::1]``). A glob is
    matched against each of :func:`host_spellings`, and (when it gives no port of its
    own) against each with the port. Without a port it matches every port.
    """

    text: str
    """The pattern as configured, lower-cased."""
    host: str
    """Its host part: the canonical host of a literal, the normalised glob otherwise."""
    port: int | None
    glob: re.Pattern[str] | None
    specificity: int
    with_port: bool = False
    """A glob without a port that may match ``host:port`` (it ends in a wildcard or a
    digit): tried on each spelling with the port too."""
    """The number of literal characters: ``db.prod.corp`` is more specific than ``*.corp``
    (environment selectors take the most specific that matches)."""

    @classmethod
    def of(cls, pattern: str) -> HostPattern:
        text = pattern.strip().lower()
        host, port = split_host_port(text)
        literal = len(text) - sum(text.count(c) for c in "*?[]")
        if _WILDCARDS.isdisjoint(host):
            return cls(text, canonical_host(host), port, None, literal)
        glob = _name(_stripped(host))
        with_port = port is None and (glob[-1:] in "*?]" or glob[-1:].isdigit())
        return cls(text, glob, port, re.compile(fnmatch.translate(glob)), literal, with_port)

    @property
    def canonical(self) -> bool:
        """Whether the pattern is written as it is matched (a canonical host or a
        normalised glob, the port as a number): then a canonical host matches it exactly
        when the glob matches the host as written."""
        written, port = split_host_port(self.text)
        return written == self.host and (port is None or self.text.endswith(f":{port}"))

    def matches(self, host: str, port: int | None = None) -> bool:
        """Whether ``host`` (any spelling) on ``port`` is what this pattern names."""
        if self.port is not None and port != self.port:
            return False
        if self.glob is None:
            return canonical_host(host) == self.host
        forms = host_spellings(host)
        if any(self.glob.fullmatch(form) for form in forms):
            return True
        # a glob without a port of its own may name one (`db.corp:54*`, `*5432`)
        return (
            self.with_port
            and port is not None
            and any(self.glob.fullmatch(f"{form}:{port}") for form in forms)
        )


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


def host_port(host: str, port: int) -> str:
    """``host:port``, an IPv6 literal in brackets (``[2001:db8::1]:6443``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
