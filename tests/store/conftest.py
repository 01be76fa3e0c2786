"""Fixtures for the store tests: a real SQLite file per test and a hold factory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from guardproxy.store import Hold, SqliteStore

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
"""The tests' "now": the store never reads the clock, so neither do they."""

HoldFactory = Callable[..., Hold]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "guardproxy.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[SqliteStore]:
    with SqliteStore(db_path) as opened:
        yield opened


@pytest.fixture
def make_hold(store: SqliteStore) -> HoldFactory:
    """``make_hold(**overrides)``: a pending hold created at T0, expiring at T0 + 5 min."""

    def make(**overrides: Any) -> Hold:
        fields: dict[str, Any] = {
            "session_id": "s-1",
            "request_digest": "digest-a",
            "action_json": '{"provider": "k8s", "operation": "delete"}',
            "decision_json": '{"outcome": "hold"}',
            "summary": "k8s delete namespaces prod",
            "grant": "once",
            "created_at": T0,
            "expires_at": T0 + timedelta(minutes=5),
        }
        fields.update(overrides)
        return store.create_hold(**fields)

    return make
