"""Throughput of the store on SQLite vs PostgreSQL, alone and behind the proxy.

What it measures
    Store operations, as the proxy does them per request (``--ops`` of each, payloads
    of the size the proxy writes: ~0.6 KB action, ~1 KB context, ~0.4 KB decision):

    * ``decision``: one ``append_decision`` (a mutating request's record, written
      before it is forwarded);
    * ``decision batch``: ``append_decisions`` of 100 (reads, written in background
      batches), reported per record;
    * ``session event``: one ``append_session_events`` (history of a mutation);
    * ``hold cycle``: ``create_hold`` + ``find_hold`` + ``resolve_hold`` +
      ``consume_approval`` (a held request approved and released);
    * ``decision x8``: ``append_decision`` from 8 threads sharing one store (the
      proxy's worker threads; appends waiting at once are written in one transaction).

    Then end to end: ``guardproxy serve`` with each store in its own process, in front
    of the benchmark upstream of proxy_bench.py (posing as a Kubernetes API), and 4
    client threads with a keep-alive connection each sending ``--requests`` requests:
    Kubernetes reads (GET a pod) and writes (POST a configmap in namespace ``dev``,
    allowed by the shipped policies and recorded before being forwarded).

    Writers (PostgreSQL): ``append_decision`` (a mutation's record, one transaction
    each) from 1 and from 4 processes at once, each with its own store and connection
    as replicas have, ``--writer-ops`` each, on a fresh database per measurement;
    reported: records per second over the wall time from the start signal to the last
    process's end (median of ``--rounds``), and 4 writers / 1.  Afterwards a checkpoint
    is made with a throwaway key and ``verify_store`` checks every record and the
    checkpoint's signature; the benchmark fails if anything does not verify.
    Also reported, per record (medians): the CPU time of the writer processes and of
    the server's processes, and the server's WAL flushes (disk syncs; fewer than one
    per record when commits of several writers share a flush) with the time one
    takes.  They say which limit the ratio meets:

    * flushes faster than a record's CPU (a fast or cached disk): one writer keeps
      the CPU busy most of the time, and 4 writers cannot be faster than the cores
      that one leaves idle (their processes and the server's, 8 on a small machine,
      also cost more CPU per record than one writer's 2);
    * flushes slower than a record's CPU: 4 writers gain as many records per flush
      as their commits share; when those come in pairs (0.5 flushes per record),
      4/1 is about 2 plus twice the writer's CPU time over the flush time, so a
      faster writer shows a lower ratio at a higher rate.
    ``--baseline DIR`` also runs the writers on the guardproxy of another checkout
    (e.g. ``git worktree add /tmp/main main``), interleaved round by round with this
    one; its records (one chain) are verified after this code migrated the database.

    PostgreSQL is a throwaway cluster started from this machine's server binaries
    (tests/postgres_cluster.py) with ``fsync=on``, so a commit is as durable as
    SQLite's (``synchronous=FULL``); ``--no-fsync`` measures without disk syncs.
    Both databases live in the same temporary directory.

How to run (from the repository root)
    .venv/bin/python bench/store_bench.py
    .venv/bin/python bench/store_bench.py --ops 2000 --requests 2000 --json
    .venv/bin/python bench/store_bench.py --writers-only --baseline /tmp/main

Everything listens on 127.0.0.1 only; the cluster and every child process are stopped
when the benchmark ends, whatever happens.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from proxy_bench import (
    LOOPBACK,
    REQUEST_TIMEOUT,
    BenchError,
    Children,
    free_port,
    guardproxy_command,
    start_upstream,
    tool,
    wait_listening,
)

from guardproxy.store import DecisionRecord, HoldState, SessionEvent, Store, open_store

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from postgres_cluster import PostgresCluster, find_bindir

THREADS = 8
CLIENTS = 4
WRITERS = (1, 4)
BATCH = 100
ACTION = json.dumps({"provider": "k8s", "operation": "create", "padding": "a" * 520})
CONTEXT = json.dumps({"session": {"id": "s-bench"}, "padding": "c" * 950})
DECISION = json.dumps({"outcome": "allow", "determining_rules": ["x"], "padding": "d" * 330})
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _record(i: int, tag: str) -> DecisionRecord:
    return DecisionRecord(
        id=f"d-{tag}-{i}",
        at=T0 + timedelta(microseconds=i),
        session_id="s-bench",
        action_json=ACTION,
        context_json=CONTEXT,
        decision_json=DECISION,
        outcome="allow",
    )


def _event(i: int) -> SessionEvent:
    return SessionEvent(
        session_id="s-bench",
        at=T0 + timedelta(microseconds=i),
        summary="k8s core create configmaps dev/x",
        operation="create",
        verb="create",
        provider="k8s",
        environment="dev",
        resource_key=f"k8s:configmaps:dev/x{i % 50}",
        outcome="allow",
    )


def _rate(count: int, work: Callable[[], None]) -> float:
    started = time.perf_counter()
    work()
    return count / (time.perf_counter() - started)


def store_rates(store: Store, ops: int) -> dict[str, float]:
    """Operations (or records) per second of each store operation the proxy uses."""

    def decisions() -> None:
        for i in range(ops):
            store.append_decision(_record(i, "one"))

    def batches() -> None:
        for start in range(0, ops * 10, BATCH):
            store.append_decisions([_record(i, "batch") for i in range(start, start + BATCH)])

    def events() -> None:
        for i in range(ops):
            store.append_session_events([_event(i)])

    def hold_cycles() -> None:
        for i in range(ops // 4):
            now = T0 + timedelta(seconds=i)
            digest = f"digest-{i}"
            hold = store.create_hold(
                session_id="s-bench", request_digest=digest, action_json=ACTION,
                decision_json=DECISION, summary="k8s core delete namespaces prod",
                grant="once", created_at=now, expires_at=now + timedelta(minutes=30),
            )  # fmt: skip
            store.find_hold("s-bench", digest, now)
            store.resolve_hold(hold.id, state=HoldState.APPROVED, by="b", reason="", now=now)
            if store.consume_approval("s-bench", digest, now) is None:
                raise BenchError("an approved hold was not released")

    def threaded() -> None:
        def each(thread: int) -> None:
            for i in range(ops // THREADS):
                store.append_decision(_record(i, f"t{thread}"))

        workers = [threading.Thread(target=each, args=(t,)) for t in range(THREADS)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

    return {
        "decision": _rate(ops, decisions),
        "decision batch (per record)": _rate(ops * 10, batches),
        "session event": _rate(ops, events),
        "hold cycle": _rate(ops // 4, hold_cycles),
        f"decision x{THREADS} threads": _rate(ops // THREADS * THREADS, threaded),
    }


def append_worker(url: str, tag: str, ops: int) -> int:
    """A writer process (``--append-worker``): one store, ``ops`` single appends on GO.

    Says ``READY`` once its store is open and has appended once, waits for a line on
    stdin, then appends and says ``DONE <start> <end> <cpu>`` (``time.monotonic``, which
    every process on the machine shares; the CPU seconds this process spent appending),
    and closes its store at the next line (its connections stay until the server's CPU
    is read).  Uses only what every guardproxy version has, so a baseline checkout runs
    it too.
    """
    store = open_store(url)
    try:
        store.append_decision(_record(-1, tag))
        print("READY", flush=True)
        if not sys.stdin.readline():
            return 1
        started, cpu = time.monotonic(), time.process_time()
        for i in range(ops):
            store.append_decision(_record(i, tag))
        print(f"DONE {started} {time.monotonic()} {time.process_time() - cpu}", flush=True)
        sys.stdin.readline()
    finally:
        store.close()
    return 0


def concurrent_appends(
    children: Children, cluster: PostgresCluster, url: str, writers: int, ops: int
) -> dict[str, float]:
    """Records per second from ``writers`` processes appending at once, and where each
    record's time went: CPU microseconds of the writer processes and of the server's
    processes (every backend, the WAL writer...: what the appends cost it), and WAL
    flushes (disk syncs) per record and how long one took, from ``pg_stat_wal``
    (PostgreSQL 14 or newer; it counts the writers' start too: three transactions each)."""
    workers = []
    for n in range(writers):
        command = [sys.executable, str(Path(__file__).resolve()), "--append-worker", url,
                   f"w{n}", str(ops)]  # fmt: skip
        child = children.start(f"writer-{time.monotonic_ns()}", command, stdout=subprocess.PIPE)
        workers.append(child)
    try:
        for child in workers:
            assert child.process.stdout is not None
            if child.process.stdout.readline().strip() != b"READY":
                raise BenchError(f"a writer did not start:\n{child.tail()}")
        syncs_before, sync_ms_before = _wal_syncs(url)
        server_before = _server_cpu(cluster)
        for child in workers:
            _tell(child, b"GO\n")
        spans, client_cpu = [], 0.0
        for child in workers:
            assert child.process.stdout is not None
            line = child.process.stdout.readline().split()
            if not line or line[0] != b"DONE":
                raise BenchError(f"a writer failed:\n{child.tail()}")
            spans.append((float(line[1]), float(line[2])))
            client_cpu += float(line[3])
        server_cpu = _server_cpu(cluster) - server_before
        for child in workers:
            _tell(child, b"STOP\n")
            child.process.wait(30)
    finally:
        for child in workers:
            children.stop(child)
    records = writers * ops
    syncs, sync_ms = _wal_syncs(url)  # each writer's backend reported them as it exited
    known = syncs >= 0 and syncs_before >= 0
    return {
        "rate": records / (max(end for _, end in spans) - min(start for start, _ in spans)),
        "client_us": client_cpu / records * 1e6,
        "server_us": server_cpu / records * 1e6,
        "syncs": (syncs - syncs_before) / records if known else -1.0,
        "sync_us": (sync_ms - sync_ms_before) * 1e3 / max(1, syncs - syncs_before)
        if known
        else -1.0,
    }


def _tell(child: Any, line: bytes) -> None:
    assert child.process.stdin is not None
    child.process.stdin.write(line)
    child.process.stdin.flush()


def _wal_syncs(url: str) -> tuple[int, float]:
    """WAL flushes of the whole cluster so far and the milliseconds they took (with
    ``track_wal_io_timing``, which the benchmark's cluster has); -1: no ``pg_stat_wal``
    (PostgreSQL before 14)."""
    import psycopg  # noqa: PLC0415

    with psycopg.connect(url, autocommit=True) as connection:
        try:
            row = connection.execute("SELECT wal_sync, wal_sync_time FROM pg_stat_wal").fetchone()
        except psycopg.errors.UndefinedTable:
            return -1, 0.0
    return (-1, 0.0) if row is None else (int(row[0]), float(row[1]))


def _server_cpu(cluster: PostgresCluster) -> float:
    """CPU seconds of the cluster's processes: the postmaster, its live children, and
    those it reaped (their time is added to its own children's)."""
    postmaster = int((cluster.data / "postmaster.pid").read_text().split()[0])
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited meanwhile
            continue
        if int(fields[1]) == postmaster:  # ppid
            total += int(fields[11]) + int(fields[12])  # utime, stime
    fields = Path(f"/proc/{postmaster}/stat").read_text().rsplit(")", 1)[1].split()
    total += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return total / os.sysconf("SC_CLK_TCK")


def verify_appends(url: str, expected: int, key_dir: Path) -> str:
    """Checkpoint and verify everything written to ``url``; BenchError unless intact."""
    from guardproxy.audit.checkpoint import load_or_create_signing_key  # noqa: PLC0415
    from guardproxy.audit.trail import verify_store  # noqa: PLC0415

    key = load_or_create_signing_key(key_dir / "audit-key")
    store = open_store(url)  # migrates a baseline's database: its chain becomes chain 0
    try:
        store.checkpoint_audit(at=datetime.now(UTC), key_id=key.key_id, sign=key.sign)
        result = verify_store(store, [key.verify_key])
    finally:
        store.close()
    if not result.intact or result.records != expected or result.unchecked:
        raise BenchError(
            f"{url}: {result.records} of {expected} records, {result.unchecked} not "
            f"checkpointed, problems: {result.problems[:3]}"
        )
    return f"{result.records} records in {len(result.chains)} chain(s), checkpoint signed"


def writer_rates(
    children: Children, cluster: PostgresCluster, args: argparse.Namespace
) -> dict[str, Any]:
    """1 and 4 writer processes, back to back in each round (this code, and the
    baseline's), after a round not counted; medians of the rounds and of each round's
    ratio (the disk's sync time on a shared machine changes from minute to minute: a
    ratio of rates measured moments apart is the steadier figure)."""
    codes = {"this": Path(__file__).resolve().parents[1]}
    if args.baseline is not None:
        codes = {"baseline": args.baseline.resolve(), **codes}
    one, many = WRITERS
    rates: dict[str, dict[int, list[float]]] = {name: {one: [], many: []} for name in codes}
    costs: dict[str, dict[int, list[dict[str, float]]]] = {
        name: {one: [], many: []} for name in codes
    }
    verified: dict[str, str] = {}
    load = os.getloadavg()[0]
    for round_number in range(args.rounds + 1):
        for name, code in codes.items():
            for writers in WRITERS:
                url = cluster.create_database()
                measured = _in_code(
                    code, concurrent_appends, children, cluster, url, writers, args.writer_ops
                )
                verified[name] = verify_appends(
                    url, writers * (args.writer_ops + 1), children.workdir
                )
                if round_number > 0:  # the first warms up the cluster and the page cache
                    rates[name][writers].append(measured["rate"])
                    costs[name][writers].append(measured)
    return {
        "load_average": [round(load, 1), round(os.getloadavg()[0], 1)],
        **{
            name: {
                "rates": {str(w): statistics.median(r) for w, r in by_writers.items()},
                "ratio": statistics.median(
                    m / o for o, m in zip(by_writers[one], by_writers[many], strict=True)
                ),
                "rounds": {str(w): [round(x) for x in r] for w, r in by_writers.items()},
                "per_record": {
                    str(w): {
                        key: round(statistics.median(c[key] for c in each), 2)
                        for key in ("client_us", "server_us", "syncs", "sync_us")
                    }
                    for w, each in costs[name].items()
                },
                "verified": verified[name],
            }
            for name, by_writers in rates.items()
        },
    }


def _in_code[T](code: Path, work: Callable[..., T], *args: Any) -> T:
    """``work`` with the writer processes importing guardproxy from ``code``."""
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(code), before]))
    try:
        return work(*args)
    finally:
        if before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = before


def proxy_rates(children: Children, upstream: int, store_url: str, requests: int) -> dict[str, Any]:
    """Reads and writes per second through ``guardproxy serve`` on ``store_url``."""
    name = "guardproxy-" + store_url.split(":", 1)[0]
    port, control = free_port(), free_port()
    data_dir = children.workdir / f"{name}-data"
    cmd = [tool("guardproxy"), *guardproxy_command(data_dir, port, control, upstream)]
    child = children.start(name, [*cmd, "--store", store_url])
    wait_listening(child, port)
    base = f"http://{LOOPBACK}:{upstream}"
    result: dict[str, Any] = {}
    for kind, method, path, body in (
        ("reads/s", "GET", "/api/v1/namespaces/default/pods/x", None),
        ("writes/s", "POST", "/api/v1/namespaces/dev/configmaps", b'{"kind": "ConfigMap"}'),
    ):
        errors: list[str] = []
        request = (port, method, base + path, body, errors)
        _send(*request, count=50)  # warm up: the session, the policy caches, the connections
        per_client = requests // CLIENTS
        workers = [
            threading.Thread(target=_send, args=request, kwargs={"count": per_client})
            for _ in range(CLIENTS)
        ]
        started = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        elapsed = time.perf_counter() - started
        if errors:
            raise BenchError(f"{name}: {errors[0]}\n{child.tail()}")
        result[kind] = per_client * CLIENTS / elapsed
    children.stop(child)
    return result


def _send(
    port: int, method: str, url: str, body: bytes | None, errors: list[str], *, count: int
) -> None:
    """``count`` requests on one keep-alive connection through the proxy at ``port``."""
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=REQUEST_TIMEOUT)
    try:
        for _ in range(count):
            conn.request(method, url, body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                errors.append(f"{method} {url}: HTTP {response.status}")
                return
    finally:
        conn.close()


def run(args: argparse.Namespace) -> dict[str, Any]:
    bindir = find_bindir()
    if bindir is None:
        raise BenchError("PostgreSQL server binaries not found: apt-get install postgresql")
    with tempfile.TemporaryDirectory(prefix="store-bench-") as tmp:
        workdir = Path(tmp)
        settings = {
            "track_wal_io_timing": "on",  # how long a WAL flush takes (pg_stat_wal)
            **dict(setting.split("=", 1) for setting in args.pg_setting),
        }
        cluster = PostgresCluster(bindir, fsync=not args.no_fsync, settings=settings)
        children = Children(workdir)
        try:
            writers = writer_rates(children, cluster, args)
            if args.writers_only:
                return {"fsync": not args.no_fsync, "pg_settings": args.pg_setting,
                        "writer_ops": args.writer_ops, "writers": writers}  # fmt: skip
            urls = {
                "sqlite": lambda: f"sqlite:///{workdir / f'bench-{time.monotonic_ns()}.db'}",
                "postgresql": cluster.create_database,
            }
            stores: dict[str, dict[str, float]] = {}
            for backend, new_url in urls.items():
                store = open_store(new_url())
                try:
                    stores[backend] = store_rates(store, args.ops)
                finally:
                    store.close()
            upstream = start_upstream(children).kube_port
            proxies = {
                backend: proxy_rates(children, upstream, new_url(), args.requests)
                for backend, new_url in urls.items()
            }
        finally:
            children.stop_all()
            cluster.destroy()
    return {
        "fsync": not args.no_fsync,
        "pg_settings": args.pg_setting,
        "writer_ops": args.writer_ops,
        "writers": writers,
        "ops": args.ops,
        "store": stores,
        "proxy": proxies,
    }


def render_writers(result: dict[str, Any]) -> list[str]:
    one, many = (str(w) for w in WRITERS)
    writers = result["writers"]
    before, after = writers["load_average"]
    lines = [
        f"append_decision from {one} and {many} writer processes on one PostgreSQL "
        f"(fsync={'on' if result['fsync'] else 'off'}"
        + "".join(f", {setting}" for setting in result["pg_settings"])
        + f"), {result['writer_ops']} each, "
        f"records per second, medians of the rounds (load average {before} -> {after})",
        f"  {'code':<10} {one + ' writer':>10} {many + ' writers':>10} {many + '/' + one:>6}"
        "   every record verified",
    ]
    for name, measured in writers.items():
        if name == "load_average":
            continue
        rates = measured["rates"]
        lines.append(
            f"  {name:<10} {rates[one]:>10.0f} {rates[many]:>10.0f} "
            f"{measured['ratio']:>6.2f}   {measured['verified']}"
        )
        lines.append(f"  {'':<10} rounds: {one}: {measured['rounds'][one]}, "
                     f"{many}: {measured['rounds'][many]}")  # fmt: skip
        for w in (one, many):
            cost = measured["per_record"][w]
            flushes = "? WAL flushes" if cost["syncs"] < 0 else f"{cost['syncs']:.2f} WAL flushes"
            if cost["syncs"] > 0:
                flushes += f" of {cost['sync_us']:.0f} us"
            lines.append(
                f"  {'':<10} per record, {w} writer(s): CPU {cost['client_us']:.0f} us in the "
                f"writer, {cost['server_us']:.0f} us in PostgreSQL; {flushes}"
            )
    return lines


def render(result: dict[str, Any]) -> str:
    lines = render_writers(result)
    if "store" not in result:
        return "\n".join(lines)
    lines += [
        f"store operations per second ({result['ops']} of each; PostgreSQL fsync="
        f"{'on' if result['fsync'] else 'off'}, SQLite synchronous=FULL)",
        f"  {'operation':<28} {'SQLite':>10} {'PostgreSQL':>11} {'PG/SQLite':>10}",
    ]
    sqlite, postgres = result["store"]["sqlite"], result["store"]["postgresql"]
    for name, rate in sqlite.items():
        lines.append(
            f"  {name:<28} {rate:>10.0f} {postgres[name]:>11.0f} {postgres[name] / rate:>10.2f}"
        )
    lines.append(f"guardproxy serve, {CLIENTS} clients (requests per second)")
    proxy_sqlite, proxy_pg = result["proxy"]["sqlite"], result["proxy"]["postgresql"]
    for kind, rate in proxy_sqlite.items():
        lines.append(
            f"  {kind:<28} {rate:>10.0f} {proxy_pg[kind]:>11.0f} {proxy_pg[kind] / rate:>10.2f}"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--ops", type=int, default=1000, help="operations of each kind")
    parser.add_argument("--requests", type=int, default=1000, help="proxy requests per kind")
    parser.add_argument("--no-fsync", action="store_true", help="PostgreSQL without fsync")
    parser.add_argument("--writer-ops", type=int, default=500, help="appends per writer process")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the writer measurements")
    parser.add_argument(
        "--baseline", type=Path, metavar="DIR", help="also measure the writers on this checkout"
    )
    parser.add_argument("--writers-only", action="store_true", help="only the writers")
    parser.add_argument(
        "--pg-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a PostgreSQL server setting for the cluster (e.g. commit_delay=500)",
    )
    parser.add_argument("--append-worker", nargs=3, metavar=("URL", "TAG", "OPS"),
                        help=argparse.SUPPRESS)  # fmt: skip
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.append_worker:
        url, tag, ops = args.append_worker
        return append_worker(url, tag, int(ops))
    try:
        result = run(args)
    except BenchError as error:
        print(f"store_bench: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
