"""Host identity: every spelling of a destination maps to one canonical host.

``GUARDPROXY_HYPOTHESIS_EXAMPLES=20000`` runs a longer comparison of ``inet_aton`` with
the C library's.
"""

from __future__ import annotations

import ipaddress
import os
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guardproxy.hosts import (
    LOOPBACK,
    HostPattern,
    HostSet,
    canonical_host,
    host_spellings,
    inet_aton,
    is_loopback,
    same_host,
    split_host_port,
)

EXAMPLES = int(os.environ.get("GUARDPROXY_HYPOTHESIS_EXAMPLES", "300"))

LOOPBACK_SPELLINGS = [
    "localhost",
    "LOCALHOST",
    "localhost.",
    "api.localhost",
    "127.0.0.1",
    "127.0.0.1.",
    "127.1",
    "127.0.1",
    "127.9.9.9",
    "0x7f.1",
    "0x7f.0.0.1",
    "0177.0.0.1",
    "2130706433",
    "0x7f000001",
    "::1",
    "[::1]",
    "0:0:0:0:0:0:0:1",
    "::ffff:127.0.0.1",
    "[::ffff:127.0.0.1]",
    "::ffff:7f00:1",
    "0.0.0.0",
    "0",
    "::",
]


@pytest.mark.parametrize("spelling", LOOPBACK_SPELLINGS)
def test_every_loopback_spelling_is_one_host(spelling: str) -> None:
    assert canonical_host(spelling) == LOOPBACK
    assert is_loopback(spelling)
    assert same_host(spelling, "127.0.0.1")


@pytest.mark.parametrize(
    "spelling", ["127.1", "0x7f.1", "0177.0.0.1", "2130706433", "0x7f000001", "10.1", "010.0.0.1"]
)
def test_ipv4_literals_read_as_inet_aton_reads_them(spelling: str) -> None:
    """The resolver behind the proxy's upstream connection reads them this way too."""
    expected = socket.inet_ntoa(socket.inet_aton(spelling))
    assert canonical_host(spelling) == (LOOPBACK if expected.startswith("127.") else expected)


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [
        ("K8S.Corp.", "k8s.corp"),
        ("k8s.corp", "k8s.corp"),
        ("10.0.0.1", "10.0.0.1"),
        ("010.0.0.1", "8.0.0.1"),
        ("10.1", "10.0.0.1"),
        ("[2001:DB8::1]", "2001:db8::1"),
        ("2001:0db8:0000::0001", "2001:db8::1"),
        ("::ffff:10.0.0.1", "10.0.0.1"),
        ("fe80::1%eth0", "fe80::1"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("dead.beef", "dead.beef"),
        ("1e100.net", "1e100.net"),
    ],
)
def test_other_hosts(spelling: str, canonical: str) -> None:
    assert canonical_host(spelling) == canonical


def test_different_hosts_differ() -> None:
    assert not same_host("10.0.0.1", "10.0.0.2")
    assert not same_host("k8s.corp", "k8s.corp.evil")
    assert not same_host("localhost", "10.0.0.1")
    assert not is_loopback("localhost.evil")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:6443", ("127.0.0.1", 6443)),
        ("k8s.corp", ("k8s.corp", None)),
        ("k8s.corp:443", ("k8s.corp", 443)),
        ("[::1]:6443", ("::1", 6443)),
        ("[::1]", ("::1", None)),
        ("::1", ("::1", None)),
        ("https://k8s.corp:6443/", ("k8s.corp", 6443)),
        ("https://user@k8s.corp", ("k8s.corp", None)),
        ("k8s.corp:99999", ("k8s.corp:99999", None)),
    ],
)
def test_split_host_port(text: str, expected: tuple[str, int | None]) -> None:
    assert split_host_port(text) == expected


def test_host_set_matches_every_spelling_on_its_port() -> None:
    hosts = HostSet.of(["127.0.0.1:6443", "K8S.corp", "[::1]:8001"])
    assert ("localhost", 6443) in hosts
    assert ("0x7f.1", 6443) in hosts
    assert ("127.0.0.1", 8001) in hosts  # ::1 and 127.0.0.1 are the same machine
    assert ("k8s.corp.", 1) in hosts  # no port configured: every port
    assert ("localhost", 6444) not in hosts
    assert ("k8s.corp.evil", 443) not in hosts
    assert not HostSet.of([])


def _libc_inet_aton(text: str) -> ipaddress.IPv4Address | None:
    try:
        return ipaddress.IPv4Address(socket.inet_aton(text))
    except (OSError, ValueError):
        return None


@pytest.mark.parametrize(
    "text",
    ["127.1", "0x7f.1", "0177.0.0.1", "2130706433", "0x7f000001", "1.2.3.4", "0", "0x", "08",
     "0x1.0x2.0x3.0x4", "1.2.3.4.5", "256.1", "1.16777215", "1.16777216", "1.2.65535",
     "1.2.65536", "1.2.3.256", "4294967295", "4294967296", "99999999999999999999", "1..2",
     "1.", ".1", "", "0x.1", "00x1", "0xffffffff", "0x100000000", "09", "0.0.0.0", "1.2.3"],
)  # fmt: skip
def test_inet_aton_reads_as_the_c_library_does(text: str) -> None:
    assert inet_aton(text) == _libc_inet_aton(text)


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.text(alphabet="0123456789abcdefxX.", max_size=24))
def test_inet_aton_agrees_with_the_c_library(text: str) -> None:
    """Differential: the pure reading (no ``socket``, so the policy engine may use it)
    against glibc's ``inet_aton`` through Python's socket module, on every string of
    the characters a numeric host can have."""
    assert inet_aton(text) == _libc_inet_aton(text)


def test_host_spellings() -> None:
    assert host_spellings("127.1") == ("127.1", "127.0.0.1", LOOPBACK)
    assert host_spellings("API.localhost.") == ("api.localhost", LOOPBACK)
    assert host_spellings("[::FFFF:10.0.0.1]") == ("::ffff:10.0.0.1", "10.0.0.1")
    assert host_spellings("Bücher.example") == ("xn--bcher-kva.example",)


@pytest.mark.parametrize("spelling", LOOPBACK_SPELLINGS)
def test_a_literal_pattern_matches_every_spelling_of_its_host(spelling: str) -> None:
    for pattern in ("127.0.0.1", "localhost", "[::1]", "::1", "localhost:8080", "LOCALHOST."):
        assert HostPattern.of(pattern).matches(spelling, 8080), pattern


@pytest.mark.parametrize(
    ("pattern", "host", "port", "matches"),
    [
        ("10.0.0.5", "0x0a.0.0.5", 443, True),
        ("10.0.0.5", "10.5", 443, True),  # inet_aton: the last part fills the bytes left
        ("127.0.0.*", "127.1", 1, True),  # a glob on addresses matches by the address
        ("127.0.0.*", "localhost", 1, False),  # ... and a name is not an address
        ("10.0.0.5", "167772165", 443, True),
        ("10.0.0.5", "[::ffff:10.0.0.5]", 443, True),
        ("10.0.0.5", "10.0.0.6", 443, False),
        ("db.prod.corp", "DB.PROD.CORP.", 5432, True),
        ("db.prod.corp:5432", "db.prod.corp", 5433, False),
        ("db.prod.corp:5432", "db.prod.corp.", 5432, True),
        ("*.prod.corp", "API.Prod.Corp.", 1, True),
        ("*.prod.corp", "prod.corp.evil", 1, False),
        ("bücher.example", "XN--BCHER-KVA.example", 1, True),
        ("*.bücher.example", "www.xn--bcher-kva.example.", 1, True),
        ("*.localhost", "api.localhost", 1, True),
        ("*.localhost", "127.0.0.1", 1, False),
        ("k8s.corp", "k8s.corp.evil", 1, False),
    ],
)
def test_host_patterns(pattern: str, host: str, port: int, matches: bool) -> None:
    assert HostPattern.of(pattern).matches(host, port) is matches


def test_pattern_specificity_counts_literal_characters() -> None:
    assert HostPattern.of("db.prod.corp").specificity > HostPattern.of("*.prod.corp").specificity
