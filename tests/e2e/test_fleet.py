"""Fleet mode on the wire: guardproxy replicas sharing one real PostgreSQL database.

The replicas are ``guardproxy serve --store postgresql://...`` processes, the
database a throwaway cluster the suite started; the upstream is the echo server
posing as a Kubernetes API, so a DELETE of namespace ``prod`` is held.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from postgres_cluster import PostgresCluster

from guardproxy.control.client import ControlClient
from guardproxy.gate.gate import RECHECK_SECONDS, utc_now
from guardproxy.session.registry import CACHE_SECONDS
from guardproxy.store import HoldState, open_store

from .approvers import add_approver
from .guard_fixtures import guardproxy_cli, wait_for_pending_hold
from .servers import EchoServer
from .test_guard import NAMESPACE_PROD, Guard, deletes, make_bundle, start_guard

CONFIGMAPS = "/api/v1/namespaces/dev/configmaps"


class Replica:
    """``guardproxy serve --store postgresql://...`` in its own process, as deployed."""

    def __init__(
        self,
        data_dir: Path,
        policies: Path,
        store_url: str,
        kube_host: str,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.data_dir = data_dir
        command = [
            *guardproxy_cli(), "serve", "--data-dir", str(data_dir), "--policies", str(policies),
            "--listen", "127.0.0.1:0", "--control", "127.0.0.1:0", "--store", store_url,
            "--hold-window", "10", "--kube-host", kube_host, *extra,
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("GUARDPROXY_")}
        self.log = data_dir.with_suffix(".log")
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        runtime = self._wait_until_serving()
        self.proxy_url = f"http://{runtime['proxy']}"
        self.control_url: str = runtime["control"]
        self.tokens: dict[str, str] = {}
        """Approver name -> control API token (approvers live in the shared database)."""

    def _wait_until_serving(self, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        runtime_file = self.data_dir / "runtime.json"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            if runtime_file.exists():
                runtime: dict[str, Any] = json.loads(runtime_file.read_text() or "{}")
                if runtime.get("pid") == self.process.pid:
                    return runtime
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"guardproxy serve did not start:\n{self.log.read_text()}")

    def client(self) -> httpx.Client:
        return httpx.Client(proxy=self.proxy_url, timeout=20)

    def as_approver(self, name: str) -> ControlClient:
        return ControlClient(self.control_url, self.tokens[name])

    def holds(self, state: str = "all") -> list[dict[str, Any]]:
        return self.as_approver("alice").holds(state)

    def verdict(self, name: str, hold_id: str, *, approve: bool) -> str:
        """``name``'s verdict through this replica; the hold's state after it."""
        result = self.as_approver(name).resolve(hold_id, approve=approve, reason="fleet test")
        state: str = result["hold"]["state"]
        return state

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@pytest.fixture
def replicas(
    tmp_path: Path, echo_server: EchoServer, postgres_url: str
) -> Iterator[tuple[Replica, Replica]]:
    """Two replicas, each with its own data directory and ports, one database."""
    policies = make_bundle(tmp_path)
    kube_host = f"127.0.0.1:{echo_server.port}"
    first = Replica(tmp_path / "a", policies, postgres_url, kube_host)
    try:
        second = Replica(tmp_path / "b", policies, postgres_url, kube_host)
        try:
            store = open_store(postgres_url)
            try:
                tokens = {name: add_approver(store, name) for name in ("alice", "bob")}
            finally:
                store.close()
            first.tokens = second.tokens = tokens
            yield first, second
        finally:
            second.stop()
    finally:
        first.stop()


def _in_background(
    guard: Replica | Guard, method: str, url: str
) -> tuple[threading.Thread, dict[str, Any]]:
    result: dict[str, Any] = {}

    def send() -> None:
        with guard.client() as client:
            response = client.request(method, url)
        result["status"] = response.status_code
        result["body"] = response.text
        result["done"] = time.monotonic()

    thread = threading.Thread(target=send)
    thread.start()
    return thread, result


@pytest.mark.slow
def test_approvals_through_two_replicas_release_the_request_held_on_one(
    replicas: tuple[Replica, Replica], echo_server: EchoServer
) -> None:
    holding, other = replicas
    thread, result = _in_background(holding, "DELETE", f"{echo_server.url}{NAMESPACE_PROD}")
    hold = wait_for_pending_hold(other.holds)  # the other replica sees it in the shared store
    # the policy wants two people: one approves on each replica, the quorum spans both
    assert holding.verdict("alice", hold["id"], approve=True) == "pending"
    assert deletes(echo_server) == 0
    approved_at = time.monotonic()
    assert other.verdict("bob", hold["id"], approve=True) == "approved"
    thread.join(15)
    assert result["status"] == 200
    assert result["done"] - approved_at < 1.0  # notified, not found by the periodic re-read
    assert deletes(echo_server) == 1
    (released,) = holding.holds("released")
    assert released["id"] == hold["id"]


@pytest.mark.slow
def test_a_denial_through_one_replica_answers_the_request_held_on_another(
    replicas: tuple[Replica, Replica], echo_server: EchoServer
) -> None:
    holding, other = replicas
    thread, result = _in_background(holding, "DELETE", f"{echo_server.url}{NAMESPACE_PROD}")
    hold = wait_for_pending_hold(other.holds)
    denied_at = time.monotonic()
    assert other.verdict("alice", hold["id"], approve=False) == "denied"
    thread.join(15)
    assert result["status"] == 403
    assert "a human denied this request" in result["body"]
    assert result["done"] - denied_at < 1.0
    assert deletes(echo_server) == 0


@pytest.mark.slow
@pytest.mark.parametrize("reads", ["allow", "deny"])
def test_losing_the_database_fails_closed_then_recovers(
    tmp_path: Path,
    echo_server: EchoServer,
    postgres_cluster: PostgresCluster,
    postgres_url: str,
    reads: str,
) -> None:
    guard = start_guard(tmp_path, echo_server, store=postgres_url, reads_on_store_failure=reads)
    namespaces = f"{echo_server.url}/api/v1/namespaces"
    try:
        with guard.client() as client:
            assert client.post(f"{echo_server.url}{CONFIGMAPS}", json={}).status_code == 200
            posts = len(echo_server.log.matching("POST"))
            postgres_cluster.stop()
            try:
                write = client.post(f"{echo_server.url}{CONFIGMAPS}", json={})
                held = client.delete(f"{echo_server.url}{NAMESPACE_PROD}")
                read = client.get(namespaces)
            finally:
                postgres_cluster.start()
            for refused in (write, held):
                assert refused.status_code == 403, refused.text
                assert refused.json()["kind"] == "Status"  # Kubernetes' own error format
                assert "could not record this request, so it was not sent" in refused.text
            assert len(echo_server.log.matching("POST")) == posts
            assert deletes(echo_server) == 0
            if reads == "allow":
                assert read.status_code == 200
            else:
                assert read.status_code == 403
                assert "could not record this request" in read.text
            # the database is back: the same replica works again without a restart
            assert client.post(f"{echo_server.url}{CONFIGMAPS}", json={}).status_code == 200
            assert client.get(namespaces).status_code == 200
    finally:
        guard.background.stop()


@pytest.mark.slow
def test_a_hold_resolved_unannounced_is_found_by_the_waiting_request(
    tmp_path: Path, echo_server: EchoServer
) -> None:
    """SQLite announces nothing: an approval written by another process (here, a second
    store on the same file) is found by the waiting request's periodic re-read."""
    guard = start_guard(tmp_path, echo_server, hold_window_seconds=10)
    try:
        thread, result = _in_background(guard, "DELETE", f"{echo_server.url}{NAMESPACE_PROD}")
        hold = wait_for_pending_hold(guard.holds)
        other = open_store(guard.config.store_url)
        try:
            other.resolve_hold(
                hold["id"], state=HoldState.APPROVED, by="cli", reason="", now=utc_now()
            )
        finally:
            other.close()
        approved_at = time.monotonic()
        thread.join(15)
        assert result["status"] == 200
        assert result["done"] - approved_at < RECHECK_SECONDS + 1.0
        assert deletes(echo_server) == 1
    finally:
        guard.background.stop()


@pytest.mark.slow
def test_a_session_registered_on_one_replica_works_on_another_until_ended(
    replicas: tuple[Replica, Replica], echo_server: EchoServer
) -> None:
    registering, serving = replicas
    admin = ControlClient(
        registering.control_url, (registering.data_dir / "control-token").read_text().strip()
    )
    session = admin.call("POST", "/v1/sessions", {"name": "fleet", "command": ["agent"]})
    address = serving.proxy_url.removeprefix("http://")
    proxy = f"http://{session['id']}:{session['token']}@{address}"
    namespaces = f"{echo_server.url}/api/v1/namespaces"
    with httpx.Client(proxy=proxy, timeout=20) as client:
        assert client.get(namespaces).status_code == 200
        admin.call("POST", f"/v1/sessions/{session['id']}/end")
        deadline = time.monotonic() + CACHE_SECONDS + 5
        while (status := client.get(namespaces).status_code) == 200:
            assert time.monotonic() < deadline, "the ended session still works on the other"
            time.sleep(0.2)
    assert status == 407


def _verify(store_url: str, *keys: Path) -> dict[str, Any]:
    arguments = [*guardproxy_cli(), "audit", "verify", "--store", store_url, "--json"]
    for key in keys:
        arguments += ["--key", str(key)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUARDPROXY_")}
    proc = subprocess.run(
        arguments, capture_output=True, text=True, env=env, timeout=60, check=False
    )
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


@pytest.mark.slow
def test_the_replicas_chains_and_checkpoints_verify_as_one_trail(
    tmp_path: Path, echo_server: EchoServer, postgres_url: str
) -> None:
    """Each replica appends to chains of its own (its proxy's, its decision writer's), so
    they never wait for each other; every replica checkpoints them all, signed with its
    own key, while running and when it stops; ``audit verify`` with both replicas'
    public keys checks the whole trail."""
    policies = make_bundle(tmp_path)
    settings = tmp_path / "checkpoints.yaml"
    settings.write_text("audit_checkpoint_seconds: 0.3\n")
    kube_host = f"127.0.0.1:{echo_server.port}"
    replicas = [
        Replica(tmp_path / name, policies, postgres_url, kube_host, ("--config", str(settings)))
        for name in ("a", "b")
    ]
    keys = [replica.data_dir / "audit-key.pub" for replica in replicas]
    try:
        for replica in replicas:
            with replica.client() as client:
                for _ in range(5):
                    assert client.post(f"{echo_server.url}{CONFIGMAPS}", json={}).status_code == 200
                    assert client.get(f"{echo_server.url}{CONFIGMAPS}").status_code == 200
        deadline = time.monotonic() + 20
        while True:  # the reads' batches, their statuses, then a checkpoint binding them
            running = _verify(postgres_url, *keys)
            if running["records"] >= 20 and running["not_yet_checkpointed"] == 0:
                break
            assert time.monotonic() < deadline, running
            time.sleep(0.3)
        assert running["intact"], running["problems"]
    finally:
        for replica in replicas:
            replica.stop()
    result = _verify(postgres_url, *keys)
    assert result["intact"], result["problems"]
    assert "store.not_durable" in replicas[0].log.read_text()  # the tests' cluster: fsync off
    roles = sorted(chain["writer"].split(" ", 3)[3] for chain in result["chains"])
    assert roles == ["decision writer", "decision writer", "proxy", "proxy"]
    assert result["not_yet_checkpointed"] == 0 and result["signatures_checked"]
    key_ids = {key.read_text().split()[2] for key in keys}
    assert len(key_ids) == 2 and set(result["signed_by"]) <= key_ids
    if len(result["signed_by"]) == 2:  # each replica signed some: one key is not enough
        assert not _verify(postgres_url, keys[0])["intact"]
