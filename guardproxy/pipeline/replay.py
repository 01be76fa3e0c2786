"""Replay of captured traffic: every request decided by the proxy's own pipeline, in order.

A capture (a mitmproxy flow file; guardproxy/intercept/replay.py reads it) is a sequence
of :class:`Exchange`: the request as the proxy saw it, its session, when it was made and
the response that came back. Each goes through the steps the proxy runs
(:class:`~guardproxy.pipeline.steps.Pipeline`): recognised; ids resolved to names learned
from the capture's earlier responses; the session as actor (``host-mismatch`` included);
the context from a history that saw the capture's earlier requests, computed when the
bundle reads it; decided. Then the outcome goes into that history and the response of a
forwarded request teaches names, as on the proxy. Under the bundle that decided the
traffic, replay reproduces each decision and its input hash; with the proxy's store at
hand, each request that names its recorded decision is compared with it field for field.

What a capture does not tell: what a human did with a hold (replay counts a held
request as held in the history, as the proxy does while nobody has answered; an
approval on the proxy counted it as forwarded), and the proxy's timing (a read goes
into the proxy's history in a batch 50 ms later, so a request that followed a read
closer than that was decided without it; replay counts it). The shadow bundle the
proxy may have run is not known either: its history-reading rules made the proxy
compute history for more requests than the bundle replayed under would.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from guardproxy.audit.replay import ChainCheck, as_recorded, checked_record
from guardproxy.context import SessionInfo
from guardproxy.pipeline.steps import FixedPolicies, Pipeline, Verdict, learns_from
from guardproxy.policy import Bundle
from guardproxy.recognise.request import HttpRequest, RecogniseSettings
from guardproxy.session.history import HistorySettings, SessionHistory
from guardproxy.store.base import Store
from guardproxy.store.sqlite import SqliteStore


@dataclass(frozen=True)
class Exchange:
    """One request of a capture and what came back."""

    request: HttpRequest
    session: SessionInfo
    at: datetime
    """When the request was made: the decision's ``now``."""
    status: int | None = None
    """The response's status; None if none came."""
    body: bytes = b""
    """The response body as it came over the wire (content-encoding not undone)."""
    decision_id: str | None = None
    """The proxy's recorded decision for this request, if the capture names one."""


@dataclass(frozen=True)
class FlowDecision:
    """One request of a capture, decided as the proxy would have in that session."""

    index: int
    at: datetime
    session_id: str
    summary: str
    outcome: str
    rules: list[str]
    input_hash: str
    recorded: str | None
    """The recorded decision's outcome, if the request names one found in the store."""
    exact: bool | None = None
    """The decision is identical, field for field, to the recorded one (None: none)."""
    same_input: bool | None = None
    """The input hashes as the recorded one's did: replay computed what the proxy did."""
    verdict: Verdict | None = field(default=None, compare=False, repr=False)
    """The pipeline's whole verdict (action and context as decided)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "flow": self.index,
            "at": self.at.isoformat(),
            "session": self.session_id,
            "action": self.summary,
            "outcome": self.outcome,
            "rules": self.rules,
            "input_hash": self.input_hash,
            "recorded": self.recorded,
            "exact": self.exact,
            "same_input": self.same_input,
        }


@dataclass
class FlowReport:
    decisions: list[FlowDecision] = field(default_factory=list)
    skipped: int = 0
    """Flows that are not HTTP requests (TCP, UDP, DNS)."""
    chain: ChainCheck = field(default_factory=ChainCheck)
    """The recorded decisions looked up, verified in the audit chain."""

    def distribution(self) -> dict[str, int]:
        return dict(sorted(Counter(d.outcome for d in self.decisions).items()))

    @property
    def differences(self) -> list[FlowDecision]:
        return [d for d in self.decisions if d.recorded is not None and d.recorded != d.outcome]

    @property
    def compared(self) -> list[FlowDecision]:
        """The decisions that have a recorded one to compare with."""
        return [d for d in self.decisions if d.recorded is not None]

    def as_dict(self) -> dict[str, Any]:
        compared = self.compared
        return {
            "requests": len(self.decisions),
            "skipped": self.skipped,
            "distribution": self.distribution(),
            "with_recorded_decision": len(compared),
            "exact": sum(bool(d.exact) for d in compared),
            "same_input": sum(bool(d.same_input) for d in compared),
            "differences": [d.as_dict() for d in self.differences],
            "decisions": [d.as_dict() for d in self.decisions],
        }


def replay_exchanges(
    exchanges: Iterable[Exchange | None],
    bundle: Bundle,
    settings: RecogniseSettings,
    *,
    history_settings: HistorySettings | None = None,
    recorded: Store | None = None,
) -> FlowReport:
    """Decide every exchange in order (None: a flow that is not HTTP, counted as skipped,
    its index kept), with a fresh history and name cache that see only the capture.

    ``settings`` and ``history_settings`` should be the proxy's (its environments,
    Kubernetes hosts, destructive budget) for a faithful replay; ``recorded`` (the
    proxy's store) supplies the recorded decisions, verified in its audit chain.
    """
    report = FlowReport()
    with tempfile.TemporaryDirectory(prefix="guardproxy-replay-") as scratch:
        history_store = SqliteStore(Path(scratch) / "history.db")
        try:
            history = SessionHistory(history_store, history_settings)
            pipeline = Pipeline(FixedPolicies(bundle), settings, history)
            for index, exchange in enumerate(exchanges):
                if exchange is None:
                    report.skipped += 1
                    continue
                verdict = _replay(pipeline, exchange)
                report.decisions.append(_compared(index, exchange, verdict, recorded, report))
            history.flush()
        finally:
            history_store.close()
    return report


def _replay(pipeline: Pipeline, exchange: Exchange) -> Verdict:
    """The proxy's steps for one exchange; with no human to answer a hold, what the
    gate does is what the policy decided."""
    verdict = pipeline.decide(exchange.request, exchange.session, exchange.at)
    learner = pipeline.after(verdict, verdict.decision.outcome.value, exchange.at)
    if learner is not None and exchange.status is not None and learns_from(exchange.status):
        if exchange.body:
            learner(exchange.body)
        learner(b"")  # the end of the response: what was kept is learned from
    return verdict


def _compared(
    index: int,
    exchange: Exchange,
    verdict: Verdict,
    store: Store | None,
    report: FlowReport,
) -> FlowDecision:
    decision = verdict.decision
    recorded: dict[str, Any] | None = None
    if store is not None and exchange.decision_id is not None:
        record = checked_record(store, exchange.decision_id, report.chain)
        if record is not None and record.kind == "decision":
            recorded = _recorded_decision(record.payload_json)
    return FlowDecision(
        index=index,
        at=exchange.at,
        session_id=exchange.session.id,
        summary=verdict.action.summary(),
        outcome=decision.outcome.value,
        rules=list(decision.determining_rules),
        input_hash=decision.input_hash,
        recorded=None if recorded is None else str(recorded.get("outcome", "")),
        exact=None if recorded is None else as_recorded(decision) == recorded,
        same_input=None if recorded is None else recorded.get("input_hash") == decision.input_hash,
        verdict=verdict,
    )


def _recorded_decision(payload_json: str) -> dict[str, Any]:
    payload = json.loads(payload_json)
    decision = payload.get("decision") if isinstance(payload, dict) else None
    return decision if isinstance(decision, dict) else {}


__all__ = ["Exchange", "FlowDecision", "FlowReport", "replay_exchanges"]
