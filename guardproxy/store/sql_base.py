"""The base of the SQL store: row protocols, transactions, this store's audit chain,
and the row mapping and timestamp helpers every part of it shares (see
:mod:`guardproxy.store.sql`)."""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Self

from guardproxy.redact import REDACTED
from guardproxy.store import chain
from guardproxy.store.base import (
    Approval,
    Approver,
    ApproverLink,
    AuditChain,
    AuditEntry,
    AuditRecord,
    ChatMessage,
    DecisionRecord,
    Hold,
    HoldImpact,
    HoldState,
    HoldWatcher,
    InvalidValueError,
    Page,
    SafetyStepRecord,
    SchemaVersionError,
    Session,
    SessionEvent,
    StoreError,
    Verdict,
    new_hold_id,
    redacted_event,
)
from guardproxy.store.migrations import Migration

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

_HOLD_ID_ATTEMPTS = 8


class Row(Protocol):
    """A result row read by column name (``sqlite3.Row``, a psycopg ``dict_row``)."""

    def __getitem__(self, key: str, /) -> Any: ...


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Db(Protocol):
    """The part of a DB-API connection the shared queries use, inside one transaction."""

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Cursor: ...

    def executemany(self, sql: str, seq_of_parameters: Sequence[Sequence[Any]], /) -> Any: ...


class SqlBase:
    """What every part of :class:`~guardproxy.store.sql.SqlStore` builds on: the
    backend's transactions and this store's audit chain."""

    _FOR_UPDATE: ClassVar[str] = ""
    _integrity_errors: ClassVar[tuple[type[Exception], ...]] = ()
    _writer = ""
    """Who appends through this store (the chain's ``writer``, informational)."""
    _chain_id: int | None = None
    """This store's audit chain, created at its first write that may append to it."""
    _chain_head: tuple[int, str] | None = None
    """The (seq, hash) of its chain's last record as of the last commit; None: read it."""
    _appended_head: tuple[int, str] | None = None
    """The head the transaction in progress leaves, once it commits."""
    _append_lock: threading.Lock
    """Held by this store's transactions that may append to its chain, one at a time."""
    _queue_lock: threading.Lock
    _queued: list[QueuedAppend]
    """Decisions waiting for ``_append_lock``, written together by whoever gets it."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _read(self) -> AbstractContextManager[Db]:
        raise NotImplementedError

    def _transaction(self) -> AbstractContextManager[Db]:
        """A write transaction: committed on success, rolled back on any error."""
        raise NotImplementedError

    @contextmanager
    def _write(self, *, chained: bool = False) -> Iterator[Db]:
        """A write transaction; ``chained``: one that may append to this store's chain
        (:meth:`_appending`)."""
        if chained:
            with self._appending(), self._transaction() as db:
                yield db
        else:
            with self._transaction() as db:
                yield db

    @contextmanager
    def _appending(self) -> Iterator[None]:
        """The span of a transaction that may append to this store's chain.

        A store's appending transactions run one at a time (``_append_lock``), so the head
        its last commit left is known without reading it: a store appends to its chain
        alone.  Should another writer append to it anyway (two processes given one
        chain), the ``UNIQUE (chain, seq)`` of ``audit_log`` refuses the second record of
        a sequence number, so a chain never forks.  The chain is created first, in a
        transaction of its own, if it does not exist yet.
        """
        with self._append_lock:
            if self._chain_id is None:
                self._open_chain()
            self._appended_head = None
            try:
                yield
            except BaseException:
                self._chain_head = None  # committed or not: read it again next time
                raise
            if self._appended_head is not None:
                self._chain_head = self._appended_head

    def _open_chain(self) -> None:
        """Create this store's chain: from now on it appends there, and only it does."""
        with self._transaction() as db:
            row = db.execute(
                "INSERT INTO audit_chains (writer, head_seq, head_hash) VALUES (?, 0, '')"
                " RETURNING id",
                (self._writer,),
            ).fetchone()
        self._chain_id = int(row["id"])
        self._chain_head = (0, chain.chain_genesis(self._chain_id))

    def _integrity(self, exc: Exception, what: str) -> StoreError:
        """What an integrity error from the driver means for ``what``."""
        raise NotImplementedError

    def _json_field(self, column: str, key: str) -> str:
        """SQL for the text of top-level ``key`` of the JSON in ``column``."""
        raise NotImplementedError

    def watch_holds(self, callback: HoldWatcher) -> None:
        """Nothing to watch: one SQLite file has one proxy, which resolves holds itself."""

    # -- audit chain ----------------------------------------------------------------

    def _lock_checkpoints(self, db: Db) -> None:
        """Keep other checkpoints from being made until this transaction ends."""
        raise NotImplementedError

    def _chain(self, db: Db, entries: Sequence[AuditEntry]) -> list[AuditRecord]:
        """Link ``entries`` after this store's chain head and insert them (in the caller's
        transaction, which ``_write(chained=True)`` opened), moving the chain's head."""
        if not entries:
            return []
        records = self._link(entries, self._head(db))
        self._insert_linked(db, records)
        return records

    def _head(self, db: Db | None) -> tuple[int, str]:
        """The (seq, hash) this store's next record follows: as the transaction in
        progress or the last commit left it, else as stored (read with ``db``, or on its
        own), when a failure made it unknown."""
        head = self._appended_head or self._chain_head
        if head is not None:
            return head
        chain_id = self._chain_id
        if chain_id is None:  # a method appending outside _appending()
            raise StoreError("internal error: an audit append outside an appending transaction")
        query = "SELECT head_seq, head_hash FROM audit_chains WHERE id = ?"
        if db is None:
            with self._read() as reader:
                row = reader.execute(query, (chain_id,)).fetchone()
        else:
            row = db.execute(query, (chain_id,)).fetchone()
        if row is None:
            raise StoreError(
                f"audit chain {chain_id} is missing from audit_chains (deleted?): nothing "
                "more is appended to it; run `guardproxy audit verify` and restart guardproxy"
            )
        seq = int(row["head_seq"])
        return seq, row["head_hash"] if seq else chain.chain_genesis(chain_id)

    def _link(self, entries: Sequence[AuditEntry], head: tuple[int, str]) -> list[AuditRecord]:
        """``entries`` as this store's chain's records after ``head`` (whose new head the
        transaction leaves, once it commits)."""
        chain_id = self._chain_id
        assert chain_id is not None  # _head() found the chain
        seq, prev = head
        records: list[AuditRecord] = []
        for entry in entries:
            seq += 1
            record = chain.link(entry, seq, prev, chain_id)
            records.append(record)
            prev = record.hash
        self._appended_head = (seq, prev)
        return records

    def _insert_linked(self, db: Db, records: Sequence[AuditRecord]) -> None:
        """Insert linked records of this store's chain and move its head to the last."""
        insert_rows(
            db,
            "INSERT INTO audit_log (chain, seq, record_id, kind, at, session_id, subject,"
            " outcome, provider, payload, prev_hash, hash)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (r.chain, r.seq, r.record_id, r.kind, to_ts(r.at), r.session_id, r.subject,
                 r.outcome, r.provider, r.payload_json, r.prev_hash, r.hash)
                for r in records
            ],
        )  # fmt: skip
        last = records[-1]
        db.execute(
            "UPDATE audit_chains SET head_seq = ?, head_hash = ? WHERE id = ?",
            (last.seq, last.hash, last.chain),
        )


def apply_migrations(db: Db, current: int, migrations: Sequence[Migration]) -> None:
    """Run the migrations after version ``current`` in order, in the caller's transaction."""
    if current > len(migrations):  # another process upgraded it meanwhile
        raise schema_too_new(current, len(migrations))
    for version in range(current + 1, len(migrations) + 1):
        for statement in migrations[version - 1]:
            db.execute(statement)
        db.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))


def writer_name(role: str) -> str:
    """Who appends through a store, as its chain's ``writer`` says: host, process, role."""
    name = f"{socket.gethostname()} pid {os.getpid()}"
    return f"{name} {role}" if role else name


def schema_too_new(current: int, known: int) -> SchemaVersionError:
    return SchemaVersionError(
        f"database schema version {current} is newer than this guardproxy knows "
        f"({known}); upgrade guardproxy or use another database"
    )


SESSION_COLUMNS = (
    "id, name, user_name, agent, command, cwd, labels, started_at, ended_at, anonymous, token_hash"
)
DECISION_COLUMNS = (
    "id, at, session_id, action, context, decision, outcome, hold_id, upstream_status"
)
EVENT_COLUMNS = (
    "session_id, at, summary, operation, verb, provider, environment, resource_key, "
    "outcome, protection_removed, recreate, destroyed_container"
)


@dataclass(eq=False)
class QueuedAppend:
    """Decisions a caller of ``append_decisions`` waits to see committed."""

    rows: list[tuple[Any, ...]]
    entries: list[AuditEntry]
    what: str
    events: list[tuple[Any, ...]]
    """Session event rows written in the same transaction (:func:`event_rows`)."""
    done: bool = False
    error: StoreError | None = None


INSERT_SESSION_EVENTS = (
    f"INSERT INTO session_events ({EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def event_rows(events: Sequence[SessionEvent]) -> list[tuple[Any, ...]]:
    """The rows of ``events``, redacted (every backend stores session events so)."""
    return [
        (e.session_id, to_ts(e.at), e.summary, e.operation, e.verb, e.provider,
         e.environment, e.resource_key, e.outcome, int(e.protection_removed),
         int(e.recreate), e.destroyed_container)
        for e in map(redacted_event, events)
    ]  # fmt: skip


def insert_rows(db: Db, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    """One row as one statement, several as ``executemany`` (which costs more for one)."""
    if len(rows) == 1:
        db.execute(sql, rows[0])
    else:
        db.executemany(sql, rows)


def where_clause(conditions: Mapping[str, object | None]) -> tuple[str, list[object]]:
    """``WHERE`` and the conditions (``"column = ?"``) whose value is not None, and values."""
    given = {clause: value for clause, value in conditions.items() if value is not None}
    if not given:
        return "", []
    return "WHERE " + " AND ".join(given), list(given.values())


def unused_hold_id(db: Db) -> str:
    for _ in range(_HOLD_ID_ATTEMPTS):
        hold_id = new_hold_id()
        if db.execute("SELECT 1 FROM holds WHERE id = ?", (hold_id,)).fetchone() is None:
            return hold_id
    raise StoreError("could not find an unused hold id")  # 50 random bits: not in practice


def hold_event(kind: str, hold: Hold, at: datetime, **extra: object) -> AuditEntry:
    return chain.event_entry(
        kind,
        at=at,
        session_id=hold.session_id,
        subject=hold.id,
        outcome=hold.state.value,
        summary=hold.summary,
        request_digest=hold.request_digest,
        grant=hold.grant,
        expires_at=to_ts(hold.expires_at),
        resolved_by=hold.resolved_by,
        reason=hold.reason,
        grant_expires_at=to_ts_or_none(hold.grant_expires_at),
        **extra,
    )


CARRIED_HOLDS = (
    "holds h JOIN sessions prior ON prior.id = h.session_id JOIN sessions cur ON cur.id = ?"
    " WHERE h.request_digest = ? AND h.session_id != cur.id"
    " AND cur.anonymous = 0 AND cur.user_name != '' AND cur.cwd != ''"
    f" AND cur.cwd NOT LIKE '%{REDACTED}%'"
    " AND prior.anonymous = 0 AND prior.user_name = cur.user_name AND prior.cwd = cur.cwd"
)
"""Holds of the same request digest by other sessions of the same user and working
directory (``carries_approvals``: never a directory redaction changed, as two different
ones could read the same); parameters: the session id, the digest."""


def fetch_hold(db: Db, hold_id: str) -> Hold:
    return hold_from_row(db.execute("SELECT * FROM holds WHERE id = ?", (hold_id,)).fetchone())


def row_limit(limit: int) -> int:
    if limit < 1:
        raise InvalidValueError(f"limit must be positive, got {limit}")
    return limit


_TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
"""How timestamps are read back; written by :func:`chain.canonical_time`, the same text."""


def to_ts(moment: datetime) -> str:
    """Fixed-width UTC text, so SQL string comparison is time comparison."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidValueError(f"timestamps must be timezone-aware, got {moment!r}")
    return chain.canonical_time(moment)


def to_ts_or_none(moment: datetime | None) -> str | None:
    return None if moment is None else to_ts(moment)


def _dt(text: str | None) -> datetime | None:
    return None if text is None else datetime.strptime(text, _TS_FORMAT).replace(tzinfo=UTC)


def from_ts_required(text: str) -> datetime:
    return datetime.strptime(text, _TS_FORMAT).replace(tzinfo=UTC)


_COLUMNS = {
    "user": "user_name",
    "detail_json": "detail",
    "action_json": "action",
    "context_json": "context",
    "decision_json": "decision",
    "grant": "grant_spec",
    "groups": "approver_groups",
    "payload_json": "payload",
    "impact_json": "impact",
    "result_json": "result",
}
"""Record fields whose column has another name (SQL keywords, or the JSON's content)."""


def _json_tuple(text: str) -> tuple[str, ...]:
    return tuple(json.loads(text))


_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "datetime": from_ts_required,
    "datetime | None": _dt,
    "bool": bool,
    "tuple[str, ...]": _json_tuple,
    "HoldState": HoldState,
    "Verdict": Verdict,
}
"""How a column's text becomes a field of the annotated type (others are taken as read)."""


def _mapper[R: DataclassInstance](
    record: type[R], *, unstored: tuple[str, ...] = ()
) -> Callable[[Row], R]:
    """Builds ``record``s from rows: each field from its column, converted by its type
    (``unstored`` fields have no column and keep their defaults)."""
    plan = [
        (field.name, _COLUMNS.get(field.name, field.name), _CONVERTERS.get(str(field.type)))
        for field in fields(record)
        if field.name not in unstored
    ]

    def build(row: Row) -> R:
        values = {
            name: row[column] if convert is None else convert(row[column])
            for name, column, convert in plan
        }
        return record(**values)

    return build


session_from_row = _mapper(Session)
hold_from_row = _mapper(Hold)
approval_from_row = _mapper(Approval)
decision_from_row = _mapper(DecisionRecord, unstored=("provider", "shadow_json"))
event_from_row = _mapper(SessionEvent)
approver_from_row = _mapper(Approver)
audit_from_row = _mapper(AuditRecord)
link_from_row = _mapper(ApproverLink)
page_from_row = _mapper(Page)
chat_message_from_row = _mapper(ChatMessage)
impact_from_row = _mapper(HoldImpact)
step_from_row = _mapper(SafetyStepRecord)
audit_chain_from_row = _mapper(AuditChain)
