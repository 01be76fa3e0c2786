"""``guardproxy run --enforce``: nothing leaves the sandbox except through the guard.

Ground truth is what arrives: a logging upstream on the host's loopback records every
request, a UDP listener and a unix-socket server record every datagram and connection.
Inside the sandbox, every client that ignores the proxy variables (or is told to)
tries a destructive call; each one must arrive at the guard (a decision) and none may
reach the upstream undecided. Every address is loopback or inside the sandbox.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from .enforce import UNPRIVILEGED_UID, require_enforce, run_enforced
from .guard_fixtures import describe, read_decisions
from .servers import EchoServer

pytestmark = pytest.mark.slow

VOLUME = "/v1.43/volumes/prod-data"
"""A Docker volume delete: held by the shipped policies (unknown environment)."""

DRIVER = r"""
import json, socket, subprocess, sys
port, udp_port, unix_path, VOLUME = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
url = f"http://127.0.0.1:{port}{VOLUME}"
def run(name, argv):
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    print(json.dumps({"client": name, "code": done.returncode,
                      "out": (done.stdout + done.stderr)[-400:]}), flush=True)
unset = ["env", "-u", "HTTPS_PROXY", "-u", "HTTP_PROXY", "-u", "https_proxy", "-u", "http_proxy"]
run("curl-env-unset", [*unset, "curl", "-sS", "-m", "30", "-X", "DELETE", url])
run("curl-noproxy", ["curl", "--noproxy", "*", "-sS", "-m", "30", "-X", "DELETE", url])
run("node-fetch", ["node", "-e",
    f"fetch({url!r}, {{method: 'DELETE'}}).then(r => r.text()).then(t => console.log(t))"])
raw = (f"DELETE {VOLUME} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n")
try:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(raw.encode())
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    print(json.dumps({"client": "python-socket", "code": 0, "out": answer.decode()[-400:]}))
except OSError as error:
    print(json.dumps({"client": "python-socket", "code": 1, "out": str(error)}))
run("curl-read", ["curl", "--noproxy", "*", "-sS", "-m", "30", url])
run("curl-read-by-name", ["curl", "--noproxy", "*", "-sS", "-m", "30",
                          f"http://localhost:{port}{VOLUME}"])
try:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.sendto(b"udp-from-the-sandbox", ("127.0.0.1", udp_port))
    print(json.dumps({"client": "udp", "code": 0, "out": "sent"}))
except OSError as error:
    print(json.dumps({"client": "udp", "code": 1, "out": str(error)}))
try:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as x:
        x.connect(unix_path)
        x.sendall(b"unix-from-the-sandbox")
    print(json.dumps({"client": "unix", "code": 0, "out": "connected"}))
except OSError as error:
    print(json.dumps({"client": "unix", "code": 1, "out": str(error)}))
"""


class Listeners:
    """A UDP socket and a unix-socket server on the host; whatever reaches them is kept."""

    def __init__(self, directory: Path) -> None:
        self.received: list[bytes] = []
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.udp.settimeout(0.2)
        self.unix_path = directory / "host.sock"
        self.unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.unix.bind(str(self.unix_path))
        os.chmod(self.unix_path, 0o777)
        self.unix.listen()
        self.unix.settimeout(0.2)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._serve, args=(s,), daemon=True)
                         for s in (self.udp, self.unix)]  # fmt: skip

    @property
    def udp_port(self) -> int:
        return int(self.udp.getsockname()[1])

    def _serve(self, sock: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                if sock.type == socket.SOCK_DGRAM:
                    self.received.append(sock.recv(65536))
                else:
                    connection, _ = sock.accept()
                    self.received.append(b"unix connection")
                    connection.close()
            except TimeoutError:
                continue
            except OSError:
                return

    def __enter__(self) -> Listeners:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self.udp.close()
        self.unix.close()


@pytest.fixture
def listeners(tmp_path: Path) -> Iterator[Listeners]:
    with Listeners(tmp_path) as found:
        yield found


@pytest.fixture(autouse=True)
def _enforce_available() -> None:
    require_enforce()


def _results(stdout: str) -> dict[str, dict[str, object]]:
    found = {}
    for line in stdout.splitlines():
        if line.startswith("{") and '"client"' in line:
            entry = json.loads(line)
            found[entry["client"]] = entry
    return found


def _bypasses(tmp_path: Path, echo: EchoServer, listeners: Listeners, user: int | None) -> None:
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    data_dir = tmp_path / "data"
    env = {**os.environ, "HOME": str(tmp_path)}
    env.pop("KUBECONFIG", None)
    proc = run_enforced(
        data_dir,
        [sys.executable, str(driver), str(echo.port), str(listeners.udp_port),
         str(listeners.unix_path), VOLUME],
        env, user=user, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    results = _results(proc.stdout)
    expected = {"curl-env-unset", "curl-noproxy", "node-fetch", "python-socket", "curl-read",
                "curl-read-by-name", "udp", "unix"}  # fmt: skip
    assert set(results) >= expected, describe(proc)
    # the destructive calls: held by the guard, answered with the hold, never upstream
    for client in ("curl-env-unset", "curl-noproxy", "node-fetch", "python-socket"):
        assert "held for human approval" in str(results[client]["out"]), (client, results)
    assert [r for r in echo.requests if r.method == "DELETE"] == []
    # the reads went through the guard and arrived
    assert results["curl-read"]["code"] == 0 and '"method": "GET"' in str(
        results["curl-read"]["out"]
    ), results
    assert results["curl-read-by-name"]["code"] == 0, results
    reads = [r for r in echo.requests if r.method == "GET"]
    assert len(reads) == 2
    decisions = read_decisions(data_dir)
    held = [d for d in decisions if d.outcome == "hold"]
    assert len(held) == 4 and {d.operation for d in held} == {"volumes.delete"}, decisions
    allowed = [d for d in decisions if d.outcome == "allow"]
    assert len(allowed) == len(reads), decisions  # every request that arrived was decided
    # no other way out: the UDP datagram went nowhere, no unix socket could be made
    assert "Operation not permitted" in str(results["unix"]["out"]), results
    assert listeners.received == []


def test_every_client_that_bypasses_the_proxy_reaches_only_the_guard(
    tmp_path: Path, echo_server: EchoServer, listeners: Listeners
) -> None:
    _bypasses(tmp_path, echo_server, listeners, user=None)


def test_the_same_as_an_unprivileged_user(
    tmp_path: Path, echo_server: EchoServer, listeners: Listeners
) -> None:
    """The rootless path, as a user without any privilege (CI runs the suite as root)."""
    _bypasses(tmp_path, echo_server, listeners, user=UNPRIVILEGED_UID)
