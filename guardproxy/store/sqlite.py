"""The default store: one SQLite file on the proxy's host.

Concurrency model: one connection shared by all threads behind a lock (the proxy
calls the store from ``asyncio.to_thread`` workers), and every read-modify-write in
a ``BEGIN IMMEDIATE`` transaction with a conditional ``UPDATE``.  The lock makes the
store safe across threads; the immediate transactions make it safe across
processes too (the CLI approving a hold while the proxy runs).  WAL mode lets those
other processes read while the proxy writes, and ``busy_timeout`` makes writers wait
for each other instead of failing.

``synchronous`` stays FULL: holds, approvals and the decision log are an audit
trail, and an approval must not be lost to a power cut after it was acknowledged.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from guardproxy.store import chain
from guardproxy.store.base import (
    AlreadyExistsError,
    Approval,
    AuditEntry,
    AuditRecord,
    DecisionRecord,
    EventTotal,
    Hold,
    HoldConflict,
    HoldState,
    InvalidValueError,
    NotFoundError,
    SchemaVersionError,
    Session,
    SessionEvent,
    StoreError,
    Verdict,
    grant_seconds,
    new_hold_id,
    redacted_event,
    redacted_session,
)
from guardproxy.store.migrations import MIGRATIONS, SCHEMA_VERSION_TABLE, Migration

DEFAULT_BUSY_TIMEOUT = 5.0
"""Seconds a writer waits for another writer's lock before failing."""

_HOLD_ID_ATTEMPTS = 8


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
        raise _too_new(current, len(migrations))
    connection.execute("BEGIN IMMEDIATE")
    try:
        connection.execute(SCHEMA_VERSION_TABLE)
        (current,) = connection.execute(
            "SELECT COALESCE(MAX(version), 0) FROM schema_version"
        ).fetchone()
        if current > len(migrations):  # another process upgraded it meanwhile
            raise _too_new(current, len(migrations))
        for version in range(current + 1, len(migrations) + 1):
            for statement in migrations[version - 1]:
                connection.execute(statement)
            connection.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
        connection.execute("COMMIT")
    except BaseException:
        _rollback(connection)
        raise
    return len(migrations)


def _too_new(current: int, known: int) -> SchemaVersionError:
    return SchemaVersionError(
        f"database schema version {current} is newer than this guardproxy knows "
        f"({known}); upgrade guardproxy or use another database"
    )


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


class SqliteStore:
    """:class:`~guardproxy.store.base.Store` on a SQLite file (created 0600, dir 0700)."""

    def __init__(self, path: Path, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
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
            connection.execute("PRAGMA synchronous = FULL")
            connection.execute("PRAGMA foreign_keys = ON")
            self.schema_version = migrate(connection)
        except sqlite3.Error as exc:
            connection.close()
            raise StoreError(f"cannot open store {self.path}: {exc}") from exc
        except BaseException:
            connection.close()
            raise
        self._connection = connection

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection; later calls raise :class:`StoreError`. Idempotent."""
        with self._lock:
            self._connection.close()

    # -- transactions ---------------------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._connection
            except sqlite3.Error as exc:
                raise StoreError(f"store {self.path}: {exc}") from exc

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """An immediate transaction: committed on success, rolled back on any error."""
        with self._lock:
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

    # -- sessions -------------------------------------------------------------------

    def create_session(self, session: Session) -> None:
        session = redacted_session(session)
        row = (
            session.id,
            session.name,
            session.user,
            session.agent,
            json.dumps(list(session.command)),
            session.cwd,
            json.dumps(list(session.labels)),
            _ts(session.started_at),
            _ts_or_none(session.ended_at),
            int(session.anonymous),
            session.token_hash,
        )
        with self._write() as db:
            try:
                db.execute("INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
            except sqlite3.IntegrityError as exc:
                raise _integrity(exc, f"session {session.id}") from exc

    def get_session(self, session_id: str) -> Session | None:
        with self._read() as db:
            row = db.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)).fetchone()
        return None if row is None else _session(row)

    def find_session_by_token(self, token_hash: str) -> Session | None:
        with self._read() as db:
            row = db.execute(
                "SELECT * FROM sessions WHERE token_hash = ?", (token_hash,)
            ).fetchone()
        return None if row is None else _session(row)

    def end_session(self, session_id: str, at: datetime) -> Session:
        with self._write() as db:
            cursor = db.execute(
                "UPDATE sessions SET ended_at = COALESCE(ended_at, ?) WHERE id = ?",
                (_ts(at), session_id),
            )
            if cursor.rowcount == 0:
                raise NotFoundError(f"no session {session_id}")
            row = db.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)).fetchone()
        return _session(row)

    def list_sessions(self, *, active_only: bool = False, limit: int = 100) -> list[Session]:
        where = "WHERE ended_at IS NULL" if active_only else ""
        with self._read() as db:
            rows = db.execute(
                f"SELECT * FROM sessions {where} ORDER BY started_at DESC, rowid DESC LIMIT ?",
                (_limit(limit),),
            ).fetchall()
        return [_session(row) for row in rows]

    # -- holds ----------------------------------------------------------------------

    def create_hold(
        self,
        *,
        session_id: str,
        request_digest: str,
        action_json: str,
        decision_json: str,
        summary: str,
        grant: str,
        created_at: datetime,
        expires_at: datetime,
    ) -> Hold:
        grant_seconds(grant)  # refuse a malformed grant before it can be approved
        one_line = " ".join(summary.splitlines())
        created, expires = _ts(created_at), _ts(expires_at)
        with self._write() as db:
            hold_id = _unused_hold_id(db)
            try:
                db.execute(
                    "INSERT INTO holds (id, created_at, expires_at, session_id, request_digest,"
                    " action, decision, summary, state, grant_spec)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?)",
                    (
                        hold_id,
                        created,
                        expires,
                        session_id,
                        request_digest,
                        action_json,
                        decision_json,
                        one_line,
                        grant,
                    ),
                )
            except sqlite3.IntegrityError as exc:
                raise _integrity(exc, f"hold {hold_id}") from exc
            hold = _fetch_hold(db, hold_id)
            _chain(db, [_hold_event("hold.created", hold, created_at)])
            return hold

    def get_hold(self, hold_id: str) -> Hold | None:
        with self._read() as db:
            row = db.execute("SELECT * FROM holds WHERE id = ?", (hold_id,)).fetchone()
        return None if row is None else _hold(row)

    def find_hold(self, session_id: str, request_digest: str, now: datetime) -> Hold | None:
        moment = _ts(now)
        with self._read() as db:
            row = db.execute(
                "SELECT * FROM holds WHERE session_id = ? AND request_digest = ? AND ("
                " (state = 'pending' AND expires_at > ?)"
                " OR (state = 'approved' AND (grant_expires_at IS NULL OR grant_expires_at > ?))"
                " OR state = 'denied')"
                " ORDER BY created_at DESC, rowid DESC LIMIT 1",
                (session_id, request_digest, moment, moment),
            ).fetchone()
        return None if row is None else _hold(row)

    def list_holds(
        self,
        *,
        state: HoldState | None = None,
        session_id: str | None = None,
        limit: int = 100,
    ) -> list[Hold]:
        clauses: list[str] = []
        params: list[Any] = []
        if state is not None:
            clauses.append("state = ?")
            params.append(HoldState(state).value)
        if session_id is not None:
            clauses.append("session_id = ?")
            params.append(session_id)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._read() as db:
            rows = db.execute(
                f"SELECT * FROM holds {where} ORDER BY created_at DESC, rowid DESC LIMIT ?",
                (*params, _limit(limit)),
            ).fetchall()
        return [_hold(row) for row in rows]

    def resolve_hold(
        self, hold_id: str, *, state: HoldState, by: str, reason: str, now: datetime
    ) -> Hold:
        if state not in (HoldState.APPROVED, HoldState.DENIED):
            raise InvalidValueError(f"a hold can only be resolved approved or denied, not {state}")
        if not by:
            raise InvalidValueError("resolve_hold needs who resolved it")
        wanted = "approve" if state is HoldState.APPROVED else "deny"
        moment = _ts(now)
        with self._write() as db:
            hold = _decidable(db, hold_id, now)
            if hold.state is HoldState.PENDING:
                seconds = grant_seconds(hold.grant) if state is HoldState.APPROVED else None
                grant_expires = None if seconds is None else _ts(now + timedelta(seconds=seconds))
                db.execute(
                    "UPDATE holds SET state = ?, resolved_at = ?, resolved_by = ?, reason = ?,"
                    " grant_expires_at = ? WHERE id = ? AND state = 'pending'",
                    (state.value, moment, by, reason, grant_expires, hold_id),
                )
                resolved = _fetch_hold(db, hold_id)
                _chain(db, [_hold_event(f"hold.{state.value}", resolved, now)])
                return resolved
        raise HoldConflict(hold, wanted)

    def expire_holds(self, now: datetime) -> list[Hold]:
        moment = _ts(now)
        with self._write() as db:
            ids = [
                row["id"]
                for row in db.execute(
                    "SELECT id FROM holds WHERE state = 'pending' AND expires_at <= ?"
                    " ORDER BY created_at, rowid",
                    (moment,),
                )
            ]
            db.executemany(
                "UPDATE holds SET state = 'expired', resolved_at = ? WHERE id = ?",
                [(moment, hold_id) for hold_id in ids],
            )
            expired = [_fetch_hold(db, hold_id) for hold_id in ids]
            _chain(db, [_hold_event("hold.expired", hold, now) for hold in expired])
            return expired

    def consume_approval(self, session_id: str, request_digest: str, now: datetime) -> Hold | None:
        with self._write() as db:
            rows = db.execute(
                "SELECT * FROM holds WHERE session_id = ? AND request_digest = ?"
                " AND state = 'approved' ORDER BY created_at DESC, rowid DESC",
                (session_id, request_digest),
            ).fetchall()
            for row in rows:
                hold = _hold(row)
                if hold.grant_seconds is not None:
                    if hold.grant_expires_at is not None and now < hold.grant_expires_at:
                        return hold
                    continue
                cursor = db.execute(
                    "UPDATE holds SET state = 'released', released_at = ?"
                    " WHERE id = ? AND state = 'approved'",
                    (_ts(now), hold.id),
                )
                if cursor.rowcount == 1:
                    released = _fetch_hold(db, hold.id)
                    _chain(db, [_hold_event("hold.released", released, now)])
                    return released
        return None

    # -- approval events ------------------------------------------------------------

    def record_approval(
        self,
        hold_id: str,
        *,
        approver: str,
        groups: tuple[str, ...],
        verdict: Verdict,
        reason: str,
        at: datetime,
    ) -> Approval:
        try:
            verdict = Verdict(verdict)
        except ValueError as exc:
            raise InvalidValueError(f"verdict must be approve or deny, got {verdict!r}") from exc
        if not approver:
            raise InvalidValueError("an approval needs an approver")
        with self._write() as db:
            hold = _decidable(db, hold_id, at)
            if hold.state is HoldState.PENDING:
                cursor = db.execute(
                    "INSERT INTO approvals"
                    " (hold_id, approver, approver_groups, verdict, reason, at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (hold_id, approver, json.dumps(list(groups)), verdict.value, reason, _ts(at)),
                )
                row = db.execute(
                    "SELECT * FROM approvals WHERE id = ?", (cursor.lastrowid,)
                ).fetchone()
                approval = _approval(row)
                event = chain.event_entry(
                    "hold.approval",
                    at=at,
                    session_id=hold.session_id,
                    subject=hold_id,
                    outcome=verdict.value,
                    approver=approver,
                    groups=list(groups),
                    verdict=verdict.value,
                    reason=reason,
                )
                _chain(db, [event])
                return approval
        raise HoldConflict(hold, "record a verdict on")

    def list_approvals(self, hold_id: str) -> list[Approval]:
        with self._read() as db:
            rows = db.execute(
                "SELECT * FROM approvals WHERE hold_id = ? ORDER BY id", (hold_id,)
            ).fetchall()
        return [_approval(row) for row in rows]

    # -- decision log ---------------------------------------------------------------

    def append_decision(self, record: DecisionRecord) -> None:
        self.append_decisions([record])

    def append_decisions(self, records: Sequence[DecisionRecord]) -> None:
        rows = [
            (r.id, _ts(r.at), r.session_id, r.action_json, r.context_json, r.decision_json,
             r.outcome, r.hold_id, r.upstream_status)
            for r in records
        ]  # fmt: skip
        what = f"decision {records[0].id}" if len(records) == 1 else "a decision in the batch"
        with self._write() as db:
            try:
                db.executemany("INSERT INTO decisions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            except sqlite3.IntegrityError as exc:
                raise _integrity(exc, what) from exc
            _chain(db, [chain.decision_entry(r) for r in records])

    def set_upstream_statuses(self, statuses: Sequence[tuple[str, int]]) -> None:
        with self._write() as db:
            self._set_statuses(db, statuses)

    def _set_statuses(self, db: sqlite3.Connection, statuses: Sequence[tuple[str, int]]) -> int:
        entries: list[AuditEntry] = []
        for decision_id, status in statuses:
            row = db.execute(
                "SELECT id, at, session_id, json_extract(action, '$.provider') AS provider"
                " FROM decisions WHERE id = ?",
                (decision_id,),
            ).fetchone()
            if row is None:
                continue
            db.execute(
                "UPDATE decisions SET upstream_status = ? WHERE id = ?", (status, decision_id)
            )
            entries.append(
                chain.upstream_entry(
                    decision_id=decision_id,
                    session_id=row["session_id"],
                    at=_dt_required(row["at"]),
                    provider=row["provider"] or "",
                    status=status,
                )
            )
        _chain(db, entries)
        return len(entries)

    def get_decision(self, decision_id: str) -> DecisionRecord | None:
        with self._read() as db:
            row = db.execute("SELECT * FROM decisions WHERE id = ?", (decision_id,)).fetchone()
        return None if row is None else _decision(row)

    def set_upstream_status(self, decision_id: str, status: int) -> None:
        with self._write() as db:
            if self._set_statuses(db, [(decision_id, status)]) == 0:
                raise NotFoundError(f"no decision {decision_id}")

    def list_decisions(
        self,
        *,
        session_id: str | None = None,
        outcome: str | None = None,
        limit: int = 100,
    ) -> list[DecisionRecord]:
        clauses: list[str] = []
        params: list[Any] = []
        if session_id is not None:
            clauses.append("session_id = ?")
            params.append(session_id)
        if outcome is not None:
            clauses.append("outcome = ?")
            params.append(outcome)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._read() as db:
            rows = db.execute(
                f"SELECT * FROM decisions {where} ORDER BY at DESC, rowid DESC LIMIT ?",
                (*params, _limit(limit)),
            ).fetchall()
        return [_decision(row) for row in rows]

    # -- audit chain ----------------------------------------------------------------

    def append_audit(self, entries: Sequence[AuditEntry]) -> list[AuditRecord]:
        with self._write() as db:
            try:
                return _chain(db, entries)
            except sqlite3.IntegrityError as exc:
                raise _integrity(exc, "an audit record") from exc

    def audit_records(self, *, after_seq: int = 0, limit: int = 1000) -> list[AuditRecord]:
        with self._read() as db:
            rows = db.execute(
                "SELECT * FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, _limit(limit)),
            ).fetchall()
        return [_audit(row) for row in rows]

    def get_audit_record(self, record_id: str) -> AuditRecord | None:
        with self._read() as db:
            row = db.execute("SELECT * FROM audit_log WHERE record_id = ?", (record_id,)).fetchone()
        return None if row is None else _audit(row)

    def audit_for(self, subject: str) -> list[AuditRecord]:
        with self._read() as db:
            rows = db.execute(
                "SELECT * FROM audit_log WHERE subject = ? ORDER BY seq", (subject,)
            ).fetchall()
        return [_audit(row) for row in rows]

    def list_audit(
        self,
        *,
        kind: str | None = None,
        session_id: str | None = None,
        outcome: str | None = None,
        provider: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
    ) -> list[AuditRecord]:
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("kind", kind),
            ("session_id", session_id),
            ("outcome", outcome),
            ("provider", provider),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if since is not None:
            clauses.append("at >= ?")
            params.append(_ts(since))
        if until is not None:
            clauses.append("at < ?")
            params.append(_ts(until))
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._read() as db:
            rows = db.execute(
                f"SELECT * FROM audit_log {where} ORDER BY seq DESC LIMIT ?",
                (*params, _limit(limit)),
            ).fetchall()
        return [_audit(row) for row in rows]

    # -- session history ------------------------------------------------------------

    def append_session_events(self, events: Sequence[SessionEvent]) -> None:
        events = [redacted_event(e) for e in events]
        rows = [
            (e.session_id, _ts(e.at), e.summary, e.operation, e.verb, e.provider,
             e.environment, e.resource_key, e.outcome, int(e.protection_removed),
             int(e.recreate), e.destroyed_container)
            for e in events
        ]  # fmt: skip
        with self._write() as db:
            db.executemany(
                f"INSERT INTO session_events ({_EVENT_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

    def session_events(
        self, session_id: str, *, since: datetime | None = None, limit: int = 100
    ) -> list[SessionEvent]:
        with self._read() as db:
            rows = db.execute(
                f"SELECT {_EVENT_COLUMNS} FROM session_events "
                "WHERE session_id = ? AND at >= ? ORDER BY seq DESC LIMIT ?",
                (session_id, "" if since is None else _ts(since), _limit(limit)),
            ).fetchall()
        return [_event(row) for row in rows]

    def session_event_totals(self, session_id: str) -> list[EventTotal]:
        with self._read() as db:
            rows = db.execute(
                "SELECT verb, provider, environment, outcome, COUNT(*) FROM session_events "
                "WHERE session_id = ? GROUP BY verb, provider, environment, outcome",
                (session_id,),
            ).fetchall()
        return [EventTotal(*row) for row in rows]

    def resource_events(
        self, resource_key: str, *, outcome: str | None = None, limit: int = 100
    ) -> list[SessionEvent]:
        where = "resource_key = ? AND resource_key != ''"
        params: list[object] = [resource_key]
        if outcome is not None:
            where += " AND outcome = ?"
            params.append(outcome)
        with self._read() as db:
            rows = db.execute(
                f"SELECT {_EVENT_COLUMNS} FROM session_events WHERE {where} "
                "ORDER BY seq DESC LIMIT ?",
                (*params, _limit(limit)),
            ).fetchall()
        return [_event(row) for row in rows]


# -- helpers ------------------------------------------------------------------------

_EVENT_COLUMNS = (
    "session_id, at, summary, operation, verb, provider, environment, resource_key, "
    "outcome, protection_removed, recreate, destroyed_container"
)


def _event(row: sqlite3.Row) -> SessionEvent:
    return SessionEvent(
        session_id=row["session_id"],
        at=_dt_required(row["at"]),
        summary=row["summary"],
        operation=row["operation"],
        verb=row["verb"],
        provider=row["provider"],
        environment=row["environment"],
        resource_key=row["resource_key"],
        outcome=row["outcome"],
        protection_removed=bool(row["protection_removed"]),
        recreate=bool(row["recreate"]),
        destroyed_container=row["destroyed_container"],
    )


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


def _rollback(connection: sqlite3.Connection) -> None:
    if connection.in_transaction:
        with suppress(sqlite3.Error):
            connection.execute("ROLLBACK")


def _integrity(exc: sqlite3.IntegrityError, what: str) -> StoreError:
    if exc.sqlite_errorname in ("SQLITE_CONSTRAINT_PRIMARYKEY", "SQLITE_CONSTRAINT_UNIQUE"):
        return AlreadyExistsError(f"{what} already exists")
    if exc.sqlite_errorname == "SQLITE_CONSTRAINT_FOREIGNKEY":
        return NotFoundError(f"{what} refers to a hold that does not exist")
    return InvalidValueError(f"{what} rejected: {exc}")


def _unused_hold_id(db: sqlite3.Connection) -> str:
    for _ in range(_HOLD_ID_ATTEMPTS):
        hold_id = new_hold_id()
        if db.execute("SELECT 1 FROM holds WHERE id = ?", (hold_id,)).fetchone() is None:
            return hold_id
    raise StoreError("could not find an unused hold id")  # 50 random bits: not in practice


def _decidable(db: sqlite3.Connection, hold_id: str, now: datetime) -> Hold:
    """The hold as it stands at ``now``, for a caller about to decide on it.

    A pending hold past its deadline is marked expired here (inside the caller's
    transaction) so nobody can approve it between the deadline and the next sweep;
    the caller raises :class:`HoldConflict` after its transaction has committed that.
    """
    row = db.execute("SELECT * FROM holds WHERE id = ?", (hold_id,)).fetchone()
    if row is None:
        raise NotFoundError(f"no hold {hold_id}")
    hold = _hold(row)
    if hold.state is HoldState.PENDING and hold.expires_at <= now:
        db.execute(
            "UPDATE holds SET state = 'expired', resolved_at = ? WHERE id = ?",
            (_ts(now), hold_id),
        )
        hold = _fetch_hold(db, hold_id)
        _chain(db, [_hold_event("hold.expired", hold, now)])
    return hold


def _chain(db: sqlite3.Connection, entries: Sequence[AuditEntry]) -> list[AuditRecord]:
    """Link ``entries`` after the head and insert them (inside the caller's transaction).

    The caller's immediate transaction holds the write lock, so reading the head and
    appending cannot interleave with another writer, in this process or another.
    """
    if not entries:
        return []
    head = db.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev = (head["seq"], head["hash"]) if head is not None else (0, chain.GENESIS)
    records: list[AuditRecord] = []
    for entry in entries:
        seq += 1
        record = chain.link(entry, seq, prev)
        records.append(record)
        prev = record.hash
    db.executemany(
        "INSERT INTO audit_log (seq, record_id, kind, at, session_id, subject, outcome,"
        " provider, payload, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (r.seq, r.record_id, r.kind, _ts(r.at), r.session_id, r.subject, r.outcome,
             r.provider, r.payload_json, r.prev_hash, r.hash)
            for r in records
        ],
    )  # fmt: skip
    return records


def _hold_event(kind: str, hold: Hold, at: datetime) -> AuditEntry:
    return chain.event_entry(
        kind,
        at=at,
        session_id=hold.session_id,
        subject=hold.id,
        outcome=hold.state.value,
        summary=hold.summary,
        request_digest=hold.request_digest,
        grant=hold.grant,
        expires_at=_ts(hold.expires_at),
        resolved_by=hold.resolved_by,
        reason=hold.reason,
        grant_expires_at=_ts_or_none(hold.grant_expires_at),
    )


def _audit(row: sqlite3.Row) -> AuditRecord:
    return AuditRecord(
        seq=row["seq"],
        record_id=row["record_id"],
        kind=row["kind"],
        at=_dt_required(row["at"]),
        session_id=row["session_id"],
        subject=row["subject"],
        outcome=row["outcome"],
        provider=row["provider"],
        payload_json=row["payload"],
        prev_hash=row["prev_hash"],
        hash=row["hash"],
    )


def _fetch_hold(db: sqlite3.Connection, hold_id: str) -> Hold:
    return _hold(db.execute("SELECT * FROM holds WHERE id = ?", (hold_id,)).fetchone())


def _limit(limit: int) -> int:
    if limit < 1:
        raise InvalidValueError(f"limit must be positive, got {limit}")
    return limit


_TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def _ts(moment: datetime) -> str:
    """Fixed-width UTC text, so SQL string comparison is time comparison."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidValueError(f"timestamps must be timezone-aware, got {moment!r}")
    return moment.astimezone(UTC).strftime(_TS_FORMAT)


def _ts_or_none(moment: datetime | None) -> str | None:
    return None if moment is None else _ts(moment)


def _dt(text: str | None) -> datetime | None:
    return None if text is None else datetime.strptime(text, _TS_FORMAT).replace(tzinfo=UTC)


def _dt_required(text: str) -> datetime:
    return datetime.strptime(text, _TS_FORMAT).replace(tzinfo=UTC)


def _session(row: sqlite3.Row) -> Session:
    return Session(
        id=row["id"],
        name=row["name"],
        user=row["user_name"],
        agent=row["agent"],
        command=tuple(json.loads(row["command"])),
        cwd=row["cwd"],
        labels=tuple(json.loads(row["labels"])),
        started_at=_dt_required(row["started_at"]),
        ended_at=_dt(row["ended_at"]),
        anonymous=bool(row["anonymous"]),
        token_hash=row["token_hash"],
    )


def _hold(row: sqlite3.Row) -> Hold:
    return Hold(
        id=row["id"],
        created_at=_dt_required(row["created_at"]),
        expires_at=_dt_required(row["expires_at"]),
        session_id=row["session_id"],
        request_digest=row["request_digest"],
        action_json=row["action"],
        decision_json=row["decision"],
        summary=row["summary"],
        state=HoldState(row["state"]),
        grant=row["grant_spec"],
        resolved_at=_dt(row["resolved_at"]),
        resolved_by=row["resolved_by"],
        reason=row["reason"],
        grant_expires_at=_dt(row["grant_expires_at"]),
        released_at=_dt(row["released_at"]),
    )


def _approval(row: sqlite3.Row) -> Approval:
    return Approval(
        id=row["id"],
        hold_id=row["hold_id"],
        approver=row["approver"],
        groups=tuple(json.loads(row["approver_groups"])),
        verdict=Verdict(row["verdict"]),
        reason=row["reason"],
        at=_dt_required(row["at"]),
    )


def _decision(row: sqlite3.Row) -> DecisionRecord:
    return DecisionRecord(
        id=row["id"],
        at=_dt_required(row["at"]),
        session_id=row["session_id"],
        action_json=row["action"],
        context_json=row["context"],
        decision_json=row["decision"],
        outcome=row["outcome"],
        hold_id=row["hold_id"],
        upstream_status=row["upstream_status"],
    )
