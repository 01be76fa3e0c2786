"""Reading the audit trail: records as people and tools see them, export, verify.

Everything here reads through the ``Store`` protocol, so it works on any backend.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from guardproxy.store.base import AuditRecord, Store
from guardproxy.store.chain import GENESIS, ChainProblem, canonical_time, verify

PAGE = 1000

_RELATIVE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_time(text: str, now: datetime) -> datetime:
    """``2026-11-25T12:00:00Z``, ``2026-11-25`` or a span back from now (``30m``, ``24h``, ``7d``).

    Raises ValueError with what was expected.
    """
    value = text.strip()
    relative = _RELATIVE.match(value)
    if relative:
        amount, unit = int(relative[1]), relative[2]
        return now - timedelta(**{_UNITS[unit]: amount})
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use ISO 8601 (2026-11-25T12:00:00Z) or a span "
            "such as 30m, 24h or 7d"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def record_dict(record: AuditRecord) -> dict[str, Any]:
    """A record as one JSON object: every stored field, the payload parsed."""
    return {
        "seq": record.seq,
        "id": record.record_id,
        "kind": record.kind,
        "at": canonical_time(record.at),
        "session": record.session_id,
        "subject": record.subject,
        "outcome": record.outcome,
        "provider": record.provider,
        "payload": json.loads(record.payload_json),
        "prev_hash": record.prev_hash,
        "hash": record.hash,
    }


@dataclass(frozen=True)
class DecisionView:
    """The fields of a decision record a person reads first."""

    record: AuditRecord
    summary: str
    decided: str
    rules: list[str]
    hold_id: str | None
    shadow: str | None

    @classmethod
    def of(cls, record: AuditRecord) -> DecisionView:
        payload = json.loads(record.payload_json)
        action = payload.get("action") or {}
        decision = payload.get("decision") or {}
        shadow = payload.get("shadow") or {}
        return cls(
            record=record,
            summary=_summary(action),
            decided=str(decision.get("outcome", "")),
            rules=list(decision.get("determining_rules") or []),
            hold_id=payload.get("hold_id"),
            shadow=shadow.get("outcome"),
        )


def _summary(action: dict[str, Any]) -> str:
    resource = action.get("resource") or {}
    target = resource.get("name") or resource.get("id") or ""
    parts = [action.get("provider", ""), action.get("service", ""), action.get("operation", "")]
    if not action.get("operation"):
        request = action.get("request") or {}
        return f"{action.get('provider', '')} request {request.get('method', '')} " + (
            f"{request.get('host', '')}{request.get('path', '')}"
        )
    return " ".join(str(p) for p in (*parts, target) if p)


def iter_chain(store: Store, *, after_seq: int = 0) -> Iterator[AuditRecord]:
    """Every record after ``after_seq``, oldest first, a page at a time."""
    while True:
        page = store.audit_records(after_seq=after_seq, limit=PAGE)
        yield from page
        if len(page) < PAGE:
            return
        after_seq = page[-1].seq


def export_lines(
    store: Store, *, since: datetime | None = None, until: datetime | None = None
) -> Iterator[str]:
    """JSON lines of the records in [since, until), in chain order, with their hashes."""
    for record in iter_chain(store):
        if since is not None and record.at < since:
            continue
        if until is not None and record.at >= until:
            continue
        yield json.dumps(record_dict(record), ensure_ascii=False, sort_keys=True)


@dataclass(frozen=True)
class Verification:
    count: int
    head_seq: int
    head_hash: str
    problems: list[ChainProblem]

    @property
    def intact(self) -> bool:
        return not self.problems


def verify_store(store: Store) -> Verification:
    """Check the whole chain, a page at a time (memory stays bounded)."""
    problems: list[ChainProblem] = []
    count, seq, prev = 0, 0, GENESIS
    expected = 1
    for record in iter_chain(store):
        problems.extend(verify([record], start_seq=expected, prev=prev))
        count += 1
        seq, prev = record.seq, record.hash
        expected = record.seq + 1
    return Verification(count, seq, prev, problems)
