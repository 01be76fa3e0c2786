"""The audit chain: every record carries the hash of the one before it.

Any backend stores :class:`~guardproxy.store.base.AuditRecord` rows and links them with
:func:`link` inside the transaction that appends them (the transaction reads the last
``seq`` and ``hash``, so concurrent writers serialise and the chain never forks).
:func:`verify` recomputes the chain from the rows alone: an edited field, a deleted
or an inserted record breaks it at that sequence number.

What is hashed is the canonical JSON (sorted keys, no spaces, UTF-8) of the record's
fields, with the payload as the exact text stored.  Storing the payload verbatim is
what makes the hash cheap (no re-serialisation on the request path) and portable
(SQLite and PostgreSQL keep TEXT byte for byte).

The chain is unkeyed: it proves the log was not altered *by anyone who did not also
recompute every later hash*.  Against someone who can rewrite the whole database, keep
the head (``audit verify`` prints it) somewhere else and compare.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from guardproxy.store.base import AuditEntry, AuditRecord, DecisionRecord

GENESIS = "0" * 64
"""The ``prev_hash`` of the first record."""


def canonical_time(moment: datetime) -> str:
    """The fixed-width UTC text hashed for a timestamp (microseconds, ``Z``)."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


_string = json.encoder.encode_basestring
"""How ``json.dumps(..., ensure_ascii=False)`` writes a string (the C encoder)."""


def record_hash(entry: AuditEntry, seq: int, prev_hash: str) -> str:
    """sha256 hex of the canonical JSON of every field of the record but its own hash.

    The canonical JSON is ``json.dumps(fields, sort_keys=True, separators=(",", ":"),
    ensure_ascii=False)``, written out field by field in that order (it is built for
    every record the proxy keeps; a test holds the two byte-identical).
    """
    canonical = (
        f'{{"at":{_string(canonical_time(entry.at))},"id":{_string(entry.record_id)},'
        f'"kind":{_string(entry.kind)},"outcome":{_string(entry.outcome)},'
        f'"payload":{_string(entry.payload_json)},"prev":{_string(prev_hash)},'
        f'"provider":{_string(entry.provider)},"seq":{seq:d},'
        f'"session":{_string(entry.session_id)},"subject":{_string(entry.subject)}}}'
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def link(entry: AuditEntry, seq: int, prev_hash: str) -> AuditRecord:
    """``entry`` as the record at ``seq`` following a record whose hash is ``prev_hash``."""
    return AuditRecord(
        record_id=entry.record_id,
        kind=entry.kind,
        at=entry.at,
        session_id=entry.session_id,
        subject=entry.subject,
        outcome=entry.outcome,
        provider=entry.provider,
        payload_json=entry.payload_json,
        seq=seq,
        prev_hash=prev_hash,
        hash=record_hash(entry, seq, prev_hash),
    )


def new_event_id() -> str:
    return "e-" + secrets.token_hex(8)


def decision_entry(record: DecisionRecord) -> AuditEntry:
    """The chain entry of a decision: its redacted input, result and what was done.

    Built by string concatenation of the JSON the caller already produced, so the
    request path serialises each model once.
    """
    hold = "null" if record.hold_id is None else _string(record.hold_id)
    shadow = record.shadow_json if record.shadow_json is not None else "null"
    # a status known when the decision is written is part of it (no upstream record)
    status = record.upstream_status
    known = "" if status is None else f',"upstream_status":{status:d}'
    payload = (
        f'{{"action":{record.action_json},"context":{record.context_json},'
        f'"decision":{record.decision_json},"hold_id":{hold},'
        f'"outcome":{_string(record.outcome)},"shadow":{shadow}{known}}}'
    )
    return AuditEntry(
        record_id=record.id,
        kind="decision",
        at=record.at,
        session_id=record.session_id,
        subject=record.id,
        outcome=record.outcome,
        provider=record.provider,
        payload_json=payload,
    )


def upstream_entry(
    *, decision_id: str, session_id: str, at: datetime, provider: str, status: int
) -> AuditEntry:
    """The upstream's answer to a forwarded request, chained after its decision.

    A separate record (not an update of the decision's) because the answer arrives
    after the decision was appended, and appended records are never changed.  ``at``
    is the decision's time: the store never reads the clock.
    """
    return AuditEntry(
        record_id="u-" + secrets.token_hex(8),
        kind="upstream",
        at=at,
        session_id=session_id,
        subject=decision_id,
        outcome=str(status),
        provider=provider,
        payload_json=json.dumps({"decision_id": decision_id, "status": status}),
    )


def event_entry(
    kind: str, *, at: datetime, session_id: str, subject: str, outcome: str, **payload: object
) -> AuditEntry:
    """A hold or approval event (``hold.created``, ``hold.approval``, ``hold.expired``…)."""
    return AuditEntry(
        record_id=new_event_id(),
        kind=kind,
        at=at,
        session_id=session_id,
        subject=subject,
        outcome=outcome,
        provider="",
        payload_json=json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str),
    )


@dataclass(frozen=True, slots=True)
class ChainProblem:
    """Where the chain breaks and why, for ``audit verify``."""

    seq: int
    record_id: str
    problem: str

    def __str__(self) -> str:
        return f"record #{self.seq} ({self.record_id}): {self.problem}"


def verify(
    records: Iterable[AuditRecord], *, start_seq: int = 1, prev: str = GENESIS
) -> list[ChainProblem]:
    """Every break in ``records`` (given oldest first), or an empty list if intact.

    Each record must have the next sequence number (a gap is a deleted record), its
    ``prev_hash`` must be the previous record's hash (a mismatch is a deleted or
    inserted record) and its own hash must match its fields (a mismatch is an edit).
    """
    problems: list[ChainProblem] = []
    expected_seq = start_seq
    for record in records:
        if record.seq != expected_seq:
            if record.seq > expected_seq:
                missing = f"#{expected_seq}" + (
                    f"..#{record.seq - 1}" if record.seq - 1 > expected_seq else ""
                )
                problems.append(
                    ChainProblem(record.seq, record.record_id, f"record {missing} is missing")
                )
            else:
                problems.append(
                    ChainProblem(record.seq, record.record_id, "sequence number out of order")
                )
        if record.prev_hash != prev:
            problems.append(
                ChainProblem(
                    record.seq,
                    record.record_id,
                    "does not follow the previous record (previous hash differs): a record "
                    "before it was deleted, inserted or rewritten",
                )
            )
        if record_hash(record, record.seq, record.prev_hash) != record.hash:
            problems.append(
                ChainProblem(
                    record.seq, record.record_id, "its content does not match its hash (edited)"
                )
            )
        prev = record.hash
        expected_seq = record.seq + 1
    return problems
