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
within the connect timeout, which the gate turns into "not sent"; a lock another
transaction holds fails it within the lock timeout.  The store works again as soon
as the database does, without a restart:

* a pooled connection the server has spoken on while it sat idle (a shutdown or a
  terminated backend announces itself that way) is closed instead of handed out,
  so a restart between two calls fails neither;
* a connection whose call failed with a database error is closed, and the idle
  ones with it: they share whatever broke it (a restart; a read-only database,
  whose connections stay read-only after it is writable again).
"""

from __future__ import annotations

import select
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import psycopg.errors
import structlog
from psycopg.rows import DictRow, dict_row

from guardproxy.store.base import (
    AlreadyExistsError,
    AuditRecord,
    HoldState,
    HoldWatcher,
    InvalidValueError,
    NotFoundError,
    StoreError,
)
from guardproxy.store.chain import canonical_time
from guardproxy.store.migrations import Migration
from guardproxy.store.postgres_migrations import (
    CHECKPOINT_LOCK,
    HOLDS_CHANNEL,
    MIGRATION_LOCK,
    MIGRATIONS,
    SCHEMA_VERSION_TABLE,
)
from guardproxy.store.sql import (
    INSERT_SESSION_EVENTS,
    Cursor,
    Db,
    SqlStore,
    apply_migrations,
    schema_too_new,
    writer_name,
)

log = structlog.get_logger(__name__)

Connection = psycopg.Connection[DictRow]

DEFAULT_POOL_SIZE = 8
DEFAULT_CONNECT_TIMEOUT = 3
"""Seconds to wait for a connection (libpq's minimum is 2): how long a request waits
before failing closed when the database is unreachable."""
DEFAULT_LOCK_TIMEOUT = 5.0
"""Seconds a statement waits for a lock another transaction holds (a table locked by
hand, a hung writer) before failing, as SQLite's busy timeout: without it a request
would wait on the lock for as long as it is held."""
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
        connection.execute("SET LOCAL lock_timeout = 0")  # another replica may be migrating
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


def _durability(connection: Connection) -> dict[str, str]:
    """The server settings a commit's durability depends on (the README says more)."""
    settings = {}
    for name in ("fsync", "synchronous_commit"):
        row = connection.execute(f"SHOW {name}").fetchone()
        settings[name] = "" if row is None else str(next(iter(row.values())))
    return settings


def _fast_compression(connection: Connection) -> str | None:
    """``lz4`` if the server can compress stored values with it, else None.

    A decision's record is ~2 KB of JSON twice (its columns and its chain record's
    payload), over PostgreSQL's threshold for compressing a row: with the default
    ``pglz`` the compression is a good part of the server's work per append; ``lz4``
    does it several times faster.  It changes how values are kept on disk, never what
    is read back.  Servers before 14, or built without lz4, keep their default.
    """
    row = connection.execute(
        "SELECT 'lz4' = ANY(enumvals) AS lz4 FROM pg_settings"
        " WHERE name = 'default_toast_compression'"
    ).fetchone()
    return "lz4" if row is not None and row["lz4"] else None


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


_APPEND_DECISION = """
WITH decision AS (
    INSERT INTO decisions (id, at, session_id, action, context, decision, outcome, hold_id,
                           upstream_status)
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
), record AS (
    INSERT INTO audit_log (chain, seq, record_id, kind, at, session_id, subject, outcome,
                           provider, payload, prev_hash, hash)
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
)
UPDATE audit_chains SET head_seq = %s, head_hash = %s WHERE id = %s
"""
"""One decision, its chain record and the chain's new head, in one statement."""

_APPEND_DECISIONS = """
WITH decision AS (
    INSERT INTO decisions (id, at, session_id, action, context, decision, outcome, hold_id,
                           upstream_status)
    SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[],
                         %b::text[], %b::text[], %b::text[], %b::int[])
), record AS (
    INSERT INTO audit_log (chain, seq, record_id, kind, at, session_id, subject, outcome,
                           provider, payload, prev_hash, hash)
    SELECT %s, seq, record_id, kind, at, session_id, subject, outcome, provider, payload,
           prev_hash, hash
    FROM unnest(%b::bigint[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[],
                %b::text[], %b::text[], %b::text[], %b::text[], %b::text[])
         WITH ORDINALITY AS r (seq, record_id, kind, at, session_id, subject, outcome,
                               provider, payload, prev_hash, hash, n)
    ORDER BY n
)
UPDATE audit_chains SET head_seq = %s, head_hash = %s WHERE id = %s
"""
"""Decisions, their chain records (in chain order: ``position`` follows ``seq``) and the
chain's new head, in one statement: the appends of a mutation's record cost a single
round trip and a single commit.  Parameters: the decision columns as arrays, the chain,
the record columns as arrays, the new head (seq, hash) and the chain again."""


def _duplicate(exc: Exception, decisions: str, chain: int) -> str:
    """What an integrity error while appending decisions is about."""
    constraint = getattr(getattr(exc, "diag", None), "constraint_name", None) or ""
    if constraint.endswith("_chain_seq_key"):  # UNIQUE (chain, seq) of audit_log
        return f"a record of audit chain {chain} (another writer appended to it)"
    return decisions


def _together(
    connection: Connection, events: Sequence[Sequence[Any]]
) -> AbstractContextManager[Any]:
    """A transaction when session events go with the decisions, else nothing (the
    decisions' one statement is a transaction by itself)."""
    return connection.transaction() if events else nullcontext()


_converted: dict[str, str] = {}


class _Connection(psycopg.Connection[DictRow]):
    """A pooled connection, with the cursor its appends reuse."""

    _appender: psycopg.Cursor[DictRow] | None = None

    def append(self, statement: str, parameters: Sequence[Any]) -> None:
        """Run an append's statement, prepared, on a cursor kept for appends: what
        ``execute`` does, without a new cursor and the count of executions before
        preparing on every call (a writer's appends are its hot path)."""
        cursor = self._appender
        if cursor is None or cursor.closed:
            cursor = self._appender = self.cursor()
        cursor.execute(statement, parameters, prepare=True)


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

    def __init__(self, url: str, size: int, connect_timeout: int, lock_timeout: float) -> None:
        self._url = url
        self._connect_timeout = connect_timeout
        self._lock_timeout_ms = max(1, int(lock_timeout * 1000))
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._idle: list[_Connection] = []
        self._closed = False
        self.compression: str | None = None
        """The ``default_toast_compression`` of new connections (None: the server's)."""

    def connect(self) -> _Connection:
        connection = _Connection.connect(
            self._url,
            autocommit=True,
            row_factory=dict_row,
            connect_timeout=self._connect_timeout,
            application_name="guardproxy",
        )
        settings = f"SET lock_timeout = {self._lock_timeout_ms}"
        if self.compression is not None:
            settings += f"; SET default_toast_compression = {self.compression}"
        try:
            connection.execute(settings)  # no parameters: one round trip for both
        except BaseException:
            connection.close()
            raise
        return connection

    @contextmanager
    def connection(self) -> Iterator[_Connection]:
        if not self._slots.acquire(timeout=_POOL_WAIT):
            raise StoreError(f"no free database connection within {_POOL_WAIT:.0f} s")
        try:
            connection = self._take_idle()
            if connection is None:
                connection = self.connect()
            failed = False
            try:
                yield connection
            except psycopg.Error:
                # what broke this one broke the others too (a restart, a failover)
                failed = True
                self.drop_idle()
                raise
            finally:
                self._give_back(connection, failed=failed)
        finally:
            self._slots.release()

    def _take_idle(self) -> _Connection | None:
        """An idle connection still fit to use, or None; the unfit ones are closed."""
        while True:
            with self._lock:
                if self._closed:
                    raise StoreError("the store is closed")
                if not self._idle:
                    return None
                connection = self._idle.pop()
            if not _spoke_while_idle(connection):
                return connection
            connection.close()

    def _give_back(self, connection: _Connection, *, failed: bool) -> None:
        reusable = (
            not failed
            and not connection.closed
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


def _spoke_while_idle(connection: Connection) -> bool:
    """Whether the server sent something to a connection nobody was using.

    An idle connection has nothing to read unless the server spoke on its own: it
    shut down or terminated this backend (the error message, then the end of the
    stream), or a setting it reports changed. Such a connection is not handed out:
    one ``select`` with no wait, instead of a round trip to the server.
    """
    if connection.closed or connection.broken:
        return True
    try:
        readable, _, _ = select.select([connection.fileno()], [], [], 0)
    except (OSError, ValueError, psycopg.Error):
        return True
    return bool(readable)


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
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        writer: str = "",
    ) -> None:
        """``writer`` names who appends through this store in its audit chain's record
        (with the host and process id)."""
        self.url = url
        self._append_lock = threading.Lock()
        self._queue_lock = threading.Lock()
        self._queued = []
        self._writer = writer_name(writer)
        self.display_url = redact(url)
        self._pool = _Pool(url, pool_size, connect_timeout, lock_timeout)
        self._watchers: list[HoldWatcher] = []
        self._watch_lock = threading.Lock()
        self._listener: threading.Thread | None = None
        self._closing = threading.Event()
        try:
            with self._pool.connection() as connection:
                self.schema_version = migrate(connection)
                self.durability = _durability(connection)
                self._pool.compression = _fast_compression(connection)
                if self._pool.compression is not None:
                    connection.execute(f"SET default_toast_compression = {self._pool.compression}")
        except psycopg.Error as exc:
            self._pool.close()
            raise StoreError(f"cannot open store {self.display_url}: {exc}") from exc
        except BaseException:
            self._pool.close()
            raise

    def __repr__(self) -> str:
        return f"PostgresStore({self.display_url!r})"

    @property
    def durability_warning(self) -> str | None:
        """Why a crash of the database server could lose commits guardproxy acted on, or
        None (``fsync`` and ``synchronous_commit`` on, PostgreSQL's defaults)."""
        off = [name for name, value in self.durability.items() if value == "off"]
        if not off:
            return None
        return (
            f"the database server runs with {' and '.join(f'{n} = off' for n in off)}: a crash "
            "of it can lose the latest records of requests guardproxy already forwarded"
        )

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
    def _transaction(self) -> Iterator[_PgDb]:
        try:
            with self._pool.connection() as connection, connection.transaction():
                yield _PgDb(connection)
        except psycopg.Error as exc:
            raise self._failure(exc) from exc

    def _store_decisions(
        self,
        rows: Sequence[Sequence[Any]],
        records: Sequence[AuditRecord],
        what: str,
        events: Sequence[Sequence[Any]] = (),
    ) -> None:
        """One statement (:data:`_APPEND_DECISION`, :data:`_APPEND_DECISIONS`): atomic by
        itself and one round trip, one prepared statement for one decision (a mutation's,
        on the request path) and one for a batch of any size.  Session event rows, if
        any, are inserted after it in the same transaction (one commit)."""
        last = records[-1]
        audit = [
            (r.seq, r.record_id, r.kind, canonical_time(r.at), r.session_id, r.subject,
             r.outcome, r.provider, r.payload_json, r.prev_hash, r.hash)
            for r in records
        ]  # fmt: skip
        if len(rows) == 1:
            statement = _APPEND_DECISION
            parameters: tuple[Any, ...] = (*rows[0], last.chain, *audit[0])
        else:
            statement = _APPEND_DECISIONS
            parameters = (
                *(list(column) for column in zip(*rows, strict=True)),
                last.chain,
                *(list(column) for column in zip(*audit, strict=True)),
            )
        try:
            with self._pool.connection() as connection, _together(connection, events):
                try:
                    connection.append(statement, (*parameters, last.seq, last.hash, last.chain))
                except self._integrity_errors as exc:
                    raise self._integrity(exc, _duplicate(exc, what, last.chain)) from exc
                if events:
                    _PgDb(connection).executemany(INSERT_SESSION_EVENTS, events)
        except psycopg.Error as exc:
            raise self._failure(exc) from exc

    def _failure(self, exc: psycopg.Error) -> StoreError:
        if isinstance(exc, psycopg.errors.LockNotAvailable):
            return StoreError(
                f"store {self.display_url}: another transaction held a lock this call "
                "needed for longer than the lock timeout; look for a long transaction "
                "or a table locked by hand (pg_locks)"
            )
        if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):
            return StoreError(
                f"store {self.display_url} is read-only: {str(exc).strip()}; guardproxy "
                "needs a writable primary (default_transaction_read_only, a standby?)"
            )
        if isinstance(exc, psycopg.OperationalError):
            return StoreError(
                f"store {self.display_url} is unreachable: {str(exc).strip()}; "
                "check that PostgreSQL is running and reachable from this host"
            )
        return StoreError(f"store {self.display_url}: {str(exc).strip()}")

    def _lock_checkpoints(self, db: Db) -> None:
        db.execute("SELECT pg_advisory_xact_lock(?)", (CHECKPOINT_LOCK,))

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
