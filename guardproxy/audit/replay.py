"""Replay: re-evaluate recorded decision inputs under a bundle and say what changes.

What replay calls "recorded" comes from the audit chain, so it verifies the records it
reads (:func:`checked_chain`, :func:`checked_record`) the way ``audit verify`` does: an
edited outcome, an inserted or a deleted record is a :class:`ChainProblem`, and the CLI
refuses to report a broken trail as what was recorded unless told to go on.

A decision record keeps the engine's whole input (action + context, redacted) and the
decision, so evaluating the same input under the same bundle must give the same
decision (the engine is pure), and under a candidate bundle it shows what the
candidate would have done to that traffic.  Nothing here does I/O but reading the store.

Replay of captured traffic (mitmproxy flow files) runs the whole decision pipeline,
recognition included: guardproxy/pipeline/replay.py, read by guardproxy/intercept/replay.py.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from guardproxy.action import Action
from guardproxy.audit.trail import DecisionView, checked_records
from guardproxy.context import Context
from guardproxy.policy import Bundle, Decision, evaluate
from guardproxy.policy.engine import input_hash
from guardproxy.redact import redact_json_text
from guardproxy.store.base import AuditRecord, Store
from guardproxy.store.chain import ChainProblem, ChainVerifier, chain_genesis


@dataclass(frozen=True)
class Replayed:
    """One recorded decision next to what the bundle decides now on the same input."""

    record_id: str
    at: datetime
    session_id: str
    summary: str
    recorded: str
    replayed: str
    recorded_rules: list[str]
    replayed_rules: list[str]
    exact: bool
    """The replayed decision is identical, field for field, to the recorded one."""
    input_intact: bool
    """The recorded input hashes to the decision's input hash (redaction changed nothing)."""
    chain_intact: bool = True
    """The record verified in the audit chain (False: replayed despite a break there)."""

    @property
    def changed(self) -> bool:
        return self.recorded != self.replayed

    @property
    def transition(self) -> str:
        return f"{self.recorded}→{self.replayed}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.record_id,
            "at": self.at.isoformat(),
            "session": self.session_id,
            "action": self.summary,
            "recorded": self.recorded,
            "replayed": self.replayed,
            "recorded_rules": self.recorded_rules,
            "replayed_rules": self.replayed_rules,
            "exact": self.exact,
            "input_intact": self.input_intact,
            "chain_intact": self.chain_intact,
        }


def as_recorded(decision: Decision) -> dict[str, Any]:
    """``decision`` as a decision record keeps it (redacted), to compare with one."""
    loaded: dict[str, Any] = json.loads(redact_json_text(decision.model_dump_json()))
    return loaded


def replay_record(record: AuditRecord, bundle: Bundle) -> Replayed:
    """Re-evaluate one ``decision`` record's input under ``bundle``."""
    payload = json.loads(record.payload_json)
    action = Action.model_validate(payload["action"])
    context = Context.model_validate(payload["context"])
    recorded: dict[str, Any] = payload["decision"]
    decision = evaluate(bundle, action, context)
    replayed = as_recorded(decision)
    return Replayed(
        record_id=record.record_id,
        at=record.at,
        session_id=record.session_id,
        summary=DecisionView.of(record).summary,
        recorded=str(recorded.get("outcome", "")),
        replayed=decision.outcome.value,
        recorded_rules=list(recorded.get("determining_rules") or []),
        replayed_rules=list(decision.determining_rules),
        exact=replayed == recorded,
        input_intact=input_hash(action, context) == recorded.get("input_hash"),
    )


@dataclass
class ReplayReport:
    """Replayed decisions and their summary: counts by transition, the changes."""

    results: list[Replayed] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    """Decision records whose input no longer parses (written by another version)."""

    @property
    def changes(self) -> list[Replayed]:
        return [r for r in self.results if r.changed]

    @property
    def rule_changes(self) -> list[Replayed]:
        """Same outcome, decided by other rules."""
        return [
            r
            for r in self.results
            if not r.changed and sorted(r.recorded_rules) != sorted(r.replayed_rules)
        ]

    def transitions(self) -> dict[str, int]:
        return dict(sorted(Counter(r.transition for r in self.changes).items()))

    def distribution(self) -> dict[str, int]:
        return dict(sorted(Counter(r.replayed for r in self.results).items()))

    def as_dict(self) -> dict[str, Any]:
        return {
            "replayed": len(self.results),
            "changed": len(self.changes),
            "exact": sum(r.exact for r in self.results),
            "input_altered_by_redaction": sum(not r.input_intact for r in self.results),
            "unreadable": self.unreadable,
            "transitions": self.transitions(),
            "distribution": self.distribution(),
            "changes": [r.as_dict() for r in self.changes],
            "rule_changes": [r.as_dict() for r in self.rule_changes],
        }


def replay_records(
    records: Iterable[AuditRecord], bundle: Bundle, *, broken: Collection[str] = ()
) -> ReplayReport:
    """Replay every ``decision`` record of ``records`` (other kinds are skipped);
    ``broken``: ids of records the chain check found a problem at."""
    report = ReplayReport()
    for record in records:
        if record.kind != "decision":
            continue
        try:
            result = replay_record(record, bundle)
        except (ValueError, KeyError):  # pydantic's ValidationError is a ValueError
            report.unreadable.append(record.record_id)
            continue
        if record.record_id in broken:
            result = replace(result, chain_intact=False)
        report.results.append(result)
    return report


# -- the chain replay reads ---------------------------------------------------------


@dataclass
class ChainCheck:
    """What was verified of the audit chain a replay read, and every break found."""

    records: int = 0
    problems: list[ChainProblem] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.problems

    @property
    def broken_records(self) -> set[str]:
        return {problem.record_id for problem in self.problems}

    def first(self) -> str:
        """The first break, with how many more there are, for a one-line message."""
        more = len(self.problems) - 1
        return str(self.problems[0]) + (f" (and {more} more)" if more > 0 else "")

    def as_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "intact": self.intact,
            "problems": [str(problem) for problem in self.problems],
        }


def checked_chain(store: Store, check: ChainCheck) -> Iterator[AuditRecord]:
    """Every record of every chain, in the order they were appended, each verified against
    its predecessor in its chain as it is read (sequence, previous hash, own hash); breaks
    are collected in ``check``."""
    for record in checked_records(store, ChainVerifier(), check.problems):
        check.records += 1
        yield record


def checked_record(store: Store, record_id: str, check: ChainCheck) -> AuditRecord | None:
    """One record by id, verified with its neighbours in its chain: its own hash, its link
    to the record before it, and the next record's link to it (which catches a rewrite that
    recomputed its hash); breaks at it are collected in ``check``."""
    record = store.get_audit_record(record_id)
    if record is None:
        return None
    start = max(record.seq - 1, 1)
    window = store.chain_records(record.chain, after_seq=start - 1, limit=3)
    upto = [r for r in window if r.seq <= record.seq] or [record]
    first = upto[0]
    prev = chain_genesis(record.chain) if first.seq == 1 else first.prev_hash
    verifier = ChainVerifier({record.chain: (start - 1, prev)})
    problems = [
        problem for each in upto for problem in verifier.check(each) if problem.seq == record.seq
    ]
    after = next((r for r in window if r.seq == record.seq + 1), None)
    if after is not None and after.prev_hash != record.hash:
        problems.append(
            ChainProblem(
                record.chain,
                record.seq,
                record.record_id,
                "the record after it does not follow it (rewritten with a new hash)",
            )
        )
    check.problems.extend(problems)
    check.records += 1
    return record


# -- shadow -----------------------------------------------------------------------


@dataclass(frozen=True)
class ShadowDifference:
    record_id: str
    at: datetime
    session_id: str
    summary: str
    enforced: str
    shadow: str
    source: str
    shadow_rules: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.record_id,
            "at": self.at.isoformat(),
            "session": self.session_id,
            "action": self.summary,
            "enforced": self.enforced,
            "shadow": self.shadow,
            "source": self.source,
            "shadow_rules": self.shadow_rules,
        }


def shadow_differences(records: Iterable[AuditRecord]) -> tuple[int, list[ShadowDifference]]:
    """(decisions with a shadow outcome, those where it differs from the enforced one)."""
    shadowed = 0
    differences: list[ShadowDifference] = []
    for record in records:
        if record.kind != "decision":
            continue
        payload = json.loads(record.payload_json)
        shadow = payload.get("shadow")
        if not shadow:
            continue
        shadowed += 1
        enforced = str((payload.get("decision") or {}).get("outcome", ""))
        if shadow.get("outcome") != enforced:
            differences.append(
                ShadowDifference(
                    record_id=record.record_id,
                    at=record.at,
                    session_id=record.session_id,
                    summary=DecisionView.of(record).summary,
                    enforced=enforced,
                    shadow=str(shadow.get("outcome")),
                    source=str(shadow.get("source", "")),
                    shadow_rules=list(shadow.get("determining_rules") or []),
                )
            )
    return shadowed, differences
