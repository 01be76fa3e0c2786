"""Session history: what a session did before, computed before each decision.

The policy engine is pure (policy notes §3.1 principle 6): it reads no clock and no
store. So everything a rule may know about the past — counts over sliding windows,
the last actions, the current resource's history, the sequence signals — is
computed here for (action, session, now), put in the :class:`Context`, evaluated
and recorded with the decision. Replaying a recorded input gives the same decision
whatever the session has done since.

After the gate's verdict the action is fed back with its outcome. Only forwarded
actions (outcome ``allow``) count as having happened: they alone make tombstones,
recreates, destroyed containers and the destructive count. Held and denied actions
still count as attempts (totals, verbs, providers, environments) and appear in
``recent`` with their outcome.

Memory is bounded whatever the session length: each window is 60 time buckets with
a running total (a count is exact to within one bucket, 1/60 of the window), the
recent list and per-resource events are fixed-length deques, and both sessions and
resource keys live in LRUs. State is persisted as ``session_events`` rows; a
session or resource key missing from memory (after a restart or an eviction) is
loaded lazily from the store on first use.

Nothing here raises into the request path. If the history cannot be computed, the
context carries ``signals.history_unavailable`` and the shipped policy
(policies/sequences.yaml) holds every mutating action: failing closed is the
gate's job, and a hold lets a human decide without the history. If an action
cannot be recorded, the error is logged and the history undercounts.

Left open: an id→name cache learned from responses (RunInstances → Name tag), so
calls that carry only server ids key the same resource as by name.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog

from guardproxy.action import Action, Environment, Provider, Verb
from guardproxy.context import (
    Context,
    History,
    RecentAction,
    ResourceEvent,
    ResourceHistory,
    SessionInfo,
    Signals,
)
from guardproxy.store.base import EventTotal, SessionEvent, Store, StoreError

log = structlog.get_logger(__name__)

FORWARDED = "allow"
DESTRUCTIVE = frozenset({Verb.DELETE, Verb.DESTROY})
PROTECTION_REMOVAL = "protection-removal"
WINDOWS = (("m1", 60), ("m10", 600), ("h1", 3600))
BUCKETS = 60
_WINDOW_REPLAY_LIMIT = 50_000
_RESOURCE_LOAD_LIMIT = 64
_PER_SESSION_KEYS = 256


@dataclass(frozen=True)
class HistorySettings:
    """Windows, thresholds and memory bounds (the proxy sets the budget from its config)."""

    recreate_window: timedelta = timedelta(hours=1)
    destructive_budget: int = 10
    rebuild_recreates: int = 2
    recent: int = 20
    resource_events: int = 8
    max_resources: int = 50_000
    max_sessions: int = 1_000
    flush_every: int = 100


class _Window:
    """A sliding window as BUCKETS time buckets plus their running total (O(1) reads)."""

    __slots__ = ("buckets", "totals", "width")

    def __init__(self, span_seconds: int) -> None:
        self.width = span_seconds / BUCKETS
        self.buckets: deque[tuple[int, Counter[str]]] = deque()
        self.totals: Counter[str] = Counter()

    def _expire(self, index: int) -> None:
        while self.buckets and self.buckets[0][0] <= index - BUCKETS:
            _, old = self.buckets.popleft()
            self.totals.subtract(old)

    def add(self, moment: float, keys: Iterable[str]) -> None:
        index = int(moment // self.width)
        self._expire(index)
        if not self.buckets or self.buckets[-1][0] < index:
            self.buckets.append((index, Counter()))
        bucket = self.buckets[-1][1]  # late events join the newest bucket
        for key in keys:
            bucket[key] += 1
            self.totals[key] += 1

    def counts(self, moment: float) -> Counter[str]:
        self._expire(int(moment // self.width))
        return self.totals


@dataclass
class _SessionState:
    windows: dict[str, _Window]
    totals: Counter[str]
    recent: deque[RecentAction]
    recreated: OrderedDict[str, datetime] = field(default_factory=OrderedDict)
    destroyed: OrderedDict[str, tuple[datetime, str]] = field(default_factory=OrderedDict)


@dataclass
class _ResourceState:
    events: deque[ResourceEvent]
    deleted_at: datetime | None = None
    deleted_by_session: str = ""
    deleted_by: str = ""
    created_since_delete: bool = False
    protection_removed: bool = False

    def apply(self, event: ResourceEvent, summary: str) -> None:
        self.events.append(event)
        if event.verb in DESTRUCTIVE:
            self.deleted_at = event.at
            self.deleted_by_session = event.session_id
            self.deleted_by = summary
            self.created_since_delete = False
        elif event.verb is Verb.CREATE:
            self.created_since_delete = True
        if event.protection_removed:
            self.protection_removed = True


def event_keys(verb: Verb, provider: Provider, environment: Environment, outcome: str) -> list[str]:
    """The counters one action increments."""
    keys = ["total", f"verb:{verb.value}", f"provider:{provider.value}", f"env:{environment.value}"]
    if outcome == FORWARDED and verb in DESTRUCTIVE:
        keys.append("destructive")
    return keys


_VERB_KEYS = tuple((v.value, f"verb:{v.value}") for v in Verb)
_PROVIDER_KEYS = tuple((p.value, f"provider:{p.value}") for p in Provider)
_ENVIRONMENT_KEYS = tuple((e.value, f"env:{e.value}") for e in Environment)


def counts(counter: Counter[str]) -> dict[str, object]:
    """One window's counters as the fields of :class:`Counts`.

    Plain data, validated once for the whole History by pydantic's core: building
    the sixteen count models one by one in Python costs more than the decision.
    """
    return {
        "total": counter["total"],
        "destructive": counter["destructive"],
        "verb": {n: counter[k] for n, k in _VERB_KEYS},
        "provider": {n: counter[k] for n, k in _PROVIDER_KEYS},
        "environment": {n: counter[k] for n, k in _ENVIRONMENT_KEYS},
    }


def destroyed_container(action: Action) -> str:
    """The environment-level container a delete removes (stack, namespace...), or ''."""
    name = action.resource.name
    if action.verb not in DESTRUCTIVE or not name:
        return ""
    rtype = action.resource.type.lower()
    if rtype in ("aws:cloudformation:stack", "tfc:workspace"):
        return action.resource.key
    if action.provider is Provider.K8S and rtype.endswith(":namespaces"):
        return _namespace(action.scope.cluster, name)
    if action.provider is Provider.AZURE and rtype.endswith("/resourcegroups"):
        return _resource_group(action.scope.subscription, name)
    if action.provider is Provider.GCP and rtype == "gcp:cloudresourcemanager:projects":
        return f"gcp:project/{name}"
    return ""


def enclosing_containers(action: Action) -> list[str]:
    """The environment-level containers an action happens inside."""
    scope, rtype = action.scope, action.resource.type.lower()
    found = []
    if action.provider is Provider.K8S and scope.namespace and not rtype.endswith(":namespaces"):
        found.append(_namespace(scope.cluster, scope.namespace))
    if (
        action.provider is Provider.AZURE
        and scope.resource_group
        and not rtype.endswith("/resourcegroups")
    ):
        found.append(_resource_group(scope.subscription, scope.resource_group))
    if action.provider is Provider.GCP and scope.project and "projects" not in rtype:
        found.append(f"gcp:project/{scope.project}")
    return found


def _namespace(cluster: str, name: str) -> str:
    return f"k8s:{cluster}:namespace/{name}"


def _resource_group(subscription: str, name: str) -> str:
    return f"azure:{subscription.lower()}:resourcegroup/{name.lower()}"


def _bounded_put[V](mapping: OrderedDict[str, V], key: str, value: V, limit: int) -> None:
    mapping[key] = value
    mapping.move_to_end(key)
    while len(mapping) > limit:
        mapping.popitem(last=False)


class SessionHistory:
    """Tracks sessions and resource keys; thread-safe (decisions run in worker threads)."""

    def __init__(self, store: Store, settings: HistorySettings | None = None) -> None:
        self._store = store
        self.settings = settings or HistorySettings()
        self._sessions: OrderedDict[str, _SessionState] = OrderedDict()
        self._resources: OrderedDict[str, _ResourceState] = OrderedDict()
        self._pending: list[SessionEvent] = []
        self._lock = threading.Lock()

    # -- sizes, for the memory bound's tests and bench

    @property
    def cached_resources(self) -> int:
        return len(self._resources)

    def window_buckets(self, session_id: str) -> int:
        """Time buckets held for a session (at most 60 per window); 0 when not loaded."""
        state = self._sessions.get(session_id)
        return 0 if state is None else sum(len(w.buckets) for w in state.windows.values())

    # -- before the decision

    def context(self, action: Action, session: SessionInfo, now: datetime) -> Context:
        """The full decision context; never raises (see the module docstring)."""
        try:
            with self._lock:
                return self._context(action, session, now)
        except Exception as error:  # the request path must get an answer
            log.error("history.unavailable", session=session.id, error=repr(error))
            return Context(
                now=now,
                session=session,
                signals=Signals(
                    history_unavailable=True,
                    description="guardproxy could not compute this session's history",
                ),
            )

    def _context(self, action: Action, session: SessionInfo, now: datetime) -> Context:
        state = self._session(session.id, now)
        moment = now.timestamp()
        history = History.model_validate(
            {
                **{name: counts(state.windows[name].counts(moment)) for name, _ in WINDOWS},
                "session": counts(state.totals),
                "recent": list(state.recent),
            }
        )
        key = action.resource.key
        resource_state = self._resource(key) if key else None
        resource = ResourceHistory(key=key)
        if resource_state is not None:
            resource = ResourceHistory(
                key=key,
                deleted=resource_state.deleted_at is not None,
                deleted_at=resource_state.deleted_at,
                deleted_by_session=resource_state.deleted_by_session,
                deleted_in_session=resource_state.deleted_by_session == session.id,
                deleted_by=resource_state.deleted_by,
                protection_removed=resource_state.protection_removed,
                events=list(resource_state.events),
            )
        signals = self._signals(action, session.id, now, state, resource_state, history)
        return Context(
            now=now, session=session, history=history, resource=resource, signals=signals
        )

    def _signals(
        self,
        action: Action,
        session_id: str,
        now: datetime,
        state: _SessionState,
        resource: _ResourceState | None,
        history: History,
    ) -> Signals:
        settings = self.settings
        seen: list[str] = []
        recreate_of = ""
        if resource is not None and self._is_recreate(action, resource, now):
            assert resource.deleted_at is not None
            who = (
                "in this session"
                if resource.deleted_by_session == session_id
                else f"in session {resource.deleted_by_session}"
            )
            recreate_of = f"by {resource.deleted_by} at {resource.deleted_at:%H:%M:%SZ} {who}"
            seen.append(f"re-creates {action.resource.key}, deleted {recreate_of}")
        rebuild: list[str] = []
        recreated = {k for k, at in state.recreated.items() if now - at <= settings.recreate_window}
        if recreate_of:
            recreated.add(action.resource.key)
        if len(recreated) >= settings.rebuild_recreates:
            minutes = int(settings.recreate_window.total_seconds() // 60)
            rebuild.append(
                f"{len(recreated)} resources re-created in this session within {minutes} minutes"
            )
        if action.verb is Verb.CREATE:
            for container in enclosing_containers(action):
                destroyed = state.destroyed.get(container)
                if destroyed is not None and now - destroyed[0] <= settings.recreate_window:
                    at, summary = destroyed
                    rebuild.append(
                        f"creates inside {container}, destroyed by {summary} at {at:%H:%M:%SZ}"
                    )
        seen.extend(rebuild)
        protection = resource is not None and resource.protection_removed
        if protection:
            seen.append(f"protection of {action.resource.key} was removed earlier")
        over_budget = history.m10.destructive >= settings.destructive_budget
        if over_budget:
            seen.append(
                f"{history.m10.destructive} destructive actions in 10 minutes "
                f"(budget {settings.destructive_budget})"
            )
        return Signals(
            recreate=bool(recreate_of),
            recreate_of=recreate_of,
            environment_rebuild=bool(rebuild),
            protection_removed_earlier=protection,
            destructive_budget_exceeded=over_budget,
            description="; ".join(seen),
        )

    def _is_recreate(self, action: Action, resource: _ResourceState, now: datetime) -> bool:
        return (
            action.verb is Verb.CREATE
            and resource.deleted_at is not None
            and not resource.created_since_delete
            and now - resource.deleted_at <= self.settings.recreate_window
        )

    # -- after the verdict

    def record(self, action: Action, session_id: str, outcome: str, at: datetime) -> None:
        """Feed what the gate did with ``action``; never raises."""
        try:
            with self._lock:
                self._record(action, session_id, outcome, at)
        except Exception as error:  # a lost count must not lose the request
            log.error("history.not_recorded", session=session_id, error=repr(error))

    def _record(self, action: Action, session_id: str, outcome: str, at: datetime) -> None:
        state = self._session(session_id, at)
        recreate, destroyed = False, ""
        protection_removed = PROTECTION_REMOVAL in action.risk_tags
        if outcome == FORWARDED:
            key = action.resource.key
            if key and action.verb is not Verb.READ:
                resource = self._resource(key)
                recreate = self._is_recreate(action, resource, at)
                happened = ResourceEvent(
                    at=at,
                    session_id=session_id,
                    operation=action.operation,
                    verb=action.verb,
                    protection_removed=protection_removed,
                )
                resource.apply(happened, action.summary())
            destroyed = destroyed_container(action)
        event = SessionEvent(
            session_id=session_id,
            at=at,
            summary=action.summary(),
            operation=action.operation,
            verb=action.verb.value,
            provider=action.provider.value,
            environment=action.environment.value,
            resource_key=action.resource.key,
            outcome=outcome,
            protection_removed=protection_removed,
            recreate=recreate,
            destroyed_container=destroyed,
        )
        self._apply(state, event)
        self._pending.append(event)
        if action.verb is not Verb.READ or len(self._pending) >= self.settings.flush_every:
            self._flush()

    def _apply(self, state: _SessionState, event: SessionEvent) -> None:
        """Count one event into a session's windows, recent list and sequence state."""
        verb = Verb(event.verb)
        keys = event_keys(
            verb, Provider(event.provider), Environment(event.environment), event.outcome
        )
        moment = event.at.timestamp()
        for window in state.windows.values():
            window.add(moment, keys)
        state.totals.update(keys)
        state.recent.append(_recent(event))
        if event.recreate:
            _bounded_put(state.recreated, event.resource_key, event.at, _PER_SESSION_KEYS)
        if event.destroyed_container:
            _bounded_put(
                state.destroyed,
                event.destroyed_container,
                (event.at, event.summary),
                _PER_SESSION_KEYS,
            )

    def flush(self) -> None:
        """Write buffered events (reads are written in batches), e.g. on shutdown."""
        try:
            with self._lock:
                self._flush()
        except StoreError as error:
            log.error("history.not_flushed", error=str(error))

    def _flush(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, []
            self._store.append_session_events(pending)

    # -- state, loaded lazily

    def _new_session(self) -> _SessionState:
        return _SessionState(
            windows={name: _Window(span) for name, span in WINDOWS},
            totals=Counter(),
            recent=deque(maxlen=self.settings.recent),
        )

    def _session(self, session_id: str, now: datetime) -> _SessionState:
        state = self._sessions.get(session_id)
        if state is not None:
            self._sessions.move_to_end(session_id)
            return state
        self._flush()
        state = self._load_session(session_id, now)
        _bounded_put(self._sessions, session_id, state, self.settings.max_sessions)
        return state

    def _load_session(self, session_id: str, now: datetime) -> _SessionState:
        state = self._new_session()
        since = now - timedelta(seconds=WINDOWS[-1][1])
        window_events = self._store.session_events(
            session_id, since=since, limit=_WINDOW_REPLAY_LIMIT
        )
        for event in reversed(window_events):
            self._apply(state, event)
        state.totals = _totals(self._store.session_event_totals(session_id))
        state.recent.clear()
        last = self._store.session_events(session_id, limit=self.settings.recent)
        state.recent.extend(_recent(event) for event in reversed(last))
        return state

    def _resource(self, key: str) -> _ResourceState:
        state = self._resources.get(key)
        if state is not None:
            self._resources.move_to_end(key)
            return state
        # no flush needed: only reads wait in the buffer, and they leave no resource state
        state = _ResourceState(events=deque(maxlen=self.settings.resource_events))
        stored = self._store.resource_events(key, outcome=FORWARDED, limit=_RESOURCE_LOAD_LIMIT)
        for event in reversed(stored):
            verb = Verb(event.verb)
            if verb is Verb.READ:
                continue
            state.apply(
                ResourceEvent(
                    at=event.at,
                    session_id=event.session_id,
                    operation=event.operation,
                    verb=verb,
                    protection_removed=event.protection_removed,
                ),
                event.summary,
            )
        _bounded_put(self._resources, key, state, self.settings.max_resources)
        return state


def _recent(event: SessionEvent) -> RecentAction:
    return RecentAction(
        at=event.at,
        summary=event.summary,
        verb=Verb(event.verb),
        provider=Provider(event.provider),
        environment=Environment(event.environment),
        resource_key=event.resource_key,
        outcome=event.outcome,
    )


def _totals(rows: list[EventTotal]) -> Counter[str]:
    totals: Counter[str] = Counter()
    for row in rows:
        keys = event_keys(
            Verb(row.verb), Provider(row.provider), Environment(row.environment), row.outcome
        )
        for key in keys:
            totals[key] += row.count
    return totals
