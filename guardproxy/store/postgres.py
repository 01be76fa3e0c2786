"""Fleet mode: the store in a PostgreSQL database shared by several proxy replicas.

Concurrency model: a small pool of connections (the proxy calls the store from
``asyncio.to_thread`` workers), each in autocommit mode with explicit transactions.
A hold about to change is read ``FOR UPDATE`` and every transition is a conditional
``UPDATE``, so of two replicas approving or releasing the same hold exactly one wins,
as with SQLite's ``BEGIN IMMEDIATE``.  Migrations run under an advisory lock, so
replicas starting together upgrade the schema once.

Replicas learn about each other's approvals through ``LISTEN``/``NOTIFY``: a
trigger announces every hold state change (postgres_migrations.py) and one
dedicated connection per store listens, reconnecting with back-off when the
database goes away.  A lost database fails every call with :class:`StoreError`
within the connect timeout, which the gate turns into "not sent"; pooled
connections are dropped when that happens, so the store works again as soon as the
database is back, without a restart.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import psycopg.errors
import structlog
from psycopg.rows import DictRow, dict_row

from guardproxy.store.base import (
    AlreadyExistsError,
    HoldState,
    HoldWatcher,
    InvalidValueError,
    NotFoundError,
    StoreError,
)
from guardproxy.store.migrations import Migration
from guardproxy.store.postgres_migrations import (
    CHAIN_LOCK,
    HOLDS_CHANNEL,
    MIGRATION_LOCK,
    MIGRATIONS,
    SCHEMA_VERSION_TABLE,
)
from guardproxy.store.sql import Cursor, Db, SqlStore, apply_migrations, schema_too_new

log = structlog.get_logger(__name__)

Connection = psycopg.Connection[DictRow]

DEFAULT_POOL_SIZE = 8
DEFAULT_CONNECT_TIMEOUT = 3
"""Seconds to wait for a connection (libpq's minimum is 2): how long a request waits
before failing closed when the database is unreachable."""
_POOL_WAIT = 30.0
_LISTEN_POLL = 0.5
_MAX_BACKOFF = 5.0


def migrate(connection: Connection, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Bring the database to ``len(migrations)``; return that version.

    An up-to-date database is only read.  Otherwise the migrations run in one
    transaction holding an advisory lock, so replicas starting together apply each
    migration once, in order, and a failed one leaves the previous version.
    ``connection`` must be in autocommit mode.
    """
    current = _schema_version(connection)
    if current == len(migrations):
        return current
    if current > len(migrations):
        raise schema_too_new(current, len(migrations))
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        connection.execute(SCHEMA_VERSION_TABLE)
        apply_migrations(_PgDb(connection), _schema_version(connection), migrations)
    return len(migrations)


def _schema_version(connection: Connection) -> int:
    row = connection.execute("SELECT to_regclass('schema_version') IS NOT NULL AS ok").fetchone()
    if row is None or not row["ok"]:
        return 0
    row = connection.execute("SELECT COALESCE(MAX(version), 0) AS v FROM schema_version").fetchone()
    return 0 if row is None else int(row["v"])


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class _PgDb:
    """A psycopg connection speaking the shared SQL's ``?`` placeholders."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Cursor:
        return self._connection.execute(_placeholders(sql), parameters)

    def executemany(self, sql: str, seq_of_parameters: Sequence[Sequence[Any]], /) -> None:
        if seq_of_parameters:
            with self._connection.cursor() as cursor:
                cursor.executemany(_placeholders(sql), seq_of_parameters)


_converted: dict[str, str] = {}


def _placeholders(sql: str) -> str:
    """``?`` -> ``%s`` (and a literal ``%`` -> ``%%``); the shared SQL has no ``?`` in text."""
    converted = _converted.get(sql)
    if converted is None:
        converted = _converted[sql] = sql.replace("%", "%%").replace("?", "%s")
    return converted


class _Pool:
    """Up to ``size`` connections; broken ones are dropped, with every idle one.

    When one connection breaks the database has usually gone away or restarted, so
    the idle ones are dead too: dropping them makes the next call reconnect instead
    of failing on a stale socket.
    """

    def __init__(self, url: str, size: int, connect_timeout: int) -> None:
        self._url = url
        self._connect_timeout = connect_timeout
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._idle: list[Connection] = []
        self._closed = False

    def connect(self) -> Connection:
        return psycopg.connect(
            self._url,
            autocommit=True,
            row_factory=dict_row,
            connect_timeout=self._connect_timeout,
            application_name="guardproxy",
        )

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        if not self._slots.acquire(timeout=_POOL_WAIT):
            raise StoreError(f"no free database connection within {_POOL_WAIT:.0f} s")
        try:
            with self._lock:
                if self._closed:
                    raise StoreError("the store is closed")
                connection = self._idle.pop() if self._idle else None
            if connection is None:
                connection = self.connect()
            try:
                yield connection
            except psycopg.OperationalError:
                self.drop_idle()
                raise
            finally:
                self._give_back(connection)
        finally:
            self._slots.release()

    def _give_back(self, connection: Connection) -> None:
        reusable = (
            not connection.closed
            and not connection.broken
            and connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        )
        with self._lock:
            if reusable and not self._closed:
                self._idle.append(connection)
                return
        connection.close()

    def drop_idle(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self.drop_idle()


class PostgresStore(SqlStore):
    """:class:`~guardproxy.store.base.Store` in a PostgreSQL database (``postgresql://``).

    The URL is libpq's (``postgresql://user@host:5432/db``, ``?host=/run/postgresql``
    for a Unix socket, ``sslmode=...``); the password is best kept in ``PGPASSWORD``
    or ``~/.pgpass`` rather than in the URL.
    """

    _FOR_UPDATE = " FOR UPDATE"
    _integrity_errors = (psycopg.IntegrityError, psycopg.DataError)

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = DEFAULT_POOL_SIZE,
        connect_timeout: int = DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        self.url = url
        self.display_url = redact(url)
        self._pool = _Pool(url, pool_size, connect_timeout)
        self._watchers: list[HoldWatcher] = []
        self._watch_lock = threading.Lock()
        self._listener: threading.Thread | None = None
        self._closing = threading.Event()
        try:
            with self._pool.connection() as connection:
                self.schema_version = migrate(connection)
        except psycopg.Error as exc:
            self._pool.close()
            raise StoreError(f"cannot open store {self.display_url}: {exc}") from exc
        except BaseException:
            self._pool.close()
            raise

    def __repr__(self) -> str:
        return f"PostgresStore({self.display_url!r})"

    def close(self) -> None:
        """Close every connection and stop listening; later calls raise StoreError."""
        self._closing.set()
        self._pool.close()
        if self._listener is not None and self._listener is not threading.current_thread():
            self._listener.join(timeout=_LISTEN_POLL * 4)

    # -- transactions ---------------------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[_PgDb]:
        try:
            with self._pool.connection() as connection:
                yield _PgDb(connection)
        except psycopg.Error as exc:
            raise self._failure(exc) from exc

    @contextmanager
    def _write(self) -> Iterator[_PgDb]:
        try:
            with self._pool.connection() as connection, connection.transaction():
                yield _PgDb(connection)
        except psycopg.Error as exc:
            raise self._failure(exc) from exc

    def _failure(self, exc: psycopg.Error) -> StoreError:
        if isinstance(exc, psycopg.OperationalError):
            return StoreError(
                f"store {self.display_url} is unreachable: {str(exc).strip()}; "
                "check that PostgreSQL is running and reachable from this host"
            )
        return StoreError(f"store {self.display_url}: {str(exc).strip()}")

    def _lock_chain(self, db: Db) -> None:
        db.execute("SELECT pg_advisory_xact_lock(?)", (CHAIN_LOCK,))

    def _json_field(self, column: str, key: str) -> str:
        return f"({column}::jsonb ->> '{key}')"

    def _integrity(self, exc: Exception, what: str) -> StoreError:
        if isinstance(exc, psycopg.errors.UniqueViolation):
            return AlreadyExistsError(f"{what} already exists")
        if isinstance(exc, psycopg.errors.ForeignKeyViolation):
            return NotFoundError(f"{what} refers to a hold that does not exist")
        return InvalidValueError(f"{what} rejected: {str(exc).strip()}")

    # -- notifications --------------------------------------------------------------

    def watch_holds(self, callback: HoldWatcher) -> None:
        with self._watch_lock:
            self._watchers.append(callback)
            if self._listener is None:
                self._listener = threading.Thread(
                    target=self._listen, name="store-hold-listener", daemon=True
                )
                self._listener.start()

    def _listen(self) -> None:
        """Keep one connection listening; reconnect with back-off while the DB is away."""
        backoff = 0.1
        while not self._closing.is_set():
            try:
                with self._pool.connect() as connection:
                    connection.execute(f"LISTEN {HOLDS_CHANNEL}")
                    if backoff > 0.1:
                        log.info("store.listening_again", store=self.display_url)
                    backoff = 0.1
                    while not self._closing.is_set():
                        for note in connection.notifies(timeout=_LISTEN_POLL):
                            self._dispatch(note.payload)
            except psycopg.Error as exc:
                self._pool.drop_idle()  # the database went away: those are dead too
                log.warning("store.listen_failed", store=self.display_url, error=str(exc))
                self._closing.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)

    def _dispatch(self, payload: str) -> None:
        hold_id, _, state = payload.partition(" ")
        try:
            new_state = HoldState(state)
        except ValueError:
            log.warning("store.bad_notification", payload=payload)
            return
        with self._watch_lock:
            watchers = list(self._watchers)
        for watcher in watchers:
            try:
                watcher(hold_id, new_state)
            except Exception as exc:  # one failing watcher must not stop the listener
                log.error("store.watcher_failed", hold=hold_id, error=str(exc))
