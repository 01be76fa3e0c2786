"""Delete-and-recreate sequences sent through the real decision guarded, in process.

Each request is a captured boto3 request or a hand-built Kubernetes one, and goes
through guardproxy's own guarded (recognise → names → actor → session history →
policy, the shipped bundle), the gate (real SqliteStore), then back into the history
with the gate's outcome: the calls the Guard addon makes, without mitmproxy.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from recognise_support import capture, http

from guardproxy.action import Action, Verb
from guardproxy.approvals.service import ApprovalService
from guardproxy.context import Context, SessionInfo
from guardproxy.gate.gate import Answer, Gate
from guardproxy.pipeline import Pipeline
from guardproxy.policy import Decision, evaluate
from guardproxy.recognise import RecogniseSettings
from guardproxy.recognise.request import HttpRequest
from guardproxy.server import load_policies
from guardproxy.session.history import HistorySettings, SessionHistory
from guardproxy.store import Approver, HoldState, SqliteStore

POLICIES = Path(__file__).resolve().parents[2] / "policies"
CLUSTER = "127.0.0.1:6443"
SETTINGS = RecogniseSettings(kubernetes_hosts=(CLUSTER,))
T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Step:
    action: Action
    context: Context
    decision: Decision
    outcome: str
    message: str


class Guarded:
    """One guarded session, with a clock the test moves."""

    def __init__(self, path: Path, *, budget: int = 10) -> None:
        self.store = SqliteStore(path)
        self.bundle = load_policies(POLICIES)
        self.now = T0
        self.gate = Gate(self.store, self.bundle, hold_window=0.001, clock=self.clock)
        self.approvals = ApprovalService(self.store, lambda: self.bundle, clock=self.clock)
        self.settings = HistorySettings(destructive_budget=budget)
        self.history = SessionHistory(self.store, self.settings)
        self.pipeline = Pipeline(self.gate, SETTINGS, self.history)
        self.session = SessionInfo(id="s-1", name="test", agent="claude-code", anonymous=False)
        self.approvers = {
            name: Approver(
                name=name, groups=("senior", "sre-oncall"), token_hash=name, created_at=T0
            )
            for name in ("alice", "bob")
        }

    def clock(self) -> datetime:
        return self.now

    def send(self, request: HttpRequest, *, after: float = 1.0) -> Step:
        self.now += timedelta(seconds=after)
        verdict = self.pipeline.decide(request, self.session, self.now)
        action, context, decision = verdict.action, verdict.context, verdict.decision
        effect = asyncio.run(self.gate.handle(request, action, context, decision))
        outcome = effect.kind if isinstance(effect, Answer) else "allow"
        self.pipeline.after(verdict, outcome, self.now)
        message = effect.answer.body.decode() if isinstance(effect, Answer) else ""
        return Step(action, context, decision, outcome, message)

    def approve(self, step: Step) -> None:
        holds = self.store.list_holds(session_id=self.session.id)
        pending = [h for h in holds if h.summary == step.action.summary()]
        for name in ("alice", "bob"):  # two seniors: enough for every shipped hold rule
            outcome = asyncio.run(
                self.approvals.decide_hold(
                    pending[0].id, self.approvers[name], approve=True, reason="ok"
                )
            )
            if outcome.hold.state is not HoldState.PENDING:
                return

    def restart(self) -> None:
        """A new tracker on the same store, as after a proxy restart."""
        self.history.flush()
        self.history = SessionHistory(self.store, self.settings)
        self.pipeline = Pipeline(self.gate, SETTINGS, self.history)

    def close(self) -> None:
        self.history.flush()
        self.gate.flush()
        self.store.close()


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[Guarded]:
    found = Guarded(tmp_path / "guardproxy.db")
    yield found
    found.close()


def cfn(operation: str, stack: str) -> HttpRequest:
    params = {"StackName": stack}
    if operation == "CreateStack":
        params["TemplateBody"] = "{}"
    return capture("cloudformation").call(operation, params)


def k8s(method: str, path: str, body: dict[str, object] | None = None) -> HttpRequest:
    raw = json.dumps(body).encode() if body is not None else b""
    return http(method, path, headers={"Content-Type": "application/json"}, body=raw)


def named(name: str) -> dict[str, object]:
    return {"metadata": {"name": name}}


def test_cloudformation_delete_then_create_holds_the_create(guarded: Guarded) -> None:
    polled = [guarded.send(cfn("DescribeStacks", "staging-calc")) for _ in range(3)]
    deleted = guarded.send(cfn("DeleteStack", "staging-calc"))
    guarded.send(cfn("DescribeStacks", "staging-calc"), after=30)
    created = guarded.send(cfn("CreateStack", "staging-calc"), after=30)

    assert [s.outcome for s in polled] + [deleted.outcome] == ["allow"] * 4
    assert created.outcome == "hold"
    assert created.decision.determining_rules == ["sequences/hold-recreate"]
    assert created.context.signals.recreate
    assert "CreateStack re-creates aws:cloudformation:stack staging-calc, deleted by aws " in (
        created.message
    )
    assert "DeleteStack staging-calc at 12:00:04Z in this session" in created.message
    assert created.context.history.session.verb.read == 4
    assert created.context.resource.deleted_in_session


def test_prod_delete_approved_then_recreate_is_held_again(guarded: Guarded) -> None:
    first = guarded.send(cfn("DeleteStack", "prod-calc"))
    assert first.outcome == "hold"
    guarded.approve(first)
    retried = guarded.send(cfn("DeleteStack", "prod-calc"), after=5)
    assert retried.outcome == "allow"  # the approved delete went through, once

    created = guarded.send(cfn("CreateStack", "prod-calc"), after=60)
    assert created.outcome == "hold"
    assert "sequences/hold-recreate" in created.decision.determining_rules
    assert "deleted by aws cloudformation DeleteStack prod-calc" in created.message


def test_a_held_delete_is_not_a_tombstone(guarded: Guarded) -> None:
    assert guarded.send(cfn("DeleteStack", "prod-calc")).outcome == "hold"
    created = guarded.send(cfn("CreateStack", "prod-calc"))
    assert not created.context.signals.recreate
    assert created.context.history.recent[-1].outcome == "hold"
    assert created.context.history.session.verb.destroy == 1
    assert created.context.history.session.destructive == 0


def test_recreate_after_the_window_is_not_held(guarded: Guarded) -> None:
    guarded.send(cfn("DeleteStack", "staging-calc"))
    created = guarded.send(cfn("CreateStack", "staging-calc"), after=3601)
    assert created.outcome == "allow"
    assert created.context.resource.deleted


def test_namespace_delete_then_create_then_reapply(guarded: Guarded) -> None:
    deleted = guarded.send(k8s("DELETE", "/api/v1/namespaces/staging-app"))
    guarded.send(k8s("GET", "/api/v1/namespaces/staging-app"), after=2)
    namespace = guarded.send(k8s("POST", "/api/v1/namespaces", named("staging-app")))
    inside = guarded.send(
        k8s("POST", "/apis/apps/v1/namespaces/staging-app/deployments", named("web"))
    )

    assert deleted.outcome == "allow"
    assert namespace.outcome == "hold"
    assert namespace.decision.determining_rules == ["sequences/hold-recreate"]
    assert "create re-creates k8s:core:namespaces staging-app" in namespace.message
    # the namespace create was held, yet the deployment is created inside a namespace
    # this session destroyed: an environment rebuild, two seniors
    assert inside.outcome == "hold"
    assert inside.decision.determining_rules == ["sequences/hold-environment-rebuild"]
    assert inside.decision.approval is not None and inside.decision.approval.quorum == 2
    assert "creates inside k8s:127.0.0.1:6443:namespace/staging-app" in inside.message


def test_kubectl_replace_force(guarded: Guarded) -> None:
    path = "/apis/apps/v1/namespaces/staging-app/deployments"
    deleted = guarded.send(k8s("DELETE", f"{path}/web"))
    guarded.send(k8s("GET", f"{path}/web"), after=1)
    created = guarded.send(k8s("POST", path, named("web")), after=1)
    assert deleted.outcome == "allow"
    assert created.outcome == "hold"
    assert created.context.signals.recreate_of.startswith("by k8s apps delete web at 12:00:01Z")
    assert "deleted by k8s apps delete web" in created.message


def test_two_recreates_are_an_environment_rebuild(guarded: Guarded) -> None:
    path = "/apis/apps/v1/namespaces/staging-app/deployments"
    for name in ("web", "api"):
        guarded.send(k8s("DELETE", f"{path}/{name}"))
    first = guarded.send(k8s("POST", path, named("web")))
    guarded.approve(first)
    assert guarded.send(k8s("POST", path, named("web"))).outcome == "allow"
    second = guarded.send(k8s("POST", path, named("api")))
    assert second.context.signals.environment_rebuild
    assert "2 resources re-created" in second.context.signals.description
    assert set(second.decision.determining_rules) == {
        "sequences/hold-recreate",
        "sequences/hold-environment-rebuild",
    }


def test_many_deletes_exceed_the_budget(tmp_path: Path) -> None:
    guarded = Guarded(tmp_path / "guardproxy.db", budget=5)
    try:
        path = "/api/v1/namespaces/dev-app/configmaps"
        steps = [guarded.send(k8s("DELETE", f"{path}/c{i}"), after=5) for i in range(5)]
        assert [s.outcome for s in steps] == ["allow"] * 5
        sixth = guarded.send(k8s("POST", path, named("new")), after=5)
        read = guarded.send(k8s("GET", f"{path}/c9"))
        later = guarded.send(k8s("POST", path, named("later")), after=600)
    finally:
        guarded.close()
    assert sixth.context.history.m1.destructive == 5
    assert sixth.outcome == "hold"
    assert sixth.decision.determining_rules == ["sequences/hold-over-destructive-budget"]
    assert "This session made 5 deletes or destroys in 10 minutes" in sixth.message
    assert read.outcome == "allow"
    assert later.outcome == "allow"  # the 10-minute window moved on


def test_protection_removal_then_delete(guarded: Guarded) -> None:
    rds = capture("rds")
    removed = guarded.send(
        rds.call(
            "ModifyDBInstance", {"DBInstanceIdentifier": "staging-db", "DeletionProtection": False}
        )
    )
    deleted = guarded.send(rds.call("DeleteDBInstance", {"DBInstanceIdentifier": "staging-db"}))
    assert removed.outcome == "allow"  # only prod removals are held outright
    assert deleted.context.signals.protection_removed_earlier
    assert deleted.outcome == "hold"
    assert deleted.decision.determining_rules == ["sequences/hold-delete-after-protection-removal"]


def test_history_survives_a_restart(guarded: Guarded) -> None:
    for _ in range(3):
        guarded.send(cfn("DescribeStacks", "staging-calc"))
    guarded.send(cfn("DeleteStack", "staging-calc"))
    guarded.restart()
    created = guarded.send(cfn("CreateStack", "staging-calc"))
    assert created.outcome == "hold"
    assert created.context.signals.recreate
    history = created.context.history
    assert (history.session.total, history.m1.total, history.session.verb.read) == (4, 4, 3)
    assert [r.verb for r in history.recent] == [Verb.READ] * 3 + [Verb.DESTROY]


def test_a_recorded_decision_replays_exactly_after_more_history(guarded: Guarded) -> None:
    guarded.send(cfn("DeleteStack", "staging-calc"))
    created = guarded.send(cfn("CreateStack", "staging-calc"))
    records = guarded.store.list_decisions(session_id="s-1", outcome="hold")
    for _ in range(12):  # the session moves on: more deletes, over the budget
        guarded.send(k8s("DELETE", "/api/v1/namespaces/dev-app/configmaps/x"))
    replayed = evaluate(
        guarded.bundle,
        Action.model_validate_json(records[0].action_json),
        Context.model_validate_json(records[0].context_json),
    )
    assert replayed == created.decision
    now = guarded.history.context(created.action, guarded.session, guarded.now)
    assert now.signals.destructive_budget_exceeded  # a fresh evaluation would differ


def test_sqs_delete_by_url_then_create_by_name_is_a_recreate(guarded: Guarded) -> None:
    """DeleteQueue names the account in its URL, CreateQueue does not: one key for both."""
    sqs = capture("sqs")
    url = "https://sqs.us-east-1.amazonaws.com/111122223333/staging-orders"
    deleted = guarded.send(sqs.call("DeleteQueue", {"QueueUrl": url}))
    created = guarded.send(sqs.call("CreateQueue", {"QueueName": "staging-orders"}), after=20)
    assert deleted.action.scope.account == "111122223333"
    assert deleted.action.resource.key == created.action.resource.key
    assert created.action.resource.key == "aws::us-east-1:aws:sqs:queue/staging-orders"
    assert created.outcome == "hold" and created.context.signals.recreate
    assert "deleted by aws sqs DeleteQueue staging-orders" in created.message


def test_cloudformation_delete_by_arn_then_create_by_name_is_a_recreate(
    guarded: Guarded,
) -> None:
    arn = "arn:aws:cloudformation:us-east-1:111122223333:stack/staging-calc/4f1d-9a2b"
    deleted = guarded.send(cfn("DeleteStack", arn))
    created = guarded.send(cfn("CreateStack", "staging-calc"), after=20)
    assert deleted.action.resource.key == created.action.resource.key
    assert created.outcome == "hold" and created.context.signals.recreate
