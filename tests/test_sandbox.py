"""guardproxy.sandbox pieces on their own: the DNS stub, the filter, the command, preflight."""

from __future__ import annotations

import ipaddress
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from mitmproxy import dns
from mitmproxy.net.dns import types

from guardproxy.namemap import NameAddresses
from guardproxy.sandbox import EnforceUnavailable
from guardproxy.sandbox.helper import FAKE_NETWORK, DnsStub, nft_rules
from guardproxy.sandbox.launch import SandboxSpec, sandbox_command, sandbox_environment
from guardproxy.sandbox.preflight import Tools, find_tools
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
