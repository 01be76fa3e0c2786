"""Fixtures for the store tests: every test runs on each backend, on a real database.

``store`` is a store on a fresh database: a SQLite file, or a new database in the
session's throwaway PostgreSQL cluster.  ``open_store_again()`` opens another store
on the same database, standing in for another process (a CLI approving, a second
replica, a restart).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from guardproxy.store import Hold, SqliteStore, Store, open_store

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
"""The tests' "now": the store never reads the clock, so neither do they."""

HoldFactory = Callable[..., Hold]
OpenStore = Callable[[], Store]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "guardproxy.db"


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, db_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{db_path}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def open_store_again(store_url: str) -> Iterator[OpenStore]:
    """Open more stores on the test's database; all closed at teardown."""
    opened: list[Store] = []

    def open_again() -> Store:
        opened.append(open_store(store_url))
        return opened[-1]

    yield open_again
    for each in opened:
        each.close()


@pytest.fixture
def store(open_store_again: OpenStore) -> Store:
    return open_store_again()


@pytest.fixture
def sqlite_store(db_path: Path) -> Iterator[SqliteStore]:
    """For the tests about SQLite files themselves."""
    with SqliteStore(db_path) as opened:
        yield opened


def new_hold(store: Store, **overrides: Any) -> Hold:
    """A pending hold created at T0, expiring at T0 + 5 min, unless ``overrides`` say."""
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


@pytest.fixture
def make_hold(store: Store) -> HoldFactory:
    """``make_hold(**overrides)``: :func:`new_hold` in the test's store."""

    def make(**overrides: Any) -> Hold:
        return new_hold(store, **overrides)

    return make
