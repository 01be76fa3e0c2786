"""The history's fast path builds what a from-scratch validation would build.

The session history keeps window counts as plain counters, builds count models from
JSON it writes itself, caches JSON of parts, and history-free contexts share frozen
defaults. These tests hold every context it builds, over a session that sets every
signal, to a from-scratch ``model_validate`` of the same data: equal models, the
same JSON (so the same input hash) and the same decision, under the shipped bundle
and under rules whose CEL reads the history.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from policy_helpers import action, rules_bundle
from pydantic import BaseModel

from guardproxy.action import Action
from guardproxy.context import (
    Context,
    Counts,
    EnvironmentCounts,
    History,
    ProviderCounts,
    ResourceHistory,
    SessionInfo,
    VerbCounts,
)
from guardproxy.policy import evaluate
from guardproxy.policy.bundle import Bundle
from guardproxy.server import load_policies
from guardproxy.session.history import HistorySettings, SessionHistory
from guardproxy.session.windows import COUNT_KEYS, count_values, counts_model
from guardproxy.store import SqliteStore

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
SESSION = SessionInfo(id="s-1", name="bench", agent="claude-code", anonymous=False)
SHIPPED = Path(__file__).resolve().parents[1] / "policies"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    with SqliteStore(tmp_path / "guardproxy.db") as opened:
        yield opened


def _action(rng: random.Random) -> Action:
    verb = rng.choice(["read", "read", "update", "create", "create", "delete", "destroy"])
    name = f"q{rng.randrange(4)}"
    key = f"aws:1:us-east-1:aws:sqs:queue/{name}"
    environment = rng.choice(["prod", "dev"])
    tags = ["protection-removal"] if verb == "update" and rng.random() < 0.2 else []
    return action(
        service="sqs",
        operation=f"{verb.title()}Queue",
        verb=verb,
        environment=environment,
        resource={"type": "aws:sqs:queue", "name": name, "key": key},
        risk_tags=tags,
    )


def _cel_bundle(root: Path) -> Bundle:
    return rules_bundle(
        root,
        """
        - id: busy
          decision: deny
          condition: history.m10.verb.delete + history.h1.destructive > 5 && !resource.deleted
          message: "busy: {history.m10.verb.delete} deletes, {history.session.total} in all"
        - id: recent
          decision: hold
          condition: history.recent.exists(r, r.outcome == "hold") && resource.events.size() > 2
          message: "after a hold; last {resource.deleted_by}"
          approval: {groups: [sre]}
        """,
    )


def test_history_contexts_equal_validated_ones_and_decide_the_same(
    store: SqliteStore, tmp_path: Path
) -> None:
    history = SessionHistory(store, HistorySettings(destructive_budget=3, recent=6))
    bundles = [load_policies(SHIPPED), _cel_bundle(tmp_path)]
    rng = random.Random(5)
    at = T0
    signals_seen: set[str] = set()
    outcomes_seen: set[str] = set()
    sharing: Counter[str] = Counter()
    for _ in range(300):
        act = _action(rng)
        found = history.context(act, SESSION, at)
        # a window counting what the next wider one counts shares its model (built once)
        windows = found.history
        for narrow, wide in (("m1", "m10"), ("m10", "h1"), ("h1", "session")):
            same = getattr(windows, narrow) == getattr(windows, wide)
            assert same == (getattr(windows, narrow) is getattr(windows, wide))
            sharing[f"{narrow} {'shares' if same else 'differs from'} {wide}"] += 1
        validated = Context.model_validate(found.model_dump())
        assert validated == found
        _assert_built_like_validated(found, validated)
        assert found.canonical_json() == validated.model_dump_json() == found.model_dump_json()
        assert found.model_dump(mode="json") == validated.model_dump(mode="json")
        for bundle in bundles:
            fast, slow = evaluate(bundle, act, found), evaluate(bundle, act, validated)
            assert fast == slow  # outcome, rules, message and input hash
            outcomes_seen.add(fast.outcome.value)
        signals = found.signals.model_dump(include={"recreate", "environment_rebuild"})
        signals_seen |= {name for name, value in signals.items() if value}
        if found.signals.destructive_budget_exceeded:
            signals_seen.add("budget")
        if found.signals.protection_removed_earlier:
            signals_seen.add("protection")
        outcome = evaluate(bundles[0], act, found).outcome.value
        history.record(act, SESSION.id, outcome, at)
        at += timedelta(seconds=rng.choice([1, 5, 40, 200]))
    # the comparison covered the interesting contexts, not only empty ones
    assert signals_seen >= {"recreate", "environment_rebuild", "budget", "protection"}
    assert outcomes_seen >= {"allow", "hold", "deny"}
    assert len(sharing) == 6, sharing  # every window both shared and built on its own


_BUILT = (Context, History, ResourceHistory, Counts, VerbCounts, ProviderCounts, EnvironmentCounts)
"""The context models the history builds without validation."""


def _assert_built_like_validated(built: BaseModel, validated: BaseModel) -> None:
    """A model the history built without validation holds what pydantic's would."""
    assert type(built) is type(validated)
    if type(built) in _BUILT:  # validated from a full dump: every field set
        assert built.model_fields_set == validated.model_fields_set
    assert built.__pydantic_extra__ == validated.__pydantic_extra__
    assert built.__pydantic_private__ == validated.__pydantic_private__
    for name in type(built).model_fields:
        ours, theirs = getattr(built, name), getattr(validated, name)
        if isinstance(ours, BaseModel):
            _assert_built_like_validated(ours, theirs)
        else:
            assert type(ours) is type(theirs) and ours == theirs, name


@pytest.mark.parametrize("session_id", ["s-1", ""])
def test_contexts_of_unseen_keys_equal_validated_ones(store: SqliteStore, session_id: str) -> None:
    """A key nothing is known of gets a resource view without a state kept for it; it is
    the view of an empty state (``deleted_in_session`` compares the empty deleting
    session with this one's, so it is true for a session without an id)."""
    history = SessionHistory(store)
    session = SessionInfo(id=session_id)
    update = action(verb="update", resource={"type": "aws:sqs:queue", "name": "q", "key": "k"})
    history.record(update, session_id, "allow", T0)
    for key in ("aws:1:us-east-1:aws:sqs:queue/fresh", 'k8s:c:ns:x/"quoted"\\é\u2028'):
        create = action(verb="create", resource={"type": "aws:sqs:queue", "name": "n", "key": key})
        found = history.context(create, session, T0 + timedelta(seconds=1))
        validated = Context.model_validate(found.model_dump())
        _assert_built_like_validated(found, validated)
        assert found.resource.key == key
        assert found.resource.deleted_in_session is (session_id == "")
        assert found.canonical_json() == validated.model_dump_json() == found.model_dump_json()
        assert found.resource.canonical_json() == found.resource.model_dump_json()
    assert history.cached_resources == 1  # only the recorded action's key is kept


def test_counts_from_counters_equal_validated_counts() -> None:
    rng = random.Random(2)
    for _ in range(50):
        values = [rng.randrange(10_000) for _ in COUNT_KEYS]
        built = counts_model(values)
        by_key = dict(zip(COUNT_KEYS, values, strict=True))
        validated = Counts.model_validate(
            {
                "total": by_key["total"],
                "destructive": by_key["destructive"],
                **{
                    group: {
                        key.split(":", 1)[1]: value
                        for key, value in by_key.items()
                        if key.startswith(prefix + ":")
                    }
                    for group, prefix in (
                        ("verb", "verb"),
                        ("provider", "provider"),
                        ("environment", "env"),
                    )
                },
            }
        )
        assert built == validated
        assert built.canonical_json() == validated.model_dump_json() == built.model_dump_json()
        # built without validation, it must hold what pydantic's validator stores
        for ours, theirs in (
            (built, validated),
            (built.verb, validated.verb),
            (built.provider, validated.provider),
            (built.environment, validated.environment),
        ):
            assert type(ours) is type(theirs)
            assert ours.model_fields_set == theirs.model_fields_set
            assert ours.__pydantic_extra__ == theirs.__pydantic_extra__
            assert ours.__pydantic_private__ == theirs.__pydantic_private__
        assert built.model_copy(update={"total": 1}).total == 1
        assert built.total == values[0]
        assert count_values(Counter({**by_key, "unknown-key": 3})) == values


def test_history_free_contexts_share_defaults_equal_to_fresh_ones(tmp_path: Path) -> None:
    bundle = load_policies(SHIPPED)
    act = _action(random.Random(1))
    first, second = Context(now=T0, session=SESSION), Context(now=T0, session=SESSION)
    assert first.history is second.history  # shared, so its JSON is computed once
    fresh = Context.model_validate(
        {"now": T0, "session": SESSION.model_dump(), "history": {}, "resource": {}, "signals": {}}
    )
    assert fresh == first and fresh.history is not first.history
    assert first.canonical_json() == fresh.model_dump_json() == fresh.canonical_json()
    assert Context().canonical_json() == Context().model_dump_json()
    assert evaluate(bundle, act, first) == evaluate(bundle, act, fresh)
