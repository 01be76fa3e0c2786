"""The guard on the wire: real mitmproxy, real sockets, recording upstreams.

Each test starts guardproxy on ephemeral loopback ports with the shipped policies
(plus one deny rule) and treats the echo upstream as a Kubernetes API server, so a
DELETE of namespace `prod` is held and a GET is allowed.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypercorn.asyncio import serve
from hypercorn.config import Config
from policy_helpers import DENY_RULE

from guardproxy.config import ProxyConfig
from guardproxy.control.client import ControlClient
from guardproxy.server import BackgroundGuardproxy
from guardproxy.store import open_store

from ._http import GUARD_AGENT
from .approvers import OnCall
from .conftest import require_binary
from .pki import PkiFiles
from .servers import EchoServer

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE_PROD = "/api/v1/namespaces/prod"


def make_bundle(tmp_path: Path) -> Path:
    bundle = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", bundle)
    (bundle / "test-extra.yaml").write_text(DENY_RULE)
    return bundle


class Guard:
    """A running guardproxy plus helpers to talk through it and to it."""

    def __init__(self, background: BackgroundGuardproxy, config: ProxyConfig) -> None:
        self.background = background
        self.config = config
        service = background.service
        assert service.proxy is not None and service.control is not None
        self.port = service.proxy.port
        self.control = ControlClient(
            f"http://127.0.0.1:{service.control.port}",
            config.control_token_file.read_text().strip(),
        )
        self.proxy_url = f"http://127.0.0.1:{self.port}"
        self.on_call = OnCall(service.store, self.control.url)

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(proxy=self.proxy_url, timeout=15, **kwargs)

    def approve(self, hold_id: str, approve: bool = True) -> dict[str, Any]:
        if approve:
            return self.on_call.approve(hold_id, reason="test")
        return self.on_call.deny(hold_id, reason="test")

    def holds(self, state: str = "all") -> list[dict[str, Any]]:
        return self.on_call.clients["alice"].holds(state)


def start_guard(tmp_path: Path, upstream: EchoServer | Http2Upstream, **overrides: Any) -> Guard:
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "policies": make_bundle(tmp_path),
        "listen": "127.0.0.1:0",
        "control": "127.0.0.1:0",
        "hold_window_seconds": 2,
        "kubernetes_hosts": [f"127.0.0.1:{upstream.port}"],
    }
    values.update(overrides)
    config = ProxyConfig.model_validate(values)
    return Guard(BackgroundGuardproxy(config).start(), config)


@pytest.fixture
def guard(tmp_path: Path, echo_server: EchoServer) -> Iterator[Guard]:
    running = start_guard(tmp_path, echo_server)
    yield running
    running.background.stop()


def deletes(upstream: EchoServer) -> int:
    return len(upstream.log.matching("DELETE"))


# -- allow, deny, hold


def test_an_allowed_read_is_forwarded_untouched(guard: Guard, echo_server: EchoServer) -> None:
    headers = {"Authorization": "Bearer secret-token", "X-Custom": "kept"}
    with guard.client() as client:
        response = client.get(f"{echo_server.url}{NAMESPACE_PROD}", headers=headers)
    assert response.status_code == 200
    (seen,) = echo_server.requests
    assert seen.header("authorization") == "Bearer secret-token"
    assert seen.header("x-custom") == "kept"
    assert seen.header("proxy-authorization") is None


def test_a_denial_is_a_kubernetes_status_and_never_reaches_upstream(
    guard: Guard, echo_server: EchoServer
) -> None:
    with guard.client() as client:
        response = client.delete(f"{echo_server.url}/api/v1/namespaces/dev/configmaps/forbidden")
    assert response.status_code == 403
    status = response.json()
    assert status["kind"] == "Status" and status["reason"] == "Forbidden"
    assert "The configmap forbidden may not be touched." in status["message"]
    assert response.headers["X-Guardproxy-Decision"] == "deny"
    assert response.headers["X-Guardproxy-Id"].startswith("d-")
    assert echo_server.requests == []


def test_a_hold_waits_then_answers_with_the_hold_id(guard: Guard, echo_server: EchoServer) -> None:
    started = time.monotonic()
    with guard.client() as client:
        response = client.delete(f"{echo_server.url}{NAMESPACE_PROD}")
    waited = time.monotonic() - started
    assert 1.8 < waited < 5
    assert response.status_code == 403
    hold_id = response.headers["X-Guardproxy-Id"]
    assert response.headers["X-Guardproxy-Decision"] == "hold"
    message = response.json()["message"]
    assert f"held for human approval (hold {hold_id})" in message
    assert "Do not retry it in another form" in message
    assert "retry exactly the same call once it is approved" in message
    assert deletes(echo_server) == 0
    (hold,) = guard.holds("pending")
    assert hold["id"] == hold_id


def test_approval_releases_the_live_request_at_once_while_others_flow(
    tmp_path: Path, echo_server: EchoServer
) -> None:
    guard = start_guard(tmp_path, echo_server, hold_window_seconds=10)
    try:
        result: dict[str, Any] = {}

        def held_delete() -> None:
            with guard.client() as client:
                response = client.delete(f"{echo_server.url}{NAMESPACE_PROD}")
            result["status"] = response.status_code
            result["done"] = time.monotonic()

        thread = threading.Thread(target=held_delete)
        thread.start()
        deadline = time.monotonic() + 5
        while not guard.holds("pending") and time.monotonic() < deadline:
            time.sleep(0.05)
        (hold,) = guard.holds("pending")
        # another session's reads keep flowing while the delete is held
        with guard.client() as other:
            for _ in range(5):
                assert other.get(f"{echo_server.url}/api/v1/namespaces").status_code == 200
        assert deletes(echo_server) == 0
        approved_at = time.monotonic()
        guard.approve(hold["id"])
        thread.join(10)
        assert result["status"] == 200
        assert result["done"] - approved_at < 1.0
        assert deletes(echo_server) == 1
    finally:
        guard.background.stop()


def test_retries_join_the_hold_and_approval_releases_the_next_identical_request_once(
    guard: Guard, echo_server: EchoServer
) -> None:
    url = f"{echo_server.url}{NAMESPACE_PROD}"
    with guard.client() as client:
        first = client.delete(url)
        retry = client.delete(url)
        assert retry.headers["X-Guardproxy-Id"] == first.headers["X-Guardproxy-Id"]
        assert len(guard.holds()) == 1
        guard.approve(first.headers["X-Guardproxy-Id"])
        # a different request is not covered by the approval
        other = client.delete(f"{echo_server.url}/api/v1/namespaces/prod-two")
        assert other.status_code == 403
        assert client.delete(url).status_code == 200
        assert deletes(echo_server) == 1
        again = client.delete(url)
    assert again.status_code == 403
    assert again.headers["X-Guardproxy-Id"] != first.headers["X-Guardproxy-Id"]
    assert deletes(echo_server) == 1


def test_a_denied_hold_answers_its_retries_with_the_same_denial(
    guard: Guard, echo_server: EchoServer
) -> None:
    url = f"{echo_server.url}{NAMESPACE_PROD}"
    with guard.client() as client:
        hold_id = client.delete(url).headers["X-Guardproxy-Id"]
        guard.approve(hold_id, approve=False)
        started = time.monotonic()
        retry = client.delete(url)
    assert time.monotonic() - started < 1.5  # answered at once, not held again
    assert retry.status_code == 403
    assert retry.headers["X-Guardproxy-Decision"] == "deny"
    assert retry.headers["X-Guardproxy-Id"] == hold_id
    assert "a human denied this request" in retry.json()["message"]
    assert deletes(echo_server) == 0


# -- no bypass by trickery


def test_the_host_header_does_not_choose_the_destination(
    guard: Guard, echo_server: EchoServer
) -> None:
    """Claiming to be an allowed model API does not make a Kubernetes delete allowed."""
    with guard.client() as client:
        response = client.delete(
            f"{echo_server.url}{NAMESPACE_PROD}", headers={"Host": "api.anthropic.com"}
        )
    assert response.status_code == 403
    assert response.headers["X-Guardproxy-Decision"] == "hold"
    assert deletes(echo_server) == 0


def _connect(proxy_port: int, target: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy_port), timeout=10)
    sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    reply = b""
    while b"\r\n\r\n" not in reply:
        reply += sock.recv(4096)
    assert reply.startswith(b"HTTP/1.1 200"), reply
    return sock


def _raw_request(tls: ssl.SSLSocket, method: str, path: str, host: str) -> bytes:
    tls.sendall(f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while chunk := tls.recv(65536):
        data += chunk
    return data


def test_a_spoofed_sni_is_not_passed_through(
    tmp_path: Path, pki_files: PkiFiles, tls_echo_server: EchoServer
) -> None:
    """CONNECT to the guarded server with SNI naming a passthrough host is intercepted."""
    guard = start_guard(
        tmp_path, tls_echo_server, passthrough_hosts=["api.anthropic.com"],
        upstream_ca_files=[pki_files.ca_cert],
    )  # fmt: skip
    try:
        sock = _connect(guard.port, f"127.0.0.1:{tls_echo_server.port}")
        context = ssl.create_default_context(
            cafile=str(guard.config.ca_dir / "mitmproxy-ca-cert.pem")
        )
        with context.wrap_socket(sock, server_hostname="api.anthropic.com") as tls:
            reply = _raw_request(tls, "DELETE", NAMESPACE_PROD, "api.anthropic.com")
        assert reply.startswith(b"HTTP/1.1 403"), reply[:200]
        assert b"x-guardproxy-decision: hold" in reply.lower()
        assert tls_echo_server.requests == []
    finally:
        guard.background.stop()


def test_a_passthrough_host_is_tunnelled_when_sni_matches(
    tmp_path: Path, pki_files: PkiFiles, tls_echo_server: EchoServer
) -> None:
    guard = start_guard(tmp_path, tls_echo_server, passthrough_hosts=["localhost"])
    try:
        sock = _connect(guard.port, f"localhost:{tls_echo_server.port}")
        # the upstream's own certificate reaches the client: nothing was intercepted
        context = ssl.create_default_context(cafile=str(pki_files.ca_cert))
        with context.wrap_socket(sock, server_hostname="localhost") as tls:
            reply = _raw_request(tls, "GET", "/hello", "localhost")
        assert reply.startswith(b"HTTP/1.")
        assert b"x-guardproxy" not in reply.lower()
    finally:
        guard.background.stop()


def test_a_large_body_is_buffered_and_held_not_streamed(
    guard: Guard, echo_server: EchoServer
) -> None:
    body = b"x" * (3 * 1024 * 1024)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    with guard.client() as client:
        sized = client.request("DELETE", f"{echo_server.url}{NAMESPACE_PROD}", content=body)
        chunked = client.request("DELETE", f"{echo_server.url}{NAMESPACE_PROD}", content=chunks())
    assert sized.status_code == 403 and chunked.status_code == 403
    assert echo_server.requests == []


def test_an_oversized_body_is_refused_natively_and_never_sent(
    tmp_path: Path, echo_server: EchoServer
) -> None:
    guard = start_guard(tmp_path, echo_server, max_body_bytes=65536)
    try:
        with guard.client() as client:
            response = client.post(
                f"{echo_server.url}/api/v1/namespaces/dev/configmaps", content=b"{" * 100_000
            )
            chunked = client.post(
                f"{echo_server.url}/api/v1/namespaces/dev/configmaps",
                content=iter([b"{" * 60_000, b"{" * 60_000]),
            )
        assert response.status_code == 403
        assert response.json()["kind"] == "Status"
        assert "over the 65536-byte limit" in response.json()["message"]
        assert chunked.status_code in (403, 413)
        assert echo_server.requests == []
    finally:
        guard.background.stop()


def test_the_control_api_is_unreachable_through_the_proxy(guard: Guard) -> None:
    with guard.client() as client:
        response = client.get(f"{guard.control.url}/v1/holds")
    assert response.status_code == 403
    assert "cannot reach guardproxy's own control API" in response.json()["message"]


def test_a_wrong_session_credential_is_refused(guard: Guard, echo_server: EchoServer) -> None:
    proxy = f"http://s-nope:wrong@127.0.0.1:{guard.port}"
    with httpx.Client(proxy=proxy, timeout=10) as client:
        response = client.get(f"{echo_server.url}/api/v1/namespaces")
    assert response.status_code == 407
    assert echo_server.requests == []


def test_a_session_credential_attributes_decisions(tmp_path: Path, echo_server: EchoServer) -> None:
    guard = start_guard(tmp_path, echo_server)
    try:
        created = guard.control.call("POST", "/v1/sessions", {"name": "t", "command": ["claude"]})
        assert created["agent"] == "claude-code"
        proxy = f"http://{created['id']}:{created['token']}@127.0.0.1:{guard.port}"
        with httpx.Client(proxy=proxy, timeout=10) as client:
            assert client.get(f"{echo_server.url}/api/v1/namespaces").status_code == 200
    finally:
        guard.background.stop()
    store = open_store(str(guard.config.data_dir / "guardproxy.db"))
    try:
        (record,) = store.list_decisions(session_id=created["id"])
    finally:
        store.close()
    assert record.outcome == "allow"
    assert json.loads(record.decision_json)["determining_rules"] == ["common/allow-reads"]


# -- the connection lives as long as the hold


def test_idle_timeout_does_not_kill_a_held_request(tmp_path: Path, echo_server: EchoServer) -> None:
    guard = start_guard(tmp_path, echo_server, tcp_timeout_seconds=1, hold_window_seconds=3)
    try:
        started = time.monotonic()
        with guard.client() as client:
            response = client.delete(f"{echo_server.url}{NAMESPACE_PROD}")
        assert response.status_code == 403
        assert response.headers["X-Guardproxy-Decision"] == "hold"
        assert time.monotonic() - started > 2.5
    finally:
        guard.background.stop()


def test_responses_stream(guard: Guard, echo_server: EchoServer) -> None:
    """Server-sent events arrive as sent, not when the response ends (watch, logs -f)."""
    with guard.client() as client:
        started = time.monotonic()
        with client.stream("GET", f"{echo_server.url}/sse") as response:
            chunks = response.iter_raw()
            first = next(chunks)
            first_at = time.monotonic() - started
            rest = b"".join(chunks)
        total = time.monotonic() - started
    assert b"data:" in first
    assert first_at < 0.4 < total
    assert (first + rest).count(b"data:") == 3


class Http2Upstream:
    """An HTTPS upstream that speaks HTTP/2 (hypercorn), recording what reached it."""

    def __init__(self, pki_files: PkiFiles) -> None:
        config = Config()
        self.port = _free_port()
        config.bind = [f"127.0.0.1:{self.port}"]
        config.certfile = str(pki_files.server_cert)
        config.keyfile = str(pki_files.server_key)
        config.alpn_protocols = ["h2", "http/1.1"]
        self.methods: list[str] = []
        self.versions: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._config = config
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)

    def _run(self) -> None:
        app: Any = self._app
        self._loop.run_until_complete(serve(app, self._config, shutdown_trigger=self._stop.wait))

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        agent = dict(scope["headers"]).get(b"user-agent", b"").decode("latin-1")
        if GUARD_AGENT not in agent:  # the guard's impact preview is not the agent's traffic
            self.methods.append(scope["method"])
            self.versions.append(scope["http_version"])
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})  # fmt: skip
        await send({"type": "http.response.body", "body": b"{}"})

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_http2_end_to_end(tmp_path: Path, pki_files: PkiFiles) -> None:
    require_binary("curl")
    upstream = Http2Upstream(pki_files)
    guard = start_guard(
        tmp_path, upstream, upstream_ca_files=[pki_files.ca_cert],
        kubernetes_hosts=[f"localhost:{upstream.port}"],
    )  # fmt: skip
    try:
        ca = str(guard.config.ca_dir / "mitmproxy-ca-cert.pem")
        base = f"https://localhost:{upstream.port}"

        def curl(method: str, path: str) -> tuple[str, str]:
            done = subprocess.run(
                ["curl", "-s", "--http2", "--cacert", ca, "-x", guard.proxy_url, "-X", method,
                 "-o", "/dev/null", "-w", "%{http_version} %{http_code}", f"{base}{path}"],
                capture_output=True, text=True, timeout=20, check=True,
            )  # fmt: skip
            version, status = done.stdout.split()
            return version, status

        assert curl("GET", "/api/v1/namespaces") == ("2", "200")
        assert curl("DELETE", NAMESPACE_PROD) == ("2", "403")
        assert upstream.methods == ["GET"]
        assert upstream.versions == ["2"]
    finally:
        guard.background.stop()
        upstream.stop()


def test_a_websocket_exec_upgrade_is_an_action(guard: Guard, echo_server: EchoServer) -> None:
    """`kubectl exec` opens a websocket; the upgrade request is decided like any other."""
    connection = http.client.HTTPConnection("127.0.0.1", guard.port, timeout=10)
    key = base64.b64encode(b"0123456789abcdef").decode()
    connection.request(
        "GET",
        f"{echo_server.url}/api/v1/namespaces/prod/pods/web-0/exec?command=sh&stdin=true",
        headers={
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Key": key,
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Protocol": "v5.channel.k8s.io",
        },
    )
    response = connection.getresponse()
    body = json.loads(response.read())
    connection.close()
    assert response.status == 403
    assert "exec" in body["message"] or "production pod" in body["message"]
    assert echo_server.requests == []


# -- restarts and shutdown


def test_an_approval_survives_a_restart(tmp_path: Path, echo_server: EchoServer) -> None:
    guard = start_guard(tmp_path, echo_server)
    url = f"{echo_server.url}{NAMESPACE_PROD}"
    with guard.client() as client:
        hold_id = client.delete(url).headers["X-Guardproxy-Id"]
    guard.background.stop()
    restarted = start_guard(tmp_path / "again", echo_server, data_dir=guard.config.data_dir)
    try:
        restarted.approve(hold_id)
        with restarted.client() as client:
            assert client.delete(url).status_code == 200
        assert deletes(echo_server) == 1
    finally:
        restarted.background.stop()


def test_shutdown_answers_held_requests_and_closes_the_socket(
    tmp_path: Path, echo_server: EchoServer
) -> None:
    guard = start_guard(tmp_path, echo_server, hold_window_seconds=30)
    result: dict[str, Any] = {}

    def held_delete() -> None:
        with guard.client() as client:
            result["response"] = client.delete(f"{echo_server.url}{NAMESPACE_PROD}")

    thread = threading.Thread(target=held_delete)
    thread.start()
    deadline = time.monotonic() + 5
    while not guard.holds("pending") and time.monotonic() < deadline:
        time.sleep(0.05)
    guard.background.stop()
    thread.join(10)
    response: httpx.Response = result["response"]
    assert response.status_code == 403
    assert "shutting down" in response.json()["message"]
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", guard.port), timeout=2).close()
    assert deletes(echo_server) == 0


def test_the_ca_key_is_private(guard: Guard) -> None:
    ca_dir = guard.config.ca_dir
    assert ca_dir.stat().st_mode & 0o777 == 0o700
    assert (ca_dir / "mitmproxy-ca.pem").stat().st_mode & 0o777 == 0o600
    assert guard.config.control_token_file.stat().st_mode & 0o777 == 0o600


def test_a_held_git_push_is_rejected_in_git_s_own_words(
    tmp_path: Path, git_server: Any, git_environ: dict[str, str]
) -> None:
    git = require_binary("git")
    guard = start_guard(tmp_path, git_server, kubernetes_hosts=[])
    try:
        work = tmp_path / "work"
        subprocess.run([git, "clone", "-q", git_server.repo_url, str(work)], env=git_environ,
                       check=True, timeout=60, capture_output=True)  # fmt: skip
        proxied = {**git_environ, "http_proxy": guard.proxy_url, "HTTP_PROXY": guard.proxy_url}
        pushed = subprocess.run(
            [git, "-C", str(work), "push", "origin", "--delete", "feature-x"],
            check=False, env=proxied, timeout=60, capture_output=True, text=True,
        )  # fmt: skip
        assert pushed.returncode != 0
        assert "remote: guardproxy:" in pushed.stderr
        assert "[remote rejected] feature-x (guardproxy: held for approval (h-" in pushed.stderr
        assert "feature-x" in git_server.branches()
    finally:
        guard.background.stop()
