"""The store's SQL, shared by the SQLite and PostgreSQL backends.

Both backends keep the same tables with the same column types (timestamps as
fixed-width UTC text, JSON as verbatim text), so every query, transition and row
mapping is written once here.  A backend supplies transactions (:meth:`_read`,
:meth:`_transaction`) that yield a :class:`Db`, and the few things that differ:

* queries use ``?`` placeholders; the PostgreSQL connection adapter rewrites them;
* ``rowid`` orders rows inserted at the same instant (SQLite's implicit column; an
  identity column of that name in PostgreSQL);
* ``_FOR_UPDATE`` locks a hold read before it is changed.  SQLite serialises
  writers with ``BEGIN IMMEDIATE`` and needs nothing; PostgreSQL's row lock makes a
  second approver wait and then see the first one's verdict;
* ``_store_decisions`` writes decisions with their chain records (PostgreSQL: one
  statement, one round trip);
* ``_lock_checkpoints`` serialises checkpoints (SQLite: already, by ``BEGIN
  IMMEDIATE``; PostgreSQL: an advisory lock held until commit);
* ``_json_field`` reads a key of a JSON column (``json_extract`` / ``->>``);
* which driver exceptions are integrity errors, and what they mean.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Self

from guardproxy.redact import REDACTED
from guardproxy.store import chain
from guardproxy.store.base import (
    STEP_STATES,
    AlreadyExistsError,
    Approval,
    Approver,
    ApproverLink,
    AuditChain,
    AuditEntry,
    AuditRecord,
    ChainHead,
    ChatMessage,
    Checkpoint,
    DecisionRecord,
    EventTotal,
    Hold,
    HoldConflict,
    HoldImpact,
    HoldState,
    HoldWatcher,
    InvalidValueError,
    NotFoundError,
    Page,
    SafetyStepRecord,
    SchemaVersionError,
    Session,
    SessionEvent,
    Signer,
    StoreError,
    Verdict,
    carried_until,
    grant_seconds,
    new_hold_id,
    redacted_event,
    redacted_session,
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


class SqlStore:
    """:class:`~guardproxy.store.base.Store` over any SQL backend with the shared schema."""

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
    _queued: list[_Append]
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
                db.execute(
                    f"INSERT INTO sessions ({_SESSION_COLUMNS})"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    row,
                )
            except self._integrity_errors as exc:
                raise self._integrity(exc, f"session {session.id}") from exc

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

    def resume_session(self, session_id: str, token_hash: str) -> Session:
        with self._write() as db:
            row = db.execute(
                f"SELECT * FROM sessions WHERE id = ?{self._FOR_UPDATE}", (session_id,)
            ).fetchone()
            if row is None:
                raise NotFoundError(f"no session {session_id}")
            session = _session(row)
            if session.anonymous or session.active:
                state = "anonymous" if session.anonymous else "still active"
                raise InvalidValueError(f"session {session_id} is {state}; it cannot be resumed")
            try:
                db.execute(
                    "UPDATE sessions SET token_hash = ?, ended_at = NULL WHERE id = ?",
                    (token_hash, session_id),
                )
            except self._integrity_errors as exc:
                raise self._integrity(exc, f"session {session_id}") from exc
            row = db.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)).fetchone()
        return _session(row)

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
        detail_json: str = "{}",
    ) -> Hold:
        grant_seconds(grant)  # refuse a malformed grant before it can be approved
        one_line = " ".join(summary.splitlines())
        created, expires = _ts(created_at), _ts(expires_at)
        with self._write(chained=True) as db:
            hold_id = _unused_hold_id(db)
            try:
                db.execute(
                    "INSERT INTO holds (id, created_at, expires_at, session_id, request_digest,"
                    " action, decision, summary, state, grant_spec, detail)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
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
                        detail_json,
                    ),
                )
            except self._integrity_errors as exc:
                raise self._integrity(exc, f"hold {hold_id}") from exc
            hold = _fetch_hold(db, hold_id)
            self._chain(db, [_hold_event("hold.created", hold, created_at)])
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
        where, params = _where(
            {
                "state = ?": None if state is None else HoldState(state).value,
                "session_id = ?": session_id,
            }
        )
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
        with self._write(chained=True) as db:
            hold = self._decidable(db, hold_id, now)
            if hold.state is HoldState.PENDING:
                seconds = grant_seconds(hold.grant) if state is HoldState.APPROVED else None
                grant_expires = None if seconds is None else _ts(now + timedelta(seconds=seconds))
                cursor = db.execute(
                    "UPDATE holds SET state = ?, resolved_at = ?, resolved_by = ?, reason = ?,"
                    " grant_expires_at = ? WHERE id = ? AND state = 'pending'",
                    (state.value, moment, by, reason, grant_expires, hold_id),
                )
                hold = _fetch_hold(db, hold_id)
                if cursor.rowcount == 1:
                    self._chain(db, [_hold_event(f"hold.{state.value}", hold, now)])
                    return hold
        raise HoldConflict(hold, wanted)

    def expire_holds(self, now: datetime) -> list[Hold]:
        moment = _ts(now)
        with self._write(chained=True) as db:
            ids = [
                row["id"]
                for row in db.execute(
                    "SELECT id FROM holds WHERE state = 'pending' AND expires_at <= ?"
                    f" ORDER BY created_at, rowid{self._FOR_UPDATE}",
                    (moment,),
                ).fetchall()
            ]
            db.executemany(
                "UPDATE holds SET state = 'expired', resolved_at = ?"
                " WHERE id = ? AND state = 'pending'",
                [(moment, hold_id) for hold_id in ids],
            )
            expired = [_fetch_hold(db, hold_id) for hold_id in ids]
            self._chain(db, [_hold_event("hold.expired", hold, now) for hold in expired])
            return expired

    def consume_approval(self, session_id: str, request_digest: str, now: datetime) -> Hold | None:
        with self._write(chained=True) as db:
            rows = db.execute(
                "SELECT * FROM holds WHERE session_id = ? AND request_digest = ?"
                " AND state = 'approved' ORDER BY created_at DESC, rowid DESC",
                (session_id, request_digest),
            ).fetchall()
            return self._consume(db, [_hold(row) for row in rows], now)

    def _consume(
        self, db: Db, holds: Sequence[Hold], now: datetime, released_to: str | None = None
    ) -> Hold | None:
        """The first of ``holds`` (approved) whose grant lets a request through now: a
        usable session grant as it is, a ``once`` grant marked released (and chained)."""
        for hold in holds:
            if hold.grant_seconds is not None:
                if hold.grant_expires_at is not None and now < hold.grant_expires_at:
                    return hold
                continue
            # conditional: of concurrent consumers, only the first changes the row
            cursor = db.execute(
                "UPDATE holds SET state = 'released', released_at = ?"
                " WHERE id = ? AND state = 'approved'",
                (_ts(now), hold.id),
            )
            if cursor.rowcount == 1:
                released = _fetch_hold(db, hold.id)
                extra = {} if released_to is None else {"released_to_session": released_to}
                self._chain(db, [_hold_event("hold.released", released, now, **extra)])
                return released
        return None

    def consume_carried_approval(
        self, session_id: str, request_digest: str, now: datetime
    ) -> Hold | None:
        with self._write(chained=True) as db:
            rows = db.execute(
                f"SELECT h.* FROM {_CARRIED_HOLDS} AND h.state = 'approved'"
                " ORDER BY h.created_at DESC, h.rowid DESC",
                (session_id, request_digest),
            ).fetchall()
            usable = [
                hold
                for hold in map(_hold, rows)
                if (until := carried_until(hold)) is not None and now < until
            ]
            return self._consume(db, usable, now, released_to=session_id)

    def find_carried_hold(self, session_id: str, request_digest: str, now: datetime) -> Hold | None:
        with self._read() as db:
            row = db.execute(
                f"SELECT h.* FROM {_CARRIED_HOLDS} AND h.state = 'pending' AND h.expires_at > ?"
                " ORDER BY h.created_at DESC, h.rowid DESC LIMIT 1",
                (session_id, request_digest, _ts(now)),
            ).fetchone()
        return None if row is None else _hold(row)

    def _decidable(self, db: Db, hold_id: str, now: datetime) -> Hold:
        """The hold as it stands at ``now`` (locked), for a caller about to decide on it.

        A pending hold past its deadline is marked expired here (inside the caller's
        transaction) so nobody can approve it between the deadline and the next sweep;
        the caller raises :class:`HoldConflict` after its transaction has committed that.
        """
        row = db.execute(
            f"SELECT * FROM holds WHERE id = ?{self._FOR_UPDATE}", (hold_id,)
        ).fetchone()
        if row is None:
            raise NotFoundError(f"no hold {hold_id}")
        hold = _hold(row)
        if hold.state is HoldState.PENDING and hold.expires_at <= now:
            db.execute(
                "UPDATE holds SET state = 'expired', resolved_at = ? WHERE id = ?",
                (_ts(now), hold_id),
            )
            hold = _fetch_hold(db, hold_id)
            self._chain(db, [_hold_event("hold.expired", hold, now)])
        return hold

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
        with self._write(chained=True) as db:
            hold = self._decidable(db, hold_id, at)
            if hold.state is HoldState.PENDING:
                row = db.execute(
                    "INSERT INTO approvals"
                    " (hold_id, approver, approver_groups, verdict, reason, at)"
                    " VALUES (?, ?, ?, ?, ?, ?) RETURNING *",
                    (hold_id, approver, json.dumps(list(groups)), verdict.value, reason, _ts(at)),
                ).fetchone()
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
                self._chain(db, [event])
                return _approval(row)
        raise HoldConflict(hold, "record a verdict on")

    def list_approvals(self, hold_id: str) -> list[Approval]:
        with self._read() as db:
            rows = db.execute(
                "SELECT * FROM approvals WHERE hold_id = ? ORDER BY id", (hold_id,)
            ).fetchall()
        return [_approval(row) for row in rows]

    # -- approvers ------------------------------------------------------------------

    def add_approver(self, approver: Approver) -> None:
        if not approver.name or not approver.token_hash:
            raise InvalidValueError("an approver needs a name and a token hash")
        row = (
            approver.name,
            json.dumps(list(approver.groups)),
            approver.token_hash,
            _ts(approver.created_at),
        )
        with self._write() as db:
            try:
                db.execute(
                    "INSERT INTO approvers (name, approver_groups, token_hash, created_at)"
                    " VALUES (?, ?, ?, ?)",
                    row,
                )
            except self._integrity_errors as exc:
                raise self._integrity(exc, f"approver {approver.name}") from exc

    def get_approver(self, name: str) -> Approver | None:
        with self._read() as db:
            row = db.execute("SELECT * FROM approvers WHERE name = ?", (name,)).fetchone()
        return None if row is None else _approver(row)

    def find_approver_by_token(self, token_hash: str) -> Approver | None:
        with self._read() as db:
            row = db.execute(
                "SELECT * FROM approvers WHERE token_hash = ?", (token_hash,)
            ).fetchone()
        return None if row is None else _approver(row)

    def list_approvers(self) -> list[Approver]:
        with self._read() as db:
            rows = db.execute("SELECT * FROM approvers ORDER BY name").fetchall()
        return [_approver(row) for row in rows]

    def remove_approver(self, name: str) -> None:
        with self._write() as db:
            cursor = db.execute("DELETE FROM approvers WHERE name = ?", (name,))
            if cursor.rowcount == 0:
                raise NotFoundError(f"no approver {name}")
            # a new approver of the same name must not inherit the old one's identities
            db.execute("DELETE FROM approver_links WHERE approver = ?", (name,))

    # -- identities elsewhere ---------------------------------------------------------

    def link_approver(self, link: ApproverLink) -> None:
        if not link.external_id:
            raise InvalidValueError("a link needs the identity it links to")
        with self._write() as db:
            if (
                db.execute("SELECT 1 FROM approvers WHERE name = ?", (link.approver,)).fetchone()
                is None
            ):
                raise NotFoundError(f"no approver {link.approver}")
            taken = db.execute(
                "SELECT approver FROM approver_links WHERE kind = ? AND external_id = ?",
                (link.kind, link.external_id),
            ).fetchone()
            if taken is not None and taken["approver"] != link.approver:
                owner = taken["approver"]
                raise AlreadyExistsError(
                    f"the {link.kind} identity {link.external_id} is linked to {owner}"
                )
            db.execute(
                "DELETE FROM approver_links WHERE approver = ? AND kind = ?",
                (link.approver, link.kind),
            )
            try:
                db.execute(
                    "INSERT INTO approver_links (approver, kind, external_id, created_at)"
                    " VALUES (?, ?, ?, ?)",
                    (link.approver, link.kind, link.external_id, _ts(link.created_at)),
                )
            except self._integrity_errors as exc:
                raise self._integrity(exc, f"{link.kind} link of {link.approver}") from exc

    def unlink_approver(self, name: str, kind: str) -> None:
        with self._write() as db:
            cursor = db.execute(
                "DELETE FROM approver_links WHERE approver = ? AND kind = ?", (name, kind)
            )
            if cursor.rowcount == 0:
                raise NotFoundError(f"{name} has no {kind} link")

    def list_approver_links(self, kind: str | None = None) -> list[ApproverLink]:
        where, values = _where({"kind = ?": kind})
        with self._read() as db:
            rows = db.execute(
                f"SELECT * FROM approver_links {where} ORDER BY approver, kind", values
            ).fetchall()
        return [_link(row) for row in rows]

    def find_approver_by_link(self, kind: str, external_id: str) -> Approver | None:
        with self._read() as db:
            row = db.execute(
                "SELECT a.* FROM approver_links l JOIN approvers a ON a.name = l.approver"
                " WHERE l.kind = ? AND l.external_id = ?",
                (kind, external_id),
            ).fetchone()
        return None if row is None else _approver(row)

    # -- pages and chat messages ------------------------------------------------------

    def claim_page(
        self,
        hold_id: str,
        oncall_group: str,
        level: int,
        *,
        schedule: str,
        pager: str,
        dedup_key: str,
        at: datetime,
    ) -> Page | None:
        with self._write() as db:
            row = db.execute(
                "INSERT INTO pages"
                " (hold_id, oncall_group, level, schedule, pager, dedup_key, claimed_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING *",
                (hold_id, oncall_group, level, schedule, pager, dedup_key, _ts(at)),
            ).fetchone()
        return None if row is None else _page(row)

    def update_page(
        self,
        hold_id: str,
        oncall_group: str,
        level: int,
        *,
        triggered_at: datetime | None,
        error: str,
    ) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE pages SET triggered_at = ?, error = ?"
                " WHERE hold_id = ? AND oncall_group = ? AND level = ?",
                (_ts_or_none(triggered_at), error, hold_id, oncall_group, level),
            )

    def claim_page_resolutions(self, hold_id: str, at: datetime) -> list[Page]:
        with self._write() as db:  # one statement: a concurrent claim gets the rest, or none
            rows = db.execute(
                "UPDATE pages SET resolved_at = ? WHERE hold_id = ? AND resolved_at IS NULL"
                " RETURNING *",
                (_ts(at), hold_id),
            ).fetchall()
        return sorted(
            (_page(row) for row in rows), key=lambda page: (page.oncall_group, page.level)
        )

    def list_pages(self, hold_ids: Sequence[str]) -> list[Page]:
        if not hold_ids:
            return []
        marks = ", ".join("?" for _ in hold_ids)
        with self._read() as db:
            rows = db.execute(
                f"SELECT * FROM pages WHERE hold_id IN ({marks})"
                " ORDER BY hold_id, oncall_group, level",
                list(hold_ids),
            ).fetchall()
        return [_page(row) for row in rows]

    def save_chat_message(self, message: ChatMessage) -> bool:
        with self._write() as db:
            row = db.execute(
                "INSERT INTO chat_messages (hold_id, kind, channel, message_ts, posted_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING hold_id",
                (message.hold_id, message.kind, message.channel, message.message_ts,
                 _ts(message.posted_at)),
            ).fetchone()  # fmt: skip
        return row is not None

    def get_chat_message(self, hold_id: str, kind: str) -> ChatMessage | None:
        with self._read() as db:
            row = db.execute(
                "SELECT * FROM chat_messages WHERE hold_id = ? AND kind = ?", (hold_id, kind)
            ).fetchone()
        return None if row is None else _chat_message(row)

    def claim_chat_request(self, key: str, at: datetime, *, forget_before: datetime) -> bool:
        with self._write() as db:
            db.execute("DELETE FROM chat_requests WHERE at < ?", (_ts(forget_before),))
            row = db.execute(
                "INSERT INTO chat_requests (request_key, at) VALUES (?, ?)"
                " ON CONFLICT DO NOTHING RETURNING request_key",
                (key, _ts(at)),
            ).fetchone()
        return row is not None

    # -- impact previews and safety steps -------------------------------------------

    def set_hold_impact(self, impact: HoldImpact) -> bool:
        if impact.status not in ("known", "unknown"):
            raise InvalidValueError(f"an impact is known or unknown, not {impact.status!r}")
        with self._write(chained=True) as db:
            hold = db.execute("SELECT * FROM holds WHERE id = ?", (impact.hold_id,)).fetchone()
            if hold is None:
                raise NotFoundError(f"no hold {impact.hold_id}")
            row = db.execute(
                "INSERT INTO hold_impacts (hold_id, status, summary, impact, gathered_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING hold_id",
                (impact.hold_id, impact.status, " ".join(impact.summary.splitlines()),
                 impact.impact_json, _ts(impact.gathered_at)),
            ).fetchone()  # fmt: skip
            if row is None:
                return False
            event = chain.event_entry(
                "hold.impact",
                at=impact.gathered_at,
                session_id=hold["session_id"],
                subject=impact.hold_id,
                outcome=impact.status,
                summary=impact.summary,
                impact=json.loads(impact.impact_json),
            )
            self._chain(db, [event])
            return True

    def hold_impacts(self, hold_ids: Sequence[str]) -> dict[str, HoldImpact]:
        if not hold_ids:
            return {}
        marks = ", ".join("?" for _ in hold_ids)
        with self._read() as db:
            rows = db.execute(
                f"SELECT * FROM hold_impacts WHERE hold_id IN ({marks})", list(hold_ids)
            ).fetchall()
        return {row["hold_id"]: _impact(row) for row in rows}

    def record_safety_step(
        self,
        *,
        hold_id: str,
        step: str,
        state: str,
        actor: str,
        result_json: str = "{}",
        error: str = "",
        started_at: datetime,
        finished_at: datetime,
    ) -> SafetyStepRecord:
        if state not in STEP_STATES:
            raise InvalidValueError(f"a safety step's state is one of {STEP_STATES}, not {state!r}")
        with self._write(chained=True) as db:
            hold = db.execute("SELECT * FROM holds WHERE id = ?", (hold_id,)).fetchone()
            if hold is None:
                raise NotFoundError(f"no hold {hold_id}")
            row = db.execute(
                "INSERT INTO hold_steps (hold_id, step, state, actor, result, error, started_at,"
                " finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING *",
                (hold_id, step, state, actor, result_json, error, _ts(started_at),
                 _ts(finished_at)),
            ).fetchone()  # fmt: skip
            event = chain.event_entry(
                "hold.step",
                at=finished_at,
                session_id=hold["session_id"],
                subject=hold_id,
                outcome=state,
                step=step,
                actor=actor,
                result=json.loads(result_json),
                error=error,
                started_at=_ts(started_at),
                seconds=round((finished_at - started_at).total_seconds(), 3),
            )
            self._chain(db, [event])
            return _step(row)

    def list_safety_steps(self, hold_ids: Sequence[str]) -> list[SafetyStepRecord]:
        if not hold_ids:
            return []
        marks = ", ".join("?" for _ in hold_ids)
        with self._read() as db:
            rows = db.execute(
                f"SELECT * FROM hold_steps WHERE hold_id IN ({marks}) ORDER BY id", list(hold_ids)
            ).fetchall()
        return [_step(row) for row in rows]

    # -- decision log ---------------------------------------------------------------

    def append_decision(self, record: DecisionRecord, events: Sequence[SessionEvent] = ()) -> None:
        self._append_decisions([record], events)

    def append_decisions(self, records: Sequence[DecisionRecord]) -> None:
        self._append_decisions(records, ())

    def _append_decisions(
        self, records: Sequence[DecisionRecord], events: Sequence[SessionEvent]
    ) -> None:
        """Append ``records`` with their chain records; durable when this returns.

        Appends made at the same time by several threads (the proxy's concurrent
        requests) are written together: whichever thread gets the chain first writes
        every append queued by then, in one transaction, and each caller returns once
        the transaction holding its records has committed.  Should that transaction
        fail, each append is written again on its own, so one that cannot be written
        (an id already stored) fails only its caller.
        """
        if not records:
            return
        rows = [
            (r.id, _ts(r.at), r.session_id, r.action_json, r.context_json, r.decision_json,
             r.outcome, r.hold_id, r.upstream_status)
            for r in records
        ]  # fmt: skip
        what = f"decision {records[0].id}" if len(records) == 1 else "a decision in the batch"
        append = _Append(
            rows, [chain.decision_entry(r) for r in records], what, _event_rows(events)
        )
        with self._queue_lock:
            self._queued.append(append)
        with self._append_lock:
            if not append.done:  # else another thread wrote it meanwhile
                with self._queue_lock:
                    batch, self._queued = self._queued, []
                self._write_appends(batch)
        if append.error is not None:
            raise append.error

    def _write_appends(self, batch: Sequence[_Append]) -> None:
        """Write queued appends (holding ``_append_lock``): all in one transaction, else
        each on its own; every one ends ``done``, with its ``error`` if it failed."""
        try:
            if len(batch) > 1:
                try:
                    self._write_together(batch)
                    return
                except StoreError:
                    pass  # one of them, or the database: each alone says which
            for append in batch:
                try:
                    self._write_together([append])
                except StoreError as error:
                    append.error = error
        finally:
            for append in batch:
                if not append.done:  # interrupted before it was written
                    append.error = append.error or StoreError("the append was interrupted")
                    append.done = True

    def _write_together(self, batch: Sequence[_Append]) -> None:
        """One transaction for every append of ``batch``; marks them done if it commits."""
        self._appended_head = None
        try:
            if self._chain_id is None:
                self._open_chain()
            records = self._link(
                [entry for append in batch for entry in append.entries], self._head(None)
            )
            self._store_decisions(
                [row for append in batch for row in append.rows],
                records,
                batch[0].what if len(batch) == 1 else "a decision written with others",
                [row for append in batch for row in append.events],
            )
        except BaseException:
            self._chain_head = None  # committed or not: read it again next time
            raise
        self._chain_head = self._appended_head
        for append in batch:
            append.done = True

    def _store_decisions(
        self,
        rows: Sequence[Sequence[Any]],
        records: Sequence[AuditRecord],
        what: str,
        events: Sequence[Sequence[Any]] = (),
    ) -> None:
        """Insert decision rows, their linked chain records and session event rows
        (:func:`_event_rows`), in one transaction."""
        with self._transaction() as db:
            if events:
                _insert(db, INSERT_SESSION_EVENTS, events)
            try:
                _insert(
                    db,
                    f"INSERT INTO decisions ({_DECISION_COLUMNS})"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
            except self._integrity_errors as exc:
                raise self._integrity(exc, what) from exc
            try:
                self._insert_linked(db, records)
            except self._integrity_errors as exc:
                chain_id = records[0].chain
                what = f"a record of audit chain {chain_id} (another writer appended to it)"
                raise self._integrity(exc, what) from exc

    def set_upstream_statuses(self, statuses: Sequence[tuple[str, int]]) -> None:
        with self._write(chained=True) as db:
            self._set_statuses(db, statuses)

    def _set_statuses(self, db: Db, statuses: Sequence[tuple[str, int]]) -> int:
        """Set each known decision's status and chain an ``upstream`` record; how many."""
        entries: list[AuditEntry] = []
        for decision_id, status in statuses:
            row = db.execute(
                "SELECT id, at, session_id,"
                f" {self._json_field('action', 'provider')} AS provider"
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
        self._chain(db, entries)
        return len(entries)

    def get_decision(self, decision_id: str) -> DecisionRecord | None:
        with self._read() as db:
            row = db.execute("SELECT * FROM decisions WHERE id = ?", (decision_id,)).fetchone()
        return None if row is None else _decision(row)

    def set_upstream_status(self, decision_id: str, status: int) -> None:
        with self._write(chained=True) as db:
            if self._set_statuses(db, [(decision_id, status)]) == 0:
                raise NotFoundError(f"no decision {decision_id}")

    def list_decisions(
        self,
        *,
        session_id: str | None = None,
        outcome: str | None = None,
        provider: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> list[DecisionRecord]:
        where, params = _where(
            {
                "session_id = ?": session_id,
                "outcome = ?": outcome,
                f"{self._json_field('action', 'provider')} = ?": provider,
                "at >= ?": _ts_or_none(since),
            }
        )
        with self._read() as db:
            rows = db.execute(
                f"SELECT * FROM decisions {where} ORDER BY at DESC, rowid DESC LIMIT ?",
                (*params, _limit(limit)),
            ).fetchall()
        return [_decision(row) for row in rows]

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
        _insert(
            db,
            "INSERT INTO audit_log (chain, seq, record_id, kind, at, session_id, subject,"
            " outcome, provider, payload, prev_hash, hash)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (r.chain, r.seq, r.record_id, r.kind, _ts(r.at), r.session_id, r.subject,
                 r.outcome, r.provider, r.payload_json, r.prev_hash, r.hash)
                for r in records
            ],
        )  # fmt: skip
        last = records[-1]
        db.execute(
            "UPDATE audit_chains SET head_seq = ?, head_hash = ? WHERE id = ?",
            (last.seq, last.hash, last.chain),
        )

    def append_audit(self, entries: Sequence[AuditEntry]) -> list[AuditRecord]:
        with self._write(chained=True) as db:
            try:
                return self._chain(db, entries)
            except self._integrity_errors as exc:
                raise self._integrity(exc, "an audit record") from exc

    def audit_records(self, *, after: int = 0, limit: int = 1000) -> list[AuditRecord]:
        with self._read() as db:
            rows = db.execute(
                "SELECT * FROM audit_log WHERE position > ? ORDER BY position LIMIT ?",
                (after, _limit(limit)),
            ).fetchall()
        return [_audit(row) for row in rows]

    def chain_records(
        self, chain: int, *, after_seq: int = 0, limit: int = 1000
    ) -> list[AuditRecord]:
        with self._read() as db:
            rows = db.execute(
                "SELECT * FROM audit_log WHERE chain = ? AND seq > ? ORDER BY seq LIMIT ?",
                (chain, after_seq, _limit(limit)),
            ).fetchall()
        return [_audit(row) for row in rows]

    def audit_chains(self) -> list[AuditChain]:
        with self._read() as db:
            rows = db.execute(
                "SELECT id, writer, head_seq, head_hash FROM audit_chains ORDER BY id"
            ).fetchall()
        return [_audit_chain(row) for row in rows]

    def get_audit_record(self, record_id: str) -> AuditRecord | None:
        with self._read() as db:
            row = db.execute("SELECT * FROM audit_log WHERE record_id = ?", (record_id,)).fetchone()
        return None if row is None else _audit(row)

    def audit_for(self, subject: str) -> list[AuditRecord]:
        with self._read() as db:
            rows = db.execute(
                "SELECT * FROM audit_log WHERE subject = ? ORDER BY position", (subject,)
            ).fetchall()
        return [_audit(row) for row in rows]

    # -- checkpoints ----------------------------------------------------------------

    def checkpoint_audit(
        self,
        *,
        at: datetime,
        key_id: str,
        sign: Signer,
        min_interval: timedelta = timedelta(0),
    ) -> Checkpoint | None:
        moment = _ts(at)
        with self._write() as db:
            self._lock_checkpoints(db)
            last = db.execute(
                "SELECT seq, at, hash FROM audit_checkpoints ORDER BY seq DESC LIMIT 1"
            ).fetchone()
            if (
                last is not None
                and min_interval > timedelta(0)
                and _dt_required(last["at"]) > at - min_interval
            ):
                return None
            moved = db.execute(
                "SELECT c.id, c.head_seq, c.head_hash FROM audit_chains c WHERE c.head_seq >"
                " COALESCE((SELECT MAX(h.seq) FROM audit_checkpoint_heads h"
                " WHERE h.chain = c.id), 0) ORDER BY c.id"
            ).fetchall()
            if not moved:
                return None
            checkpoint = chain.build_checkpoint(
                seq=1 if last is None else int(last["seq"]) + 1,
                at=at,
                heads=[ChainHead(int(r["id"]), int(r["head_seq"]), r["head_hash"]) for r in moved],
                key_id=key_id,
                prev_hash=chain.GENESIS if last is None else last["hash"],
                sign=sign,
            )
            db.execute(
                "INSERT INTO audit_checkpoints (seq, at, key_id, prev_hash, hash, signature)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (checkpoint.seq, moment, key_id, checkpoint.prev_hash, checkpoint.hash,
                 checkpoint.signature),
            )  # fmt: skip
            db.executemany(
                "INSERT INTO audit_checkpoint_heads (checkpoint, chain, seq, hash)"
                " VALUES (?, ?, ?, ?)",
                [(checkpoint.seq, h.chain, h.seq, h.hash) for h in checkpoint.heads],
            )
            return checkpoint

    def audit_checkpoints(self, *, after_seq: int = 0, limit: int = 1000) -> list[Checkpoint]:
        with self._read() as db:
            rows = db.execute(
                "SELECT * FROM audit_checkpoints WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, _limit(limit)),
            ).fetchall()
            if not rows:
                return []
            heads: dict[int, list[ChainHead]] = {int(row["seq"]): [] for row in rows}
            for head in db.execute(
                "SELECT checkpoint, chain, seq, hash FROM audit_checkpoint_heads"
                " WHERE checkpoint > ? AND checkpoint <= ? ORDER BY checkpoint, chain",
                (after_seq, int(rows[-1]["seq"])),
            ).fetchall():
                if int(head["checkpoint"]) in heads:
                    heads[int(head["checkpoint"])].append(
                        ChainHead(int(head["chain"]), int(head["seq"]), head["hash"])
                    )
        return [
            Checkpoint(
                seq=int(row["seq"]),
                at=_dt_required(row["at"]),
                heads=tuple(heads[int(row["seq"])]),
                key_id=row["key_id"],
                prev_hash=row["prev_hash"],
                hash=row["hash"],
                signature=row["signature"],
            )
            for row in rows
        ]

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
        where, params = _where(
            {
                "kind = ?": kind,
                "session_id = ?": session_id,
                "outcome = ?": outcome,
                "provider = ?": provider,
                "at >= ?": _ts_or_none(since),
                "at < ?": _ts_or_none(until),
            }
        )
        with self._read() as db:
            rows = db.execute(
                f"SELECT * FROM audit_log {where} ORDER BY position DESC LIMIT ?",
                (*params, _limit(limit)),
            ).fetchall()
        return [_audit(row) for row in rows]

    # -- session history ------------------------------------------------------------

    def append_session_events(self, events: Sequence[SessionEvent]) -> None:
        rows = _event_rows(events)
        with self._write() as db:
            db.executemany(INSERT_SESSION_EVENTS, rows)

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
                "SELECT verb, provider, environment, outcome, COUNT(*) AS n FROM session_events "
                "WHERE session_id = ? GROUP BY verb, provider, environment, outcome",
                (session_id,),
            ).fetchall()
        return [
            EventTotal(row["verb"], row["provider"], row["environment"], row["outcome"], row["n"])
            for row in rows
        ]

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

    def changed_resource_keys(self, *, outcome: str, limit: int) -> list[str]:
        with self._read() as db:
            rows = db.execute(
                "SELECT DISTINCT resource_key FROM session_events "
                "WHERE resource_key != '' AND outcome = ? AND verb != 'read' LIMIT ?",
                (outcome, _limit(limit)),
            ).fetchall()
        return [row["resource_key"] for row in rows]  # by name: PostgreSQL's rows are dicts


# -- helpers ------------------------------------------------------------------------


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


_SESSION_COLUMNS = (
    "id, name, user_name, agent, command, cwd, labels, started_at, ended_at, anonymous, token_hash"
)
_DECISION_COLUMNS = (
    "id, at, session_id, action, context, decision, outcome, hold_id, upstream_status"
)
_EVENT_COLUMNS = (
    "session_id, at, summary, operation, verb, provider, environment, resource_key, "
    "outcome, protection_removed, recreate, destroyed_container"
)


@dataclass(eq=False)
class _Append:
    """Decisions a caller of ``append_decisions`` waits to see committed."""

    rows: list[tuple[Any, ...]]
    entries: list[AuditEntry]
    what: str
    events: list[tuple[Any, ...]]
    """Session event rows written in the same transaction (:func:`_event_rows`)."""
    done: bool = False
    error: StoreError | None = None


INSERT_SESSION_EVENTS = (
    f"INSERT INTO session_events ({_EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _event_rows(events: Sequence[SessionEvent]) -> list[tuple[Any, ...]]:
    """The rows of ``events``, redacted (every backend stores session events so)."""
    return [
        (e.session_id, _ts(e.at), e.summary, e.operation, e.verb, e.provider,
         e.environment, e.resource_key, e.outcome, int(e.protection_removed),
         int(e.recreate), e.destroyed_container)
        for e in map(redacted_event, events)
    ]  # fmt: skip


def _insert(db: Db, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    """One row as one statement, several as ``executemany`` (which costs more for one)."""
    if len(rows) == 1:
        db.execute(sql, rows[0])
    else:
        db.executemany(sql, rows)


def _where(conditions: Mapping[str, object | None]) -> tuple[str, list[object]]:
    """``WHERE`` and the conditions (``"column = ?"``) whose value is not None, and values."""
    given = {clause: value for clause, value in conditions.items() if value is not None}
    if not given:
        return "", []
    return "WHERE " + " AND ".join(given), list(given.values())


def _unused_hold_id(db: Db) -> str:
    for _ in range(_HOLD_ID_ATTEMPTS):
        hold_id = new_hold_id()
        if db.execute("SELECT 1 FROM holds WHERE id = ?", (hold_id,)).fetchone() is None:
            return hold_id
    raise StoreError("could not find an unused hold id")  # 50 random bits: not in practice


def _hold_event(kind: str, hold: Hold, at: datetime, **extra: object) -> AuditEntry:
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
        **extra,
    )


_CARRIED_HOLDS = (
    "holds h JOIN sessions prior ON prior.id = h.session_id JOIN sessions cur ON cur.id = ?"
    " WHERE h.request_digest = ? AND h.session_id != cur.id"
    " AND cur.anonymous = 0 AND cur.user_name != '' AND cur.cwd != ''"
    f" AND cur.cwd NOT LIKE '%{REDACTED}%'"
    " AND prior.anonymous = 0 AND prior.user_name = cur.user_name AND prior.cwd = cur.cwd"
)
"""Holds of the same request digest by other sessions of the same user and working
directory (``carries_approvals``: never a directory redaction changed, as two different
ones could read the same); parameters: the session id, the digest."""


def _fetch_hold(db: Db, hold_id: str) -> Hold:
    return _hold(db.execute("SELECT * FROM holds WHERE id = ?", (hold_id,)).fetchone())


def _limit(limit: int) -> int:
    if limit < 1:
        raise InvalidValueError(f"limit must be positive, got {limit}")
    return limit


_TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
"""How timestamps are read back; written by :func:`chain.canonical_time`, the same text."""


def _ts(moment: datetime) -> str:
    """Fixed-width UTC text, so SQL string comparison is time comparison."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidValueError(f"timestamps must be timezone-aware, got {moment!r}")
    return chain.canonical_time(moment)


def _ts_or_none(moment: datetime | None) -> str | None:
    return None if moment is None else _ts(moment)


def _dt(text: str | None) -> datetime | None:
    return None if text is None else datetime.strptime(text, _TS_FORMAT).replace(tzinfo=UTC)


def _dt_required(text: str) -> datetime:
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
    "datetime": _dt_required,
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


_session = _mapper(Session)
_hold = _mapper(Hold)
_approval = _mapper(Approval)
_decision = _mapper(DecisionRecord, unstored=("provider", "shadow_json"))
_event = _mapper(SessionEvent)
_approver = _mapper(Approver)
_audit = _mapper(AuditRecord)
_link = _mapper(ApproverLink)
_page = _mapper(Page)
_chat_message = _mapper(ChatMessage)
_impact = _mapper(HoldImpact)
_step = _mapper(SafetyStepRecord)
_audit_chain = _mapper(AuditChain)
