"""The default store: one SQLite file on the proxy's host.

Concurrency model: one connection shared by all threads behind a lock (the proxy
calls the store from ``asyncio.to_thread`` workers), and every read-modify-write in
a ``BEGIN IMMEDIATE`` transaction with a conditional ``UPDATE``.  The lock makes the
store safe across threads; the immediate transactions make it safe across
processes too (the CLI approving a hold while the proxy runs).  WAL mode lets those
other processes read while the proxy writes, and ``busy_timeout`` makes writers wait
for each other instead of failing.

Durability (``synchronous``, :data:`SYNCHRONOUS_LEVELS`): a committed transaction is
in the write-ahead log file, so it survives a ``kill -9`` of any process at any
moment; that is the promise the proxy makes for a record written before its request
is forwarded. ``normal`` (the default) leaves syncing the log to the disk to the
checkpoints, so a power cut or a kernel crash may lose the last commits before the
next checkpoint; ``full`` syncs the log at every commit, so they survive that too, at
the price of one disk sync per commit on the request path. With ``normal`` a commit
waits for no disk (:attr:`SqliteStore.commits_wait_for_disk`), so the proxy may write
a record without leaving its event loop.

Faults: a lock held past the busy timeout, a full disk or a file size limit fail the
call with :class:`StoreError`, and the next call works once the fault is gone. A
file deleted or replaced under the open store is different: SQLite would go on
writing into the deleted file, where nobody can read a record again, or append to a
write-ahead log the new file would take for its own. So every call first checks that
the path still names the file opened, and fails if not, until the path names it
again or guardproxy is restarted on the new file.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

import structlog

from guardproxy.store.base import (
    AlreadyExistsError,
    InvalidValueError,
    NotFoundError,
    StoreError,
)
from guardproxy.store.migrations import MIGRATIONS, SCHEMA_VERSION_TABLE, Migration
from guardproxy.store.sql import Db, SqlStore, apply_migrations, schema_too_new, writer_name

log = structlog.get_logger(__name__)

DEFAULT_BUSY_TIMEOUT = 5.0
"""Seconds a writer waits for another writer's lock before failing."""
SYNCHRONOUS_LEVELS = ("normal", "full")
"""SQLite's ``synchronous`` levels a store may use in WAL mode (see the module's doc)."""
DEFAULT_SYNCHRONOUS = "normal"
CHECKPOINT_INTERVAL = 0.5
"""Seconds between background checkpoints (:meth:`SqliteStore.checkpoint_in_background`)."""
BACKSTOP_PAGES = 10_000
"""With background checkpoints, the log's size (pages) at which a commit checkpoints it
itself, as SQLite does at 1,000 pages by default: under writes that never pause, a
passive checkpoint never catches up with the log's end, so the log would never start
over from its beginning."""


def migrate(connection: sqlite3.Connection, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Bring the database to ``len(migrations)``; return that version.

    An up-to-date database is only read, so opening a store never waits for another
    process's write lock.  Otherwise the migrations run in one immediate transaction,
    so concurrent openers serialise and a failed migration leaves the database at its
    previous version.  ``connection`` must be in autocommit mode
    (``isolation_level=None``).  Raises :class:`SchemaVersionError` for a database
    newer than ``migrations``, sqlite3 errors otherwise.
    """
    current = _schema_version(connection)
    if current == len(migrations):
        return current
    if current > len(migrations):
        raise schema_too_new(current, len(migrations))
    connection.execute("BEGIN IMMEDIATE")
    try:
        connection.execute(SCHEMA_VERSION_TABLE)
        (current,) = connection.execute(
            "SELECT COALESCE(MAX(version), 0) FROM schema_version"
        ).fetchone()
        apply_migrations(connection, current, migrations)
        connection.execute("COMMIT")
    except BaseException:
        _rollback(connection)
        raise
    return len(migrations)


def _schema_version(connection: sqlite3.Connection) -> int:
    """The applied version without taking a write lock (0 for an empty database)."""
    exists = connection.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if exists is None:
        return 0
    (version,) = connection.execute(
        "SELECT COALESCE(MAX(version), 0) FROM schema_version"
    ).fetchone()
    return int(version)


class SqliteStore(SqlStore):
    """:class:`~guardproxy.store.base.Store` on a SQLite file (created 0600, dir 0700)."""

    def __init__(
        self,
        path: Path,
        *,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        writer: str = "",
        synchronous: str = DEFAULT_SYNCHRONOUS,
    ) -> None:
        """``writer`` names who appends through this store in its audit chain's record
        (with the host and process id); ``synchronous`` is one of
        :data:`SYNCHRONOUS_LEVELS` (:class:`StoreError` otherwise)."""
        if synchronous not in SYNCHRONOUS_LEVELS:
            raise StoreError(
                f"unknown SQLite synchronous level {synchronous!r}: "
                f"expected one of {', '.join(SYNCHRONOUS_LEVELS)}"
            )
        self.path = Path(path)
        self.synchronous = synchronous
        self._lock = threading.RLock()
        self._append_lock = threading.Lock()
        self._queue_lock = threading.Lock()
        self._queued = []
        self._writer = writer_name(writer)
        try:
            _prepare_file(self.path)
            connection = sqlite3.connect(
                self.path,
                timeout=busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open store {self.path}: {exc}") from exc
        try:
            connection.row_factory = sqlite3.Row
            connection.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            (mode,) = connection.execute("PRAGMA journal_mode = WAL").fetchone()
            if str(mode).lower() != "wal":
                raise StoreError(f"cannot open store {self.path}: WAL mode refused ({mode})")
            connection.execute(f"PRAGMA synchronous = {synchronous.upper()}")
            connection.execute("PRAGMA foreign_keys = ON")
            self.schema_version = migrate(connection)
        except sqlite3.Error as exc:
            connection.close()
            raise StoreError(f"cannot open store {self.path}: {exc}") from exc
        except BaseException:
            connection.close()
            raise
        self._connection = connection
        self._opened = _identity(self.path)
        self._checkpointer: _Checkpointer | None = None

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    @property
    def commits_wait_for_disk(self) -> bool:
        """Whether a commit syncs to the disk before it returns (``synchronous = full``);
        with ``normal`` it returns once the write-ahead log holds the transaction."""
        return self.synchronous == "full"

    def close(self) -> None:
        """Close the connection; later calls raise :class:`StoreError`. Idempotent."""
        checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            checkpointer.stop()
        with self._lock:
            self._connection.close()

    def checkpoint_in_background(self, interval: float = CHECKPOINT_INTERVAL) -> None:
        """Move the write-ahead log into the database from a thread of its own, every
        ``interval`` seconds, instead of in the commit that fills it (SQLite's automatic
        checkpoint): a checkpoint syncs the database file, which would otherwise stall
        one commit in a few hundred for milliseconds, on the proxy's request path.

        The thread has its own connection and runs passive checkpoints, which never wait
        for nor block this store's writers; a checkpoint that fails is tried again at the
        next interval. A log past :data:`BACKSTOP_PAGES` is still checkpointed by the
        commit that grows it (its frames mostly copied already), so it cannot grow
        without bound. Other processes on the same file keep SQLite's automatic
        checkpoints. Idempotent; :meth:`close` stops the thread.
        """
        with self._lock:
            if self._checkpointer is not None:
                return
            self._check_file()
            try:
                self._connection.execute(f"PRAGMA wal_autocheckpoint = {BACKSTOP_PAGES}")
            except sqlite3.Error as exc:
                raise StoreError(f"store {self.path}: {exc}") from exc
            self._checkpointer = _Checkpointer(self.path, interval)

    # -- transactions ---------------------------------------------------------------

    _integrity_errors = (sqlite3.IntegrityError,)

    def _check_file(self) -> None:
        """Fail unless the path still names the file this store opened."""
        try:
            current = _identity(self.path)
        except FileNotFoundError:
            raise StoreError(
                f"store {self.path} was deleted while guardproxy had it open, so nothing "
                "more is written to it; restart guardproxy (a new, empty store) or put the "
                "file back"
            ) from None
        except OSError as exc:
            raise StoreError(f"store {self.path}: {exc}") from exc
        if current != self._opened:
            raise StoreError(
                f"store {self.path} was replaced by another file while guardproxy had it "
                "open, so nothing more is written to either; restart guardproxy to use the "
                "new file"
            )

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._check_file()
            try:
                yield self._connection
            except sqlite3.Error as exc:
                raise StoreError(f"store {self.path}: {exc}") from exc

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """An immediate transaction: committed on success, rolled back on any error."""
        with self._lock:
            self._check_file()
            db = self._connection
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"store {self.path}: {exc}") from exc
            try:
                yield db
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                _rollback(db)
                raise StoreError(f"store {self.path}: {exc}") from exc
            except BaseException:
                _rollback(db)
                raise

    def _lock_checkpoints(self, db: Db) -> None:
        """Nothing to do: ``BEGIN IMMEDIATE`` already keeps other writers out."""

    def _json_field(self, column: str, key: str) -> str:
        return f"json_extract({column}, '$.{key}')"

    def _integrity(self, exc: Exception, what: str) -> StoreError:
        errorname = getattr(exc, "sqlite_errorname", "")
        if errorname in ("SQLITE_CONSTRAINT_PRIMARYKEY", "SQLITE_CONSTRAINT_UNIQUE"):
            return AlreadyExistsError(f"{what} already exists")
        if errorname == "SQLITE_CONSTRAINT_FOREIGNKEY":
            return NotFoundError(f"{what} refers to a hold that does not exist")
        return InvalidValueError(f"{what} rejected: {exc}")


class _Checkpointer:
    """A thread that checkpoints one SQLite file's write-ahead log every ``interval``."""

    def __init__(self, path: Path, interval: float) -> None:
        self._path = path
        self._interval = interval
        try:  # opened now, on the file the store opened; never creates one (mode=rw)
            self._connection = sqlite3.connect(
                f"{path.resolve().as_uri()}?mode=rw",
                uri=True,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise StoreError(f"store {path}: cannot open it for checkpoints: {exc}") from exc
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="guardproxy-sqlite-checkpoint", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stopped.wait(self._interval):
                try:
                    self._connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:  # busy, or a full disk: the next interval
                    log.debug("store.checkpoint_failed", path=str(self._path), error=str(exc))
        finally:
            self._connection.close()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)


# -- helpers ------------------------------------------------------------------------


def _prepare_file(path: Path) -> None:
    """Create the directory (0700) and the file (0600) before SQLite does.

    SQLite would create the file with the umask's permissions; the decision log holds
    resource names and session metadata, so it is private to the proxy's user.  An
    existing directory or file keeps its permissions: the operator chose them.
    """
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
        path.parent.chmod(0o700)
    if path.exists():
        if not path.is_file():
            raise StoreError(f"cannot open store {path}: not a regular file")
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # another process created it first
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def _identity(path: Path) -> tuple[int, int]:
    """Which file ``path`` names (device, inode)."""
    status = os.stat(path)
    return status.st_dev, status.st_ino


def _rollback(connection: sqlite3.Connection) -> None:
    if connection.in_transaction:
        with suppress(sqlite3.Error):
            connection.execute("ROLLBACK")
