"""Per-request latency and throughput of allowed reads: direct, plain mitmproxy, guardproxy.

What it measures
    One client sends sequential GETs over one keep-alive HTTP/1.1 connection, shaped
    like Kubernetes reads (``GET /api/v1/namespaces/default/pods/x`` with a kubectl
    User-Agent and a bearer token), in three scenarios:

    * ``direct``: straight to the upstream;
    * ``mitmproxy``: through ``mitmdump`` with no addon of ours
      (``-q --set connection_strategy=lazy``);
    * ``guardproxy``: through ``guardproxy serve`` with the shipped policies and the
      upstream configured as a Kubernetes API server (``--kube-host``), so every request
      is recognised as a k8s read, decided (``common/allow-reads``) and recorded.

    The upstream is a small asyncio HTTP/1.1 keep-alive server answering a fixed JSON
    pod, in its own process; each proxy runs in its own process too. Through a proxy
    the client sends absolute-form requests (``GET http://127.0.0.1:P/...``), as
    ``http_proxy`` clients do.

    Each request is timed with ``time.perf_counter_ns`` from sending to having read the
    whole body (the garbage collector is off while timing). A pass opens one keep-alive
    connection per scenario, warms each up, then sends ``--requests`` timed requests
    per scenario in ``--blocks`` interleaved rounds (direct, mitmproxy, guardproxy,
    direct, ...), so a burst of background load lands on all scenarios alike. There are
    ``--passes`` passes; each scenario is reported by its best pass (lowest median).
    Reported: p50/p90/p99/max and mean in microseconds, requests per second (timed
    requests over their wall time), and the proxy process's CPU time per request (from
    /proc). The guardproxy/mitmproxy ratios of mean and p50 are compared with the target
    (<= 1.15) and marked PASS or MISS. As a check that is robust to a noisy machine,
    the ratio of the two proxies' median latencies in each interleaved block is also
    given (median and quartiles over all blocks). After the run, guardproxy's store is
    read back to show that the requests were recognised and allowed as k8s reads.

    ``--profile`` additionally samples the guardproxy process during one more pass with
    py-spy ``--gil`` (whichever thread holds the GIL: the event loop, the workers that
    recognise and decide, the decision recorder) and prints the functions with the most
    samples, guardproxy's own first. py-spy must be
    on PATH or given with ``--py-spy``; without it, cProfile of the event-loop thread is
    used instead (it does not see worker threads).

How to run (from the repository root)
    .venv/bin/python bench/proxy_bench.py                   # table for people
    .venv/bin/python bench/proxy_bench.py --json            # machine-readable
    .venv/bin/python bench/proxy_bench.py --requests 5000 --passes 5
    .venv/bin/python bench/proxy_bench.py --profile [--py-spy /path/to/py-spy]

Everything listens on 127.0.0.1 only; every child process has a startup timeout and
is stopped (terminate, then kill) when the benchmark ends, whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import http.client
import json
import math
import os
import platform
import pstats
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import IO, Any

from guardproxy.store import open_store

REPO_ROOT = Path(__file__).resolve().parents[1]
POLICIES = REPO_ROOT / "policies"
VENV_BIN = Path(sys.executable).parent
LOOPBACK = "127.0.0.1"

DEFAULT_REQUESTS = 3000
DEFAULT_PASSES = 3
DEFAULT_BLOCKS = 10
WARMUP = 300
STARTUP_TIMEOUT = 30.0
REQUEST_TIMEOUT = 10.0
UPSTREAM_LIFETIME = 1800.0
TARGET_RATIO = 1.15
PROFILE_TOP = 25

PATH = "/api/v1/namespaces/default/pods/x"
HEADERS = {
    "User-Agent": "kubectl/v1.32.4 (linux/amd64) kubernetes/59526cd",
    "Authorization": "Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6ImJlbmNoIn0.e30.c2lnbmF0dXJl",
    "Accept": "application/json, */*",
}
POD = {
    "kind": "Pod",
    "apiVersion": "v1",
    "metadata": {
        "name": "x",
        "namespace": "default",
        "uid": "3f0c1c52-8b0e-4a53-9d59-2b6a8e1f0a11",
        "resourceVersion": "1001",
        "labels": {"app": "x"},
    },
    "spec": {"containers": [{"name": "main", "image": "registry.example/app:1.0"}]},
    "status": {"phase": "Running", "podIP": "10.0.0.7"},
}


class BenchError(Exception):
    """A problem that stops the benchmark, with a message for the person running it."""


# ---------------------------------------------------------------------------
# The upstream: its own process (``--serve-upstream``), HTTP/1.1 keep-alive, JSON.


class _UpstreamProtocol(asyncio.Protocol):
    """Answers every request with the same JSON pod; keeps the connection open."""

    body = json.dumps(POD).encode()

    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head, rest = self.buffer[:end], self.buffer[end + 4 :]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip() or b"0")
            if len(rest) < length:
                return
            self.buffer = rest[length:]
            assert self.transport is not None
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(self.body), self.body)
            )


async def _serve_upstream(lifetime: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_UpstreamProtocol, LOOPBACK, 0)
    port = server.sockets[0].getsockname()[1]
    print(f"READY {port}", flush=True)
    stdin_closed = asyncio.Event()
    # the parent holds our stdin: when it goes away (even killed), we stop too
    loop.add_reader(sys.stdin.fileno(), stdin_closed.set)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stdin_closed.wait(), timeout=lifetime)
    server.close()


# ---------------------------------------------------------------------------
# Child processes: start with a readiness check, always stop.


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far (Linux /proc; 0 elsewhere)."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Children:
    """Every child process the benchmark started; stop_all() ends each of them."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.children: list[Child] = []

    def start(self, name: str, cmd: Sequence[str], stdout: int | IO[bytes] | None = None) -> Child:
        log = self.workdir / f"{name}.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                list(cmd),
                stdin=subprocess.PIPE,
                stdout=stdout if stdout is not None else sink,
                stderr=sink,
                cwd=self.workdir,
                env={k: v for k, v in os.environ.items() if "proxy" not in k.lower()},
            )
        child = Child(name, process, log)
        self.children.append(child)
        return child

    def stop(self, child: Child, timeout: float = 10.0) -> None:
        process = child.process
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def stop_all(self) -> None:
        for child in reversed(self.children):
            with contextlib.suppress(Exception):
                self.stop(child)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def wait_listening(child: Child, port: int, timeout: float = STARTUP_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.process.poll() is not None:
            raise BenchError(
                f"{child.name} exited with {child.process.returncode} before listening:\n"
                f"{child.tail()}"
            )
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), 0.2):
            return
        time.sleep(0.05)
    raise BenchError(f"{child.name} did not listen on port {port} within {timeout} s")


def start_upstream(children: Children) -> int:
    child = children.start(
        "upstream",
        [sys.executable, __file__, "--serve-upstream", str(UPSTREAM_LIFETIME)],
        stdout=subprocess.PIPE,
    )
    assert child.process.stdout is not None
    deadline = time.monotonic() + STARTUP_TIMEOUT
    os.set_blocking(child.process.stdout.fileno(), False)
    buffered = b""
    while time.monotonic() < deadline:
        if child.process.poll() is not None:
            raise BenchError(f"the upstream exited early:\n{child.tail()}")
        chunk = child.process.stdout.read()
        buffered += chunk or b""
        if b"\n" in buffered:
            line = buffered.split(b"\n", 1)[0].decode()
            if not line.startswith("READY "):
                raise BenchError(f"unexpected upstream output {line!r}")
            return int(line.split()[1])
        time.sleep(0.02)
    raise BenchError(f"the upstream did not start within {STARTUP_TIMEOUT} s")


def tool(name: str) -> str:
    path = VENV_BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        raise BenchError(f"{name} not found next to {sys.executable} nor on PATH")
    return found


def start_mitmdump(children: Children) -> tuple[Child, int]:
    port = free_port()
    confdir = children.workdir / "mitmproxy"
    cmd = [tool("mitmdump"), "-q", "--listen-host", LOOPBACK, "--listen-port", str(port),
           "--set", "connection_strategy=lazy", "--set", f"confdir={confdir}"]  # fmt: skip
    child = children.start("mitmdump", cmd)
    wait_listening(child, port)
    return child, port


def guardproxy_command(data_dir: Path, port: int, control: int, upstream: int) -> list[str]:
    return ["serve", "--data-dir", str(data_dir), "--policies", str(POLICIES),
            "--listen", f"{LOOPBACK}:{port}", "--control", f"{LOOPBACK}:{control}",
            "--kube-host", f"{LOOPBACK}:{upstream}"]  # fmt: skip


def start_guardproxy(
    children: Children, upstream: int, name: str = "guardproxy", cprofile: Path | None = None
) -> tuple[Child, int, Path]:
    port, control = free_port(), free_port()
    data_dir = children.workdir / f"{name}-data"
    args = guardproxy_command(data_dir, port, control, upstream)
    if cprofile is not None:
        cmd = [sys.executable, "-m", "cProfile", "-o", str(cprofile), "-m", "guardproxy", *args]
    else:
        cmd = [tool("guardproxy"), *args]
    child = children.start(name, cmd)
    wait_listening(child, port)
    return child, port, data_dir


# ---------------------------------------------------------------------------
# The client and the statistics.


@dataclass
class PassResult:
    scenario: str
    latencies_ns: list[int]
    wall_seconds: float
    proxy_cpu_seconds: float | None

    @property
    def p50_us(self) -> float:
        return percentile(self.latencies_ns, 50) / 1000


@dataclass
class Stats:
    scenario: str
    requests: int
    p50_us: float
    p90_us: float
    p99_us: float
    max_us: float
    mean_us: float
    requests_per_second: float
    proxy_cpu_us_per_request: float | None
    pass_p50_us: list[float] = field(default_factory=list)
    pass_mean_us: list[float] = field(default_factory=list)


def percentile(values: Sequence[int], q: float) -> float:
    return percentile_f([float(v) for v in values], q)


def percentile_f(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarise(passes: list[PassResult]) -> Stats:
    best = min(passes, key=lambda p: p.p50_us)
    lat = best.latencies_ns
    cpu = best.proxy_cpu_seconds
    return Stats(
        scenario=best.scenario,
        requests=len(lat),
        p50_us=percentile(lat, 50) / 1000,
        p90_us=percentile(lat, 90) / 1000,
        p99_us=percentile(lat, 99) / 1000,
        max_us=max(lat) / 1000,
        mean_us=sum(lat) / len(lat) / 1000,
        requests_per_second=len(lat) / best.wall_seconds,
        proxy_cpu_us_per_request=cpu / len(lat) * 1e6 if cpu is not None else None,
        pass_p50_us=[round(p.p50_us, 1) for p in passes],
        pass_mean_us=[round(sum(p.latencies_ns) / len(p.latencies_ns) / 1000, 1) for p in passes],
    )


@dataclass(frozen=True)
class Target:
    scenario: str
    connect_port: int
    upstream_port: int
    via_proxy: bool
    proxy: Child | None


@contextlib.contextmanager
def gc_disabled() -> Iterator[None]:
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class Client:
    """One keep-alive connection to a scenario's first hop; requests are checked."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.conn = http.client.HTTPConnection(
            LOOPBACK, target.connect_port, timeout=REQUEST_TIMEOUT
        )
        via = target.via_proxy
        self.url = f"http://{LOOPBACK}:{target.upstream_port}{PATH}" if via else PATH
        self.expected = json.dumps(POD).encode()

    def one(self) -> None:
        self.conn.request("GET", self.url, headers=HEADERS)
        response = self.conn.getresponse()
        body = response.read()
        if response.status != 200 or body != self.expected:
            raise BenchError(
                f"{self.target.scenario}: HTTP {response.status} {response.reason}: {body[:300]!r}"
            )

    def timed(self, requests: int) -> tuple[list[int], float, float | None]:
        """(latencies in ns, wall seconds, proxy CPU seconds) of ``requests`` requests."""
        proxy = self.target.proxy
        cpu_before = proxy.cpu_seconds() if proxy is not None else None
        latencies: list[int] = []
        clock = time.perf_counter_ns
        with gc_disabled():
            started = clock()
            for _ in range(requests):
                t0 = clock()
                self.one()
                latencies.append(clock() - t0)
            wall = (clock() - started) / 1e9
        cpu = proxy.cpu_seconds() - cpu_before if proxy and cpu_before is not None else None
        return latencies, wall, cpu

    def close(self) -> None:
        self.conn.close()


def run_pass(target: Target, requests: int, warmup: int) -> PassResult:
    """One keep-alive connection: ``warmup`` untimed requests, then ``requests`` timed."""
    client = Client(target)
    try:
        for _ in range(warmup):
            client.one()
        latencies, wall, cpu = client.timed(requests)
    finally:
        client.close()
    return PassResult(target.scenario, latencies, wall, cpu)


def run_interleaved_pass(
    targets: Sequence[Target], requests: int, warmup: int, blocks: int
) -> tuple[dict[str, PassResult], list[dict[str, float]]]:
    """One pass of every scenario, each on its own keep-alive connection, in ``blocks``
    rounds of ``requests / blocks`` requests per scenario (A, B, C, A, B, C, ...), so a
    burst of background load lands on all of them alike. Returns each scenario's pass
    and the median latency of every scenario in every block (for paired ratios)."""
    clients = [Client(t) for t in targets]
    results = {
        t.scenario: PassResult(t.scenario, [], 0.0, 0.0 if t.proxy else None) for t in targets
    }
    block_medians: list[dict[str, float]] = []
    try:
        for client in clients:
            for _ in range(warmup):
                client.one()
        sizes = [requests // blocks + (1 if i < requests % blocks else 0) for i in range(blocks)]
        for size in sizes:
            medians: dict[str, float] = {}
            for client in clients:
                latencies, wall, cpu = client.timed(size)
                result = results[client.target.scenario]
                result.latencies_ns.extend(latencies)
                result.wall_seconds += wall
                if cpu is not None and result.proxy_cpu_seconds is not None:
                    result.proxy_cpu_seconds += cpu
                medians[client.target.scenario] = percentile(latencies, 50)
            block_medians.append(medians)
    finally:
        for client in clients:
            client.close()
    return results, block_medians


def guardproxy_record(data_dir: Path) -> dict[str, Any]:
    """What guardproxy stored about the benchmark's requests (after it stopped)."""
    store = open_store(str(data_dir / "guardproxy.db"))
    try:
        records = store.list_decisions(limit=1_000_000)
    finally:
        store.close()
    kinds: Counter[str] = Counter()
    for record in records:
        action = json.loads(record.action_json)
        kinds[f"{action['provider']} {action['verb']} {record.outcome}"] += 1
    return {"decisions": len(records), "by_kind": dict(kinds)}


# ---------------------------------------------------------------------------
# Profiling.


GUARDPROXY_SOURCE = str(REPO_ROOT / "guardproxy") + "/"


@dataclass(frozen=True)
class Frame:
    name: str  # "Class.function (short/path.py)"
    ours: bool  # guardproxy's own code


def _frame(text: str) -> Frame:
    """A py-spy raw frame, ``function (/full/path/file.py:line)``, shortened."""
    function, _, where = text.rpartition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    ours = path.startswith(GUARDPROXY_SOURCE)
    if ours:
        path = "guardproxy/" + path[len(GUARDPROXY_SOURCE) :]
        # `guardproxy serve` itself (main, cmd_serve, _serve) is the root every event-loop
        # sample sits under, not work guardproxy adds per request
        ours = not path.startswith("guardproxy/cli/")
    else:
        for marker in ("/site-packages/", "/lib/python3.12/", "/lib/python3/"):
            if marker in path:
                path = path.split(marker, 1)[1]
                break
    return Frame(f"{function} ({path})", ours)


def _percent(counter: Counter[str], total: int, top: int) -> list[tuple[str, float]]:
    return [(name, round(100 * count / total, 1)) for name, count in counter.most_common(top)]


def analyse_py_spy(raw: str) -> dict[str, Any]:
    """Where the GIL-holding samples went.

    * ``guardproxy_entry_points``: the outermost guardproxy frame that library code called
      (an addon hook, a worker-thread function, the recorder thread), inclusive: the cost
      of each piece guardproxy adds to mitmproxy;
    * ``guardproxy_inclusive``: every guardproxy function, inclusive (except the CLI
      frames every event-loop sample sits under);
    * ``top_self``: every function by its own samples.
    """
    entries: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = ours_total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [
            _frame(f)
            for f in stack.split(";")
            if " (" in f and not f.startswith(("thread (", "process "))
        ]
        if not frames:
            continue
        total += count
        own[frames[-1].name] += count
        for name in {f.name for f in frames if f.ours}:
            inclusive[name] += count
        entry = next(
            (f for before, f in pairwise(frames) if f.ours and not before.ours),
            None,
        )
        if entry is not None:
            entries[entry.name] += count
            ours_total += count
    if not total:
        raise BenchError("py-spy recorded no samples")
    return {
        "samples": total,
        "guardproxy_share": round(100 * ours_total / total, 1),
        "guardproxy_entry_points": _percent(entries, total, PROFILE_TOP),
        "guardproxy_inclusive": _percent(inclusive, total, PROFILE_TOP),
        "top_self": _percent(own, total, PROFILE_TOP),
    }


def profile_with_py_spy(
    py_spy: str, children: Children, upstream: int, requests: int
) -> dict[str, Any]:
    child, port, _ = start_guardproxy(children, upstream, name="guardproxy-profiled")
    out = children.workdir / "py-spy.txt"
    target = Target("guardproxy", port, upstream, True, child)
    run_pass(target, 0, WARMUP)
    sampler = subprocess.Popen(
        [py_spy, "record", "--pid", str(child.process.pid), "--rate", "1000", "--format",
         "raw", "--output", str(out), "--gil", "--full-filenames"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        time.sleep(1.0)
        run_pass(target, requests, 0)
    finally:
        sampler.send_signal(signal.SIGINT)
        try:
            _, err = sampler.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            sampler.kill()
            _, err = sampler.communicate()
        children.stop(child)
    if not out.exists():
        raise BenchError(f"py-spy wrote no profile: {err.decode(errors='replace')[-500:]}")
    return {
        "tool": "py-spy --gil (whichever thread holds the GIL, 1000 Hz)",
        **analyse_py_spy(out.read_text(errors="replace")),
    }


def profile_with_cprofile(children: Children, upstream: int, requests: int) -> dict[str, Any]:
    output = children.workdir / "guardproxy.prof"
    child, port, _ = start_guardproxy(
        children, upstream, name="guardproxy-cprofile", cprofile=output
    )
    target = Target("guardproxy", port, upstream, True, child)
    run_pass(target, requests, WARMUP)
    children.stop(child)
    if not output.exists():
        raise BenchError("cProfile wrote no profile (did guardproxy exit cleanly?)")
    stats = pstats.Stats(str(output))
    rows: list[tuple[str, float, float]] = []
    for (path, line, name), entry in stats.stats.items():  # type: ignore[attr-defined]
        _, _, own_time, cumulative, _ = entry
        rows.append((f"{name} ({path.rsplit('/', 2)[-2:]!s}:{line})", own_time, cumulative))
    ours = [r for r in rows if "guardproxy" in r[0]]
    return {
        "tool": "cProfile (event-loop thread only: worker threads are not seen)",
        "guardproxy_cumulative_s": [
            (n, round(c, 3)) for n, _, c in sorted(ours, key=lambda r: -r[2])[:PROFILE_TOP]
        ],
        "top_self_s": [(n, round(s, 3)) for n, s, _ in sorted(rows, key=lambda r: -r[1])[:15]],
    }


# ---------------------------------------------------------------------------
# Orchestration and output.


def run(args: argparse.Namespace) -> dict[str, Any]:
    if not (POLICIES / "bundle.yaml").exists():
        raise BenchError(f"no policy bundle at {POLICIES}")
    workdir = Path(tempfile.mkdtemp(prefix="guardproxy-bench-"))
    children = Children(workdir)
    try:
        upstream = start_upstream(children)
        mitm, mitm_port = start_mitmdump(children)
        guard, guard_port, guard_data = start_guardproxy(children, upstream)
        targets = [
            Target("direct", upstream, upstream, False, None),
            Target("mitmproxy", mitm_port, upstream, True, mitm),
            Target("guardproxy", guard_port, upstream, True, guard),
        ]
        passes: dict[str, list[PassResult]] = {t.scenario: [] for t in targets}
        blocks: list[dict[str, float]] = []
        for _ in range(args.passes):
            results, block_medians = run_interleaved_pass(
                targets, args.requests, args.warmup, args.blocks
            )
            for name, result in results.items():
                passes[name].append(result)
            blocks.extend(block_medians)
        children.stop(guard)  # flushes the decision log
        record = guardproxy_record(guard_data)
        profile = None
        if args.profile:
            py_spy = args.py_spy or shutil.which("py-spy")
            if py_spy:
                profile = profile_with_py_spy(py_spy, children, upstream, args.requests)
            else:
                profile = profile_with_cprofile(children, upstream, args.requests)
    finally:
        children.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    stats = {name: summarise(result) for name, result in passes.items()}
    guard_stats, mitm_stats = stats["guardproxy"], stats["mitmproxy"]
    ratios = {
        "mean": guard_stats.mean_us / mitm_stats.mean_us,
        "p50": guard_stats.p50_us / mitm_stats.p50_us,
    }
    paired = sorted(b["guardproxy"] / b["mitmproxy"] for b in blocks)
    return {
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        },
        "workload": {
            "request": f"GET {PATH}",
            "headers": sorted(HEADERS),
            "requests_per_pass": args.requests,
            "passes": args.passes,
            "blocks_per_pass": args.blocks,
            "warmup": args.warmup,
            "connection": "one keep-alive HTTP/1.1 connection, sequential",
        },
        "scenarios": {name: asdict(s) for name, s in stats.items()},
        "ratios": {k: round(v, 3) for k, v in ratios.items()},
        "target_ratio": TARGET_RATIO,
        "verdicts": {k: "PASS" if v <= TARGET_RATIO else "MISS" for k, v in ratios.items()},
        "paired_block_p50_ratio": {
            "blocks": len(paired),
            "median": round(percentile_f(paired, 50), 3),
            "p25": round(percentile_f(paired, 25), 3),
            "p75": round(percentile_f(paired, 75), 3),
        },
        "guardproxy_record": record,
        "profile": profile,
    }


def render(result: dict[str, Any]) -> str:
    lines = [
        "Allowed reads over keep-alive HTTP/1.1 (one client, sequential; best pass of "
        f"{result['workload']['passes']} by median, {result['workload']['requests_per_pass']} "
        "requests each)",
        f"machine: {result['machine']['cpus']} CPUs, load average "
        f"{', '.join(f'{x:.2f}' for x in result['machine']['load_average'] or [])}",
        "",
        f"{'scenario':<12}{'p50 µs':>9}{'p90 µs':>9}{'p99 µs':>9}{'max µs':>9}{'mean µs':>9}"
        f"{'req/s':>9}{'proxy CPU µs/req':>18}   p50 per pass",
    ]
    for name, s in result["scenarios"].items():
        cpu = s["proxy_cpu_us_per_request"]
        lines.append(
            f"{name:<12}{s['p50_us']:>9.0f}{s['p90_us']:>9.0f}{s['p99_us']:>9.0f}"
            f"{s['max_us']:>9.0f}{s['mean_us']:>9.0f}{s['requests_per_second']:>9.0f}"
            f"{(f'{cpu:.0f}' if cpu is not None else '-'):>18}   "
            f"{', '.join(f'{v:.0f}' for v in s['pass_p50_us'])}"
        )
    lines.append("")
    for key in ("mean", "p50"):
        lines.append(
            f"guardproxy/mitmproxy {key:<4}: {result['ratios'][key]:.3f}x  "
            f"(target <= {result['target_ratio']:.2f}x)  {result['verdicts'][key]}"
        )
    paired = result["paired_block_p50_ratio"]
    lines.append(
        f"paired check: guardproxy/mitmproxy median latency per interleaved block: median "
        f"{paired['median']:.3f}x (quartiles {paired['p25']:.3f}-{paired['p75']:.3f}, "
        f"{paired['blocks']} blocks)"
    )
    record = result["guardproxy_record"]
    kinds = ", ".join(f"{k}: {v}" for k, v in sorted(record["by_kind"].items()))
    lines.append(f"guardproxy stored {record['decisions']} decisions ({kinds})")
    profile = result.get("profile")
    if profile:
        lines += ["", f"profile of guardproxy: {profile['tool']}"]
        if "guardproxy_inclusive" in profile:
            lines.append(
                f"  {profile['samples']} samples; {profile['guardproxy_share']}% in guardproxy "
                "code called from mitmproxy/asyncio/threads, by entry point (inclusive):"
            )
            lines += [f"  {p:5.1f}%  {n}" for n, p in profile["guardproxy_entry_points"]]
            lines.append("  guardproxy functions (inclusive):")
            lines += [f"  {p:5.1f}%  {n}" for n, p in profile["guardproxy_inclusive"]]
            lines.append("  all functions by own samples:")
            lines += [f"  {p:5.1f}%  {n}" for n, p in profile["top_self"]]
        else:
            lines.append("  guardproxy functions by cumulative seconds:")
            lines += [f"  {s:8.3f}  {n}" for n, s in profile["guardproxy_cumulative_s"]]
            lines.append("  top functions by own seconds:")
            lines += [f"  {s:8.3f}  {n}" for n, s in profile["top_self_s"]]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=DEFAULT_REQUESTS,
                        help=f"timed requests per pass (default {DEFAULT_REQUESTS})")  # fmt: skip
    parser.add_argument("--passes", type=int, default=DEFAULT_PASSES,
                        help=f"passes per scenario (default {DEFAULT_PASSES})")  # fmt: skip
    parser.add_argument("--warmup", type=int, default=WARMUP, help="untimed requests first")
    parser.add_argument("--blocks", type=int, default=DEFAULT_BLOCKS,
                        help="interleaved rounds per pass (default "
                             f"{DEFAULT_BLOCKS})")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--profile", action="store_true", help="also profile guardproxy")
    parser.add_argument("--py-spy", metavar="PATH", help="py-spy binary for --profile")
    parser.add_argument("--serve-upstream", type=float, metavar="SECONDS", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.requests < 1 or args.passes < 1 or args.warmup < 0:
        parser.error("--requests and --passes must be positive, --warmup not negative")
    if not 1 <= args.blocks <= args.requests:
        parser.error("--blocks must be between 1 and --requests")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_upstream is not None:
        asyncio.run(_serve_upstream(args.serve_upstream))
        return 0
    try:
        result = run(args)
    except BenchError as error:
        print(f"proxy_bench: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
