"""What the gate and the approvals service ask of impact previews and safety steps.

The gatherers and the steps live in :mod:`guardproxy.impact`, a layer above this one
(they use the broker's real credentials and the recognisers' parsers); the server
hands them in through these two small interfaces, so neither the gate nor the approvals
service depends on how a provider is asked:

* :class:`ImpactPreviews`: the gate tells it about each new hold, and it gathers
  read-only facts about the target in the background. It returns at once and never
  raises: the live hold is never delayed by it, and the decision never reads it.
* :class:`SafetySteps`: before the approvals service releases a hold whose steps are
  due (required by the policy, or chosen by an approver), it performs each one and
  waits for it (bounded). A step that fails leaves the hold pending: nothing is
  released.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from guardproxy.action import Action
from guardproxy.policy.decision import StepOffer
from guardproxy.recognise.request import HttpRequest
from guardproxy.store.base import Hold, SafetyStepRecord

__all__ = ["ImpactPreviews", "SafetySteps", "StepOutcome", "release_text", "step_text"]


class ImpactPreviews(Protocol):
    def held(self, hold: Hold, request: HttpRequest, action: Action) -> None:
        """A hold was just created for ``request``: gather its impact in the background.
        Returns at once; never raises."""
        ...


@dataclass(frozen=True, slots=True)
class StepOutcome:
    """What one safety step did: its result (a snapshot id, a file, a ref) or its error."""

    step: str
    ok: bool
    started_at: datetime
    finished_at: datetime
    result: dict[str, Any] = field(default_factory=dict)
    error: str = ""

    @property
    def seconds(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()


class SafetySteps(Protocol):
    def unavailable(self, hold: Hold, step: StepOffer) -> str:
        """Why ``step`` cannot be performed for this hold ("" if it can): refused at the
        approval, before anyone waits for it."""
        ...

    async def perform(self, hold: Hold, step: StepOffer) -> StepOutcome:
        """Perform ``step`` for the held action and wait for it, within its bound;
        a failure is an outcome (``ok`` False), never an exception."""
        ...


def step_text(step: str, result: dict[str, Any], seconds: float) -> str:
    """One line: ``snapshot: rds snapshot guardproxy-h-x (available, 12.3 s)``."""
    said = str(result.get("text") or "") or ", ".join(
        f"{k} {v}" for k, v in result.items() if isinstance(v, str | int | float)
    )
    return f"{step}: {said or 'done'} ({seconds:.1f} s)"


def release_text(records: list[SafetyStepRecord]) -> str:
    """What the agent is told about the safety steps run before its request was released
    ("" when none ran): one clause per succeeded step."""
    done = [r for r in records if r.state == "succeeded"]
    parts = []
    for record in done:
        try:
            result = json.loads(record.result_json)
        except ValueError:
            result = {}
        seconds = (record.finished_at - record.started_at).total_seconds()
        parts.append(step_text(record.step, result if isinstance(result, dict) else {}, seconds))
    return "; ".join(parts)
