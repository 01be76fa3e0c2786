"""What only the PostgreSQL store has: URLs, replicas migrating together, notifications
of hold changes across connections, and losing the database and getting it back."""

from __future__ import annotations

import queue
import threading
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from postgres_cluster import PostgresCluster

from guardproxy.store import DecisionRecord, HoldState, SchemaVersionError, StoreError, open_store
from guardproxy.store.migrations import MIGRATIONS as SQLITE_MIGRATIONS
from guardproxy.store.postgres import PostgresStore, redact
from guardproxy.store.postgres_migrations import MIGRATIONS, translate

from .conftest import new_hold

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
NOTIFY_TIMEOUT = 5.0


def _versions(url: str) -> list[int]:
    with psycopg.connect(url) as db:
        return [row[0] for row in db.execute("SELECT version FROM schema_version ORDER BY 1")]


def _hold(store: PostgresStore) -> str:
    return new_hold(store, request_digest="d").id


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "postgresql+psycopg"])
def test_open_store_takes_postgresql_urls(postgres_url: str, scheme: str) -> None:
    url = scheme + postgres_url.removeprefix("postgresql")
    store = open_store(url)
    try:
        assert isinstance(store, PostgresStore)
        assert store.schema_version == len(MIGRATIONS)
    finally:
        store.close()


def test_every_sqlite_migration_has_its_postgresql_version() -> None:
    assert len(MIGRATIONS) == len(SQLITE_MIGRATIONS)
    for sqlite, postgres in zip(SQLITE_MIGRATIONS, MIGRATIONS, strict=True):
        assert len(postgres) >= len(sqlite)
        assert not any("json_valid" in s or "AUTOINCREMENT" in s for s in postgres)


def test_translation_orders_rows_and_refuses_what_it_cannot_translate() -> None:
    table = translate("CREATE TABLE t (id TEXT PRIMARY KEY, body TEXT CHECK (json_valid(body)))")
    assert "body::jsonb IS NOT NULL" in table
    assert table.rstrip().endswith("rowid BIGINT GENERATED ALWAYS AS IDENTITY\n)")
    keyed = translate("CREATE TABLE t (seq INTEGER PRIMARY KEY AUTOINCREMENT, x BLOB)")
    assert "rowid" not in keyed
    assert "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY" in keyed and "BYTEA" in keyed
    with pytest.raises(ValueError, match="INSERT OR"):
        translate("INSERT OR IGNORE INTO t VALUES (1)")


def test_replicas_starting_together_migrate_once(postgres_url: str) -> None:
    barrier = threading.Barrier(6)
    opened: list[PostgresStore] = []
    errors: list[BaseException] = []

    def start() -> None:
        barrier.wait()
        try:
            opened.append(PostgresStore(postgres_url))
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=start) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for store in opened:
        store.close()
    assert errors == []
    assert _versions(postgres_url) == list(range(1, len(MIGRATIONS) + 1))


def test_a_newer_schema_is_refused(postgres_url: str) -> None:
    PostgresStore(postgres_url).close()
    with psycopg.connect(postgres_url) as db:
        db.execute("INSERT INTO schema_version (version) VALUES (%s)", (len(MIGRATIONS) + 1,))
    with pytest.raises(SchemaVersionError, match="newer than this guardproxy"):
        PostgresStore(postgres_url)


def test_an_unreachable_database_is_a_store_error_naming_it() -> None:
    with pytest.raises(StoreError, match=r"cannot open store postgresql://u:\*\*\*@127.0.0.1:1/x"):
        open_store("postgresql://u:secret@127.0.0.1:1/x?connect_timeout=2")


def test_redact_hides_only_the_password() -> None:
    assert redact("postgresql://u:pw@db:5432/g?sslmode=require") == (
        "postgresql://u:***@db:5432/g?sslmode=require"
    )
    assert redact("postgresql://u@db/g") == "postgresql://u@db/g"


def test_another_connections_hold_changes_are_announced(postgres_url: str) -> None:
    with PostgresStore(postgres_url) as watching, PostgresStore(postgres_url) as other:
        seen: queue.Queue[tuple[str, HoldState]] = queue.Queue()
        watching.watch_holds(lambda hold_id, state: seen.put((hold_id, state)))
        hold_id = _hold(other)
        # the listener connects in the background: approve once it surely listens
        deadline = datetime.now(UTC) + timedelta(seconds=NOTIFY_TIMEOUT)
        while not _listening(postgres_url) and datetime.now(UTC) < deadline:
            threading.Event().wait(0.05)
        other.resolve_hold(hold_id, state=HoldState.APPROVED, by="bob", reason="", now=T0)
        assert seen.get(timeout=NOTIFY_TIMEOUT) == (hold_id, HoldState.APPROVED)
        other.consume_approval("s-1", "d", T0)
        assert seen.get(timeout=NOTIFY_TIMEOUT) == (hold_id, HoldState.RELEASED)


def _listening(url: str) -> bool:
    with psycopg.connect(url) as db:
        row = db.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN %'"
            " AND datname = current_database()"
        ).fetchone()
    return bool(row and row[0])


@pytest.mark.slow
def test_losing_the_database_fails_then_recovers_without_reopening(
    postgres_cluster: PostgresCluster, postgres_url: str
) -> None:
    with PostgresStore(postgres_url) as store:
        seen: queue.Queue[tuple[str, HoldState]] = queue.Queue()
        store.watch_holds(lambda hold_id, state: seen.put((hold_id, state)))
        hold_id = _hold(store)
        postgres_cluster.stop()
        try:
            with pytest.raises(StoreError, match="unreachable"):
                store.get_hold(hold_id)
            with pytest.raises(StoreError, match="unreachable"):
                store.resolve_hold(hold_id, state=HoldState.APPROVED, by="a", reason="", now=T0)
        finally:
            postgres_cluster.start()
        assert store.get_hold(hold_id) is not None  # the first call after the restart works
        deadline = datetime.now(UTC) + timedelta(seconds=NOTIFY_TIMEOUT * 2)
        while not _listening(postgres_url) and datetime.now(UTC) < deadline:
            threading.Event().wait(0.05)
        with PostgresStore(postgres_url) as other:
            other.resolve_hold(hold_id, state=HoldState.DENIED, by="b", reason="", now=T0)
        assert seen.get(timeout=NOTIFY_TIMEOUT) == (hold_id, HoldState.DENIED)


def _admin(url: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(url, autocommit=True)


def _disconnect_others(url: str) -> None:
    """End every other connection to the test's database (as a failover does)."""
    with _admin(url) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


@pytest.mark.slow
def test_a_restart_between_calls_does_not_fail_the_next_call(
    postgres_cluster: PostgresCluster, postgres_url: str
) -> None:
    """Pooled connections the restart cut are not handed out (the decision writer, with
    no listener to notice the restart, lost its first batch after every restart)."""
    with PostgresStore(postgres_url) as store:
        hold_id = _hold(store)
        postgres_cluster.stop()
        postgres_cluster.start()
        assert store.get_hold(hold_id) is not None
        store.resolve_hold(hold_id, state=HoldState.DENIED, by="a", reason="", now=T0)


def test_a_database_that_turned_read_only_and_back_is_written_again(postgres_url: str) -> None:
    """Connections made while the database was read-only (a failover to a standby) stay
    read-only: a write refused on one drops it, so the store recovers with the database."""
    with PostgresStore(postgres_url) as store:
        hold_id = _hold(store)
        maintenance, database = postgres_url.rsplit("/", 1)
        with _admin(f"{maintenance}/postgres") as admin:
            admin.execute(f"ALTER DATABASE {database} SET default_transaction_read_only = on")
        _disconnect_others(postgres_url)
        try:
            for _ in range(3):
                with pytest.raises(StoreError, match="read-only"):
                    _hold(store)
            assert store.get_hold(hold_id) is not None  # reads go on
        finally:
            with _admin(f"{maintenance}/postgres") as admin:
                admin.execute(f"ALTER DATABASE {database} RESET default_transaction_read_only")
        with pytest.raises(StoreError, match="read-only"):
            _hold(store)  # the connection made while read-only; dropped with this failure
        _hold(store)
        _hold(store)


def test_a_lock_held_elsewhere_fails_a_write_within_the_lock_timeout(postgres_url: str) -> None:
    with PostgresStore(postgres_url, lock_timeout=1.0) as store, _admin(postgres_url) as other:
        hold_id = _hold(store)
        with other.transaction():
            other.execute("LOCK TABLE holds IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            with pytest.raises(StoreError, match="lock"):
                _hold(store)
            assert time.monotonic() - started < 5
        assert store.get_hold(hold_id) is not None  # released: the store works at once
        _hold(store)


def test_a_server_that_can_lose_commits_is_named_at_open(postgres_url: str) -> None:
    """The README's durability: guardproxy uses the server's settings and says when they
    let a crash of the database server lose records of requests already forwarded
    (``serve`` logs it)."""
    store = PostgresStore(postgres_url)  # the tests' cluster runs without fsync
    store.close()
    assert store.durability == {"fsync": "off", "synchronous_commit": "on"}
    assert store.durability_warning == (
        "the database server runs with fsync = off: a crash of it can lose the latest "
        "records of requests guardproxy already forwarded"
    )
    database = postgres_url.rsplit("/", 1)[1]
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute(f"ALTER DATABASE {database} SET synchronous_commit = off")
    store = PostgresStore(postgres_url)
    store.close()
    assert store.durability["synchronous_commit"] == "off"
    assert "fsync = off and synchronous_commit = off" in (store.durability_warning or "")


def test_records_are_compressed_with_lz4_where_the_server_has_it(postgres_url: str) -> None:
    """A decision's ~2 KB of JSON (twice: its columns and its chain record) is compressed
    with lz4, on the store's first connection and on those it makes later, and read back
    byte for byte."""
    with psycopg.connect(postgres_url, autocommit=True) as db:
        row = db.execute(
            "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"
        ).fetchone()
    if row is None or not row[0]:
        pytest.skip("this PostgreSQL has no lz4")
    action = '{"provider": "k8s", "padding": "' + "a" * 3000 + '"}'

    def record(n: int) -> DecisionRecord:
        return DecisionRecord(
            id=f"d-{n}", at=T0, session_id="s", action_json=action, context_json="{}",
            decision_json='{"outcome": "allow"}', outcome="allow",
        )  # fmt: skip

    with PostgresStore(postgres_url) as store:
        store.append_decision(record(1))
        store._pool.drop_idle()  # the next append connects anew
        store.append_decision(record(2))
        assert [d.action_json for d in store.list_decisions()] == [action, action]
        assert all(action in r.payload_json for r in store.audit_records())
    with psycopg.connect(postgres_url, autocommit=True) as db:
        methods = db.execute(
            "SELECT pg_column_compression(d.action), pg_column_compression(a.payload)"
            " FROM decisions d JOIN audit_log a ON a.record_id = d.id ORDER BY d.id"
        ).fetchall()
    assert methods == [("lz4", "lz4"), ("lz4", "lz4")]
