"""What the Prometheus metrics add to each request on the proxy's hot path.

Per decided request the gate calls ``Metrics.decision`` (one labelled counter) and the
guard ``Metrics.decision_latency`` (one histogram observation); an unclassified action
adds one more labelled counter. This times those calls in a loop, with the action
shapes of a classified k8s read and an unclassified request, and prints nanoseconds per
request (best of ``--repeat`` runs), next to a whole-proxy request for scale
(bench/proxy_bench.py measures guardproxy at several milliseconds of CPU per request).

    .venv/bin/python bench/metrics_bench.py [--requests 200000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import gc
import time

from guardproxy.action import Action, Provider, RequestSummary, Verb
from guardproxy.metrics import Metrics


def time_per_request(metrics: Metrics, action: Action, requests: int) -> float:
    decision, latency = metrics.decision, metrics.decision_latency
    gc.disable()
    try:
        started = time.perf_counter_ns()
        for _ in range(requests):
            decision(action, "allow")
            latency(0.0004)
        elapsed = time.perf_counter_ns() - started
    finally:
        gc.enable()
    return elapsed / requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    shapes = {
        "classified k8s read": Action(provider=Provider.K8S, service="core", operation="get",
                                      verb=Verb.READ),
        "unclassified request": Action(request=RequestSummary(method="POST",
                                                              host="api.example.com")),
    }  # fmt: skip
    metrics = Metrics()
    print(f"metrics cost per request ({args.requests} requests, best of {args.repeat})")
    for name, action in shapes.items():
        best = min(time_per_request(metrics, action, args.requests) for _ in range(args.repeat))
        print(f"  {name:22s} {best:8.0f} ns")
    size = len(metrics.exposition())
    started = time.perf_counter()
    metrics.exposition()
    print(f"one scrape: {size} bytes in {(time.perf_counter() - started) * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
