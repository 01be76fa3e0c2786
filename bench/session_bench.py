"""A long session: memory stays bounded and decisions stay within the policy targets.

What it measures
    One session of ``--actions`` actions (default 100,000), ``--interval`` apart
    (default 50 ms), so the 1-minute, 10-minute and 1-hour windows all roll over many
    times. Each action goes through what the proxy's decision pipeline does per request
    (guardproxy/pipeline/), minus recognition, the gate and the network:

    * the context: ``SessionHistory.context`` only when a rule of the bundle reads
      history for the action's verb (``Bundle.reads_history``, what
      ``Pipeline.decide`` asks); otherwise ``Context(now=..., session=...)``, as
      the proxy does (with the shipped bundle, reads skip the history);
    * ``evaluate`` on the shipped bundle;
    * recording with the decision's outcome: a non-read is recorded at once (the
      proxy does it before forwarding), reads are queued and recorded as a batch
      ``READ_BATCH_SECONDS`` (50 ms) after the first of the batch was queued, each
      with the time it was queued. The proxy's batch timer runs on the event loop;
      here a batch whose time has come is recorded before the next decision (with
      the default interval, a read's batch is recorded just before the next action
      is decided; in the proxy that race can go either way);

    against a real SqliteStore in a temporary directory. Not measured: recognition,
    the gate (its decision record and holds), mitmproxy, threads.

    The mix (from ``random.Random(--seed)``): 80 % reads, 10 % updates, 4 % creates,
    4 % deletes, 2 % destroys, over ``--names`` resource names in aws and k8s, so
    recreates and the destructive budget fire. Reported: decision latency (context +
    evaluate) p50/p99/max against the policy targets (p50 <= 100 us, p99 <= 1 ms),
    for all actions and separately for those whose context includes the history
    (the mutations, with the shipped bundle) and those that skip it, both as wall
    time and as the thread's CPU time (on a shared machine, wall-clock percentiles
    include the time the process waited for a core); the latency of recording a
    mutation (it includes the store write) and of recording a read batch (off the
    request path in the proxy); and the process RSS and the tracker's sizes at
    checkpoints: bounded means the RSS stops growing once the LRUs and windows are
    full.

How to run (from the repository root)
    .venv/bin/python bench/session_bench.py
    .venv/bin/python bench/session_bench.py --baseline      # every action without history
    .venv/bin/python bench/session_bench.py --actions 20000 --names 500 --seed 3
"""

from __future__ import annotations

import argparse
import gc
import random
import resource
import tempfile
import time
from array import array
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from guardproxy.action import Action, Environment, Provider, Resource, Scope, Verb
from guardproxy.context import Context, SessionInfo
from guardproxy.pipeline import READ_BATCH_SECONDS
from guardproxy.policy import evaluate
from guardproxy.policy.model import Outcome
from guardproxy.server import load_policies
from guardproxy.session.history import SessionHistory
from guardproxy.store import SqliteStore

P50_TARGET_US = 100.0
P99_TARGET_US = 1000.0
_MIX = [(Verb.READ, 80), (Verb.UPDATE, 10), (Verb.CREATE, 4), (Verb.DELETE, 4), (Verb.DESTROY, 2)]


def _action(rng: random.Random, names: int) -> Action:
    verb = rng.choices([v for v, _ in _MIX], [w for _, w in _MIX])[0]
    index = rng.randrange(names)
    environment = rng.choice([Environment.DEV, Environment.STAGING, Environment.PROD])
    name = f"{environment.value}-svc-{index}"
    if index % 2:
        rtype = "aws:sqs:queue"
        return Action(
            provider=Provider.AWS,
            service="sqs",
            operation={Verb.READ: "GetQueueAttributes", Verb.CREATE: "CreateQueue"}.get(
                verb, f"{verb.value.title()}Queue"
            ),
            verb=verb,
            environment=environment,
            resource=Resource(type=rtype, name=name, key=f"aws:1111:us-east-1:{rtype}/{name}"),
            scope=Scope(account="1111", region="us-east-1"),
        )
    rtype = "k8s:apps:deployments"
    return Action(
        provider=Provider.K8S,
        service="apps",
        operation={Verb.READ: "get", Verb.UPDATE: "update", Verb.CREATE: "create"}.get(
            verb, "delete"
        ),
        verb=verb,
        environment=environment,
        resource=Resource(type=rtype, name=name, key=f"k8s:c1:ns:{rtype}/{name}"),
        scope=Scope(cluster="c1", namespace="ns"),
    )


def _rss_mib() -> float:
    with open("/proc/self/statm", encoding="ascii") as handle:
        pages = int(handle.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def _percentile(sorted_values: list[int], fraction: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))] / 1000


class _Samples:
    """Latencies in a compact array allocated up front, before the first RSS reading,
    so the bench's own bookkeeping does not show up as RSS growth."""

    def __init__(self, capacity: int) -> None:
        self._values = array("q", bytes(8 * capacity))
        self._count = 0

    def add(self, value: int) -> None:
        self._values[self._count] = value
        self._count += 1

    def __len__(self) -> int:
        return self._count

    def sorted(self) -> list[int]:
        return sorted(self._values[: self._count])


def _line(label: str, wall: _Samples, cpu: _Samples, *, targets: bool) -> str:
    if not wall:
        return f"  {label}: n 0"
    walls, cpus = wall.sorted(), cpu.sorted()
    p50, p99 = _percentile(walls, 0.50), _percentile(walls, 0.99)
    verdicts = ["", ""]
    if targets:
        verdicts = [
            f" [{'PASS' if p50 <= P50_TARGET_US else 'MISS'} <= {P50_TARGET_US:.0f}]",
            f" [{'PASS' if p99 <= P99_TARGET_US else 'MISS'} <= {P99_TARGET_US:.0f}]",
        ]
    cpu_p50, cpu_p99 = _percentile(cpus, 0.50), _percentile(cpus, 0.99)
    cpu_verdicts = ["", ""]
    if targets:
        cpu_verdicts = [
            f" [{'PASS' if cpu_p50 <= P50_TARGET_US else 'MISS'}]",
            f" [{'PASS' if cpu_p99 <= P99_TARGET_US else 'MISS'}]",
        ]
    return (
        f"  {label}: n {len(walls)}\n"
        f"    wall: p50 {p50:.1f} us{verdicts[0]}, p99 {p99:.1f} us{verdicts[1]}, "
        f"max {walls[-1] / 1000:.1f} us\n"
        f"    cpu:  p50 {cpu_p50:.1f} us{cpu_verdicts[0]}, p99 {cpu_p99:.1f} us{cpu_verdicts[1]}, "
        f"max {cpus[-1] / 1000:.1f} us"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--actions", type=int, default=100_000)
    parser.add_argument("--names", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--policies", type=Path, default=Path("policies"))
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="decide every action with a history-free Context (what the history adds)",
    )
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between actions")
    args = parser.parse_args()

    bundle = load_policies(args.policies)
    rng = random.Random(args.seed)
    session = SessionInfo(id="s-bench", name="bench", agent="claude-code", anonymous=False)
    now = datetime(2026, 11, 25, 12, tzinfo=UTC)
    batch_delay = timedelta(seconds=READ_BATCH_SECONDS)
    size = args.actions
    wall = {kind: _Samples(size) for kind in ("all", "history", "without")}
    cpu = {kind: _Samples(size) for kind in ("all", "history", "without")}
    by_outcome = {outcome: _Samples(size) for outcome in ("allow", "hold", "deny")}
    record_ns, batch_ns = _Samples(size), _Samples(size)
    outcomes: Counter[str] = Counter()
    signals: Counter[str] = Counter()
    reads: list[tuple[Action, str, str, datetime]] = []
    checkpoints = {args.actions // 10, args.actions // 2, args.actions}
    print(
        "verbs whose context includes the history: "
        + ", ".join(sorted(v.value for v in Verb if bundle.reads_history(v)))
    )
    with tempfile.TemporaryDirectory() as directory:
        store = SqliteStore(Path(directory) / "guardproxy.db")
        history = SessionHistory(store)

        def record_reads() -> None:
            batch = reads.copy()
            reads.clear()
            start = time.perf_counter_ns()
            for queued in batch:
                history.record(*queued)
            batch_ns.add(time.perf_counter_ns() - start)

        rss_start = _rss_mib()
        print(f"RSS before: {rss_start:.1f} MiB")
        gc.disable()
        for count in range(1, args.actions + 1):
            action = _action(rng, args.names)
            now += timedelta(seconds=args.interval)
            if reads and reads[0][3] + batch_delay <= now:  # the batch timer has fired
                record_reads()
            start = time.perf_counter_ns()
            start_cpu = time.thread_time_ns()
            with_history = not args.baseline and bundle.reads_history(action.verb)
            context = (
                history.context(action, session, now)
                if with_history
                else Context(now=now, session=session)
            )
            decision = evaluate(bundle, action, context)
            cpu_ns = time.thread_time_ns() - start_cpu
            wall_ns = time.perf_counter_ns() - start
            kind = "history" if with_history else "without"
            for bucket in ("all", kind):
                wall[bucket].add(wall_ns)
                cpu[bucket].add(cpu_ns)
            outcome = "allow" if decision.outcome is Outcome.ALLOW else decision.outcome.value
            by_outcome[outcome].add(wall_ns)
            if action.verb is Verb.READ:
                reads.append((action, session.id, outcome, now))
            else:
                middle = time.perf_counter_ns()
                history.record(action, session.id, outcome, now)
                record_ns.add(time.perf_counter_ns() - middle)
            outcomes[outcome] += 1
            for name in ("recreate", "environment_rebuild", "destructive_budget_exceeded"):
                signals[name] += bool(getattr(context.signals, name))
            if count % 1000 == 0:
                gc.collect()
            if count in checkpoints:
                print(
                    f"after {count:>7} actions: RSS {_rss_mib():7.1f} MiB, "
                    f"resources cached {history.cached_resources}, "
                    f"session window buckets {history.window_buckets(session.id)}"
                )
        gc.enable()
        record_reads()
        history.flush()
        store.close()
    print("decision (context + evaluate), targets p50 <= 100 us, p99 <= 1000 us:")
    print(_line("all actions", wall["all"], cpu["all"], targets=True))
    print(_line("context with history (mutations)", wall["history"], cpu["history"], targets=True))
    print(_line("context without history (reads)", wall["without"], cpu["without"], targets=True))
    for outcome, unsorted in by_outcome.items():
        if unsorted:
            values = unsorted.sorted()
            print(
                f"  {outcome:>5} (wall): n {len(values)}, p50 {_percentile(values, 0.5):.1f} us, "
                f"p99 {_percentile(values, 0.99):.1f} us"
            )
    if record_ns:
        recorded = record_ns.sorted()
        print(
            f"record a mutation (incl. its store write): p50 {_percentile(recorded, 0.5):.1f} us,"
            f" p99 {_percentile(recorded, 0.99):.1f} us"
        )
    if batch_ns:
        batches = batch_ns.sorted()
        print(
            f"record a read batch (off the request path; {len(batches)} batches): "
            f"p50 {_percentile(batches, 0.5):.1f} us, p99 {_percentile(batches, 0.99):.1f} us"
        )
    print(f"outcomes: {dict(outcomes)}; signals set: {dict(signals)}")


if __name__ == "__main__":
    main()
