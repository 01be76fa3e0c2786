"""guardproxy.sandbox pieces on their own: the DNS stub, the filter, the command, preflight."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from mitmproxy import dns
from mitmproxy.net.dns import types

from guardproxy.namemap import NameAddresses
from guardproxy.sandbox import EnforceUnavailable
from guardproxy.sandbox.account import Account, blocking_directory
from guardproxy.sandbox.helper import FAKE_NETWORK, DnsStub, nft_rules
from guardproxy.sandbox.launch import (
    SandboxSpec,
    host_sockets,
    hosts_file,
    relay_command,
    resolv_conf,
    sandbox_command,
    sandbox_environment,
)
from guardproxy.sandbox.network import BASE_NETWORK, SLOTS, CapturePorts, Slot, capture_rules
from guardproxy.sandbox.preflight import Tools, enforce_mode, find_tools, root_preflight
from guardproxy.sandbox.seccomp import build_filter


def _query(name: str, kind: int) -> bytes:
    message = dns.DNSMessage(
        id=7, query=True, op_code=0, authoritative_answer=False, truncation=False,
        recursion_desired=True, recursion_available=False, reserved=0, response_code=0,
        questions=[dns.Question(name, kind, 1)], answers=[], authorities=[], additionals=[],
    )  # fmt: skip
    return message.packed


def test_the_dns_stub_gives_each_name_its_own_loopback_address() -> None:
    names = NameAddresses(FAKE_NETWORK)
    stub = DnsStub(names)
    first = dns.DNSMessage.unpack(stub.answer(_query("api.example.test", types.A)) or b"")
    again = dns.DNSMessage.unpack(stub.answer(_query("API.example.test", types.A)) or b"")
    other = dns.DNSMessage.unpack(stub.answer(_query("db.example.test", types.A)) or b"")
    address = first.answers[0].ipv4_address
    assert address in FAKE_NETWORK and ipaddress.ip_address(address).is_loopback
    assert again.answers[0].ipv4_address == address
    assert other.answers[0].ipv4_address != address
    assert names.name(str(address)) == "api.example.test"
    # AAAA: no answer, so clients use the captured IPv4 address
    assert (
        dns.DNSMessage.unpack(stub.answer(_query("api.example.test", types.AAAA)) or b"").answers
        == []
    )
    assert stub.answer(b"\x00garbage") is None


def test_the_rules_redirect_all_tcp_and_let_only_dns_and_loopback_udp_out() -> None:
    rules = nft_rules(3128, 3129)
    assert "meta l4proto tcp redirect to :3129" in rules
    assert "ip daddr 127.0.0.1 udp dport 53 accept" in rules
    assert rules.rstrip().endswith("}") and "        drop" in rules


def test_the_seccomp_program_denies_unix_sockets(tmp_path: Path) -> None:
    program = build_filter(tmp_path / "f.bpf")
    assert program.stat().st_size > 100
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        pytest.skip("bubblewrap is not installed")
    code = (
        "import socket\n"
        "socket.socket(socket.AF_INET6).close(); socket.socketpair()\n"
        "for family in (socket.AF_UNIX, 40):\n"  # 40: AF_VSOCK
        "    try: socket.socket(family); print('allowed', family)\n"
        "    except OSError as e: print('denied', family, e.errno)\n"
    )
    with program.open("rb") as handle:
        done = subprocess.run(
            [bwrap, "--dev-bind", "/", "/", "--seccomp", str(handle.fileno()), "--",
             sys.executable, "-c", code],
            pass_fds=(handle.fileno(),), capture_output=True, text=True, timeout=60,
            check=False,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == [
        f"denied {socket.AF_UNIX} 1",
        "denied 40 1",
    ], done.stdout


def test_the_command_hides_the_data_directory_and_keeps_policies_read_only(
    tmp_path: Path,
) -> None:
    data, policies, run = tmp_path / "data", tmp_path / "policies", tmp_path / "run"
    for path in (data, policies, run):
        path.mkdir()
    (data / "guardproxy.db").write_text("")
    spec = SandboxSpec(
        tools=Tools("bwrap", "nft", "ip"), run_dir=run, command=["true"], session_id="s-1",
        token="t", proxy_host="127.0.0.1", proxy_port=1,
        hidden=[data, data / "guardproxy.db"], read_only=[policies],
    )  # fmt: skip
    argv = sandbox_command(spec, run / "helper.json")
    joined = " ".join(argv)
    assert f"--tmpfs {data}" in joined
    assert f"--ro-bind {policies} {policies}" in joined
    assert "/dev/null" not in joined  # a file inside a hidden directory needs no cover
    assert {"--unshare-user", "--unshare-net", "--unshare-pid", "--die-with-parent"} <= set(argv)
    environment = sandbox_environment(
        {"GUARDPROXY_DATA_DIR": str(data), "KEEP": "1", "WHERE": f"{data}/x"},
        {"GUARDPROXY_SESSION": "s-1"},
        [data],
    )
    assert environment == {"KEEP": "1", "GUARDPROXY_SESSION": "s-1"}


def test_preflight_names_the_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(sys.modules["guardproxy.sandbox.preflight"], "SBIN", ())
    with pytest.raises(EnforceUnavailable) as raised:
        find_tools()
    message = str(raised.value)
    assert "apt-get install bubblewrap" in message and "\n" not in message
    assert "cooperative mode, which the agent can bypass" in message


# -- root mode's host-side rules and slots


def test_root_mode_redirects_every_tcp_connection_and_drops_the_rest() -> None:
    slot = Slot(7)
    assert (slot.host_address, slot.client_address) == ("10.231.0.29", "10.231.0.30")
    rules = capture_rules(slot, CapturePorts(proxy=4001, transparent=4002, dns_tcp=4003,
                                             dns_udp=4004))  # fmt: skip
    link = 'iifname "gp7h" ip saddr 10.231.0.30'
    lines = [line.strip() for line in rules.splitlines()]
    capture = lines[lines.index("chain capture {") + 1 : lines.index("chain guard_input {")]
    # the proxy listener passes as it is, DNS goes to the guard's DNS, all other TCP to
    # its transparent listener (in this order: nft stops at the first verdict)
    assert capture[1:5] == [
        f"{link} ip daddr 10.231.0.29 tcp dport 4001 return",
        f"{link} udp dport 53 redirect to :4004",
        f"{link} tcp dport 53 redirect to :4003",
        f"{link} meta l4proto tcp redirect to :4002",
    ]
    assert f"{link} ip daddr 10.231.0.29 udp dport 4004 accept" in lines
    assert 'iifname "gp7h" drop' in lines  # anything else, from any address, IPv6 too
    assert 'oifname "gp7h" drop' in lines  # and nothing is forwarded either way
    assert len(Slot(SLOTS - 1).host_link) <= 15  # Linux's limit for interface names
    assert Slot(SLOTS - 1).subnet.subnet_of(BASE_NETWORK)


# -- the relay


RELAYED_AGENT = r"""
import os, signal, sys, time
if sys.argv[1] == "handled":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(7))
print(sorted(int(fd) for fd in os.listdir("/proc/self/fd")), flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize(("how", "expected"), [("handled", 7), ("default", 128 + 15)])
def test_the_relay_passes_run_s_signals_to_the_agent(
    tmp_path: Path, how: str, expected: int
) -> None:
    agent = tmp_path / "agent.py"
    agent.write_text(RELAYED_AGENT)
    read_fd, write_fd = os.pipe()
    relay = subprocess.Popen(
        [*relay_command(), str(read_fd), "--", sys.executable, str(agent), how],
        pass_fds=(read_fd,), stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    os.close(read_fd)
    try:
        assert relay.stdout is not None
        agent_fds = json.loads(relay.stdout.readline())
        assert read_fd not in agent_fds  # the agent does not get run's pipe
        relay.send_signal(signal.SIGINT)  # a terminal's, to the relay only: ignored
        time.sleep(0.3)
        assert relay.poll() is None
        os.write(write_fd, bytes([signal.SIGTERM]))
        assert relay.wait(timeout=30) == expected
    finally:
        os.close(write_fd)
        if relay.poll() is None:
            relay.kill()
            relay.wait()


def test_the_sandbox_names_only_this_machine() -> None:
    text = hosts_file()
    assert text.splitlines()[0].startswith("127.0.0.1 localhost")
    assert {line.split()[0] for line in text.splitlines()} == {"127.0.0.1", "::1"}
    assert resolv_conf("10.231.0.1") == "nameserver 10.231.0.1\noptions ndots:0\n"


# -- --allow-unix-sockets


def test_every_unix_socket_this_machine_listens_on_is_found(tmp_path: Path) -> None:
    (tmp_path / "hidden").mkdir()
    listening = []
    for path in (tmp_path / "agent.sock", tmp_path / "hidden" / "guard.sock"):
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(path))
        server.listen()
        listening.append(server)
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    abstract.bind(b"\0guardproxy-test-abstract")
    abstract.listen()
    try:
        found = host_sockets([tmp_path / "hidden"])
    finally:
        for server in [*listening, abstract]:
            server.close()
    assert str(tmp_path / "agent.sock") in found
    assert str(tmp_path / "hidden" / "guard.sock") not in found  # hidden with its directory
    assert not [p for p in found if "abstract" in p]  # in its own network namespace
    nobody = Account("nobody", 65534, 65534, [65534])
    tmp_path.chmod(0o700)
    if os.geteuid() == 0:  # then another user cannot reach it, so it needs no cover
        assert str(tmp_path / "agent.sock") not in host_sockets([], nobody)


def test_the_unix_socket_filter_allows_them(tmp_path: Path) -> None:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        pytest.skip("bubblewrap is not installed")
    program = build_filter(tmp_path / "f.bpf", allow_unix=True)
    code = "import socket\nsocket.socket(socket.AF_UNIX).close()\nsocket.socket(40)\n"
    with program.open("rb") as handle:
        done = subprocess.run(
            [bwrap, "--dev-bind", "/", "/", "--seccomp", str(handle.fileno()), "--",
             sys.executable, "-c", code],
            pass_fds=(handle.fileno(),), capture_output=True, text=True, timeout=60,
            check=False,
        )  # fmt: skip
    assert done.returncode != 0 and "Operation not permitted" in done.stderr  # vsock still not
    assert "socket(40)" in done.stderr or "line 3" in done.stderr, done.stderr


# -- which mode, and root mode's checks


def test_the_mode_follows_the_request_and_what_this_process_may_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    preflight_module = sys.modules["guardproxy.sandbox.preflight"]  # the package's name
    monkeypatch.setattr(preflight_module, "effective_capabilities", lambda: 1 << 12)
    assert enforce_mode("auto", attached=False) == "root"
    assert enforce_mode("auto", attached=True) == "rootless"  # a running guard's: rootless
    assert enforce_mode("rootless", attached=False) == "rootless"
    with pytest.raises(EnforceUnavailable) as raised:
        enforce_mode("root", attached=True)
    assert "\n" not in str(raised.value) and "--enforce-mode rootless" in str(raised.value)
    monkeypatch.setattr(preflight_module, "effective_capabilities", lambda: 0)
    assert enforce_mode("auto", attached=False) == "rootless"
    with pytest.raises(EnforceUnavailable) as missing:
        root_preflight(agent_is_root=True)
    assert "CAP_NET_ADMIN" in str(missing.value) and "sudo" in str(missing.value)


def test_a_directory_another_user_cannot_enter_is_named() -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as base:  # not under pytest's 0700 one
        closed = Path(base) / "closed"
        (closed / "data").mkdir(parents=True)
        os.chmod(base, 0o755)
        closed.chmod(0o700)
        stranger = Account("stranger", 65534, 65534, [65534])
        assert blocking_directory(closed / "data", stranger) == closed
        owner = Account("owner", os.getuid(), os.getgid(), [os.getgid()])
        assert blocking_directory(closed / "data", owner) is None
        closed.chmod(0o711)
        assert blocking_directory(closed / "data", stranger) is None
