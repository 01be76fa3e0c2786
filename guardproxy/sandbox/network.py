"""Root mode: an enforced session's network namespace, veth pair and nftables rules.

Started as root, ``guardproxy run --enforce`` gives the session a network namespace of
its own whose only link is a veth pair to the host: the sandbox end has one address
(10.231.N.2/30) and a default route to the host end (10.231.N.1). On the host, in a
table of the session's own (``inet guardproxy_N``), nftables

* redirect every TCP connection arriving from the veth to the guard's transparent
  listener (mitmproxy reads the original destination with ``SO_ORIGINAL_DST``), except
  those to the guard's proxy listener (``HTTP(S)_PROXY`` inside point there);
* redirect DNS (UDP and TCP port 53, to any address) to the guard's DNS listener;
* drop everything else the veth carries: other UDP, ICMP, IPv6, anything from another
  source address, and anything the host would forward.

The rules live in the host's namespace, where nothing in the sandbox has any
capability; the sandbox's namespace belongs to the host's user namespace, so the agent
(in a user namespace of its own, without capabilities) cannot change its address or
routes either. Every session takes a slot N, held by a lock in /run/guardproxy for
as long as it runs: whatever a slot's previous holder left behind (a killed ``run``)
is removed before the slot is used again, and everything is removed when the session
ends, on failure too.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from guardproxy.sandbox.preflight import EnforceUnavailable, Tools

BASE_NETWORK = ipaddress.IPv4Network("10.231.0.0/16")
"""The sessions' addresses: a /30 each."""
SLOTS = BASE_NETWORK.num_addresses // 4
STATE_DIR = Path("/run/guardproxy")
NETNS_DIR = Path("/run/netns")
NETNS_PREFIX = "guardproxy-"
TABLE_PREFIX = "guardproxy_"
_OWN_LINK = re.compile(r"^gp\d+h$")
COMMAND_TIMEOUT = 20.0


@dataclass(frozen=True)
class CapturePorts:
    """The guard's listeners on the host end of the veth pair."""

    proxy: int
    transparent: int
    dns_tcp: int
    dns_udp: int


@dataclass(frozen=True)
class Slot:
    """Session slot N: its names and addresses."""

    index: int

    @property
    def netns(self) -> str:
        return f"{NETNS_PREFIX}{self.index}"

    @property
    def host_link(self) -> str:
        return f"gp{self.index}h"

    @property
    def sandbox_link(self) -> str:
        return f"gp{self.index}s"

    @property
    def table(self) -> str:
        return f"{TABLE_PREFIX}{self.index}"

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network((int(BASE_NETWORK.network_address) + 4 * self.index, 30))

    @property
    def host_address(self) -> str:
        return str(self.subnet.network_address + 1)

    @property
    def client_address(self) -> str:
        return str(self.subnet.network_address + 2)


def capture_rules(slot: Slot, ports: CapturePorts) -> str:
    """The host-side ruleset of one session (nft syntax)."""
    link, host, client = slot.host_link, slot.host_address, slot.client_address
    return f"""
table inet {slot.table} {{
    chain capture {{
        type nat hook prerouting priority dstnat; policy accept;
        iifname "{link}" ip saddr {client} ip daddr {host} tcp dport {ports.proxy} return
        iifname "{link}" ip saddr {client} udp dport 53 redirect to :{ports.dns_udp}
        iifname "{link}" ip saddr {client} tcp dport 53 redirect to :{ports.dns_tcp}
        iifname "{link}" ip saddr {client} meta l4proto tcp redirect to :{ports.transparent}
    }}
    chain guard_input {{
        type filter hook input priority filter; policy accept;
        iifname "{link}" ip saddr {client} ip daddr {host} tcp dport {{ {ports.proxy}, {ports.transparent}, {ports.dns_tcp} }} accept
        iifname "{link}" ip saddr {client} ip daddr {host} udp dport {ports.dns_udp} accept
        iifname "{link}" drop
    }}
    chain no_forwarding {{
        type filter hook forward priority filter; policy accept;
        iifname "{link}" drop
        oifname "{link}" drop
    }}
}}
"""  # noqa: E501


def _run(argv: list[str], *, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, input=stdin, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
    )


def _must(argv: list[str], *, stdin: str | None = None) -> None:
    done = _run(argv, stdin=stdin)
    if done.returncode != 0:
        reason = " ".join(done.stderr.split()) or f"exit code {done.returncode}"
        raise EnforceUnavailable(
            f"--enforce (root mode): `{' '.join(argv)}` failed ({reason}); check that this "
            "kernel has network namespaces, veth and nf_tables, or use --enforce-mode rootless"
        )


def _foreign_routes(tools: Tools) -> list[str]:
    """Routes of this machine into BASE_NETWORK that are not guardproxy's own."""
    done = _run([tools.ip, "-j", "-4", "route", "show", "table", "all"])
    if done.returncode != 0:
        return []
    try:
        routes = json.loads(done.stdout or "[]")
    except ValueError:
        return []
    found = []
    for route in routes:
        destination = str(route.get("dst", ""))
        if destination in ("", "default"):
            continue
        try:
            network = ipaddress.IPv4Network(destination, strict=False)
        except ValueError:
            continue
        if network.overlaps(BASE_NETWORK) and not _OWN_LINK.match(str(route.get("dev", ""))):
            found.append(f"{destination} dev {route.get('dev', '?')}")
    return found


class SessionNetwork:
    """One session's namespace, veth pair and rules; ``with`` tears them all down."""

    def __init__(self, tools: Tools, state_dir: Path = STATE_DIR) -> None:
        self.tools = tools
        self._state_dir = state_dir
        self._lock: int | None = None
        self.slot: Slot | None = None

    @property
    def netns_path(self) -> Path:
        assert self.slot is not None
        return NETNS_DIR / self.slot.netns

    def __enter__(self) -> SessionNetwork:
        try:
            self.open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        """Take a free slot and build its namespace and veth pair (no rules yet)."""
        foreign = _foreign_routes(self.tools)
        if foreign:
            raise EnforceUnavailable(
                f"--enforce (root mode) gives sessions addresses in {BASE_NETWORK}, which "
                f"this machine already routes ({foreign[0]}); free that range or use "
                "--enforce-mode rootless"
            )
        self._take_slot()
        slot = self.slot
        assert slot is not None
        ip = self.tools.ip
        _must([ip, "netns", "add", slot.netns])
        _must([ip, "link", "add", slot.host_link, "type", "veth", "peer", "name",
               slot.sandbox_link, "netns", slot.netns])  # fmt: skip
        _must([ip, "addr", "add", f"{slot.host_address}/30", "dev", slot.host_link])
        _must([ip, "link", "set", slot.host_link, "up"])
        inside = [ip, "-n", slot.netns]
        _must([*inside, "link", "set", slot.sandbox_link, "name", "eth0"])
        _must([*inside, "addr", "add", f"{slot.client_address}/30", "dev", "eth0"])
        _must([*inside, "link", "set", "eth0", "up"])
        _must([*inside, "link", "set", "lo", "up"])
        _must([*inside, "route", "add", "default", "via", slot.host_address])

    def capture(self, ports: CapturePorts) -> None:
        """Install the session's rules: from here on the sandbox reaches only the guard."""
        assert self.slot is not None
        _must([self.tools.nft, "-f", "-"], stdin=capture_rules(self.slot, ports))

    def close(self) -> None:
        """Remove the rules, the veth pair and the namespace; release the slot."""
        if self.slot is not None:
            _remove(self.tools, self.slot)
            self.slot = None
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def _take_slot(self) -> None:
        slots = self._state_dir / "slots"
        slots.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self._state_dir, 0o700)
        _remove_stale(self.tools, slots)
        for index in range(SLOTS):
            fd = os.open(slots / f"{index}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self._lock, self.slot = fd, Slot(index)
            _remove(self.tools, self.slot)  # a previous holder's leftovers
            return
        raise EnforceUnavailable(
            f"--enforce (root mode): all {SLOTS} session networks are in use; end some "
            "sessions or use --enforce-mode rootless"
        )


def _remove(tools: Tools, slot: Slot) -> None:
    """Remove whatever exists of ``slot``'s rules, link and namespace (best effort: each
    step is independent, and a missing piece is not an error)."""
    _run([tools.nft, "delete", "table", "inet", slot.table])
    _run([tools.ip, "link", "del", slot.host_link])
    _run([tools.ip, "netns", "del", slot.netns])


def _remove_stale(tools: Tools, slots: Path) -> None:
    """Remove the leftovers of sessions whose ``run`` is gone (their slot is unlocked)."""
    indexes: set[int] = set()
    with contextlib.suppress(OSError):
        indexes |= {
            int(name.removeprefix(NETNS_PREFIX))
            for name in os.listdir(NETNS_DIR)
            if name.startswith(NETNS_PREFIX) and name.removeprefix(NETNS_PREFIX).isdigit()
        }
    done = _run([tools.nft, "-j", "list", "tables"])
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        for item in json.loads(done.stdout or "{}").get("nftables", []):
            name = str(item.get("table", {}).get("name", ""))
            if name.startswith(TABLE_PREFIX) and name.removeprefix(TABLE_PREFIX).isdigit():
                indexes.add(int(name.removeprefix(TABLE_PREFIX)))
    for index in sorted(i for i in indexes if 0 <= i < SLOTS):
        with _unlocked(slots / f"{index}.lock") as free:
            if free:
                _remove(tools, Slot(index))


@contextlib.contextmanager
def _unlocked(path: Path) -> Iterator[bool]:
    """Whether nobody holds ``path``'s lock (held by us meanwhile)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def leftovers(tools: Tools) -> list[str]:
    """guardproxy's namespaces, links and tables that exist now (tests, diagnostics)."""
    found: list[str] = []
    with contextlib.suppress(OSError):
        found += [f"netns {n}" for n in os.listdir(NETNS_DIR) if n.startswith(NETNS_PREFIX)]
    links = _run([tools.ip, "-j", "link", "show"])
    with contextlib.suppress(ValueError, TypeError):
        found += [
            f"link {link['ifname']}"
            for link in json.loads(links.stdout or "[]")
            if _OWN_LINK.match(str(link.get("ifname", "")))
        ]
    tables = _run([tools.nft, "-j", "list", "tables"])
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        found += [
            f"table {item['table']['name']}"
            for item in json.loads(tables.stdout or "{}").get("nftables", [])
            if str(item.get("table", {}).get("name", "")).startswith(TABLE_PREFIX)
        ]
    return found


__all__ = [
    "BASE_NETWORK",
    "CapturePorts",
    "SessionNetwork",
    "Slot",
    "capture_rules",
    "leftovers",
]
