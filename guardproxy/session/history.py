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
loaded lazily from the store on first use. Which keys the store holds changes of
is read once (up to 200,000 keys; past that every first sight asks the store), so
the first sight of a key the store knows nothing about costs no query; keys
changed by another process sharing the store after that read are not seen.

Per request, the context reuses what did not change: window counts are plain
counters updated as events come and buckets expire, turned into models only after
they change, and a window counting exactly what the next wider one (or the whole
session) counts shares that one's model; each recent action is serialised once when
it is recorded, and the input hash assembles the context's JSON from those parts
(``Context.canonical_json``, exactly ``model_dump_json``).

Nothing here raises into the request path. If the history cannot be computed, the
context carries ``signals.history_unavailable`` and the shipped policy
(policies/sequences.yaml) holds every mutating action: failing closed is the
gate's job, and a hold lets a human decide without the history. It recovers by
itself: nothing that failed is remembered as failed, so the first context after the
store is back is complete again. An action the store cannot take is counted in
memory at once and kept for the next write (up to 10,000 events, then the oldest
are dropped and the history undercounts): a store that was away for a moment
(locked, restarting) gets every event once it is back.

Calls that carry only server ids (TerminateInstances) are resolved to names and
environments before this runs, from ids learned from responses (``names``, see
guardproxy/session/names.py).
"""

from __future__ import annotations

import functools
import threading
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pydantic_core
import structlog

from guardproxy.action import Action, Environment, Provider, Verb
from guardproxy.context import (
    Context,
    Counts,
    History,
    RecentAction,
    ResourceEvent,
    ResourceHistory,
    SessionInfo,
    Signals,
    built,
    with_canonical_json,
)
from guardproxy.recognise.providers import PROVIDERS
from guardproxy.session.names import NameCache
from guardproxy.session.windows import (
    COUNT_INDEX,
    COUNT_KEYS,
    DESTRUCTIVE,
    FORWARDED,
    Window,
    count_values,
    counts_model,
    event_keys,
)
from guardproxy.store.base import (
    AlreadyExistsError,
    EventTotal,
    InvalidValueError,
    SessionEvent,
    Store,
    StoreError,
)

__all__ = [
    "DESTRUCTIVE",
    "FORWARDED",
    "PROTECTION_REMOVAL",
    "HistorySettings",
    "SessionHistory",
    "destroyed_container",
    "enclosing_containers",
]

log = structlog.get_logger(__name__)

PROTECTION_REMOVAL = "protection-removal"
WINDOWS = (("m1", 60), ("m10", 600), ("h1", 3600))
_WINDOW_REPLAY_LIMIT = 50_000
_RESOURCE_LOAD_LIMIT = 64
_PER_SESSION_KEYS = 256
_STORED_KEYS_LIMIT = 200_000
_UNWRITTEN_LIMIT = 10_000
"""Events kept in memory while the store refuses them."""


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


@dataclass
class _SessionState:
    windows: dict[str, Window]
    totals: list[int]
    """The session's counters, in ``COUNT_KEYS`` order."""
    recent: deque[RecentAction]
    recent_json: deque[str]
    """The JSON of each of ``recent``, written when it is recorded."""
    totals_model: Counts | None = None
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

    def history(self, key: str, session_id: str) -> ResourceHistory:
        """The context's view (not kept: one per cached key would double the memory)."""
        return built(ResourceHistory, {
            "key": key,
            "deleted": self.deleted_at is not None,
            "deleted_at": self.deleted_at,
            "deleted_by_session": self.deleted_by_session,
            "deleted_in_session": self.deleted_by_session == session_id,
            "deleted_by": self.deleted_by,
            "protection_removed": self.protection_removed,
            "events": list(self.events),
        })  # fmt: skip

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


def destroyed_container(action: Action) -> str:
    """The environment-level container a delete removes (stack, namespace...), or ''
    (the provider's ``Containers``, guardproxy/recognise/registry.py)."""
    if action.verb not in DESTRUCTIVE or not action.resource.name:
        return ""
    module = PROVIDERS.get(action.provider)
    return module.containers.destroyed(action) if module is not None else ""


def enclosing_containers(action: Action) -> list[str]:
    """The environment-level containers an action happens inside."""
    module = PROVIDERS.get(action.provider)
    return module.containers.enclosing(action) if module is not None else []


_NO_RESOURCE = ResourceHistory()
_UNSEEN_AFTER_KEY = {
    in_session: ResourceHistory(deleted_in_session=in_session).model_dump_json()[len('{"key":""') :]
    for in_session in (False, True)
}
"""The JSON of a resource nothing happened to, after its key (by ``deleted_in_session``)."""


def _unseen_resource(key: str, session_id: str) -> ResourceHistory:
    """``_ResourceState.history`` of a key nothing is known of, without a state for it,
    its JSON known. (``deleted_in_session`` compares the empty deleting session with
    this one's id, as for any state: true for a session without an id.)"""
    in_session = session_id == ""
    view = built(ResourceHistory, {
        "key": key, "deleted": False, "deleted_at": None, "deleted_by_session": "",
        "deleted_in_session": in_session, "deleted_by": "", "protection_removed": False,
        "events": [],
    })  # fmt: skip
    text = '{"key":' + pydantic_core.to_json(key).decode() + _UNSEEN_AFTER_KEY[in_session]
    return with_canonical_json(view, text)


@functools.lru_cache(maxsize=1024)
def _signals(
    recreate_of: str, rebuild: bool, protection: bool, over_budget: bool, description: str
) -> Signals:
    """Signals repeat (mostly all false): one shared instance per value, its JSON cached
    (positional arguments: a cache key of keywords costs more than the lookup)."""
    return Signals(
        recreate=bool(recreate_of),
        recreate_of=recreate_of,
        environment_rebuild=rebuild,
        protection_removed_earlier=protection,
        destructive_budget_exceeded=over_budget,
        description=description,
    )


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
        self._stored_keys: set[str] | None = None
        self.names = NameCache()
        """Ids learned from responses (guardproxy/session/names.py), resolved before deciding."""
        self._stored_keys_loaded = False

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
        if state.totals_model is None:
            state.totals_model = counts_model(state.totals)
        # from the widest window down: a window that counts what the next wider one
        # counts shares its model (a session younger than an hour counts the same in h1
        # as in all; one quiet for the last minutes the same in m1 as in m10), so after a
        # recorded action only the windows whose counts differ are built again
        wider = (state.totals, state.totals_model)
        models: dict[str, Counts] = {}
        for name, _ in reversed(WINDOWS):
            window = state.windows[name]
            models[name] = window.counts(moment, wider)
            wider = (window.totals, models[name])
        windows = [models[name] for name, _ in WINDOWS]
        history = with_canonical_json(
            built(
                History,
                {
                    "m1": windows[0],
                    "m10": windows[1],
                    "h1": windows[2],
                    "session": state.totals_model,
                    "recent": list(state.recent),
                },
            ),
            f'{{"m1":{windows[0].canonical_json()},"m10":{windows[1].canonical_json()},'
            f'"h1":{windows[2].canonical_json()},"session":{state.totals_model.canonical_json()},'
            f'"recent":[{",".join(state.recent_json)}]}}',
        )
        key = action.resource.key
        resource_state = self._known_resource(key) if key else None
        if resource_state is not None:
            resource = resource_state.history(key, session.id)
        else:  # a key nothing is known of behaves as an empty state (nothing to signal)
            resource = _unseen_resource(key, session.id) if key else _NO_RESOURCE
        signals = self._signals(action, session.id, now, state, resource_state, history)
        if type(now) is not datetime:  # validated, as pydantic would convert it
            return Context(
                now=now, session=session, history=history, resource=resource, signals=signals
            )
        return built(Context, {
            "now": now, "session": session, "history": history, "resource": resource,
            "signals": signals,
        })  # fmt: skip

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
        return _signals(recreate_of, bool(rebuild), protection, over_budget, "; ".join(seen))

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

    def record_with(
        self,
        action: Action,
        session_id: str,
        outcome: str,
        at: datetime,
        write: Callable[[Sequence[SessionEvent]], None],
    ) -> None:
        """:meth:`record`, with the events to store (those still buffered, then this
        one) handed to ``write`` instead, which stores them in the caller's own
        transaction (the gate's decision record: one commit for both).

        Raises what ``write`` (or loading the session's state) raises, and then
        leaves the history as it was: the caller records the outcome it ends up with.
        """
        with self._lock:
            self._record(action, session_id, outcome, at, write)

    def _record(
        self,
        action: Action,
        session_id: str,
        outcome: str,
        at: datetime,
        write: Callable[[Sequence[SessionEvent]], None] | None = None,
    ) -> None:
        state = self._session(session_id, at)
        recreate, destroyed = False, ""
        protection_removed = PROTECTION_REMOVAL in action.risk_tags
        changed: tuple[str, _ResourceState, ResourceEvent] | None = None
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
                changed = (key, resource, happened)
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
        if write is not None:  # stored first: if it fails, nothing here has changed
            write([*self._pending, event])
            self._pending = []
        if changed is not None:
            key, resource, happened = changed
            resource.apply(happened, event.summary)
            self._remember_stored(key)
        self._apply(state, event)
        if write is not None:
            return
        self._pending.append(event)
        if action.verb is not Verb.READ or len(self._pending) >= self.settings.flush_every:
            self._flush()

    def _apply(self, state: _SessionState, event: SessionEvent) -> None:
        """Count one event into a session's windows, recent list and sequence state."""
        verb = Verb(event.verb)
        keys = event_keys(
            verb, Provider(event.provider), Environment(event.environment), event.outcome
        )
        counters = [COUNT_INDEX[key] for key in keys]
        moment = event.at.timestamp()
        for window in state.windows.values():
            window.add(moment, counters)
        for counter in counters:
            state.totals[counter] += 1
        state.totals_model = None
        recent = _recent(event)
        state.recent.append(recent)
        state.recent_json.append(recent.canonical_json())
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
            try:
                self._store.append_session_events(pending)
            except (InvalidValueError, AlreadyExistsError):
                raise  # the store will never take these: kept, they would block the rest
            except StoreError:
                # one transaction, so none was written: all are tried again with the next
                self._pending = pending[-_UNWRITTEN_LIMIT:]
                if len(pending) > _UNWRITTEN_LIMIT:
                    log.error("history.events_dropped", count=len(pending) - _UNWRITTEN_LIMIT)
                raise

    # -- state, loaded lazily

    def _new_session(self) -> _SessionState:
        return _SessionState(
            windows={name: Window(span) for name, span in WINDOWS},
            totals=[0] * len(COUNT_KEYS),
            recent=deque(maxlen=self.settings.recent),
            recent_json=deque(maxlen=self.settings.recent),
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
        state.totals_model = None
        state.recent.clear()
        state.recent_json.clear()
        last = self._store.session_events(session_id, limit=self.settings.recent)
        for event in reversed(last):
            recent = _recent(event)
            state.recent.append(recent)
            state.recent_json.append(recent.canonical_json())
        return state

    def _resource(self, key: str) -> _ResourceState:
        state = self._resources.get(key)
        if state is not None:
            self._resources.move_to_end(key)
            return state
        state = _ResourceState(events=deque(maxlen=self.settings.resource_events))
        if self._may_be_stored(key):
            self._load_resource(key, state)
        _bounded_put(self._resources, key, state, self.settings.max_resources)
        return state

    def _known_resource(self, key: str) -> _ResourceState | None:
        """:meth:`_resource` for a context: ``None`` for a key neither cached nor in
        the store, without keeping an empty state for it (recording keeps one)."""
        state = self._resources.get(key)
        if state is not None:
            self._resources.move_to_end(key)
            return state
        if not self._may_be_stored(key):
            return None
        return self._resource(key)

    def _may_be_stored(self, key: str) -> bool:
        """Whether the store may hold events of ``key`` (so a first sight needs a lookup).

        The keys the store holds changes of are read once; after that the store is
        asked only about those (and about every key if there were too many to keep).
        """
        if not self._stored_keys_loaded:
            keys = self._store.changed_resource_keys(
                outcome=FORWARDED, limit=_STORED_KEYS_LIMIT + 1
            )
            self._stored_keys = set(keys) if len(keys) <= _STORED_KEYS_LIMIT else None
            self._stored_keys_loaded = True
        return self._stored_keys is None or key in self._stored_keys

    def _remember_stored(self, key: str) -> None:
        if self._stored_keys is not None:
            self._stored_keys.add(key)
            if len(self._stored_keys) > _STORED_KEYS_LIMIT:
                self._stored_keys = None

    def _load_resource(self, key: str, state: _ResourceState) -> None:
        # no flush needed: only reads wait in the buffer, and they leave no resource state
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


def _totals(rows: list[EventTotal]) -> list[int]:
    totals: Counter[str] = Counter()
    for row in rows:
        keys = event_keys(
            Verb(row.verb), Provider(row.provider), Environment(row.environment), row.outcome
        )
        for key in keys:
            totals[key] += row.count
    return count_values(totals)
