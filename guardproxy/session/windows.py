"""Session counts over sliding windows: the counters one action increments, the
windows that keep them (time buckets plus running totals) and their :class:`Counts`
models, for session history (``history.py``)."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import Any

from guardproxy.action import Environment, Provider, Verb
from guardproxy.context import (
    Counts,
    EnvironmentCounts,
    ProviderCounts,
    VerbCounts,
    built,
    with_canonical_json,
)

__all__ = [
    "BUCKETS",
    "COUNT_INDEX",
    "COUNT_KEYS",
    "DESTRUCTIVE",
    "FORWARDED",
    "Window",
    "count_values",
    "counts_model",
    "event_keys",
]

FORWARDED = "allow"
DESTRUCTIVE = frozenset({Verb.DELETE, Verb.DESTROY})
BUCKETS = 60


def event_keys(verb: Verb, provider: Provider, environment: Environment, outcome: str) -> list[str]:
    """The counters one action increments."""
    keys = ["total", f"verb:{verb.value}", f"provider:{provider.value}", f"env:{environment.value}"]
    if outcome == FORWARDED and verb in DESTRUCTIVE:
        keys.append("destructive")
    return keys


_VERB_KEYS = tuple((v.value, f"verb:{v.value}") for v in Verb)
_PROVIDER_KEYS = tuple((p.value, f"provider:{p.value}") for p in Provider)
_ENVIRONMENT_KEYS = tuple((e.value, f"env:{e.value}") for e in Environment)


COUNT_KEYS = (
    "total",
    "destructive",
    *(k for _, k in _VERB_KEYS),
    *(k for _, k in _PROVIDER_KEYS),
    *(k for _, k in _ENVIRONMENT_KEYS),
)

COUNT_INDEX = {key: index for index, key in enumerate(COUNT_KEYS)}


def _fields(pairs: tuple[tuple[str, str], ...]) -> str:
    return "{" + ",".join(f'"{name}":%d' for name, _ in pairs) + "}"


_COUNTS_JSON = (
    '{"total":%d,"destructive":%d,'
    f'"verb":{_fields(_VERB_KEYS)},'
    f'"provider":{_fields(_PROVIDER_KEYS)},'
    f'"environment":{_fields(_ENVIRONMENT_KEYS)}}}'
)
"""Counts as compact JSON in field order (tests/test_history.py holds it to model_dump_json)."""


def count_values(counter: Counter[str]) -> list[int]:
    """Counters by key (``event_keys``) as the list windows keep, in ``COUNT_KEYS`` order."""
    values = [0] * len(COUNT_KEYS)
    for key, count in counter.items():
        index = COUNT_INDEX.get(key)
        if index is not None:
            values[index] = count
    return values


def _counts_builder() -> Callable[[list[int]], Counts]:
    """``values -> Counts`` as one function of dict displays, generated from the count
    keys (``ProviderCounts`` follows ``Provider``): a display with an index per field
    builds the models' dicts in half the time slices zipped with field names take."""
    index = iter(range(len(COUNT_KEYS)))

    def display(names: Iterable[str]) -> str:
        return "{" + ", ".join(f"{name!r}: v[{next(index)}]" for name in names) + "}"

    assert COUNT_KEYS[:2] == ("total", "destructive")
    source = (
        "def counts(v):\n"
        f"    return built(Counts, {display(('total', 'destructive'))[:-1]}, "
        f"'verb': built(VerbCounts, {display(v for v, _ in _VERB_KEYS)}), "
        f"'provider': built(ProviderCounts, {display(p for p, _ in _PROVIDER_KEYS)}), "
        f"'environment': built(EnvironmentCounts, {display(e for e, _ in _ENVIRONMENT_KEYS)})}})\n"
    )
    namespace: dict[str, Any] = {
        "built": built,
        "Counts": Counts,
        "VerbCounts": VerbCounts,
        "ProviderCounts": ProviderCounts,
        "EnvironmentCounts": EnvironmentCounts,
    }
    exec(source, namespace)  # generated above from the count keys alone
    return namespace["counts"]  # type: ignore[no-any-return]


_counts = _counts_builder()


def counts_model(values: list[int]) -> Counts:
    """One window's counters (``COUNT_KEYS`` order) as :class:`Counts`, its JSON known.

    Built directly from the ints (tests/test_history_fast_path.py holds the model equal
    to the one pydantic validates, and the JSON to ``model_dump_json``): a context after
    a recorded action builds up to four of these, and validating them was the largest
    part of building the context.
    """
    return with_canonical_json(_counts(values), _COUNTS_JSON % tuple(values))


class Window:
    """A sliding window as BUCKETS time buckets plus their running total (O(1) reads).

    The totals are plain counters, one per count field (``COUNT_KEYS``), updated as
    events come and buckets expire; ``counts`` turns them into the context's
    :class:`Counts` only after they changed: decisions between two recorded actions
    share the model.
    """

    __slots__ = ("_model", "buckets", "totals", "width")

    def __init__(self, span_seconds: int) -> None:
        self.width = span_seconds / BUCKETS
        self.buckets: deque[tuple[int, dict[int, int]]] = deque()
        """(time index, counter index -> count) for the counters its events touched."""
        self.totals = [0] * len(COUNT_KEYS)
        self._model: Counts | None = None

    def _expire(self, index: int) -> None:
        while self.buckets and self.buckets[0][0] <= index - BUCKETS:
            _, old = self.buckets.popleft()
            for counter, count in old.items():
                self.totals[counter] -= count
            self._model = None

    def add(self, moment: float, counters: Iterable[int]) -> None:
        index = int(moment // self.width)
        self._expire(index)
        self._model = None
        if not self.buckets or self.buckets[-1][0] < index:
            self.buckets.append((index, {}))
        bucket = self.buckets[-1][1]  # late events join the newest bucket
        for counter in counters:
            bucket[counter] = bucket.get(counter, 0) + 1
            self.totals[counter] += 1

    def counts(self, moment: float, wider: tuple[list[int], Counts] | None = None) -> Counts:
        """The window's counts at ``moment``; ``wider`` is a wider window's counters and
        model, shared when they count the same (see ``SessionHistory._context``)."""
        self._expire(int(moment // self.width))
        if self._model is None:
            if wider is not None and wider[0] == self.totals:
                self._model = wider[1]
            else:
                self._model = counts_model(self.totals)
        return self._model
