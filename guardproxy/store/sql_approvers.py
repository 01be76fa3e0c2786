"""The SQL store's approvers, their identities elsewhere, pages and chat messages (see
:mod:`guardproxy.store.sql`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

from guardproxy.store.base import (
    AlreadyExistsError,
    Approver,
    ApproverLink,
    ChatMessage,
    InvalidValueError,
    NotFoundError,
    Page,
)
from guardproxy.store.sql_base import (
    SqlBase,
    approver_from_row,
    chat_message_from_row,
    link_from_row,
    page_from_row,
    to_ts,
    to_ts_or_none,
    where_clause,
)


class ApproversSql(SqlBase):
    """Approvers, their links to chat and on-call identities, pages and chat messages."""

    # -- approvers ------------------------------------------------------------------

    def add_approver(self, approver: Approver) -> None:
        if not approver.name or not approver.token_hash:
            raise InvalidValueError("an approver needs a name and a token hash")
        row = (
            approver.name,
            json.dumps(list(approver.groups)),
            approver.token_hash,
            to_ts(approver.created_at),
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
        return None if row is None else approver_from_row(row)

    def find_approver_by_token(self, token_hash: str) -> Approver | None:
        with self._read() as db:
            row = db.execute(
                "SELECT * FROM approvers WHERE token_hash = ?", (token_hash,)
            ).fetchone()
        return None if row is None else approver_from_row(row)

    def list_approvers(self) -> list[Approver]:
        with self._read() as db:
            rows = db.execute("SELECT * FROM approvers ORDER BY name").fetchall()
        return [approver_from_row(row) for row in rows]

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
                    (link.approver, link.kind, link.external_id, to_ts(link.created_at)),
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
        where, values = where_clause({"kind = ?": kind})
        with self._read() as db:
            rows = db.execute(
                f"SELECT * FROM approver_links {where} ORDER BY approver, kind", values
            ).fetchall()
        return [link_from_row(row) for row in rows]

    def find_approver_by_link(self, kind: str, external_id: str) -> Approver | None:
        with self._read() as db:
            row = db.execute(
                "SELECT a.* FROM approver_links l JOIN approvers a ON a.name = l.approver"
                " WHERE l.kind = ? AND l.external_id = ?",
                (kind, external_id),
            ).fetchone()
        return None if row is None else approver_from_row(row)

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
                (hold_id, oncall_group, level, schedule, pager, dedup_key, to_ts(at)),
            ).fetchone()
        return None if row is None else page_from_row(row)

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
                (to_ts_or_none(triggered_at), error, hold_id, oncall_group, level),
            )

    def claim_page_resolutions(self, hold_id: str, at: datetime) -> list[Page]:
        with self._write() as db:  # one statement: a concurrent claim gets the rest, or none
            rows = db.execute(
                "UPDATE pages SET resolved_at = ? WHERE hold_id = ? AND resolved_at IS NULL"
                " RETURNING *",
                (to_ts(at), hold_id),
            ).fetchall()
        return sorted(
            (page_from_row(row) for row in rows), key=lambda page: (page.oncall_group, page.level)
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
        return [page_from_row(row) for row in rows]

    def save_chat_message(self, message: ChatMessage) -> bool:
        with self._write() as db:
            row = db.execute(
                "INSERT INTO chat_messages (hold_id, kind, channel, message_ts, posted_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING hold_id",
                (message.hold_id, message.kind, message.channel, message.message_ts,
                 to_ts(message.posted_at)),
            ).fetchone()  # fmt: skip
        return row is not None

    def get_chat_message(self, hold_id: str, kind: str) -> ChatMessage | None:
        with self._read() as db:
            row = db.execute(
                "SELECT * FROM chat_messages WHERE hold_id = ? AND kind = ?", (hold_id, kind)
            ).fetchone()
        return None if row is None else chat_message_from_row(row)

    def claim_chat_request(self, key: str, at: datetime, *, forget_before: datetime) -> bool:
        with self._write() as db:
            db.execute("DELETE FROM chat_requests WHERE at < ?", (to_ts(forget_before),))
            row = db.execute(
                "INSERT INTO chat_requests (request_key, at) VALUES (?, ?)"
                " ON CONFLICT DO NOTHING RETURNING request_key",
                (key, to_ts(at)),
            ).fetchone()
        return row is not None
