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

import contextlib
import os
import resource
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from e2e.guard_fixtures import Guard, StartGuard, free_port
from e2e.servers import EchoServer
from e2e.test_fleet import Replica
from e2e.test_guard import make_bundle
from postgres_cluster import PostgresCluster

from guardproxy.gate.gate import Gate
from guardproxy.pipeline.steps import Pipeline
from guardproxy.session.registry import SessionRegistry

from .fault_helpers import (
    CONFIGMAPS,
    RECOVERY_SECONDS,
    ServeProcess,
    assert_every_forwarded_mutation_recorded,
    assert_refused_natively,
    create,
    created_upstream,
    recorded,
    resumes,
    unique,
    until,
    writer_pids,
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


@pytest.mark.parametrize("broken", ["Pipeline.decide", "Gate.handle+settle"])
def test_an_exception_in_the_gate_refuses_the_request(
    start_guard: StartGuard, echo_server: EchoServer, monkeypatch: pytest.MonkeyPatch, broken: str
) -> None:
    """mitmproxy forwards a flow whose request hook raised; the guard's must not. A bug
    in the decision (``Pipeline.decide``: recognition, context, the engine; in a worker
    thread) and a gate bug (``Gate.handle`` on the loop, for a bodiless read decided
    there, and ``Gate.settle`` in the thread that decided the others)."""
    guard = _kube_guard(start_guard, echo_server)
    owner, methods = broken.split(".")

    raised: list[str] = []

    def bug(*args: object, **kwargs: object) -> None:
        raised.append(broken)
        raise RuntimeError(f"a bug in {broken}")

    async def async_bug(*args: object, **kwargs: object) -> None:
        bug()

    target = {"Pipeline": Pipeline, "Gate": Gate}[owner]
    for method in methods.split("+"):
        monkeypatch.setattr(target, method, async_bug if method == "handle" else bug)
    with _through(guard) as client:
        assert_refused_natively(create(client, echo_server, unique("bug")))
        refused = client.delete(f"{echo_server.url}{NAMESPACES}/prod")
        read = client.get(f"{echo_server.url}{NAMESPACES}")
    assert_refused_natively(refused)
    assert_refused_natively(read)  # undecided, so not even a read goes out
    assert echo_server.requests == []
    assert len(raised) == 3  # the broken step really is on the request path
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


def _maintenance(url: str) -> psycopg.Connection[tuple[object, ...]]:
    """A connection to the cluster's maintenance database, beside the test's own."""
    return psycopg.connect(f"{url.rsplit('/', 1)[0]}/postgres", autocommit=True)


@pytest.mark.slow
def test_a_read_only_database_fails_mutations_closed_and_recovers(
    start_guard: StartGuard, echo_server: EchoServer, postgres_url: str
) -> None:
    """The database turns read-only under the proxy (a failover onto a standby): every
    connection is cut and the new ones cannot write."""
    guard = _kube_guard(start_guard, echo_server, store=postgres_url)
    database = postgres_url.rsplit("/", 1)[1]
    with _through(guard) as client:
        assert create(client, echo_server, unique("before")).status_code == 200
        with _maintenance(postgres_url) as admin:
            admin.execute(f"ALTER DATABASE {database} SET default_transaction_read_only = on")
            admin.execute(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE datname = %s",
                (database,),
            )
        try:
            for _ in range(3):
                assert_refused_natively(create(client, echo_server, unique("read-only")))
            assert client.get(f"{echo_server.url}{NAMESPACES}").status_code == 200
        finally:
            with _maintenance(postgres_url) as admin:
                admin.execute(f"ALTER DATABASE {database} RESET default_transaction_read_only")
        until(resumes(client, echo_server, "after"), within=RECOVERY_SECONDS,
              what="mutations forwarded again once the database is writable")  # fmt: skip
    assert_every_forwarded_mutation_recorded(echo_server, postgres_url)


@pytest.mark.slow
def test_a_locked_postgresql_table_fails_mutations_closed_and_recovers(
    start_guard: StartGuard, echo_server: EchoServer, postgres_url: str
) -> None:
    guard = _kube_guard(start_guard, echo_server, store=postgres_url)
    with _through(guard) as client:
        assert create(client, echo_server, unique("before")).status_code == 200
        with psycopg.connect(postgres_url, autocommit=True) as other, other.transaction():
            other.execute("LOCK TABLE decisions IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            assert_refused_natively(create(client, echo_server, unique("locked")))
            assert time.monotonic() - started < 15  # the lock timeout, not the lock's holder
        until(resumes(client, echo_server, "after"), within=RECOVERY_SECONDS,
              what="mutations forwarded again once the lock is released")  # fmt: skip
    assert_every_forwarded_mutation_recorded(echo_server, postgres_url)


# -- SQLite


@pytest.mark.slow
def test_a_locked_sqlite_database_fails_mutations_closed_and_recovers(
    start_guard: StartGuard, echo_server: EchoServer
) -> None:
    """Another process holds the write lock (``BEGIN EXCLUSIVE``) past the busy timeout."""
    guard = _kube_guard(start_guard, echo_server)
    store_url = guard.config.store_url
    with _through(guard) as client:
        assert create(client, echo_server, unique("before")).status_code == 200
        other = sqlite3.connect(store_url.removeprefix("sqlite:///"), isolation_level=None)
        try:
            other.execute("BEGIN EXCLUSIVE")
            assert_refused_natively(create(client, echo_server, unique("locked")))
            assert client.get(f"{echo_server.url}{NAMESPACES}").status_code == 200
        finally:
            other.close()  # rolls back: the lock is gone
        until(resumes(client, echo_server, "after"), within=RECOVERY_SECONDS,
              what="mutations forwarded again once the lock is released")  # fmt: skip
    assert_every_forwarded_mutation_recorded(echo_server, store_url)


# -- the decision writer process


@pytest.mark.slow
def test_a_killed_decision_writer_loses_no_mutation_record_and_is_replaced(
    start_guard: StartGuard, echo_server: EchoServer
) -> None:
    """Reads are recorded by the writer process (a batch it was writing may be lost, as
    documented); mutations are recorded by the proxy itself before they are forwarded."""
    guard = _kube_guard(start_guard, echo_server)
    store_url = guard.config.store_url
    (writer,) = writer_pids(os.getpid())
    stop = threading.Event()

    def read_continuously() -> None:
        with _through(guard) as reader:
            while not stop.is_set():
                reader.get(f"{echo_server.url}{CONFIGMAPS}/{unique('read')}")

    readers = threading.Thread(target=read_continuously)
    readers.start()
    try:
        time.sleep(0.5)  # a batch is being gathered or written
        os.kill(writer, signal.SIGKILL)
        with _through(guard) as client:
            for _ in range(5):
                assert create(client, echo_server, unique("while-replaced")).status_code == 200
            read = unique("after")
            assert client.get(f"{echo_server.url}{CONFIGMAPS}/{read}").status_code == 200
    finally:
        stop.set()
        readers.join(15)
    assert_every_forwarded_mutation_recorded(echo_server, store_url)
    until(lambda: read in {r.name for r in recorded(store_url)}, within=RECOVERY_SECONDS,
          what="reads recorded again by a new writer")  # fmt: skip
    assert writer not in writer_pids(os.getpid())
    assert len(writer_pids(os.getpid())) == 1


@pytest.mark.slow
def test_a_killed_proxy_forwarded_no_change_without_its_record(
    tmp_path: Path, echo_server: EchoServer
) -> None:
    """kill -9 of ``guardproxy serve`` (then of its writer) while four clients send
    changes, on the default SQLite store (``synchronous = normal``): every change that
    reached the upstream has its record, read afterwards by another process."""
    serve = ServeProcess(
        tmp_path / "data", make_bundle(tmp_path), echo_server, stderr=subprocess.DEVNULL
    )
    stop = threading.Event()

    def send_changes() -> None:
        with serve.client() as client:
            while not stop.is_set():
                try:
                    create(client, echo_server, unique("flowing"))
                except httpx.HTTPError:  # the proxy is gone
                    return

    clients = [threading.Thread(target=send_changes) for _ in range(4)]
    try:
        for each in clients:
            each.start()
        until(lambda: len(created_upstream(echo_server)) >= 40, within=60,
              what="changes flowing through the proxy")  # fmt: skip
        writers = serve.writer_pids()
        os.kill(serve.pid, signal.SIGKILL)
        for writer in writers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(writer, signal.SIGKILL)
        serve.process.wait(10)
    finally:
        stop.set()
        for each in clients:
            each.join(30)
        serve.stop()
    assert len(created_upstream(echo_server)) >= 40
    assert_every_forwarded_mutation_recorded(echo_server, serve.store_url)


# -- the log destination


@pytest.mark.slow
def test_a_log_destination_refusing_every_write_changes_no_decision(
    tmp_path: Path, echo_server: EchoServer
) -> None:
    """stderr on /dev/full (ENOSPC on every write): lines are dropped and counted, and
    requests are decided and recorded as ever; it once stopped the proxy from starting."""
    metrics = f"127.0.0.1:{free_port()}"
    with open("/dev/full", "wb") as full:
        serve = ServeProcess(tmp_path / "data", make_bundle(tmp_path), echo_server,
                             stderr=full, extra=["--metrics-listen", metrics])  # fmt: skip
    try:
        with serve.client() as client:
            for _ in range(3):
                assert create(client, echo_server, unique("logged")).status_code == 200
            denied = client.delete(f"{echo_server.url}{CONFIGMAPS}/forbidden")
            assert_refused_natively(denied)  # the bundle's deny rule, decided as ever
            exposition = httpx.get(f"http://{metrics}/metrics", timeout=10).text
    finally:
        serve.stop()
    assert_every_forwarded_mutation_recorded(echo_server, serve.store_url)
    (dropped,) = [
        float(line.split()[-1])
        for line in exposition.splitlines()
        if line.startswith("guardproxy_log_lines_dropped_total")
    ]
    assert dropped >= 3
