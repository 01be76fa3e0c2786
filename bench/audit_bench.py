"""What the audit trail costs the proxy: throughput with decision recording on vs off.

What it measures
    Two ``guardproxy serve`` processes side by side, same shipped policies, same
    upstream (proxy_bench.py's keep-alive JSON server, read as a Kubernetes API server):

    * ``on``: guardproxy as shipped: every decision redacted, stored and appended to
      the hash chain; mutating requests synchronously (durable before forwarding),
      reads in batches off the request path; upstream statuses chained after them.
    * ``off``: the same proxy with recording switched off inside the benchmark
      process only (the recorder queue and the store's decision writes do nothing,
      redaction is the identity). guardproxy itself has no such switch.
    * ``unchained``: decisions recorded as before the audit trail (the ``decisions``
      table only: no chain, no redaction, no upstream records), to show what the
      chain and redaction add on top of recording itself.

    Two workloads, each over one keep-alive HTTP/1.1 connection per scenario:

    * ``reads``: ``GET /api/v1/namespaces/default/pods/x`` (proxy_bench's request): the
      proxy benchmark's workload, on which the 10 % budget is set;
    * ``mixed``: 4 reads then 1 ``POST`` of a configmap in ``dev-app`` (allowed, so
      recorded durably before it is forwarded), repeated.

    Requests are sent in ``--blocks`` interleaved rounds (on, unchained, off, on, ...) so
    background load lands on both alike; ``--passes`` passes, best pass per scenario.
    Reported: requests per second for each, the ratios on/off and on/unchained, the
    median over blocks of on/off, and PASS/MISS against the budget (on/off >= 0.90).
    As checks that do not pick a best pass, the ratio over all passes (total requests
    over total time, per scenario) and the median and mean of the per-block ratios.

How to run (from the repository root)
    .venv/bin/python bench/audit_bench.py [--requests 3000] [--passes 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import proxy_bench as pb  # a sibling script, found through sys.path

BUDGET = 0.90
WRITE_PATH = "/api/v1/namespaces/dev-app/configmaps"
WRITE_BODY = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b"}})


def _switch_recording(mode: str) -> None:
    """Inside an ``off`` or ``unchained`` child only: change what recording does."""
    from guardproxy import server  # noqa: PLC0415
    from guardproxy.gate import gate, recorder  # noqa: PLC0415
    from guardproxy.store import sql, sqlite  # noqa: PLC0415
    from guardproxy.store.base import DecisionRecord  # noqa: PLC0415

    class UnrecordedStore(sqlite.SqliteStore):
        def append_decision(self, record: DecisionRecord) -> None:
            pass

        def append_decisions(self, records: Sequence[DecisionRecord]) -> None:
            pass

        def set_upstream_statuses(self, statuses: Sequence[tuple[str, int]]) -> None:
            pass

    class UnchainedStore(sqlite.SqliteStore):
        """Decisions kept as before the audit chain: one table, no hashes."""

        def append_decision(self, record: DecisionRecord) -> None:
            self.append_decisions([record])

        def append_decisions(self, records: Sequence[DecisionRecord]) -> None:
            rows = [
                (r.id, sql._ts(r.at), r.session_id, r.action_json, r.context_json,
                 r.decision_json, r.outcome, r.hold_id, r.upstream_status)
                for r in records
            ]  # fmt: skip
            with self._write() as db:
                db.executemany("INSERT INTO decisions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

        def set_upstream_statuses(self, statuses: Sequence[tuple[str, int]]) -> None:
            with self._write() as db:
                db.executemany(
                    "UPDATE decisions SET upstream_status = ? WHERE id = ?",
                    [(status, decision_id) for decision_id, status in statuses],
                )

    store_class = UnrecordedStore if mode == "off" else UnchainedStore

    def open_replacement(url: str) -> sqlite.SqliteStore:
        return store_class(Path(url.removeprefix("sqlite://")))

    # the names as the proxy's modules imported them
    setattr(server, "open_store", open_replacement)  # noqa: B010
    setattr(gate, "redact_json_text", lambda text: text)  # noqa: B010
    setattr(gate, "redact_context_json", lambda context: context.canonical_json())  # noqa: B010
    setattr(gate, "redact_model_json", lambda text: text)  # noqa: B010
    if mode == "off":
        recorder.DecisionRecorder.record = lambda self, decision_id, build: None  # type: ignore[method-assign]
        recorder.DecisionRecorder.status = lambda self, decision_id, status: None  # type: ignore[method-assign]


def _serve_guard(mode: str, argv: list[str]) -> int:
    if mode != "on":
        _switch_recording(mode)
    from guardproxy.cli.main import main  # noqa: PLC0415

    return main(["--log-level", "warning", "serve", *argv])


def start_guard(children: pb.Children, upstream: int, mode: str) -> tuple[pb.Child, int]:
    port, control = pb.free_port(), pb.free_port()
    data_dir = children.workdir / f"guard-{mode}"
    args = pb.guardproxy_command(data_dir, port, control, upstream)
    child = children.start(
        f"guardproxy-{mode}", [sys.executable, __file__, "--serve-guard", mode, "--", *args[1:]]
    )
    pb.wait_listening(child, port)
    return child, port


class Client:
    def __init__(self, port: int, upstream: int, workload: str) -> None:
        import http.client  # noqa: PLC0415

        self.conn = http.client.HTTPConnection(pb.LOOPBACK, port, timeout=pb.REQUEST_TIMEOUT)
        self.base = f"http://{pb.LOOPBACK}:{upstream}"
        self.workload = workload
        self.sent = 0

    def one(self) -> None:
        write = self.workload == "mixed" and self.sent % 5 == 4
        self.sent += 1
        if write:
            headers = {**pb.HEADERS, "Content-Type": "application/json"}
            self.conn.request("POST", self.base + WRITE_PATH, body=WRITE_BODY, headers=headers)
        else:
            self.conn.request("GET", self.base + pb.PATH, headers=pb.HEADERS)
        response = self.conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise pb.BenchError(f"HTTP {response.status}: {body[:300]!r}")

    def timed(self, requests: int) -> float:
        with pb.gc_disabled():
            started = time.perf_counter()
            for _ in range(requests):
                self.one()
            return time.perf_counter() - started

    def close(self) -> None:
        self.conn.close()


def run_workload(
    ports: dict[str, int], upstream: int, workload: str, args: argparse.Namespace
) -> dict[str, Any]:
    best: dict[str, float] = {}
    total_wall: dict[str, float] = {}
    block_ratios: list[float] = []
    for _ in range(args.passes):
        clients = {mode: Client(port, upstream, workload) for mode, port in ports.items()}
        walls = dict.fromkeys(clients, 0.0)
        try:
            for client in clients.values():
                for _ in range(args.warmup):
                    client.one()
            size = max(1, args.requests // args.blocks)
            for _ in range(args.blocks):
                block = {mode: size / client.timed(size) for mode, client in clients.items()}
                for mode, rps in block.items():
                    walls[mode] += size / rps
                block_ratios.append(block["on"] / block["off"])
        finally:
            for client in clients.values():
                client.close()
        for mode, wall in walls.items():
            rps = size * args.blocks / wall
            best[mode] = max(best.get(mode, 0.0), rps)
            total_wall[mode] = total_wall.get(mode, 0.0) + wall
    ratio = best["on"] / best["off"]
    return {
        "workload": workload,
        "rps_on": round(best["on"], 1),
        "rps_unchained": round(best["unchained"], 1),
        "rps_off": round(best["off"], 1),
        "ratio_on_off": round(ratio, 3),
        "ratio_on_unchained": round(best["on"] / best["unchained"], 3),
        "block_ratio_median": round(statistics.median(block_ratios), 3),
        "block_ratio_mean": round(statistics.fmean(block_ratios), 3),
        "ratio_all_passes": round(total_wall["off"] / total_wall["on"], 3),
        "verdict": "PASS" if ratio >= BUDGET else "MISS",
    }


def recorded(workdir: Path) -> dict[str, Any]:
    from guardproxy.store import open_store  # noqa: PLC0415
    from guardproxy.store.chain import verify  # noqa: PLC0415

    store = open_store(str(workdir / "guard-on" / "guardproxy.db"))
    try:
        records = store.audit_records(limit=10_000_000)
    finally:
        store.close()
    kinds: dict[str, int] = {}
    for record in records:
        kinds[record.kind] = kinds.get(record.kind, 0) + 1
    return {"chain_records": len(records), "kinds": kinds, "chain_intact": not verify(records)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="audit-bench-") as scratch:
        children = pb.Children(Path(scratch))
        try:
            upstream = pb.start_upstream(children)
            ports = {
                mode: start_guard(children, upstream, mode)[1]
                for mode in ("on", "unchained", "off")
            }
            results = [run_workload(ports, upstream, w, args) for w in ("reads", "mixed")]
        finally:
            children.stop_all()
        return {
            "requests_per_pass": args.requests,
            "passes": args.passes,
            "results": results,
            "recorded_by_on": recorded(Path(scratch)),
        }


def render(result: dict[str, Any]) -> str:
    lines = [
        f"audit recording cost ({result['requests_per_pass']} requests x "
        f"{result['passes']} passes, best pass each; budget: on/off >= {BUDGET})",
        f"{'workload':<8} {'on req/s':>10} {'unchained':>10} {'off req/s':>10} {'on/off':>7} "
        f"{'on/unchained':>13} {'block median on/off':>20}  verdict",
    ]
    for r in result["results"]:
        lines.append(
            f"{r['workload']:<8} {r['rps_on']:>10} {r['rps_unchained']:>10} {r['rps_off']:>10} "
            f"{r['ratio_on_off']:>7} {r['ratio_on_unchained']:>13} "
            f"{r['block_ratio_median']:>20}  {r['verdict']}"
        )
    for r in result["results"]:
        lines.append(
            f"{r['workload']}: on/off over all passes {r['ratio_all_passes']}, "
            f"per interleaved block: median {r['block_ratio_median']}, "
            f"mean {r['block_ratio_mean']}"
        )
    rec = result["recorded_by_on"]
    lines.append(
        f"recorded by 'on': {rec['chain_records']} chain records {rec['kinds']}, "
        f"chain intact: {rec['chain_intact']}"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["--serve-guard"]:
        return _serve_guard(arguments[1], arguments[3:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=2000, help="timed requests per pass")
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--blocks", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(arguments)
    if args.requests < args.blocks or args.passes < 1:
        parser.error("--requests must be at least --blocks, --passes positive")
    try:
        result = run(args)
    except pb.BenchError as error:
        print(f"audit_bench: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
