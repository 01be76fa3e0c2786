"""Store and resource faults on the request path: fail closed, then recover unaided.

Each test runs the real proxy (in this process, or ``guardproxy serve`` as a child
where the fault belongs to the process) in front of the logging echo upstream posing
as a Kubernetes API, injects one fault, and checks three things:

* during the fault, mutations are answered with a native 403 (reads follow
  ``reads_on_store_failure``, allow by default);
* nothing that reached the upstream as a mutation lacks its decision record;
* once the fault ends, mutations are forwarded again within 10 s, without a restart.
"""

from __future__ import annotations

import resource
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e.guard_fixtures import Guard, StartGuard
from e2e.servers import EchoServer
from e2e.test_fleet import Replica
from e2e.test_guard import make_bundle
from postgres_cluster import PostgresCluster

from guardproxy.gate.gate import Gate
from guardproxy.session.registry import SessionRegistry

from .fault_helpers import (
    RECOVERY_SECONDS,
    ServeProcess,
    assert_every_forwarded_mutation_recorded,
    assert_refused_natively,
    create,
    resumes,
    unique,
    until,
)

NAMESPACES = "/api/v1/namespaces"


def _limit_file_size(pids: list[int], soft: int) -> None:
    for pid in pids:
        _, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (soft, hard))


@pytest.mark.slow
def test_disk_full_fails_mutations_closed_and_recovers(
    tmp_path: Path, echo_server: EchoServer
) -> None:
    """Issue item 6: the file size limit reached, for the store and the log file alike.

    Every write the proxy makes to a file fails (EFBIG), its log lines included: each
    mutation must still end in a native 403, none forwarded without its record.
    """
    log_file = tmp_path / "serve.log"
    with log_file.open("wb") as log:
        serve = ServeProcess(tmp_path / "data", make_bundle(tmp_path), echo_server, stderr=log)
    try:
        with serve.client() as client:
            assert create(client, echo_server, unique("before")).status_code == 200
            processes = [serve.pid, *serve.writer_pids()]
            _limit_file_size(processes, 512)  # below every file's size: no write succeeds
            try:
                logged = log_file.stat().st_size
                for _ in range(10):
                    assert_refused_natively(create(client, echo_server, unique("full")))
                assert client.get(f"{echo_server.url}{NAMESPACES}").status_code == 200
                assert log_file.stat().st_size == logged  # the fault was real
            finally:
                _limit_file_size(processes, resource.RLIM_INFINITY)
            until(resumes(client, echo_server, "after"), within=RECOVERY_SECONDS,
                  what="mutations forwarded again after the disk has room")  # fmt: skip
        assert_every_forwarded_mutation_recorded(echo_server, serve.store_url)
        until(lambda: log_file.stat().st_size > logged, within=RECOVERY_SECONDS,
              what="log lines written again")  # fmt: skip
    finally:
        serve.stop()


# -- an exception anywhere on the request path


def _kube_guard(start_guard: StartGuard, upstream: EchoServer, **overrides: Any) -> Guard:
    return start_guard(kubernetes_hosts=[f"127.0.0.1:{upstream.port}"], **overrides)


def _through(guard: Guard, proxy_url: str | None = None) -> httpx.Client:
    return httpx.Client(proxy=proxy_url or f"http://127.0.0.1:{guard.proxy_port}", timeout=20)


def test_an_exception_in_the_gate_refuses_the_request(
    start_guard: StartGuard, echo_server: EchoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mitmproxy forwards a flow whose request hook raised; the guard's must not."""
    guard = _kube_guard(start_guard, echo_server)

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug in the gate")

    monkeypatch.setattr(Gate, "handle", broken)
    with _through(guard) as client:
        assert_refused_natively(create(client, echo_server, unique("bug")))
        refused = client.delete(f"{echo_server.url}{NAMESPACES}/prod")
    assert_refused_natively(refused)
    assert echo_server.requests == []
    monkeypatch.undo()
    with _through(guard) as client:  # the next request is decided as usual
        assert create(client, echo_server, unique("fine")).status_code == 200


def test_an_exception_checking_a_credential_refuses_rather_than_serving_it_anonymously(
    start_guard: StartGuard, echo_server: EchoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Anonymous clients are allowed: a session whose check raised must not become one."""
    guard = _kube_guard(start_guard, echo_server)
    session = guard.session()

    def broken(*args: object, **kwargs: object) -> None:
        raise KeyError(0)  # the shape of issue item 8's bug, here in the credential check

    monkeypatch.setattr(SessionRegistry, "authenticate", broken)
    with _through(guard, session.proxy_url) as client:
        response = create(client, echo_server, unique("anon"))
    assert response.status_code == 403, response.text
    assert response.headers["X-Guardproxy-Decision"] == "deny"
    assert echo_server.requests == []


# -- PostgreSQL


@pytest.mark.slow
def test_a_database_restart_under_two_replicas_fails_closed_then_both_recover(
    tmp_path: Path,
    echo_server: EchoServer,
    postgres_cluster: PostgresCluster,
    postgres_url: str,
) -> None:
    """Issue item 8: after PostgreSQL restarted, one replica held every mutation as
    `hold-without-history` (KeyError(0) reading the changed resource keys) for good."""
    policies = make_bundle(tmp_path)
    kube_host = f"127.0.0.1:{echo_server.port}"
    first = Replica(tmp_path / "a", policies, postgres_url, kube_host)
    try:
        second = Replica(tmp_path / "b", policies, postgres_url, kube_host)
        try:
            with first.client() as one, second.client() as two:
                assert create(one, echo_server, unique("a-before")).status_code == 200
                postgres_cluster.stop()
                try:
                    for client in (one, two):
                        assert_refused_natively(create(client, echo_server, unique("down")))
                finally:
                    postgres_cluster.start()
                for name, client in (("a", one), ("b", two)):
                    until(resumes(client, echo_server, f"{name}-after"), within=RECOVERY_SECONDS,
                          what=f"replica {name} forwards mutations again")  # fmt: skip
                    assert client.get(f"{echo_server.url}{NAMESPACES}").status_code == 200
        finally:
            second.stop()
    finally:
        first.stop()
    assert_every_forwarded_mutation_recorded(echo_server, postgres_url)
    for log in ("a.log", "b.log"):
        assert "KeyError" not in (tmp_path / log).read_text()
