"""Reading the audit trail: records as people and tools see them, export, verify.

Everything here reads through the ``Store`` protocol, so it works on any backend.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from guardproxy.store.base import AuditRecord, ChainHead, Checkpoint, Store
from guardproxy.store.chain import (
    GENESIS,
    ChainProblem,
    ChainVerifier,
    canonical_time,
    checkpoint_hash,
)

if TYPE_CHECKING:
    from guardproxy.audit.checkpoint import VerifyKey

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
        "chain": record.chain,
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


def iter_chain(store: Store, *, after: int = 0) -> Iterator[AuditRecord]:
    """Every record of every chain after position ``after``, in the order they were
    appended, a page at a time (not verified: see :func:`checked_records`)."""
    while True:
        page = store.audit_records(after=after, limit=PAGE)
        yield from page
        if len(page) < PAGE:
            return
        after = page[-1].position


def checked_records(
    store: Store, verifier: ChainVerifier, problems: list[ChainProblem]
) -> Iterator[AuditRecord]:
    """Every record of every chain, in the order they were appended, each checked by
    ``verifier`` against its chain as it is read; breaks are added to ``problems``.

    A record that committed after later positions of other chains were read (writers
    appending meanwhile) is found when its chain's next record is: it is read from its
    chain then, so only a record that is really gone counts as missing.
    """
    refilled: set[tuple[int, int]] = set()
    for record in iter_chain(store):
        if (record.chain, record.seq) in refilled:
            refilled.discard((record.chain, record.seq))
            continue
        expected = verifier.expected_seq(record.chain)
        if record.seq > expected:
            for earlier in _chain_range(store, record.chain, expected, record.seq):
                refilled.add((earlier.chain, earlier.seq))
                problems.extend(verifier.check(earlier))
                yield earlier
        problems.extend(verifier.check(record))
        yield record


def _chain_range(store: Store, chain: int, first: int, end: int) -> Iterator[AuditRecord]:
    """The records of ``chain`` with ``first <= seq < end`` that exist."""
    after = first - 1
    while after < end - 1:
        page = store.chain_records(chain, after_seq=after, limit=min(PAGE, end - 1 - after))
        for record in page:
            if record.seq >= end:
                return
            yield record
        if not page:
            return
        after = page[-1].seq


def iter_checkpoints(store: Store) -> Iterator[Checkpoint]:
    after = 0
    while True:
        page = store.audit_checkpoints(after_seq=after, limit=PAGE)
        yield from page
        if len(page) < PAGE:
            return
        after = page[-1].seq


def export_lines(
    store: Store, *, since: datetime | None = None, until: datetime | None = None
) -> Iterator[str]:
    """JSON lines of the records in [since, until), in the order they were appended,
    with their chains and hashes."""
    for record in iter_chain(store):
        if since is not None and record.at < since:
            continue
        if until is not None and record.at >= until:
            continue
        yield json.dumps(record_dict(record), ensure_ascii=False, sort_keys=True)


# -- verify ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckpointProblem:
    """Where the sequence of checkpoints breaks, or a signature fails, and why."""

    seq: int
    problem: str

    def __str__(self) -> str:
        return f"checkpoint #{self.seq}: {self.problem}"


@dataclass
class ChainSummary:
    """One chain as verify found it."""

    id: int
    writer: str
    records: int = 0
    head_seq: int = 0
    head_hash: str = ""
    checkpointed_seq: int = 0
    """The last of its records a checkpoint binds (0: none)."""
    unchecked_at: datetime | None = None
    """When its first record after ``checkpointed_seq`` was recorded."""

    @property
    def unchecked(self) -> int:
        return max(0, self.head_seq - self.checkpointed_seq)

    def as_dict(self) -> dict[str, Any]:
        return {
            "chain": self.id,
            "writer": self.writer,
            "records": self.records,
            "head": f"{self.head_seq}:{self.head_hash}",
            "checkpointed_seq": self.checkpointed_seq,
            "not_yet_checkpointed": self.unchecked,
        }


@dataclass
class Verification:
    """What ``audit verify`` found: every chain, every checkpoint, every break."""

    records: int = 0
    chains: dict[int, ChainSummary] = field(default_factory=dict)
    checkpoints: int = 0
    last_checkpoint: Checkpoint | None = None
    record_problems: list[ChainProblem] = field(default_factory=list)
    checkpoint_problems: list[CheckpointProblem] = field(default_factory=list)
    signatures_checked: bool = False
    key_ids: tuple[str, ...] = ()
    """The keys that signed the checkpoints, in order of first use."""

    @property
    def intact(self) -> bool:
        return not self.record_problems and not self.checkpoint_problems

    @property
    def problems(self) -> list[str]:
        return [str(p) for p in self.record_problems] + [str(p) for p in self.checkpoint_problems]

    @property
    def first_broken_record(self) -> ChainProblem | None:
        """The first record found broken, in the order records were appended."""
        return self.record_problems[0] if self.record_problems else None

    @property
    def unchecked(self) -> int:
        """Records no checkpoint binds yet (appended since the last one)."""
        return sum(chain.unchecked for chain in self.chains.values())


def verify_store(
    store: Store,
    keys: Sequence[VerifyKey] = (),
    *,
    checkpointed_before: datetime | None = None,
    kept_heads: Sequence[ChainHead] = (),
    kept_checkpoint: tuple[int, str] | None = None,
) -> Verification:
    """Check every chain and every checkpoint (a page at a time).

    * Each chain: sequence, links, hashes (:class:`ChainVerifier`).
    * The checkpoints: sequence, links to each other, hashes, and with ``keys`` their
      signatures (a checkpoint signed by a key not given is a problem).  Without keys the
      signatures are not checked (``signatures_checked`` says so).
    * Each head a checkpoint binds must be the record the chain has at that sequence
      number (a record rewritten after the checkpoint, with every later hash recomputed,
      breaks here), and no chain may end before its last bound head (a cut tail).
    * ``checkpointed_before``: a record from before then that no checkpoint binds is a
      problem (checkpoints deleted with the records they bound, to hide a rewrite).
    * ``kept_heads`` (records) and ``kept_checkpoint`` (seq, hash), printed by an earlier
      verify and kept elsewhere, must still be there with the same hash.

    Memory grows with the number of chains and checkpoint heads, not with records.
    """
    result = Verification()
    bound, last_bound = _verify_checkpoints(store, keys, result, kept_checkpoint)
    listed = store.audit_chains()  # after the checkpoints: every chain they bind is listed
    listed_heads = {each.id: (each.head_seq, each.head_hash) for each in listed}
    for each in listed:
        result.chains[each.id] = ChainSummary(
            each.id, each.writer, checkpointed_seq=last_bound.get(each.id, 0)
        )
    kept = {(head.chain, head.seq): head.hash for head in kept_heads}
    problems = result.record_problems

    def problem(record: AuditRecord, text: str) -> None:
        problems.append(ChainProblem(record.chain, record.seq, record.record_id, text))

    for record in checked_records(store, ChainVerifier(), problems):
        result.records += 1
        summary = result.chains.get(record.chain)
        if summary is None:  # appended by a chain created after the list was read
            summary = result.chains[record.chain] = ChainSummary(
                record.chain, "", checkpointed_seq=last_bound.get(record.chain, 0)
            )
        summary.records += 1
        summary.head_seq, summary.head_hash = record.seq, record.hash
        binding = bound.pop((record.chain, record.seq), None)
        if binding is not None and binding[1] != record.hash:
            problem(
                record,
                f"is not the record checkpoint #{binding[0]} signed (rewritten after it, "
                "with the hashes after it recomputed)",
            )
        if record.seq > summary.checkpointed_seq:
            if summary.unchecked_at is None:
                summary.unchecked_at = record.at
            if checkpointed_before is not None and record.at < checkpointed_before:
                problem(
                    record,
                    "no checkpoint binds it, though it was recorded before "
                    f"{canonical_time(checkpointed_before)}: its checkpoints were deleted, "
                    "or none was made",
                )
                checkpointed_before = None  # the first such record says it
        head = listed_heads.get(record.chain)
        if head is not None and head[0] == record.seq and head[1] != record.hash:
            problem(record, "is not the chain's head as audit_chains records it")
        kept_hash = kept.pop((record.chain, record.seq), None)
        if kept_hash is not None and kept_hash != record.hash:
            problem(record, "no longer has the given head hash")
    for chain, (seq, _) in sorted(listed_heads.items()):
        end = result.chains[chain].head_seq
        if seq > end:
            problems.append(
                ChainProblem(
                    chain,
                    seq,
                    "",
                    f"is gone: the chain ends at #{end}, audit_chains says at #{seq} "
                    "(its tail was cut)",
                )
            )
    for chain, seq in sorted(last_bound.items()):
        end = result.chains[chain].head_seq if chain in result.chains else 0
        if seq > end:
            problems.append(
                ChainProblem(
                    chain,
                    seq,
                    "",
                    f"is gone, but checkpoint #{bound[(chain, seq)][0]} bound it: the chain "
                    f"ends at #{end} (its tail was cut, or the chain was deleted)",
                )
            )
    for chain, seq in sorted(kept):
        problems.append(ChainProblem(chain, seq, "", "(the given head) is gone: the tail was cut"))
    return result


def _verify_checkpoints(
    store: Store,
    keys: Sequence[VerifyKey],
    result: Verification,
    kept_checkpoint: tuple[int, str] | None,
) -> tuple[dict[tuple[int, int], tuple[int, str]], dict[int, int]]:
    """Check the checkpoints; return what they bind, (chain, seq) -> (checkpoint, hash),
    and the last record of each chain they bind, chain -> seq."""
    by_id = {key.key_id: key for key in keys}
    result.signatures_checked = bool(keys)
    problems = result.checkpoint_problems
    bound: dict[tuple[int, int], tuple[int, str]] = {}
    latest: dict[int, tuple[int, int]] = {}
    used: dict[str, None] = {}
    expected, prev = 1, GENESIS
    for checkpoint in iter_checkpoints(store):
        result.checkpoints += 1
        result.last_checkpoint = checkpoint
        used.setdefault(checkpoint.key_id)

        def problem(text: str, seq: int = checkpoint.seq) -> None:
            problems.append(CheckpointProblem(seq, text))

        if checkpoint.seq != expected:
            problem(
                f"checkpoint #{expected} is missing"
                if checkpoint.seq > expected
                else "sequence number out of order"
            )
        if checkpoint.prev_hash != prev:
            problem("does not follow the previous checkpoint (deleted, inserted or rewritten)")
        digest = checkpoint_hash(
            seq=checkpoint.seq,
            at=checkpoint.at,
            heads=checkpoint.heads,
            key_id=checkpoint.key_id,
            prev_hash=checkpoint.prev_hash,
        )
        if digest != checkpoint.hash:
            problem("its content does not match its hash (edited)")
        if keys:
            key = by_id.get(checkpoint.key_id)
            if key is None:
                given = ", ".join(sorted(by_id))
                problem(
                    f"signed by key {checkpoint.key_id}, which is not a given key ({given}): "
                    "pass its public key with --key, or it was not signed by guardproxy"
                )
            elif not key.verifies(checkpoint):
                problem(
                    f"its signature does not verify with key {key.key_id}: the checkpoint "
                    "was rewritten or forged"
                )
        for head in checkpoint.heads:
            before = latest.get(head.chain)
            if before is not None and head.seq <= before[0]:
                problem(
                    f"binds chain {head.chain} record #{head.seq}, not after #{before[0]} "
                    f"which checkpoint #{before[1]} bound"
                )
                continue
            bound[(head.chain, head.seq)] = (checkpoint.seq, head.hash)
            latest[head.chain] = (head.seq, checkpoint.seq)
        expected, prev = checkpoint.seq + 1, checkpoint.hash
    result.key_ids = tuple(used)
    if kept_checkpoint is not None:
        seq, kept_hash = kept_checkpoint
        last = result.last_checkpoint
        if last is None or last.seq < seq:
            problems.append(
                CheckpointProblem(seq, "(the given one) is gone: the latest checkpoints were cut")
            )
        else:
            (found,) = store.audit_checkpoints(after_seq=seq - 1, limit=1) or (None,)
            if found is None or found.seq != seq:
                problems.append(CheckpointProblem(seq, "(the given one) is gone"))
            elif found.hash != kept_hash:
                problems.append(CheckpointProblem(seq, "no longer has the given hash"))
    return bound, {chain: seq for chain, (seq, _) in latest.items()}
