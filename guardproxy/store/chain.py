"""The audit chains: every record carries the hash of the one before it in its chain.

Each writer (each opened store: a replica's proxy, its decision writer process, a CLI
command) appends to a chain of its own, so writers never wait for each other's chain.
A backend stores :class:`~guardproxy.store.base.AuditRecord` rows and links them with
:func:`link` inside the transaction that appends them (the transaction reads its
chain's last ``seq`` and ``hash`` under a lock on that chain, so the chain never
forks).  :class:`ChainVerifier` recomputes every chain from the rows alone: an edited
field, a deleted or an inserted record breaks its chain at that sequence number.  The
first record of chain *n* follows :func:`chain_genesis` (*n*), so a record moved to
another chain breaks too; chain 0, the single chain from before there were several,
starts from :data:`GENESIS` as it always did.

What is hashed is the canonical JSON (sorted keys, no spaces, UTF-8) of the record's
fields, with the payload as the exact text stored.  Storing the payload verbatim is
what makes the hash cheap (no re-serialisation on the request path) and portable
(SQLite and PostgreSQL keep TEXT byte for byte).

A chain alone is unkeyed: it proves the log was not altered *by anyone who did not also
recompute every later hash*.  Checkpoints close that gap: every few seconds a replica
binds the heads of the chains that moved into the next checkpoint
(:func:`checkpoint_hash`, chained to the previous checkpoint) and signs it with a key
kept outside the database (guardproxy/audit/checkpoint.py).  Whoever rewrites the
database, consistently and entirely, cannot sign the checkpoints that would match.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from guardproxy.store.base import (
    AuditEntry,
    AuditRecord,
    ChainHead,
    Checkpoint,
    DecisionRecord,
    Signer,
)

GENESIS = "0" * 64
"""The ``prev_hash`` of the first record of chain 0, and of the first checkpoint."""

LEGACY_CHAIN = 0
"""The chain the records written before there were several chains are in."""


def chain_genesis(chain: int) -> str:
    """The ``prev_hash`` of the first record of ``chain``."""
    if chain == LEGACY_CHAIN:
        return GENESIS
    return hashlib.sha256(f"guardproxy audit chain {chain:d}".encode()).hexdigest()


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


def link(entry: AuditEntry, seq: int, prev_hash: str, chain: int = LEGACY_CHAIN) -> AuditRecord:
    """``entry`` as the record at ``seq`` of ``chain`` following a record whose hash is
    ``prev_hash``."""
    return AuditRecord(
        chain=chain,
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
    """Where a chain breaks and why, for ``audit verify``."""

    chain: int
    seq: int
    record_id: str
    problem: str

    def __str__(self) -> str:
        which = f" ({self.record_id})" if self.record_id else ""  # none: the record is gone
        return f"chain {self.chain} record #{self.seq}{which}: {self.problem}"


class ChainVerifier:
    """Checks records of any number of chains as they come, each against its chain.

    Records must come oldest first within each chain (chains may interleave).  Each must
    have its chain's next sequence number (a gap is a deleted record), its ``prev_hash``
    must be the previous record's hash (a mismatch is a deleted or inserted record) and
    its own hash must match its fields (a mismatch is an edit).  A chain starts at
    sequence 1 from its genesis unless ``heads`` says where it was left.
    """

    def __init__(self, heads: dict[int, tuple[int, str]] | None = None) -> None:
        self.heads: dict[int, tuple[int, str]] = dict(heads or {})
        """Chain -> (seq, hash) of the last record checked."""

    def expected_seq(self, chain: int) -> int:
        """The sequence number the chain's next record must have."""
        head = self.heads.get(chain)
        return 1 if head is None else head[0] + 1

    def check(self, record: AuditRecord) -> list[ChainProblem]:
        """``record``'s problems (none if it continues its chain intact)."""
        problems: list[ChainProblem] = []
        chain = record.chain
        head = self.heads.get(chain)
        expected_seq, prev = (1, chain_genesis(chain)) if head is None else (head[0] + 1, head[1])

        def problem(text: str) -> None:
            problems.append(ChainProblem(chain, record.seq, record.record_id, text))

        if record.seq != expected_seq:
            if record.seq > expected_seq:
                missing = f"#{expected_seq}" + (
                    f"..#{record.seq - 1}" if record.seq - 1 > expected_seq else ""
                )
                problem(f"record {missing} is missing")
            else:
                problem("sequence number out of order")
        if record.prev_hash != prev:
            problem(
                "does not follow the previous record (previous hash differs): a record "
                "before it was deleted, inserted or rewritten"
            )
        if record_hash(record, record.seq, record.prev_hash) != record.hash:
            problem("its content does not match its hash (edited)")
        self.heads[chain] = (record.seq, record.hash)
        return problems


def verify(records: Iterable[AuditRecord]) -> list[ChainProblem]:
    """Every break in ``records`` (each chain's from its first record, oldest first;
    chains may interleave), or an empty list if intact."""
    verifier = ChainVerifier()
    return [problem for record in records for problem in verifier.check(record)]


# -- checkpoints ----------------------------------------------------------------------


def checkpoint_hash(
    *, seq: int, at: datetime, heads: Sequence[ChainHead], key_id: str, prev_hash: str
) -> str:
    """sha256 hex of the canonical JSON of a checkpoint's fields (heads by chain)."""
    fields = {
        "at": canonical_time(at),
        "heads": [[head.chain, head.seq, head.hash] for head in sorted(heads, key=_by_chain)],
        "key": key_id,
        "prev": prev_hash,
        "seq": seq,
    }
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _by_chain(head: ChainHead) -> int:
    return head.chain


def signed_message(checkpoint_hash_hex: str) -> bytes:
    """What a checkpoint's signature signs: its hash, in a context of its own (a
    signature made for anything else never verifies as a checkpoint's)."""
    return b"guardproxy audit checkpoint " + checkpoint_hash_hex.encode("ascii")


def build_checkpoint(
    *,
    seq: int,
    at: datetime,
    heads: Sequence[ChainHead],
    key_id: str,
    prev_hash: str,
    sign: Signer,
) -> Checkpoint:
    """The checkpoint after one whose hash is ``prev_hash``, hashed and signed."""
    ordered = tuple(sorted(heads, key=_by_chain))
    digest = checkpoint_hash(seq=seq, at=at, heads=ordered, key_id=key_id, prev_hash=prev_hash)
    return Checkpoint(
        seq=seq,
        at=at,
        heads=ordered,
        key_id=key_id,
        prev_hash=prev_hash,
        hash=digest,
        signature=sign(digest),
    )
