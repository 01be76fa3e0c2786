"""The SQL store's decision log, audit trail and checkpoints (see
:mod:`guardproxy.store.sql`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from guardproxy.store import chain
from guardproxy.store.base import (
    AuditChain,
    AuditEntry,
    AuditRecord,
    ChainHead,
    Checkpoint,
    DecisionRecord,
    NotFoundError,
    SessionEvent,
    Signer,
    StoreError,
)
from guardproxy.store.sql_base import (
    DECISION_COLUMNS,
    INSERT_SESSION_EVENTS,
    Db,
    QueuedAppend,
    SqlBase,
    audit_chain_from_row,
    audit_from_row,
    decision_from_row,
    event_rows,
    from_ts_required,
    insert_rows,
    row_limit,
    to_ts,
    to_ts_or_none,
    where_clause,
)


class AuditSql(SqlBase):
    """The decision log, the audit trail and its checkpoints."""

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
            (r.id, to_ts(r.at), r.session_id, r.action_json, r.context_json, r.decision_json,
             r.outcome, r.hold_id, r.upstream_status)
            for r in records
        ]  # fmt: skip
        what = f"decision {records[0].id}" if len(records) == 1 else "a decision in the batch"
        append = QueuedAppend(
            rows, [chain.decision_entry(r) for r in records], what, event_rows(events)
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

    def _write_appends(self, batch: Sequence[QueuedAppend]) -> None:
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

    def _write_together(self, batch: Sequence[QueuedAppend]) -> None:
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
        (:func:`event_rows`), in one transaction."""
        with self._transaction() as db:
            if events:
                insert_rows(db, INSERT_SESSION_EVENTS, events)
            try:
                insert_rows(
                    db,
                    f"INSERT INTO decisions ({DECISION_COLUMNS})"
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
                    at=from_ts_required(row["at"]),
                    provider=row["provider"] or "",
                    status=status,
                )
            )
        self._chain(db, entries)
        return len(entries)

    def get_decision(self, decision_id: str) -> DecisionRecord | None:
        with self._read() as db:
            row = db.execute("SELECT * FROM decisions WHERE id = ?", (decision_id,)).fetchone()
        return None if row is None else decision_from_row(row)

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
        where, params = where_clause(
            {
                "session_id = ?": session_id,
                "outcome = ?": outcome,
                f"{self._json_field('action', 'provider')} = ?": provider,
                "at >= ?": to_ts_or_none(since),
            }
        )
        with self._read() as db:
            rows = db.execute(
                f"SELECT * FROM decisions {where} ORDER BY at DESC, rowid DESC LIMIT ?",
                (*params, row_limit(limit)),
            ).fetchall()
        return [decision_from_row(row) for row in rows]

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
                (after, row_limit(limit)),
            ).fetchall()
        return [audit_from_row(row) for row in rows]

    def chain_records(
        self, chain: int, *, after_seq: int = 0, limit: int = 1000
    ) -> list[AuditRecord]:
        with self._read() as db:
            rows = db.execute(
                "SELECT * FROM audit_log WHERE chain = ? AND seq > ? ORDER BY seq LIMIT ?",
                (chain, after_seq, row_limit(limit)),
            ).fetchall()
        return [audit_from_row(row) for row in rows]

    def audit_chains(self) -> list[AuditChain]:
        with self._read() as db:
            rows = db.execute(
                "SELECT id, writer, head_seq, head_hash FROM audit_chains ORDER BY id"
            ).fetchall()
        return [audit_chain_from_row(row) for row in rows]

    def get_audit_record(self, record_id: str) -> AuditRecord | None:
        with self._read() as db:
            row = db.execute("SELECT * FROM audit_log WHERE record_id = ?", (record_id,)).fetchone()
        return None if row is None else audit_from_row(row)

    def audit_for(self, subject: str) -> list[AuditRecord]:
        with self._read() as db:
            rows = db.execute(
                "SELECT * FROM audit_log WHERE subject = ? ORDER BY position", (subject,)
            ).fetchall()
        return [audit_from_row(row) for row in rows]

    # -- checkpoints ----------------------------------------------------------------

    def checkpoint_audit(
        self,
        *,
        at: datetime,
        key_id: str,
        sign: Signer,
        min_interval: timedelta = timedelta(0),
    ) -> Checkpoint | None:
        moment = to_ts(at)
        with self._write() as db:
            self._lock_checkpoints(db)
            last = db.execute(
                "SELECT seq, at, hash FROM audit_checkpoints ORDER BY seq DESC LIMIT 1"
            ).fetchone()
            if (
                last is not None
                and min_interval > timedelta(0)
                and from_ts_required(last["at"]) > at - min_interval
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
                (after_seq, row_limit(limit)),
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
                at=from_ts_required(row["at"]),
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
        where, params = where_clause(
            {
                "kind = ?": kind,
                "session_id = ?": session_id,
                "outcome = ?": outcome,
                "provider = ?": provider,
                "at >= ?": to_ts_or_none(since),
                "at < ?": to_ts_or_none(until),
            }
        )
        with self._read() as db:
            rows = db.execute(
                f"SELECT * FROM audit_log {where} ORDER BY position DESC LIMIT ?",
                (*params, row_limit(limit)),
            ).fetchall()
        return [audit_from_row(row) for row in rows]
