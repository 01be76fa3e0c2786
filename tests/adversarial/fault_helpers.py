"""Machinery for the fault-injection tests: guardproxy as a child process, its writer,
its decisions, and bounded polling.

``guardproxy serve`` runs as a process of its own where a fault is a property of the
process (its file size limit, a log destination that refuses writes): the test lifts
the fault with ``prlimit`` on the running process, as an operator freeing space would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
from e2e.guard_fixtures import guardproxy_cli
from e2e.servers import EchoServer

from guardproxy.store import open_store

CONFIGMAPS = "/api/v1/namespaces/dev/configmaps"
"""Creating a configmap in dev: allowed by the shipped policies, a mutation."""

RECOVERY_SECONDS = 10.0
"""Service must resume within this long after a fault ends."""


def configmap(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class ServeProcess:
    """``guardproxy serve`` in its own process, as deployed, its log going to ``stderr``."""

    def __init__(
        self,
        data_dir: Path,
        policies: Path,
        upstream: EchoServer,
        *,
        stderr: IO[bytes] | int,
        store_url: str | None = None,
        extra: Iterable[str] = (),
    ) -> None:
        self.data_dir = data_dir
        self.store_url = store_url or f"sqlite:///{data_dir / 'guardproxy.db'}"
        command = [
            *guardproxy_cli(), "serve", "--data-dir", str(data_dir), "--policies", str(policies),
            "--listen", "127.0.0.1:0", "--control", "127.0.0.1:0", "--store", self.store_url,
            "--hold-window", "2", "--kube-host", f"127.0.0.1:{upstream.port}", *extra,
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("GUARDPROXY_")}
        data_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr
        )
        runtime = self._wait_until_serving()
        self.proxy_url = f"http://{runtime['proxy']}"
        self.runtime = runtime

    def _wait_until_serving(self, timeout: float = 60.0) -> dict[str, Any]:
        runtime_file = self.data_dir / "runtime.json"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            if runtime_file.exists():
                runtime: dict[str, Any] = json.loads(runtime_file.read_text() or "{}")
                if runtime.get("pid") == self.process.pid:
                    return runtime
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"guardproxy serve did not start (exit {self.process.returncode})")

    @property
    def pid(self) -> int:
        return self.process.pid

    def client(self) -> httpx.Client:
        return httpx.Client(proxy=self.proxy_url, timeout=20)

    def writer_pids(self) -> list[int]:
        return writer_pids(self.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def writer_pids(parent: int) -> list[int]:
    """The decision writer processes (``python -m guardproxy.gate.writer``) of ``parent``."""
    found = []
    for children in Path(f"/proc/{parent}/task").glob("*/children"):
        for pid in children.read_text().split():
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"guardproxy.gate.writer" in command:
                found.append(int(pid))
    return sorted(set(found))


@dataclass(frozen=True)
class Recorded:
    """A decision record: the action's resource name and the outcome."""

    name: str
    outcome: str
    verb: str


def recorded(store_url: str) -> list[Recorded]:
    """Every decision in the store (read by a store of the test's own)."""
    store = open_store(store_url)
    try:
        records = store.list_decisions(limit=100_000)
    finally:
        store.close()
    out = []
    for record in records:
        action = json.loads(record.action_json)
        resource = action.get("resource") or {}
        out.append(Recorded(str(resource.get("name", "")), record.outcome, str(action["verb"])))
    return out


def created_upstream(upstream: EchoServer) -> list[str]:
    """The names of the configmaps whose creation reached the upstream."""
    names = []
    for request in upstream.log.matching("POST", CONFIGMAPS):
        body = json.loads(request.body or b"{}")
        names.append(str(body.get("metadata", {}).get("name", "")))
    return names


def assert_every_forwarded_mutation_recorded(upstream: EchoServer, store_url: str) -> None:
    """No configmap creation reached the upstream without an ``allow`` record of its own."""
    allowed = {r.name for r in recorded(store_url) if r.outcome == "allow" and r.verb == "create"}
    unrecorded = [name for name in created_upstream(upstream) if name not in allowed]
    assert not unrecorded, f"forwarded without a decision record: {unrecorded}"


def create(client: httpx.Client, upstream: EchoServer, name: str) -> httpx.Response:
    return client.post(f"{upstream.url}{CONFIGMAPS}", json=configmap(name))


def assert_refused_natively(response: httpx.Response) -> None:
    """A guard-made 403 in Kubernetes' own format, the way kubectl prints it."""
    assert response.status_code == 403, response.text
    assert response.headers["X-Guardproxy-Decision"] == "deny"
    assert response.json()["kind"] == "Status", response.text


def until(check: Callable[[], bool], *, within: float, what: str, every: float = 0.2) -> float:
    """Poll ``check`` until true (bounded); the seconds it took."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > within:
            raise AssertionError(f"{what}: not within {within:g} s")
        time.sleep(every)
    return time.monotonic() - started


def resumes(client: httpx.Client, upstream: EchoServer, prefix: str) -> Callable[[], bool]:
    """A check for :func:`until`: a new configmap creation is forwarded."""

    def check() -> bool:
        return create(client, upstream, unique(prefix)).status_code == 200

    return check
