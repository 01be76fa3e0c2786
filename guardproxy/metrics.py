"""Prometheus metrics of one guardproxy instance.

Each instance has its own ``CollectorRegistry`` (never the process-global one), so
two instances in one process (tests, `guardproxy run`) do not mix their counts.
The request path only increments counters and observes histograms: the library's
per-value lock, no I/O. The store's count of pending holds is read at scrape time.

A module of its own below the gate and the proxy, which count into it on the request
path; ops/http.py serves its exposition on the control and metrics ports.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from guardproxy.action import Action
from guardproxy.log import dropped_lines

CONTENT_TYPE = CONTENT_TYPE_LATEST

MAX_UNKNOWN_HOSTS = 200
"""Distinct host labels on the unknown-action counter; later hosts count as `other`, so
an agent calling many hosts cannot grow the exposition without bound."""

_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
_HOLD_WAIT_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600)


class _DroppedLogLines(Collector):
    """Log lines the process could not write (guardproxy/log.py counts them)."""

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "guardproxy_log_lines_dropped",
            "Log lines dropped because the log destination refused them (disk full...).",
            value=dropped_lines(),
        )


class Metrics:
    """The counters, gauges and histograms guardproxy exports at ``/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self._decisions = Counter(
            "guardproxy_decisions",
            "Decisions taken, by outcome (allow, deny, hold), provider and verb class.",
            ("outcome", "provider", "verb"),
            registry=registry,
        )
        self._latency = Histogram(
            "guardproxy_decision_latency_seconds",
            "Time to recognise a request, compute its context and evaluate the policy.",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self._hold_wait = Histogram(
            "guardproxy_hold_wait_seconds",
            "Time from a hold's creation to its resolution by a human, by resolution.",
            ("state",),
            buckets=_HOLD_WAIT_BUCKETS,
            registry=registry,
        )
        self._holds_created = Counter(
            "guardproxy_holds_created", "Holds created.", registry=registry
        )
        self._unknown = Counter(
            "guardproxy_unclassified_actions",
            "Requests no recogniser could classify (they fail closed unless read-only), "
            "by provider and host.",
            ("provider", "host"),
            registry=registry,
        )
        self._store_errors = Counter(
            "guardproxy_store_errors",
            "Store operations that failed, by operation.",
            ("operation",),
            registry=registry,
        )
        self._failed_closed = Counter(
            "guardproxy_requests_failed_closed",
            "Requests answered with a refusal because guardproxy could not decide or record "
            "them safely, by reason.",
            ("reason",),
            registry=registry,
        )
        self._reloads = Counter(
            "guardproxy_policy_reloads",
            "Policy reloads, by result (loaded, unchanged, refused).",
            ("result",),
            registry=registry,
        )
        self._pending = Gauge(
            "guardproxy_holds_pending",
            "Holds pending approval in the store (all replicas), read at scrape time.",
            registry=registry,
        )
        self._waiting = Gauge(
            "guardproxy_holds_waiting",
            "Requests of this instance waiting live on a hold right now.",
            registry=registry,
        )
        self._bundle = Gauge(
            "guardproxy_policy_bundle_info",
            "The policy bundle in force (value 1), named by its digest.",
            ("digest",),
            registry=registry,
        )
        registry.register(_DroppedLogLines())
        self._unknown_hosts: set[str] = set()
        # labels() validates and locks on every call; the few children are kept instead
        self._decision_children: dict[tuple[str, str, str], Counter] = {}

    # -- the request path

    def decision(self, action: Action, outcome: str) -> None:
        key = (outcome, action.provider.value, action.verb.value)
        child = self._decision_children.get(key)
        if child is None:
            child = self._decision_children[key] = self._decisions.labels(*key)
        child.inc()
        if not action.classified:
            host = action.request.host.lower()
            if host not in self._unknown_hosts:
                if len(self._unknown_hosts) >= MAX_UNKNOWN_HOSTS:
                    host = "other"
                else:
                    self._unknown_hosts.add(host)
            self._unknown.labels(action.provider.value, host).inc()

    def decision_latency(self, seconds: float) -> None:
        self._latency.observe(seconds)

    def hold_created(self) -> None:
        self._holds_created.inc()

    def hold_resolved(self, state: str, waited_seconds: float) -> None:
        self._hold_wait.labels(state).observe(max(0.0, waited_seconds))

    def store_error(self, operation: str) -> None:
        self._store_errors.labels(operation).inc()

    def failed_closed(self, reason: str) -> None:
        self._failed_closed.labels(reason).inc()

    # -- operations

    def policy_reload(self, result: str) -> None:
        self._reloads.labels(result).inc()

    def bundle_in_force(self, digest: str) -> None:
        self._bundle.clear()
        self._bundle.labels(digest).set(1)

    def count_waiting(self, waiting: Callable[[], int]) -> None:
        self._waiting.set_function(lambda: float(waiting()))

    def set_pending(self, pending: int) -> None:
        self._pending.set(pending)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
