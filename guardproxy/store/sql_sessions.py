"""The SQL store's sessions and session history (see :mod:`guardproxy.store.sql`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

from guardproxy.store.base import (
    EventTotal,
    InvalidValueError,
    NotFoundError,
    Session,
    SessionEvent,
    redacted_session,
)
from guardproxy.store.sql_base import (
    EVENT_COLUMNS,
    INSERT_SESSION_EVENTS,
    SESSION_COLUMNS,
    SqlBase,
    event_from_row,
    event_rows,
    row_limit,
    session_from_row,
    to_ts,
    to_ts_or_none,
)


class SessionsSql(SqlBase):
    """Sessions and their event history."""

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
            to_ts(session.started_at),
            to_ts_or_none(session.ended_at),
            int(session.anonymous),
            session.token_hash,
        )
        with self._write() as db:
            try:
                db.execute(
                    f"INSERT INTO sessions ({SESSION_COLUMNS})"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    row,
                )
            except self._integrity_errors as exc:
                raise self._integrity(exc, f"session {session.id}") from exc

    def get_session(self, session_id: str) -> Session | None:
        with self._read() as db:
            row = db.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)).fetchone()
        return None if row is None else session_from_row(row)

    def find_session_by_token(self, token_hash: str) -> Session | None:
        with self._read() as db:
            row = db.execute(
                "SELECT * FROM sessions WHERE token_hash = ?", (token_hash,)
            ).fetchone()
        return None if row is None else session_from_row(row)

    def end_session(self, session_id: str, at: datetime) -> Session:
        with self._write() as db:
            cursor = db.execute(
                "UPDATE sessions SET ended_at = COALESCE(ended_at, ?) WHERE id = ?",
                (to_ts(at), session_id),
            )
            if cursor.rowcount == 0:
                raise NotFoundError(f"no session {session_id}")
            row = db.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)).fetchone()
        return session_from_row(row)

    def list_sessions(self, *, active_only: bool = False, limit: int = 100) -> list[Session]:
        where = "WHERE ended_at IS NULL" if active_only else ""
        with self._read() as db:
            rows = db.execute(
                f"SELECT * FROM sessions {where} ORDER BY started_at DESC, rowid DESC LIMIT ?",
                (row_limit(limit),),
            ).fetchall()
        return [session_from_row(row) for row in rows]

    def resume_session(self, session_id: str, token_hash: str) -> Session:
        with self._write() as db:
            row = db.execute(
                f"SELECT * FROM sessions WHERE id = ?{self._FOR_UPDATE}", (session_id,)
            ).fetchone()
            if row is None:
                raise NotFoundError(f"no session {session_id}")
            session = session_from_row(row)
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
        return session_from_row(row)

    # -- session history ------------------------------------------------------------

    def append_session_events(self, events: Sequence[SessionEvent]) -> None:
        rows = event_rows(events)
        with self._write() as db:
            db.executemany(INSERT_SESSION_EVENTS, rows)

    def session_events(
        self, session_id: str, *, since: datetime | None = None, limit: int = 100
    ) -> list[SessionEvent]:
        with self._read() as db:
            rows = db.execute(
                f"SELECT {EVENT_COLUMNS} FROM session_events "
                "WHERE session_id = ? AND at >= ? ORDER BY seq DESC LIMIT ?",
                (session_id, "" if since is None else to_ts(since), row_limit(limit)),
            ).fetchall()
        return [event_from_row(row) for row in rows]

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
                f"SELECT {EVENT_COLUMNS} FROM session_events WHERE {where} "
                "ORDER BY seq DESC LIMIT ?",
                (*params, row_limit(limit)),
            ).fetchall()
        return [event_from_row(row) for row in rows]

    def changed_resource_keys(self, *, outcome: str, limit: int) -> list[str]:
        with self._read() as db:
            rows = db.execute(
                "SELECT DISTINCT resource_key FROM session_events "
                "WHERE resource_key != '' AND outcome = ? AND verb != 'read' LIMIT ?",
                (outcome, row_limit(limit)),
            ).fetchall()
        return [row["resource_key"] for row in rows]  # by name: PostgreSQL's rows are dicts


# -- helpers ------------------------------------------------------------------------
