"""``guardproxy run --enforce`` in root mode: the sandbox's only link leads to the guard.

The guard runs as a throwaway system user; the agent runs in a network namespace whose
only link is a veth pair, and host-side nftables send every TCP connection to the
guard's transparent listener and DNS to its DNS. Ground truth is what arrives: an
echo upstream on the host's loopback (reached by a name the guard resolves), a second
one at an IP literal and port of its own in a network namespace this test creates (a
"remote" host), and a UDP socket there. Every client that ignores the proxy variables
(or is told to) tries a destructive call; each must arrive at the guard and none may
reach an upstream undecided; nothing reaches the remote but what the guard forwarded.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from guardproxy.sandbox.account import guard_account

from .enforce import (
    UPSTREAM_NAME,
    GuardUser,
    enforced_command,
    in_test_namespace,
    leftover_network,
    make_guard_user,
    require_enforce,
    write_hosts,
)
from .guard_fixtures import describe, read_decisions
from .servers import EchoServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

VOLUME = "/v1.43/volumes/prod-data"
REMOTE_NETWORK = ("10.232.77.1", "10.232.77.2")
"""The test's "remote" host: host end and namespace end of its veth pair."""


@pytest.fixture(scope="module")
def guard_user() -> Iterator[GuardUser]:
    yield from make_guard_user()


@pytest.fixture(autouse=True)
def _enforce_available() -> None:
    require_enforce()


# ------------------------------------------------------------------ a remote host


class _Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _RemoteServer

    def _any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.server.received.append(f"{self.command} {self.path}")
        body = json.dumps({"remote": True, "method": self.command}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_DELETE = do_POST = _any  # noqa: N815

    def log_message(self, format: str, *args: object) -> None:
        return


class _RemoteServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int]) -> None:
        self.received: list[str] = []
        super().__init__(address, _Recorder)


class RemoteHost:
    """A network namespace of this test's with an HTTP server and a UDP socket at
    10.232.77.2 (not loopback, not the sessions' range), routed from the host."""

    def __init__(self) -> None:
        token = secrets.token_hex(3)
        self.netns = f"gpe2e-remote-{token}"
        self.host_link, self.inside_link = f"gpr{token}h", f"gpr{token}s"
        self.address = REMOTE_NETWORK[1]
        self.udp_received: list[bytes] = []
        self._stop = threading.Event()

    def __enter__(self) -> RemoteHost:
        host, inside = REMOTE_NETWORK
        for argv in (
            ["ip", "netns", "add", self.netns],
            ["ip", "link", "add", self.host_link, "type", "veth", "peer", "name",
             self.inside_link, "netns", self.netns],
            ["ip", "addr", "add", f"{host}/30", "dev", self.host_link],
            ["ip", "link", "set", self.host_link, "up"],
            ["ip", "-n", self.netns, "addr", "add", f"{inside}/30", "dev", self.inside_link],
            ["ip", "-n", self.netns, "link", "set", self.inside_link, "up"],
            ["ip", "-n", self.netns, "link", "set", "lo", "up"],
        ):  # fmt: skip
            subprocess.run(argv, check=True, capture_output=True, timeout=30)
        with self._inside():  # sockets belong to the namespace they are made in
            self.http = _RemoteServer((self.address, 0))
            self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.udp.bind((self.address, 0))
        self.udp.settimeout(0.2)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        threading.Thread(target=self._udp, daemon=True).start()
        return self

    @contextlib.contextmanager
    def _inside(self) -> Iterator[None]:
        original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(f"/run/netns/{self.netns}", os.O_RDONLY)
        try:
            os.setns(target, os.CLONE_NEWNET)
            yield
        finally:
            os.setns(original, os.CLONE_NEWNET)
            os.close(target)
            os.close(original)

    def _udp(self) -> None:
        while not self._stop.is_set():
            try:
                self.udp_received.append(self.udp.recv(65536))
            except TimeoutError:
                continue
            except OSError:
                return

    @property
    def http_port(self) -> int:
        return int(self.http.server_address[1])

    @property
    def udp_port(self) -> int:
        return int(self.udp.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        with contextlib.suppress(Exception):
            self.http.shutdown()
            self.http.server_close()
        self.udp.close()
        for argv in (["ip", "link", "del", self.host_link], ["ip", "netns", "del", self.netns]):
            subprocess.run(argv, capture_output=True, timeout=30, check=False)


@pytest.fixture
def remote() -> Iterator[RemoteHost]:
    if os.geteuid() != 0:
        pytest.skip("a network namespace for the remote host needs root")
    with RemoteHost() as host:
        yield host


# ----------------------------------------------------------------------- the agent


DRIVER = r"""
import json, os, socket, subprocess, sys
echo, remote, remote_port, udp_port, data_dir, volume = sys.argv[1:7]
by_name = f"http://{echo}{volume}"
literal = f"http://{remote}:{remote_port}{volume}"
def report(name, code, out):
    print(json.dumps({"client": name, "code": code, "out": str(out)[-400:]}), flush=True)
def run(name, argv):
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    report(name, done.returncode, done.stdout + done.stderr)
def attempt(name, fn):
    try:
        report(name, 0, fn())
    except OSError as error:
        report(name, 1, f"{type(error).__name__}: {error}")
unset = ["env", "-u", "HTTPS_PROXY", "-u", "HTTP_PROXY", "-u", "https_proxy", "-u", "http_proxy"]
run("curl-env-unset", [*unset, "curl", "-sS", "-m", "30", "-X", "DELETE", by_name])
run("curl-noproxy-literal", ["curl", "--noproxy", "*", "-sS", "-m", "30", "-X", "DELETE", literal])
run("node-fetch", ["node", "-e",
    f"fetch({by_name!r}, {{method: 'DELETE'}}).then(r => r.text()).then(t => console.log(t))"])
def raw():
    with socket.create_connection((remote, int(remote_port)), timeout=30) as s:
        s.sendall(f"DELETE {volume} HTTP/1.1\r\nHost: {remote}\r\n"
                  "Connection: close\r\n\r\n".encode())
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    return answer.decode()
attempt("python-socket-literal", raw)
run("curl-read-literal", ["curl", "--noproxy", "*", "-sS", "-m", "30", literal])
run("curl-read-by-name", ["curl", "--noproxy", "*", "-sS", "-m", "30", by_name])
run("own-loopback", ["curl", "--noproxy", "*", "-sS", "-m", "10",
                     f"http://127.0.0.1:{echo.rsplit(':', 1)[1]}{volume}"])
attempt("resolve", lambda: socket.gethostbyname(echo.split(":")[0]))
def udp():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.sendto(b"udp-from-the-sandbox", (remote, int(udp_port)))
    return "sent"
attempt("udp", udp)
def unix():
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as x:
        x.connect("/run/dbus/system_bus_socket")
    return "connected"
attempt("unix", unix)
attempt("data-dir", lambda: os.listdir(data_dir))
"""


def _results(stdout: str) -> dict[str, dict[str, object]]:
    found = {}
    for line in stdout.splitlines():
        if line.startswith("{") and '"client"' in line:
            entry = json.loads(line)
            found[entry["client"]] = entry
    return found


def test_every_client_reaches_only_the_guard(
    tmp_path: Path, guard_user: GuardUser, echo_server: EchoServer, remote: RemoteHost
) -> None:
    tmp_path.chmod(0o755)
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    data_dir = tmp_path / "data"
    command = [sys.executable, str(driver), f"{UPSTREAM_NAME}:{echo_server.port}",
               remote.address, str(remote.http_port), str(remote.udp_port), str(data_dir),
               VOLUME]  # fmt: skip
    argv = enforced_command(data_dir, command, "--guard-user", guard_user.name, mode="root")
    argv = in_test_namespace(argv, hosts=write_hosts(tmp_path / "hosts"), guard=guard_user,
                             reachable=[tmp_path])  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUARDPROXY_")}
    env.pop("KUBECONFIG", None)
    env["HOME"] = str(tmp_path)
    proc = subprocess.run(argv, env=env, cwd=tmp_path, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=240, check=False)  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    results = _results(proc.stdout)
    # the destructive calls, by name and by IP literal on a port of its own: held
    for client in ("curl-env-unset", "curl-noproxy-literal", "node-fetch",
                   "python-socket-literal"):  # fmt: skip
        assert "held for human approval" in str(results[client]["out"]), (client, results)
    assert [r for r in echo_server.requests if r.method == "DELETE"] == []
    # the reads went through the guard and arrived, the remote's once
    assert results["curl-read-literal"]["code"] == 0, results
    assert '"remote": true' in str(results["curl-read-literal"]["out"])
    assert results["curl-read-by-name"]["code"] == 0, results
    assert remote.http.received == [f"GET {VOLUME}"]
    assert [r.method for r in echo_server.requests] == ["GET"]
    # the sandbox's own loopback is its own: nothing there, nothing reached the host's
    assert results["own-loopback"]["code"] != 0, results
    # names resolve to the guard's own addresses, never looked up
    assert str(results["resolve"]["out"]).startswith("198.18."), results
    decisions = read_decisions(data_dir)
    held = [d for d in decisions if d.outcome == "hold"]
    assert len(held) == 4 and {d.operation for d in held} == {"volumes.delete"}, decisions
    assert len({d.session_id for d in decisions}) == 1
    assert len([d for d in decisions if d.outcome == "allow"]) == 2, decisions
    # no other way out: no datagram reached the remote, no unix socket, no data
    time.sleep(0.5)
    assert remote.udp_received == []
    assert results["udp"]["code"] == 0  # sent, and dropped on the host side
    assert "Operation not permitted" in str(results["unix"]["out"]), results
    assert results["data-dir"]["out"] == "[]", results
    # the guard ran as its user, whose data directory is closed to everyone else
    info = data_dir.stat()
    assert (info.st_uid, info.st_mode & 0o777) == (guard_user.uid, 0o700)
    assert leftover_network() == []


def test_a_killed_run_leaves_what_the_next_run_removes(
    tmp_path: Path, guard_user: GuardUser
) -> None:
    """SIGKILL gives ``run`` no chance to clean up: the guard stops when its input
    closes, the agent with its parent, the namespace with its last process; the
    nftables table stays until the next root-mode session takes the slot."""
    tmp_path.chmod(0o755)
    hosts = write_hosts(tmp_path / "hosts")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUARDPROXY_")}
    env.pop("XDG_RUNTIME_DIR", None)
    env["TMPDIR"] = str(tmp_path)  # the killed run's run directory stays in here

    def command(data: str, agent: list[str]) -> list[str]:
        argv = enforced_command(tmp_path / data, agent, "--guard-user", guard_user.name,
                                mode="root")  # fmt: skip
        return in_test_namespace(argv, hosts=hosts, guard=guard_user, reachable=[tmp_path])

    run = subprocess.Popen(
        command("data-1", [sys.executable, "-c", "print('ready', flush=True); "
                                                 "import time; time.sleep(120)"]),
        env=env, cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert run.stdout is not None and run.stdout.readline().strip() == "ready"
        assert any(x.startswith("table guardproxy_") for x in leftover_network())
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    deadline = time.monotonic() + 30
    while _uid_processes(guard_user.uid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _uid_processes(guard_user.uid) == [], "the guard stops when run is gone"
    assert any(x.startswith("table guardproxy_") for x in leftover_network())
    again = subprocess.run(command("data-2", ["true"]), env=env, cwd=tmp_path,
                           stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=120, check=False)  # fmt: skip
    assert again.returncode == 0, describe(again)
    assert leftover_network() == []


def _uid_processes(uid: int) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if entry.stat().st_uid == uid:
                    found.append(entry.name)
    return found


def test_the_guard_user_is_created_when_missing() -> None:
    if os.geteuid() != 0:
        pytest.skip("creating a user needs root")
    name = f"gpe2enew{secrets.token_hex(3)}"
    with pytest.raises(KeyError):
        pwd.getpwnam(name)
    try:
        account = guard_account(name)
        entry = pwd.getpwnam(name)
        assert (account.uid, account.gid) == (entry.pw_uid, entry.pw_gid)
        assert account.uid != 0 and entry.pw_shell.endswith(("nologin", "false"))
        assert guard_account(name) == account  # an existing user is used as it is
    finally:
        subprocess.run(["userdel", name], capture_output=True, timeout=60, check=False)
