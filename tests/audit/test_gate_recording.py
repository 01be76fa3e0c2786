"""The gate records a mutating request before forwarding it, and fails closed if it cannot.

Real store (SQLite file), real shipped bundle, real recogniser; the failing store is a
real store that was closed, not a mock.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from guardproxy.audit.replay import shadow_differences
from guardproxy.context import Context, SessionInfo
from guardproxy.gate.gate import Answer, Forward, Gate
from guardproxy.policy import Bundle, evaluate
from guardproxy.recognise import RecogniseSettings, recognise
from guardproxy.recognise.request import HttpRequest
from guardproxy.server import load_policies
from guardproxy.store import SqliteStore
from guardproxy.store.chain import verify

POLICIES = Path(__file__).resolve().parents[2] / "policies"
CLUSTER = "127.0.0.1:6443"
SETTINGS = RecogniseSettings(kubernetes_hosts=(CLUSTER,))
T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
SESSION = SessionInfo(id="s-1", name="test", agent="claude-code", anonymous=False)
SECRET_NAME = "ghp_R2d2C3p0x9Lk4Mn7Pq1Rs5Tu8Vw0Xy3Za6Bc"


def k8s(method: str, path: str, body: dict[str, object] | None = None) -> HttpRequest:
    raw = json.dumps(body).encode() if body is not None else b""
    host, port = CLUSTER.split(":")
    return HttpRequest(
        method=method,
        scheme="https",
        host=host,
        port=int(port),
        path=path,
        headers=(("content-type", "application/json"), ("authorization", "Bearer abc123def")),
        body=raw,
        host_header=CLUSTER,
    )


class Rig:
    def __init__(self, path: Path, bundle: Bundle, shadow: Bundle | None = None) -> None:
        self.store = SqliteStore(path)
        self.bundle = bundle
        self.gate = Gate(
            self.store,
            bundle,
            hold_window=0.001,
            clock=lambda: T0,
            shadow=(lambda: shadow) if shadow is not None else None,
        )

    def send(self, request: HttpRequest) -> Forward | Answer:
        action = recognise(request, SETTINGS)
        context = Context(now=T0, session=SESSION)
        decision = evaluate(self.bundle, action, context)
        return asyncio.run(self.gate.handle(request, action, context, decision))

    def close(self) -> None:
        self.gate.flush()
        self.store.close()


@pytest.fixture(scope="module")
def shipped() -> Bundle:
    return load_policies(POLICIES)


@pytest.fixture
def rig(tmp_path: Path, shipped: Bundle) -> Iterator[Rig]:
    opened = Rig(tmp_path / "guardproxy.db", shipped)
    yield opened
    opened.close()


def create_configmap() -> HttpRequest:
    return k8s("POST", "/api/v1/namespaces/dev-app/configmaps", {"metadata": {"name": "x"}})


def test_a_mutating_request_is_in_the_chain_when_forward_is_returned(rig: Rig) -> None:
    verdict = rig.send(create_configmap())
    assert isinstance(verdict, Forward)
    # no flush: the record must already be durable, on disk, read by another connection
    with SqliteStore(rig.store.path) as reader:
        record = reader.get_audit_record(verdict.decision_id)
        assert record is not None and record.kind == "decision" and record.outcome == "allow"
        assert reader.get_decision(verdict.decision_id) is not None
        assert verify(reader.audit_records()) == []


def test_an_unrecordable_mutating_request_is_not_forwarded(rig: Rig) -> None:
    rig.store.close()  # a real store that now fails every call
    verdict = rig.send(create_configmap())
    assert isinstance(verdict, Answer) and verdict.kind == "deny"
    assert verdict.answer.status == 403
    assert b"could not record" in verdict.answer.body
    # reads are still served (they change nothing); their record is best effort
    read = rig.send(k8s("GET", "/api/v1/namespaces/dev-app/configmaps"))
    assert isinstance(read, Forward)


def test_records_and_hold_snapshots_are_redacted(rig: Rig) -> None:
    held = rig.send(k8s("DELETE", "/api/v1/namespaces/prod"))
    assert isinstance(held, Answer) and held.kind == "hold"
    secret_path = f"/api/v1/namespaces/dev-app/configmaps/{SECRET_NAME}"
    forwarded = rig.send(k8s("DELETE", secret_path))
    rig.gate.flush()
    record = rig.store.get_audit_record(forwarded.decision_id)
    assert record is not None
    assert SECRET_NAME not in record.payload_json and "[REDACTED]" in record.payload_json
    stored = rig.store.get_decision(forwarded.decision_id)
    assert stored is not None and SECRET_NAME not in stored.action_json
    kinds = [r.kind for r in rig.store.audit_records()]
    assert kinds == ["hold.created", "decision", "decision"]


def test_audit_mode_rules_record_a_shadow_outcome(tmp_path: Path) -> None:
    bundle_dir = tmp_path / "policies"
    shutil.copytree(POLICIES, bundle_dir)
    config = (bundle_dir / "bundle.yaml").read_text()
    (bundle_dir / "bundle.yaml").write_text(
        config.replace("  unclassified: deny\n", "  unclassified: deny\n  modeOverrides:\n"
                       "    - providers: [k8s]\n      mode: audit\n")
    )  # fmt: skip
    rig = Rig(tmp_path / "guardproxy.db", load_policies(bundle_dir))
    try:
        verdict = rig.send(k8s("DELETE", "/api/v1/namespaces/prod"))
        assert isinstance(verdict, Forward)  # k8s rules are trialled: nothing enforced
        rig.send(k8s("GET", "/api/v1/namespaces"))
        rig.gate.flush()
        shadowed, differences = shadow_differences(rig.store.audit_records())
    finally:
        rig.close()
    assert shadowed >= 1  # every decision an audit-mode rule fired on
    (difference,) = differences
    assert (difference.enforced, difference.shadow) == ("allow", "hold")
    assert difference.source == "audit-rules"
    assert "k8s/hold-prod-namespace-delete" in difference.shadow_rules


def test_a_shadow_bundle_is_decided_and_recorded_not_enforced(
    tmp_path: Path, shipped: Bundle
) -> None:
    candidate_dir = tmp_path / "candidate"
    shutil.copytree(POLICIES, candidate_dir)
    (candidate_dir / "extra.yaml").write_text(
        "apiVersion: guardproxy.dev/v1\nkind: PolicySet\nmetadata: {name: extra}\n"
        "spec:\n  rules:\n    - id: deny-configmap-create\n      decision: deny\n"
        "      match: {providers: [k8s], verbs: [create]}\n"
        "      message: No configmaps.\n"
    )
    rig = Rig(tmp_path / "guardproxy.db", shipped, shadow=load_policies(candidate_dir))
    try:
        created = rig.send(create_configmap())
        assert isinstance(created, Forward)  # the shadow bundle's deny is not enforced
        rig.send(k8s("GET", "/api/v1/namespaces"))
        rig.gate.flush()
        shadowed, differences = shadow_differences(rig.store.audit_records())
    finally:
        rig.close()
    assert shadowed == 2
    assert [(d.record_id, d.enforced, d.shadow) for d in differences] == [
        (created.decision_id, "allow", "deny")
    ]
    assert differences[0].shadow_rules == ["extra/deny-configmap-create"]
    assert differences[0].source == "bundle"


def test_upstream_status_follows_in_the_chain(rig: Rig) -> None:
    verdict = rig.send(create_configmap())
    rig.gate.record_status(verdict.decision_id, 201)
    rig.gate.flush()
    records = rig.store.audit_for(verdict.decision_id)
    assert [(r.kind, r.outcome) for r in records] == [("decision", "allow"), ("upstream", "201")]


def test_a_read_and_its_status_in_one_batch_are_one_chain_record(rig: Rig) -> None:
    verdict = rig.send(k8s("GET", "/api/v1/namespaces/dev-app/pods/web"))
    assert isinstance(verdict, Forward)
    rig.gate.record_status(verdict.decision_id, 200)  # queued before the batch is written
    rig.gate.flush()
    records = rig.store.audit_for(verdict.decision_id)
    assert [(r.kind, r.outcome) for r in records] == [("decision", "allow")]
    assert json.loads(records[0].payload_json)["upstream_status"] == 200
    decision = rig.store.get_decision(verdict.decision_id)
    assert decision is not None and decision.upstream_status == 200
    assert verify(rig.store.audit_records()) == []


def test_a_recorded_read_keeps_no_secret_from_its_request(rig: Rig) -> None:
    request = k8s("GET", f"/api/v1/namespaces/dev-app/configmaps?token={SECRET_NAME}")
    request = replace(request, headers=(*request.headers, ("user-agent", f"x {SECRET_NAME}")))
    verdict = rig.send(request)
    rig.gate.flush()
    records = rig.store.audit_records()
    assert records and all(SECRET_NAME not in r.payload_json for r in records)
    stored = rig.store.get_decision(verdict.decision_id)
    assert stored is not None and SECRET_NAME not in stored.action_json
    assert json.loads(stored.action_json)["provider"] == "k8s"  # still the action's JSON
