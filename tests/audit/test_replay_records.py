"""replay_records: exact reproduction, changed outcomes, unreadable records, altered inputs."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from guardproxy.action import Action, Provider, Resource, Verb
from guardproxy.audit.replay import replay_records
from guardproxy.context import Context, SessionInfo
from guardproxy.policy import evaluate
from guardproxy.redact import redact_json_text
from guardproxy.server import load_policies
from guardproxy.store import DecisionRecord, SqliteStore

POLICIES = Path(__file__).resolve().parents[2] / "policies"
T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def test_replay_reports_exact_altered_and_unreadable_records(tmp_path: Path) -> None:
    bundle = load_policies(POLICIES)
    context = Context(now=T0, session=SessionInfo(id="s-1"))
    plain = Action(provider=Provider.K8S, service="core", operation="list", verb=Verb.READ)
    secret = Action(
        provider=Provider.K8S,
        service="core",
        operation="get",
        verb=Verb.READ,
        resource=Resource(name="ghp_R2d2C3p0x9Lk4Mn7Pq1Rs5Tu8Vw0Xy3Za6Bc"),
    )
    with SqliteStore(tmp_path / "g.db") as store:
        for n, action in enumerate((plain, secret)):
            decision = evaluate(bundle, action, context)
            store.append_decision(
                DecisionRecord(
                    id=f"d-{n}", at=T0, session_id="s-1",
                    action_json=redact_json_text(action.model_dump_json()),
                    context_json=context.model_dump_json(),
                    decision_json=decision.model_dump_json(),
                    outcome=decision.outcome.value, provider="k8s",
                )
            )  # fmt: skip
        store.append_decision(
            DecisionRecord(
                id="d-old", at=T0, session_id="s-1", action_json='{"verb": "teleport"}',
                context_json="{}", decision_json="{}", outcome="allow",
            )
        )  # fmt: skip
        report = replay_records(store.audit_records(), bundle)
    assert [r.record_id for r in report.results] == ["d-0", "d-1"]
    assert report.unreadable == ["d-old"]
    assert report.changes == []
    assert report.results[0].exact and report.results[0].input_intact
    assert not report.results[1].input_intact  # the token in the name was redacted
    assert report.as_dict()["input_altered_by_redaction"] == 1
