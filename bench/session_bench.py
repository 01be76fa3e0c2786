"""A long session: memory stays bounded and decisions stay within the policy targets.

What it measures
    One session of ``--actions`` actions (default 100,000), ``--interval`` apart
    (default 50 ms), so the 1-minute, 10-minute and 1-hour windows all roll over many
    times. Each action goes through what the proxy does per request, minus
    recognition and the network:
    ``SessionHistory.context`` (counts, recent list, resource history, signals), then
    ``evaluate`` on the shipped bundle, then ``SessionHistory.record`` with the
    decision's outcome (deletes counted as forwarded only when allowed), against a
    real SqliteStore in a temporary directory.

    The mix (from ``random.Random(--seed)``): 80 % reads, 10 % updates, 4 % creates,
    4 % deletes, 2 % destroys, over ``--names`` resource names in aws and k8s, so
    recreates and the destructive budget fire. Reported: decision latency (context +
    evaluate) p50/p99/max against the policy targets (p50 <= 100 us, p99 <= 1 ms),
    also as the thread's CPU time (on a shared machine, wall-clock percentiles include
    the time the process waited for a core),
    the record step's latency (it includes the store write of every non-read), and
    the process RSS and the tracker's sizes at checkpoints: bounded means the RSS
    stops growing once the LRUs and windows are full.

How to run (from the repository root)
    .venv/bin/python bench/session_bench.py
    .venv/bin/python bench/session_bench.py --baseline      # the same without history
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--actions", type=int, default=100_000)
    parser.add_argument("--names", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--policies", type=Path, default=Path("policies"))
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="decide with a history-free Context (the cost the history adds, by difference)",
    )
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between actions")
    args = parser.parse_args()

    bundle = load_policies(args.policies)
    rng = random.Random(args.seed)
    session = SessionInfo(id="s-bench", name="bench", agent="claude-code", anonymous=False)
    now = datetime(2026, 11, 25, 12, tzinfo=UTC)
    # compact arrays, so the bench's own bookkeeping does not show up as RSS growth
    decide_ns = array("q")
    decide_cpu_ns = array("q")
    by_outcome = {outcome: array("q") for outcome in ("allow", "hold", "deny")}
    record_ns = array("q")
    outcomes: Counter[str] = Counter()
    signals: Counter[str] = Counter()
    checkpoints = {args.actions // 10, args.actions // 2, args.actions}
    with tempfile.TemporaryDirectory() as directory:
        store = SqliteStore(Path(directory) / "guardproxy.db")
        history = SessionHistory(store)
        rss_start = _rss_mib()
        print(f"RSS before: {rss_start:.1f} MiB")
        gc.disable()
        for count in range(1, args.actions + 1):
            action = _action(rng, args.names)
            now += timedelta(seconds=args.interval)
            start = time.perf_counter_ns()
            start_cpu = time.thread_time_ns()
            context = (
                Context(now=now, session=session)
                if args.baseline
                else history.context(action, session, now)
            )
            decision = evaluate(bundle, action, context)
            middle = time.perf_counter_ns()
            decide_cpu_ns.append(time.thread_time_ns() - start_cpu)
            outcome = "allow" if decision.outcome is Outcome.ALLOW else decision.outcome.value
            history.record(action, session.id, outcome, now)
            end = time.perf_counter_ns()
            decide_ns.append(middle - start)
            by_outcome[outcome].append(middle - start)
            record_ns.append(end - middle)
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
        history.flush()
        store.close()
    decided, recorded = sorted(decide_ns), sorted(record_ns)
    p50, p99 = _percentile(decided, 0.50), _percentile(decided, 0.99)
    print(
        f"decision (context + evaluate): p50 {p50:.1f} us "
        f"[{'PASS' if p50 <= P50_TARGET_US else 'MISS'} <= {P50_TARGET_US:.0f}], "
        f"p99 {p99:.1f} us [{'PASS' if p99 <= P99_TARGET_US else 'MISS'} <= {P99_TARGET_US:.0f}]"
        f", max {decided[-1] / 1000:.1f} us"
    )
    cpu = sorted(decide_cpu_ns)
    print(
        f"  the same in this thread's CPU time (without waits for a core on a busy machine): "
        f"p50 {_percentile(cpu, 0.50):.1f} us, p99 {_percentile(cpu, 0.99):.1f} us"
    )
    for outcome, unsorted in by_outcome.items():
        if unsorted:
            values = sorted(unsorted)
            print(
                f"  {outcome:>5}: n {len(values)}, p50 {_percentile(values, 0.5):.1f} us, "
                f"p99 {_percentile(values, 0.99):.1f} us"
            )
    print(
        f"record (incl. store write of non-reads): p50 {_percentile(recorded, 0.5):.1f} us, "
        f"p99 {_percentile(recorded, 0.99):.1f} us"
    )
    print(f"outcomes: {dict(outcomes)}; signals set: {dict(signals)}")


if __name__ == "__main__":
    main()
