"""Opening a SQLite store: migrations, versions, file permissions and failures."""

from __future__ import annotations

import os
import re
import sqlite3
import stat
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from guardproxy.store import (
    DecisionRecord,
    SchemaVersionError,
    SqliteStore,
    StoreError,
    commits_quickly,
    open_store,
)
from guardproxy.store.migrations import MIGRATIONS
from guardproxy.store.sqlite import BACKSTOP_PAGES, migrate

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def _versions(path: Path) -> list[int]:
    with sqlite3.connect(path) as db:
        return [row[0] for row in db.execute("SELECT version FROM schema_version ORDER BY 1")]


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_fresh_database_gets_every_migration(db_path: Path) -> None:
    with SqliteStore(db_path) as store:
        assert store.schema_version == len(MIGRATIONS)
        (journal,) = sqlite3.connect(db_path).execute("PRAGMA journal_mode").fetchone()
        assert journal == "wal"
    assert _versions(db_path) == list(range(1, len(MIGRATIONS) + 1))
    assert {"sessions", "holds", "approvals", "decisions", "schema_version"} <= _tables(db_path)


def test_reopening_applies_nothing_again(db_path: Path) -> None:
    SqliteStore(db_path).close()
    SqliteStore(db_path).close()
    assert _versions(db_path) == list(range(1, len(MIGRATIONS) + 1))


def test_only_missing_migrations_run_in_order(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
    assert migrate(db, MIGRATIONS[:1]) == 1
    later = (
        ("CREATE TABLE extra (n INTEGER)", "INSERT INTO extra VALUES (1)"),
        ("INSERT INTO extra SELECT n + 1 FROM extra",),
    )
    assert migrate(db, (*MIGRATIONS[:1], *later)) == 3
    assert [n for (n,) in db.execute("SELECT n FROM extra ORDER BY n")] == [1, 2]
    assert [v for (v,) in db.execute("SELECT version FROM schema_version")] == [1, 2, 3]


def test_a_failing_migration_leaves_the_previous_version(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
    migrate(db, MIGRATIONS[:1])
    broken = ("CREATE TABLE half (n INTEGER)", "THIS IS NOT SQL")
    with pytest.raises(sqlite3.OperationalError):
        migrate(db, (*MIGRATIONS[:1], broken))
    assert not db.in_transaction
    assert [v for (v,) in db.execute("SELECT version FROM schema_version")] == [1]
    assert db.execute("SELECT name FROM sqlite_master WHERE name = 'half'").fetchone() is None


def test_a_newer_schema_is_refused_untouched(db_path: Path) -> None:
    SqliteStore(db_path).close()
    newer = len(MIGRATIONS) + 7
    with sqlite3.connect(db_path) as db:
        db.execute("INSERT INTO schema_version (version) VALUES (?)", (newer,))
    with pytest.raises(
        SchemaVersionError, match=rf"version {newer} is newer .*\({len(MIGRATIONS)}\)"
    ):
        SqliteStore(db_path)
    assert _versions(db_path)[-1] == newer


def test_file_is_private_in_a_private_directory(tmp_path: Path) -> None:
    path = tmp_path / "state" / "nested" / "guardproxy.db"
    with SqliteStore(path) as store:
        store.expire_holds(T0)  # a write, so the WAL file exists
        assert _mode(path.parent) == 0o700
        assert _mode(path) == 0o600
        wal = path.with_name(path.name + "-wal")
        assert wal.exists()
        assert _mode(wal) == 0o600


def test_an_existing_directory_keeps_its_permissions(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    SqliteStore(tmp_path / "g.db").close()
    assert _mode(tmp_path) == 0o755
    assert _mode(tmp_path / "g.db") == 0o600


def test_a_corrupted_file_raises_store_error(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.db"
    path.write_bytes(b"this is not a sqlite database\n" * 200)
    with pytest.raises(StoreError, match="not a database"):
        SqliteStore(path)


@pytest.mark.parametrize("kind", ["directory", "under-a-file"])
def test_an_unusable_path_raises_store_error(tmp_path: Path, kind: str) -> None:
    if kind == "directory":
        path = tmp_path / "adir"
        path.mkdir()
    else:
        (tmp_path / "afile").write_text("")
        path = tmp_path / "afile" / "g.db"
    with pytest.raises(StoreError, match="cannot open store"):
        SqliteStore(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes read-only files anyway")
def test_a_read_only_file_raises_store_error(db_path: Path) -> None:
    SqliteStore(db_path).close()
    for leftover in db_path.parent.glob("*-*"):
        leftover.unlink()
    db_path.chmod(0o400)
    with pytest.raises(StoreError, match="readonly"), SqliteStore(db_path) as store:
        store.append_decision(
            DecisionRecord(
                id="d-1",
                at=T0,
                session_id="s-1",
                action_json="{}",
                context_json="{}",
                decision_json="{}",
                outcome="allow",
            )
        )


def test_a_write_that_cannot_get_the_lock_raises_store_error(db_path: Path) -> None:
    SqliteStore(db_path).close()
    other = sqlite3.connect(db_path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holding the write lock
    try:
        with SqliteStore(db_path, busy_timeout=0.05) as store:
            with pytest.raises(StoreError, match="locked"):
                store.expire_holds(T0)
            assert store.list_holds() == []  # reads still work under WAL
    finally:
        other.execute("ROLLBACK")
        other.close()


def test_a_closed_store_raises_store_error(db_path: Path) -> None:
    store = SqliteStore(db_path)
    store.close()
    store.close()
    with pytest.raises(StoreError):
        store.get_hold("h-aaaaaaaaaa")
    with pytest.raises(StoreError):
        store.expire_holds(T0)


def test_open_store_accepts_sqlite_urls_and_paths(tmp_path: Path) -> None:
    by_url = open_store(f"sqlite://{tmp_path}/url.db")
    by_path = open_store(str(tmp_path / "plain.db"))
    try:
        assert isinstance(by_url, SqliteStore)
        assert by_url.path == tmp_path / "url.db"
        assert isinstance(by_path, SqliteStore)
        assert by_path.path == tmp_path / "plain.db"
    finally:
        by_url.close()
        by_path.close()


def test_open_store_expands_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    store = open_store("~/.guardproxy/g.db")
    store.close()
    assert (tmp_path / ".guardproxy" / "g.db").is_file()


@pytest.mark.parametrize(
    "url",
    ["", "  ", "sqlite://relative.db", "sqlite:///tmp/x.db?mode=ro", "mysql://h/db"],
)
def test_open_store_refuses_what_it_cannot_read(url: str) -> None:
    with pytest.raises(StoreError):
        open_store(url)


def _record(decision_id: str) -> DecisionRecord:
    return DecisionRecord(
        id=decision_id, at=T0, session_id="s-1", action_json="{}", context_json="{}",
        decision_json="{}", outcome="allow",
    )  # fmt: skip


def test_a_deleted_file_fails_every_call_instead_of_writing_where_nobody_reads(
    db_path: Path,
) -> None:
    """SQLite goes on writing into a deleted file (in WAL mode it says nothing): a
    decision recorded there would be lost with it."""
    with SqliteStore(db_path) as store:
        store.append_decision(_record("d-1"))
        aside = db_path.with_name("aside.db")
        db_path.rename(aside)
        with pytest.raises(StoreError, match="deleted"):
            store.append_decision(_record("d-2"))
        with pytest.raises(StoreError, match="deleted"):
            store.list_decisions()
        aside.rename(db_path)  # the same file back: the store works again
        store.append_decision(_record("d-3"))
        assert [r.id for r in store.list_decisions()] == ["d-3", "d-1"]


def test_a_replaced_file_fails_every_call(db_path: Path, tmp_path: Path) -> None:
    with SqliteStore(db_path) as store:
        SqliteStore(tmp_path / "other.db").close()
        (tmp_path / "other.db").replace(db_path)
        with pytest.raises(StoreError, match="replaced"):
            store.append_decision(_record("d-1"))
    with SqliteStore(db_path) as reopened:  # a restart takes the new file
        reopened.append_decision(_record("d-1"))


def _synchronous(store: SqliteStore) -> int:
    with store._transaction() as db:
        return int(db.execute("PRAGMA synchronous").fetchone()[0])


def test_the_default_synchronous_level_is_normal_and_full_is_one_url_parameter_away(
    tmp_path: Path,
) -> None:
    # SQLite's levels: 1 NORMAL (the log is synced at checkpoints), 2 FULL (at every commit)
    plain, normal, full = (
        open_store(str(tmp_path / "plain.db")),
        open_store(f"sqlite://{tmp_path}/normal.db?synchronous=normal"),
        open_store(f"sqlite://{tmp_path}/full.db?synchronous=FULL"),
    )
    try:
        assert isinstance(plain, SqliteStore) and isinstance(normal, SqliteStore)
        assert isinstance(full, SqliteStore)
        assert [_synchronous(s) for s in (plain, normal, full)] == [1, 1, 2]
        assert [commits_quickly(s) for s in (plain, normal, full)] == [True, True, False]
        assert full.path == tmp_path / "full.db"
    finally:
        for store in (plain, normal, full):
            store.close()


@pytest.mark.parametrize(
    ("query", "complaint"),
    [
        ("synchronous=off", "synchronous='off', expected normal or full"),
        ("synchronous=extra", "synchronous='extra'"),
        ("synchronous=full&synchronous=normal", "given once"),
        ("synchronous=full&mode=ro", "the only parameter is synchronous"),
    ],
)
def test_a_sqlite_url_with_another_synchronous_level_or_parameter_is_refused(
    tmp_path: Path, query: str, complaint: str
) -> None:
    with pytest.raises(StoreError, match=re.escape(complaint)):
        open_store(f"sqlite://{tmp_path}/g.db?{query}")
    assert not (tmp_path / "g.db").exists()
    with pytest.raises(StoreError, match="unknown SQLite synchronous level 'off'"):
        SqliteStore(tmp_path / "g.db", synchronous="off")


def test_background_checkpoints_move_the_log_into_the_database_off_the_commits(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "g.db")
    try:
        store.checkpoint_in_background(interval=0.05)
        store.checkpoint_in_background(interval=0.05)  # idempotent: one thread
        with store._transaction() as db:
            assert db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == BACKSTOP_PAGES
        before = (tmp_path / "g.db").stat().st_size
        for n in range(200):  # far below the backstop: only the thread checkpoints
            store.append_decision(
                DecisionRecord(
                    id=f"d-{n}", at=T0, session_id="s-1", action_json="{}",
                    context_json="{}", decision_json="{}", outcome="allow", provider="k8s",
                )
            )  # fmt: skip
        deadline = time.monotonic() + 10
        while (tmp_path / "g.db").stat().st_size == before and time.monotonic() < deadline:
            time.sleep(0.02)
        assert (tmp_path / "g.db").stat().st_size > before  # pages copied from the log
        threads = [t for t in threading.enumerate() if t.name == "guardproxy-sqlite-checkpoint"]
        assert len(threads) == 1
    finally:
        store.close()
    assert not threads[0].is_alive()


def test_a_store_whose_file_is_gone_starts_no_checkpoints_and_creates_no_file(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "g.db")
    try:
        for name in ("g.db", "g.db-wal", "g.db-shm"):
            (tmp_path / name).unlink(missing_ok=True)
        with pytest.raises(StoreError, match="was deleted"):
            store.checkpoint_in_background()
        assert not (tmp_path / "g.db").exists()
    finally:
        store.close()
