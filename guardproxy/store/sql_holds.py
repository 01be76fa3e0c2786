"""The SQL store's holds, approval events, impact previews and safety steps (see
:mod:`guardproxy.store.sql`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta

from guardproxy.store import chain
from guardproxy.store.base import (
    STEP_STATES,
    Approval,
    Hold,
    HoldConflict,
    HoldImpact,
    HoldState,
    InvalidValueError,
    NotFoundError,
    SafetyStepRecord,
    Verdict,
    carried_until,
    grant_seconds,
)
from guardproxy.store.sql_base import (
    CARRIED_HOLDS,
    Db,
    SqlBase,
    approval_from_row,
    fetch_hold,
    hold_event,
    hold_from_row,
    impact_from_row,
    row_limit,
    step_from_row,
    to_ts,
    unused_hold_id,
    where_clause,
)


class HoldsSql(SqlBase):
    """Holds, their approvals, impact previews and safety steps."""

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
        created, expires = to_ts(created_at), to_ts(expires_at)
        with self._write(chained=True) as db:
            hold_id = unused_hold_id(db)
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
            hold = fetch_hold(db, hold_id)
            self._chain(db, [hold_event("hold.created", hold, created_at)])
            return hold

    def get_hold(self, hold_id: str) -> Hold | None:
        with self._read() as db:
            row = db.execute("SELECT * FROM holds WHERE id = ?", (hold_id,)).fetchone()
        return None if row is None else hold_from_row(row)

    def find_hold(self, session_id: str, request_digest: str, now: datetime) -> Hold | None:
        moment = to_ts(now)
        with self._read() as db:
            row = db.execute(
                "SELECT * FROM holds WHERE session_id = ? AND request_digest = ? AND ("
                " (state = 'pending' AND expires_at > ?)"
                " OR (state = 'approved' AND (grant_expires_at IS NULL OR grant_expires_at > ?))"
                " OR state = 'denied')"
                " ORDER BY created_at DESC, rowid DESC LIMIT 1",
                (session_id, request_digest, moment, moment),
            ).fetchone()
        return None if row is None else hold_from_row(row)

    def list_holds(
        self,
        *,
        state: HoldState | None = None,
        session_id: str | None = None,
        limit: int = 100,
    ) -> list[Hold]:
        where, params = where_clause(
            {
                "state = ?": None if state is None else HoldState(state).value,
                "session_id = ?": session_id,
            }
        )
        with self._read() as db:
            rows = db.execute(
                f"SELECT * FROM holds {where} ORDER BY created_at DESC, rowid DESC LIMIT ?",
                (*params, row_limit(limit)),
            ).fetchall()
        return [hold_from_row(row) for row in rows]

    def resolve_hold(
        self, hold_id: str, *, state: HoldState, by: str, reason: str, now: datetime
    ) -> Hold:
        if state not in (HoldState.APPROVED, HoldState.DENIED):
            raise InvalidValueError(f"a hold can only be resolved approved or denied, not {state}")
        if not by:
            raise InvalidValueError("resolve_hold needs who resolved it")
        wanted = "approve" if state is HoldState.APPROVED else "deny"
        moment = to_ts(now)
        with self._write(chained=True) as db:
            hold = self._decidable(db, hold_id, now)
            if hold.state is HoldState.PENDING:
                seconds = grant_seconds(hold.grant) if state is HoldState.APPROVED else None
                grant_expires = None if seconds is None else to_ts(now + timedelta(seconds=seconds))
                cursor = db.execute(
                    "UPDATE holds SET state = ?, resolved_at = ?, resolved_by = ?, reason = ?,"
                    " grant_expires_at = ? WHERE id = ? AND state = 'pending'",
                    (state.value, moment, by, reason, grant_expires, hold_id),
                )
                hold = fetch_hold(db, hold_id)
                if cursor.rowcount == 1:
                    self._chain(db, [hold_event(f"hold.{state.value}", hold, now)])
                    return hold
        raise HoldConflict(hold, wanted)

    def expire_holds(self, now: datetime) -> list[Hold]:
        moment = to_ts(now)
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
            expired = [fetch_hold(db, hold_id) for hold_id in ids]
            self._chain(db, [hold_event("hold.expired", hold, now) for hold in expired])
            return expired

    def consume_approval(self, session_id: str, request_digest: str, now: datetime) -> Hold | None:
        with self._write(chained=True) as db:
            rows = db.execute(
                "SELECT * FROM holds WHERE session_id = ? AND request_digest = ?"
                " AND state = 'approved' ORDER BY created_at DESC, rowid DESC",
                (session_id, request_digest),
            ).fetchall()
            return self._consume(db, [hold_from_row(row) for row in rows], now)

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
                (to_ts(now), hold.id),
            )
            if cursor.rowcount == 1:
                released = fetch_hold(db, hold.id)
                extra = {} if released_to is None else {"released_to_session": released_to}
                self._chain(db, [hold_event("hold.released", released, now, **extra)])
                return released
        return None

    def consume_carried_approval(
        self, session_id: str, request_digest: str, now: datetime
    ) -> Hold | None:
        with self._write(chained=True) as db:
            rows = db.execute(
                f"SELECT h.* FROM {CARRIED_HOLDS} AND h.state = 'approved'"
                " ORDER BY h.created_at DESC, h.rowid DESC",
                (session_id, request_digest),
            ).fetchall()
            usable = [
                hold
                for hold in map(hold_from_row, rows)
                if (until := carried_until(hold)) is not None and now < until
            ]
            return self._consume(db, usable, now, released_to=session_id)

    def find_carried_hold(self, session_id: str, request_digest: str, now: datetime) -> Hold | None:
        with self._read() as db:
            row = db.execute(
                f"SELECT h.* FROM {CARRIED_HOLDS} AND h.state = 'pending' AND h.expires_at > ?"
                " ORDER BY h.created_at DESC, h.rowid DESC LIMIT 1",
                (session_id, request_digest, to_ts(now)),
            ).fetchone()
        return None if row is None else hold_from_row(row)

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
        hold = hold_from_row(row)
        if hold.state is HoldState.PENDING and hold.expires_at <= now:
            db.execute(
                "UPDATE holds SET state = 'expired', resolved_at = ? WHERE id = ?",
                (to_ts(now), hold_id),
            )
            hold = fetch_hold(db, hold_id)
            self._chain(db, [hold_event("hold.expired", hold, now)])
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
                    (hold_id, approver, json.dumps(list(groups)), verdict.value, reason, to_ts(at)),
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
                return approval_from_row(row)
        raise HoldConflict(hold, "record a verdict on")

    def list_approvals(self, hold_id: str) -> list[Approval]:
        with self._read() as db:
            rows = db.execute(
                "SELECT * FROM approvals WHERE hold_id = ? ORDER BY id", (hold_id,)
            ).fetchall()
        return [approval_from_row(row) for row in rows]

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
                 impact.impact_json, to_ts(impact.gathered_at)),
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
        return {row["hold_id"]: impact_from_row(row) for row in rows}

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
                (hold_id, step, state, actor, result_json, error, to_ts(started_at),
                 to_ts(finished_at)),
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
                started_at=to_ts(started_at),
                seconds=round((finished_at - started_at).total_seconds(), 3),
            )
            self._chain(db, [event])
            return step_from_row(row)

    def list_safety_steps(self, hold_ids: Sequence[str]) -> list[SafetyStepRecord]:
        if not hold_ids:
            return []
        marks = ", ".join("?" for _ in hold_ids)
        with self._read() as db:
            rows = db.execute(
                f"SELECT * FROM hold_steps WHERE hold_id IN ({marks}) ORDER BY id", list(hold_ids)
            ).fetchall()
        return [step_from_row(row) for row in rows]
