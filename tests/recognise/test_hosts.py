"""Host identity: every spelling of a destination maps to one canonical host."""

from __future__ import annotations

import socket

import pytest

from guardproxy.recognise.hosts import (
    LOOPBACK,
    HostSet,
    canonical_host,
    is_loopback,
    same_host,
    split_host_port,
)

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
