"""An approvals service on a real SQLite store, with a real policy bundle and a clock the
test moves: holds are made the way the gate makes them (the request recognised, the
bundle's decision, :func:`~guardproxy.approvals.holds.create_hold`), so the re-check at
release reads what a live hold keeps."""

from __future__ import annotations

import asyncio
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

from guardproxy.approvals.events import HoldEvent
from guardproxy.approvals.holds import create_hold
from guardproxy.approvals.service import ApprovalService, HoldDecision
from guardproxy.context import Context, SessionInfo
from guardproxy.gate.digest import request_digest
from guardproxy.policy import Bundle, Decision, evaluate
from guardproxy.recognise import RecogniseSettings, recognise
from guardproxy.recognise.request import HttpRequest
from guardproxy.server import load_policies
from guardproxy.store import Approver, Hold, Session, SqliteStore

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
CLUSTER = "127.0.0.1:6443"
SETTINGS = RecogniseSettings(kubernetes_hosts=(CLUSTER,))
SESSION = SessionInfo(id="s-carol", name="test", agent="claude-code", anonymous=False)

RULES = """\
apiVersion: guardproxy.dev/v1
kind: PolicySet
metadata: {name: t}
spec:
  rules:
    - id: hold-quorum
      decision: hold
      match: {providers: [k8s], verbs: [delete], resourceNames: [quorum-cm]}
      message: Deleting {action.resource.name} needs two people, one of them on call.
      approval:
        groups: [senior, sre-oncall]
        quorum: 2
        requiredGroups: [sre-oncall]
        timeout: 10m
    - id: hold-once
      decision: hold
      match: {providers: [k8s], verbs: [delete], resourceNames: [once-cm]}
      message: Deleting {action.resource.name} needs a senior.
      approval: {groups: [senior], timeout: 10m}
    - id: hold-escalate
      decision: hold
      match: {providers: [k8s], verbs: [delete], resourceNames: [escalate-cm]}
      message: Deleting {action.resource.name} needs two seniors, or on-call is told.
      approval: {groups: [senior], quorum: 2, timeout: 10m, onTimeout: escalate}
    - id: hold-crowd
      decision: hold
      match: {providers: [k8s], verbs: [delete], resourceNames: [crowd-cm]}
      message: Deleting {action.resource.name} needs two seniors.
      approval: {groups: [senior], quorum: 2, timeout: 10m}
    - id: hold-both-dba
      decision: hold
      match: {providers: [k8s], verbs: [delete], resourceNames: [both-cm]}
      message: A database person must agree.
      approval: {groups: [dba], timeout: 10m}
    - id: hold-both-senior
      decision: hold
      match: {providers: [k8s], verbs: [delete], resourceNames: [both-cm]}
      message: Two seniors must agree.
      approval: {groups: [senior], quorum: 2, timeout: 10m}
"""

PEOPLE = {
    "alice": ("senior", "sre-oncall"),
    "bob": ("senior",),
    "dave": ("senior",),
    "grace": ("senior",),
    "carol": ("senior", "sre-oncall"),  # started the session
    "dan": ("dba",),
    "frank": ("dba", "senior"),
    "eve": ("developers",),
}


def person(name: str) -> Approver:
    return Approver(name=name, groups=PEOPLE[name], token_hash=name, created_at=T0)


def write_bundle(directory: Path, rules: str = RULES, *extra: str) -> Bundle:
    """The shipped bundle settings with ``rules`` (and ``extra`` policy sets) only."""
    directory.mkdir(parents=True)
    shutil.copy(ROOT / "policies" / "bundle.yaml", directory / "bundle.yaml")
    (directory / "rules.yaml").write_text(rules)
    for n, text in enumerate(extra):
        (directory / f"extra-{n}.yaml").write_text(text)
    return load_policies(directory)


def delete_configmap(name: str) -> HttpRequest:
    host, port = CLUSTER.split(":")
    return HttpRequest(
        method="DELETE",
        scheme="https",
        host=host,
        port=int(port),
        path=f"/api/v1/namespaces/default/configmaps/{name}",
        headers=(("authorization", "Bearer cluster-secret-token"),),
        body=b"",
        host_header=CLUSTER,
    )


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def at(self, minutes: float) -> None:
        self.now = T0 + timedelta(minutes=minutes)


class Rig:
    """A store with carol's session, a bundle the test can swap, the service, and every
    hold event heard."""

    def __init__(self, store: SqliteStore, bundle: Bundle) -> None:
        self.store = store
        self.bundle = bundle
        self.clock = Clock()
        self.service = ApprovalService(store, lambda: self.bundle, clock=self.clock)
        self.heard: list[HoldEvent] = []
        self.service.events.subscribe(self.heard.append)
        store.create_session(
            Session(
                id=SESSION.id, name=SESSION.name, user="carol", agent=SESSION.agent,
                command=("claude",), cwd="/work/app", labels=(), started_at=T0,
                token_hash="carol-token-hash",
            )
        )  # fmt: skip

    def decision(self, name: str) -> Decision:
        return evaluate(self.bundle, recognise(delete_configmap(name), SETTINGS), self.context())

    def context(self) -> Context:
        return Context(now=self.clock(), session=SESSION)

    def hold(self, name: str) -> Hold:
        """A pending hold for deleting configmap ``name``, as the gate makes it."""
        request = delete_configmap(name)
        action = recognise(request, SETTINGS)
        context = self.context()
        decision = evaluate(self.bundle, action, context)
        assert decision.outcome.value == "hold", decision
        return create_hold(
            self.store, request, action, context, decision, request_digest(request), self.clock()
        )

    def decide(
        self, hold_id: str, who: str, *, approve: bool = True, reason: str = "checked the ticket"
    ) -> HoldDecision:
        return asyncio.run(
            self.service.decide_hold(hold_id, person(who), approve=approve, reason=reason)
        )

    def kinds(self, hold_id: str) -> list[str]:
        return [e.kind for e in self.heard if e.hold_id == hold_id]
