"""Delete-and-recreate sequences replayed through the real pipeline, in process.

Each request is a captured boto3 request or a hand-built Kubernetes one, and goes
recognise → session history → policy (the shipped bundle) → gate (real SqliteStore),
then back into the history with the gate's outcome, as guardproxy's Guard addon does.
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
from guardproxy.policy import Decision, evaluate
from guardproxy.recognise import RecogniseSettings, recognise
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


class Pipeline:
    """One guarded session, with a clock the test moves."""

    def __init__(self, path: Path, *, budget: int = 10) -> None:
        self.store = SqliteStore(path)
        self.bundle = load_policies(POLICIES)
        self.now = T0
        self.gate = Gate(self.store, self.bundle, hold_window=0.001, clock=self.clock)
        self.approvals = ApprovalService(self.store, lambda: self.bundle, clock=self.clock)
        self.settings = HistorySettings(destructive_budget=budget)
        self.history = SessionHistory(self.store, self.settings)
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
        action = recognise(request, SETTINGS)
        context = self.history.context(action, self.session, self.now)
        decision = evaluate(self.bundle, action, context)
        verdict = asyncio.run(self.gate.handle(request, action, context, decision))
        outcome = verdict.kind if isinstance(verdict, Answer) else "allow"
        self.history.record(action, self.session.id, outcome, self.now)
        message = verdict.answer.body.decode() if isinstance(verdict, Answer) else ""
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

    def close(self) -> None:
        self.history.flush()
        self.gate.flush()
        self.store.close()


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[Pipeline]:
    found = Pipeline(tmp_path / "guardproxy.db")
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


def test_cloudformation_delete_then_create_holds_the_create(pipeline: Pipeline) -> None:
    polled = [pipeline.send(cfn("DescribeStacks", "staging-calc")) for _ in range(3)]
    deleted = pipeline.send(cfn("DeleteStack", "staging-calc"))
    pipeline.send(cfn("DescribeStacks", "staging-calc"), after=30)
    created = pipeline.send(cfn("CreateStack", "staging-calc"), after=30)

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


def test_prod_delete_approved_then_recreate_is_held_again(pipeline: Pipeline) -> None:
    first = pipeline.send(cfn("DeleteStack", "prod-calc"))
    assert first.outcome == "hold"
    pipeline.approve(first)
    retried = pipeline.send(cfn("DeleteStack", "prod-calc"), after=5)
    assert retried.outcome == "allow"  # the approved delete went through, once

    created = pipeline.send(cfn("CreateStack", "prod-calc"), after=60)
    assert created.outcome == "hold"
    assert "sequences/hold-recreate" in created.decision.determining_rules
    assert "deleted by aws cloudformation DeleteStack prod-calc" in created.message


def test_a_held_delete_is_not_a_tombstone(pipeline: Pipeline) -> None:
    assert pipeline.send(cfn("DeleteStack", "prod-calc")).outcome == "hold"
    created = pipeline.send(cfn("CreateStack", "prod-calc"))
    assert not created.context.signals.recreate
    assert created.context.history.recent[-1].outcome == "hold"
    assert created.context.history.session.verb.destroy == 1
    assert created.context.history.session.destructive == 0


def test_recreate_after_the_window_is_not_held(pipeline: Pipeline) -> None:
    pipeline.send(cfn("DeleteStack", "staging-calc"))
    created = pipeline.send(cfn("CreateStack", "staging-calc"), after=3601)
    assert created.outcome == "allow"
    assert created.context.resource.deleted


def test_namespace_delete_then_create_then_reapply(pipeline: Pipeline) -> None:
    deleted = pipeline.send(k8s("DELETE", "/api/v1/namespaces/staging-app"))
    pipeline.send(k8s("GET", "/api/v1/namespaces/staging-app"), after=2)
    namespace = pipeline.send(k8s("POST", "/api/v1/namespaces", named("staging-app")))
    inside = pipeline.send(
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


def test_kubectl_replace_force(pipeline: Pipeline) -> None:
    path = "/apis/apps/v1/namespaces/staging-app/deployments"
    deleted = pipeline.send(k8s("DELETE", f"{path}/web"))
    pipeline.send(k8s("GET", f"{path}/web"), after=1)
    created = pipeline.send(k8s("POST", path, named("web")), after=1)
    assert deleted.outcome == "allow"
    assert created.outcome == "hold"
    assert created.context.signals.recreate_of.startswith("by k8s apps delete web at 12:00:01Z")
    assert "deleted by k8s apps delete web" in created.message


def test_two_recreates_are_an_environment_rebuild(pipeline: Pipeline) -> None:
    path = "/apis/apps/v1/namespaces/staging-app/deployments"
    for name in ("web", "api"):
        pipeline.send(k8s("DELETE", f"{path}/{name}"))
    first = pipeline.send(k8s("POST", path, named("web")))
    pipeline.approve(first)
    assert pipeline.send(k8s("POST", path, named("web"))).outcome == "allow"
    second = pipeline.send(k8s("POST", path, named("api")))
    assert second.context.signals.environment_rebuild
    assert "2 resources re-created" in second.context.signals.description
    assert set(second.decision.determining_rules) == {
        "sequences/hold-recreate",
        "sequences/hold-environment-rebuild",
    }


def test_many_deletes_exceed_the_budget(tmp_path: Path) -> None:
    pipeline = Pipeline(tmp_path / "guardproxy.db", budget=5)
    try:
        path = "/api/v1/namespaces/dev-app/configmaps"
        steps = [pipeline.send(k8s("DELETE", f"{path}/c{i}"), after=5) for i in range(5)]
        assert [s.outcome for s in steps] == ["allow"] * 5
        sixth = pipeline.send(k8s("POST", path, named("new")), after=5)
        read = pipeline.send(k8s("GET", f"{path}/c9"))
        later = pipeline.send(k8s("POST", path, named("later")), after=600)
    finally:
        pipeline.close()
    assert sixth.context.history.m1.destructive == 5
    assert sixth.outcome == "hold"
    assert sixth.decision.determining_rules == ["sequences/hold-over-destructive-budget"]
    assert "This session made 5 deletes or destroys in 10 minutes" in sixth.message
    assert read.outcome == "allow"
    assert later.outcome == "allow"  # the 10-minute window moved on


def test_protection_removal_then_delete(pipeline: Pipeline) -> None:
    rds = capture("rds")
    removed = pipeline.send(
        rds.call(
            "ModifyDBInstance", {"DBInstanceIdentifier": "staging-db", "DeletionProtection": False}
        )
    )
    deleted = pipeline.send(rds.call("DeleteDBInstance", {"DBInstanceIdentifier": "staging-db"}))
    assert removed.outcome == "allow"  # only prod removals are held outright
    assert deleted.context.signals.protection_removed_earlier
    assert deleted.outcome == "hold"
    assert deleted.decision.determining_rules == ["sequences/hold-delete-after-protection-removal"]


def test_history_survives_a_restart(pipeline: Pipeline) -> None:
    for _ in range(3):
        pipeline.send(cfn("DescribeStacks", "staging-calc"))
    pipeline.send(cfn("DeleteStack", "staging-calc"))
    pipeline.restart()
    created = pipeline.send(cfn("CreateStack", "staging-calc"))
    assert created.outcome == "hold"
    assert created.context.signals.recreate
    history = created.context.history
    assert (history.session.total, history.m1.total, history.session.verb.read) == (4, 4, 3)
    assert [r.verb for r in history.recent] == [Verb.READ] * 3 + [Verb.DESTROY]


def test_a_recorded_decision_replays_exactly_after_more_history(pipeline: Pipeline) -> None:
    pipeline.send(cfn("DeleteStack", "staging-calc"))
    created = pipeline.send(cfn("CreateStack", "staging-calc"))
    records = pipeline.store.list_decisions(session_id="s-1", outcome="hold")
    for _ in range(12):  # the session moves on: more deletes, over the budget
        pipeline.send(k8s("DELETE", "/api/v1/namespaces/dev-app/configmaps/x"))
    replayed = evaluate(
        pipeline.bundle,
        Action.model_validate_json(records[0].action_json),
        Context.model_validate_json(records[0].context_json),
    )
    assert replayed == created.decision
    now = pipeline.history.context(created.action, pipeline.session, pipeline.now)
    assert now.signals.destructive_budget_exceeded  # a fresh evaluation would differ


def test_sqs_delete_by_url_then_create_by_name_is_a_recreate(pipeline: Pipeline) -> None:
    """DeleteQueue names the account in its URL, CreateQueue does not: one key for both."""
    sqs = capture("sqs")
    url = "https://sqs.us-east-1.amazonaws.com/111122223333/staging-orders"
    deleted = pipeline.send(sqs.call("DeleteQueue", {"QueueUrl": url}))
    created = pipeline.send(sqs.call("CreateQueue", {"QueueName": "staging-orders"}), after=20)
    assert deleted.action.scope.account == "111122223333"
    assert deleted.action.resource.key == created.action.resource.key
    assert created.action.resource.key == "aws::us-east-1:aws:sqs:queue/staging-orders"
    assert created.outcome == "hold" and created.context.signals.recreate
    assert "deleted by aws sqs DeleteQueue staging-orders" in created.message


def test_cloudformation_delete_by_arn_then_create_by_name_is_a_recreate(
    pipeline: Pipeline,
) -> None:
    arn = "arn:aws:cloudformation:us-east-1:111122223333:stack/staging-calc/4f1d-9a2b"
    deleted = pipeline.send(cfn("DeleteStack", arn))
    created = pipeline.send(cfn("CreateStack", "staging-calc"), after=20)
    assert deleted.action.resource.key == created.action.resource.key
    assert created.outcome == "hold" and created.context.signals.recreate
