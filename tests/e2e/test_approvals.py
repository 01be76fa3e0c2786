"""On-call approvals end to end: a real guardproxy, real store, real control API and
real HTTP clients through the proxy, with approvers holding their own tokens.

The policy here holds deletes of named configmaps with different approval blocks,
so each rule of the approval model is exercised on its own.
"""

from __future__ import annotations

import base64
import http.client
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
import pytest

from guardproxy.approvals.events import HoldEvent
from guardproxy.config import ProxyConfig
from guardproxy.control.client import ControlClient, ControlError
from guardproxy.gate.gate import utc_now
from guardproxy.server import BackgroundGuardproxy, load_policies
from guardproxy.session.environment import proxy_url

from .approvers import add_approver
from .servers import EchoServer

ROOT = Path(__file__).resolve().parents[2]
APPROVAL_RULES = """\
apiVersion: guardproxy.dev/v1
kind: PolicySet
metadata: {name: approvals}
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
        timeout: 1h
    - id: hold-short
      decision: hold
      match: {providers: [k8s], verbs: [delete], resourceNames: [short-cm]}
      message: Deleting {action.resource.name} needs a senior, quickly.
      approval: {groups: [senior], timeout: 4s, onTimeout: escalate}
    - id: hold-grant
      decision: hold
      match: {providers: [k8s], verbs: [delete], resourceNames: [grant-cm]}
      message: Deleting {action.resource.name} needs a senior.
      approval: {groups: [senior], grant: "session:10m"}
    - id: hold-once
      decision: hold
      match: {providers: [k8s], verbs: [delete], resourceNames: [once-cm]}
      message: Deleting {action.resource.name} needs a senior.
      approval: {groups: [senior]}
"""
DENY_ONCE = """\
apiVersion: guardproxy.dev/v1
kind: PolicySet
metadata: {name: freeze}
spec:
  rules:
    - id: deny-during-freeze
      decision: deny
      match: {providers: [k8s], verbs: [delete], resourceNames: [once-cm]}
      message: Change freeze; nothing is deleted.
"""


def write_bundle(directory: Path, *extra: str) -> Path:
    directory.mkdir(parents=True)
    shutil.copy(ROOT / "policies" / "bundle.yaml", directory / "bundle.yaml")
    (directory / "approvals.yaml").write_text(APPROVAL_RULES)
    for n, text in enumerate(extra):
        (directory / f"extra-{n}.yaml").write_text(text)
    return directory


class Guard:
    """guardproxy with the approval test policy, a session started by carol, and approvers."""

    def __init__(self, tmp_path: Path, upstream: EchoServer, hold_window: float) -> None:
        self.tmp_path = tmp_path
        self.upstream = upstream
        config = ProxyConfig.model_validate(
            {
                "data_dir": tmp_path / "data",
                "policies": write_bundle(tmp_path / "policies"),
                "listen": "127.0.0.1:0",
                "control": "127.0.0.1:0",
                "hold_window_seconds": hold_window,
                "kubernetes_hosts": [f"127.0.0.1:{upstream.port}"],
            }
        )
        self.background = BackgroundGuardproxy(config).start()
        self.service = self.background.service
        assert self.service.control is not None and self.service.proxy is not None
        self.control_port = self.service.control.port
        self.control_url = f"http://127.0.0.1:{self.control_port}"
        self.events: list[HoldEvent] = []
        self._events_lock = threading.Lock()
        self.service.events.subscribe(self._heard)
        self.session_proxy = self.start_session("carol")
        self.people = {
            name: ControlClient(self.control_url, add_approver(self.service.store, name, groups))
            for name, groups in (
                ("alice", ("senior", "sre-oncall")),
                ("bob", ("senior",)),
                ("dave", ("senior",)),
                ("carol", ("senior", "sre-oncall")),
                ("eve", ("developers",)),
            )
        }

    def _heard(self, event: HoldEvent) -> None:
        with self._events_lock:
            self.events.append(event)

    def kinds(self, hold_id: str) -> list[str]:
        """The hold's lifecycle events (its impact preview's event, which comes whenever
        the preview is in, is left out: see :meth:`impacts`)."""
        with self._events_lock:
            return [e.kind for e in self.events if e.hold_id == hold_id and e.kind != "impact"]

    def impacts(self, hold_id: str) -> list[str]:
        with self._events_lock:
            return [e.reason for e in self.events if e.hold_id == hold_id and e.kind == "impact"]

    def start_session(self, user: str) -> str:
        assert self.service.registry is not None and self.service.proxy is not None
        session, credential = self.service.registry.create(
            name="agent", user=user, command=["agent"], cwd=str(self.tmp_path), labels=[],
            now=utc_now(),
        )  # fmt: skip
        return proxy_url("127.0.0.1", self.service.proxy.port, session.id, credential.token)

    def delete(self, name: str, *, proxy: str | None = None, query: str = "") -> httpx.Response:
        url = f"{self.upstream.url}/api/v1/namespaces/default/configmaps/{name}{query}"
        with httpx.Client(proxy=proxy or self.session_proxy, timeout=20) as client:
            return client.delete(url, headers={"Authorization": "Bearer cluster-secret-token"})

    def held(self, name: str, **kwargs: Any) -> str:
        response = self.delete(name, **kwargs)
        assert response.status_code == 403, response.text
        assert response.headers["X-Guardproxy-Decision"] == "hold", response.text
        return response.headers["X-Guardproxy-Id"]

    def approve(self, who: str, hold_id: str, reason: str = "checked") -> dict[str, Any]:
        return self.people[who].resolve(hold_id, approve=True, reason=reason)

    def refusal(self, who: str, hold_id: str, *, approve: bool = True, reason: str = "ok") -> Any:
        with pytest.raises(ControlError) as raised:
            self.people[who].resolve(hold_id, approve=approve, reason=reason)
        return raised.value

    def deletes(self) -> int:
        return len(self.upstream.log.matching("DELETE"))


@pytest.fixture
def guard(tmp_path: Path, echo_server: EchoServer) -> Iterator[Guard]:
    running = Guard(tmp_path, echo_server, hold_window=0.3)
    yield running
    running.background.stop()


def test_quorum_of_two_is_not_met_by_one_person_approving_twice(guard: Guard) -> None:
    hold_id = guard.held("quorum-cm")
    first = guard.approve("alice", hold_id)
    assert first["hold"]["state"] == "pending"
    one_of_two = (
        "1 of 2 approvals; needs 1 more approval from senior or sre-oncall "
        "(rule approvals/hold-quorum)"
    )
    assert first["hold"]["progress"]["text"] == one_of_two
    assert first["outcome"] == f"approval recorded; {one_of_two}; the hold stays pending"

    again = guard.refusal("alice", hold_id)
    assert again.status == 409 and "each person counts once" in str(again)
    assert guard.people["alice"].hold(hold_id)["progress"]["approvers"] == ["alice"]
    assert guard.held("quorum-cm") == hold_id  # the retry joins the still-pending hold
    assert guard.deletes() == 0

    listed = guard.people["bob"].holds("pending")
    assert [(h["id"], h["progress"]["text"]) for h in listed] == [(hold_id, one_of_two)]
    second = guard.approve("bob", hold_id)
    assert second["hold"]["state"] == "approved"
    assert second["hold"]["resolved_by"] == "alice, bob"
    assert guard.delete("quorum-cm").status_code == 200
    assert guard.deletes() == 1
    assert guard.kinds(hold_id) == ["held", "approval", "approval", "approved", "released"]
    assert len(guard.impacts(hold_id)) == 1  # the echo server is no API: "impact unknown: ..."
    assert guard.impacts(hold_id)[0].startswith("impact unknown: ")


def test_a_required_group_is_enforced(guard: Guard) -> None:
    hold_id = guard.held("quorum-cm")
    guard.approve("bob", hold_id)
    both_senior = guard.approve("dave", hold_id)  # quorum reached, but nobody on call
    assert both_senior["hold"]["state"] == "pending"
    assert both_senior["hold"]["progress"]["text"] == (
        "2 of 2 approvals; needs 1 more approval, from sre-oncall (rule approvals/hold-quorum)"
    )
    assert both_senior["hold"]["progress"]["missing_groups"] == ["sre-oncall"]
    assert guard.held("quorum-cm") == hold_id
    assert guard.deletes() == 0

    outsider = guard.refusal("eve", hold_id)
    assert outsider.status == 403 and "not in a group that may decide" in str(outsider)

    released = guard.approve("alice", hold_id)
    assert released["hold"]["state"] == "approved"
    assert guard.delete("quorum-cm").status_code == 200


def test_self_approval_is_refused_but_the_session_user_may_deny(guard: Guard) -> None:
    hold_id = guard.held("once-cm")
    own = guard.refusal("carol", hold_id)
    assert own.status == 403 and "carol started the session" in str(own)
    assert guard.people["bob"].hold(hold_id)["approvals"] == []
    denied = guard.people["carol"].resolve(hold_id, approve=False, reason="not what I meant")
    assert denied["hold"]["state"] == "denied"


def test_a_reason_is_required_and_identity_comes_from_the_token(guard: Guard) -> None:
    hold_id = guard.held("once-cm")
    for reason in ("", "   "):
        missing = guard.refusal("bob", hold_id, reason=reason)
        assert missing.status == 422 and "a reason is required" in str(missing)
    with pytest.raises(ControlError) as spoofed:
        guard.people["eve"].call(
            "POST", f"/v1/holds/{hold_id}/approve", {"reason": "ok", "by": "bob"}
        )
    assert spoofed.value.status == 422  # no "by": who approves is the token's person
    admin_token = guard.service.config.control_token_file.read_text().strip()
    with pytest.raises(ControlError) as admin:
        ControlClient(guard.control_url, admin_token).resolve(hold_id, approve=True, reason="x")
    assert admin.value.status == 403 and "verdicts need a person" in str(admin.value)
    with pytest.raises(ControlError) as unknown:
        ControlClient(guard.control_url, "gpa_not-a-token").holds()
    assert unknown.value.status == 401
    assert guard.people["bob"].hold(hold_id)["state"] == "pending"
    assert guard.people["bob"].whoami() == {"kind": "approver", "name": "bob", "groups": ["senior"]}


def test_an_expired_hold_denies_and_was_escalated_first(
    tmp_path: Path, echo_server: EchoServer
) -> None:
    guard = Guard(tmp_path, echo_server, hold_window=30)  # the live request outwaits the hold
    try:
        started = time.monotonic()
        response = guard.delete("short-cm")
        waited = time.monotonic() - started
        assert response.status_code == 403, response.text
        assert response.headers["X-Guardproxy-Decision"] == "deny"
        assert "expired without approval" in response.text
        assert 3.0 < waited < 10.0
        hold_id = response.headers["X-Guardproxy-Id"]
        assert guard.deletes() == 0
        deadline = time.monotonic() + 5
        while "expired" not in guard.kinds(hold_id) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert guard.kinds(hold_id) == ["held", "escalated", "expired"]
        [escalated] = [e for e in guard.events if e.kind == "escalated"]
        assert "0 of 1 approvals" in escalated.reason
        late = guard.refusal("bob", hold_id)
        assert late.status == 409 and "expired" in str(late)
        assert guard.people["bob"].hold(hold_id)["state"] == "expired"
        assert guard.deletes() == 0
    finally:
        guard.background.stop()


def test_a_denied_hold_stays_denied_for_its_retries(guard: Guard) -> None:
    hold_id = guard.held("once-cm")
    guard.people["bob"].resolve(hold_id, approve=False, reason="not today")
    for _ in range(3):
        retry = guard.delete("once-cm")
        assert retry.status_code == 403
        assert retry.headers["X-Guardproxy-Decision"] == "deny"
        assert retry.headers["X-Guardproxy-Id"] == hold_id
        assert "by bob: not today" in retry.text
    late = guard.refusal("dave", hold_id)
    assert late.status == 409 and "denied by bob" in str(late)
    assert guard.deletes() == 0


def test_a_session_grant_lets_identical_requests_through_and_nothing_else(guard: Guard) -> None:
    hold_id = guard.held("grant-cm")
    assert guard.approve("bob", hold_id)["hold"]["grant"] == "session:600"
    for _ in range(3):
        assert guard.delete("grant-cm").status_code == 200
    assert guard.deletes() == 3
    # the same call with another parameter is another request: held anew
    other = guard.held("grant-cm", query="?gracePeriodSeconds=0")
    assert other != hold_id
    # the same request from another session (another user's agent) is not covered
    elsewhere = guard.held("grant-cm", proxy=guard.start_session("frank"))
    assert elsewhere not in (hold_id, other)
    assert guard.held("once-cm") not in (hold_id, other, elsewhere)
    assert guard.deletes() == 3


def test_a_once_grant_releases_exactly_one_request(guard: Guard) -> None:
    hold_id = guard.held("once-cm")
    guard.approve("bob", hold_id)
    assert guard.delete("once-cm").status_code == 200
    assert guard.held("once-cm") != hold_id
    assert guard.deletes() == 1


def test_policy_changed_to_deny_between_hold_and_approval_denies(guard: Guard) -> None:
    hold_id = guard.held("once-cm")
    guard.service.use_bundle(
        load_policies(write_bundle(guard.tmp_path / "policies-freeze", DENY_ONCE))
    )
    result = guard.approve("bob", hold_id)
    hold = result["hold"]
    assert hold["state"] == "denied" and hold["resolved_by"] == "policy"
    assert (
        "the current policy denies this request now (freeze/deny-during-freeze)" in (hold["reason"])
    )
    assert result["outcome"].startswith("denied by policy")
    retry = guard.delete("once-cm")
    assert retry.status_code == 403 and retry.headers["X-Guardproxy-Decision"] == "deny"
    assert guard.deletes() == 0
    assert guard.kinds(hold_id) == ["held", "approval", "denied"]


def test_the_approver_sees_the_redacted_request_session_and_history(guard: Guard) -> None:
    assert guard.delete("harmless-cm").status_code == 200  # some history first
    hold_id = guard.held("quorum-cm")
    guard.approve("alice", hold_id, reason="saw the change ticket")
    detail = guard.people["bob"].hold(hold_id)
    request = detail["request"]
    assert request["method"] == "DELETE"
    assert request["url"].endswith("/api/v1/namespaces/default/configmaps/quorum-cm")
    assert ["authorization", "[REDACTED]"] in request["headers"]
    assert "cluster-secret-token" not in str(detail)
    assert detail["session_info"]["user"] == "carol"
    assert detail["rules"] == ["approvals/hold-quorum"]
    assert "needs two people" in detail["message"]
    assert [(r["summary"].split()[-1], r["outcome"]) for r in detail["recent"]] == [
        ("harmless-cm", "allow")
    ]
    assert "recreate" in detail["signals"]
    [approval] = detail["approvals"]
    assert (approval["approver"], approval["verdict"], approval["reason"]) == (
        "alice", "approve", "saw the change ticket",
    )  # fmt: skip
    assert detail["progress"]["text"].startswith("1 of 2 approvals; needs 1 more approval")
    decisions = guard.people["bob"].call("GET", "/v1/decisions?outcome=hold&provider=k8s")
    assert [d["hold_id"] for d in decisions["decisions"]] == [hold_id]


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "vm", "[::1]", "127.0.0.2"])
def test_a_guarded_session_cannot_call_the_control_api_even_with_an_approver_token(
    guard: Guard, host: str
) -> None:
    if host == "vm":
        try:
            import socket  # noqa: PLC0415 - only this case needs the resolver

            socket.getaddrinfo("vm", None)
        except OSError:
            pytest.skip("no host name alias 'vm' for this machine in /etc/hosts")
    hold_id = guard.held("once-cm")
    token = guard.people["bob"].token
    assert guard.people["bob"].hold(hold_id)["state"] == "pending"  # the token is valid
    # an absolute-form request written by hand: httpx drops the brackets of [::1]
    proxy = urlsplit(guard.session_proxy)
    credentials = base64.b64encode(
        f"{unquote(proxy.username or '')}:{unquote(proxy.password or '')}".encode()
    ).decode()
    connection = http.client.HTTPConnection(proxy.hostname or "", proxy.port, timeout=10)
    try:
        connection.request(
            "POST",
            f"http://{host}:{guard.control_port}/v1/holds/{hold_id}/approve",
            body=b'{"reason": "I approve myself"}',
            headers={
                "Host": f"{host}:{guard.control_port}",
                "Proxy-Authorization": f"Basic {credentials}",
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
            },
        )
        response = connection.getresponse()
        text = response.read().decode()
    finally:
        connection.close()
    assert response.status == 403, text
    assert "cannot reach guardproxy's own control API" in text
    assert guard.people["bob"].hold(hold_id)["state"] == "pending"
    assert guard.people["bob"].hold(hold_id)["approvals"] == []


def test_openapi_documents_every_route(guard: Guard) -> None:
    document = httpx.get(f"{guard.control_url}/openapi.json", timeout=10).json()
    assert guard.service.control is not None
    documented = [
        (method, path) for path, operations in document["paths"].items() for method in operations
    ]
    served = guard.service.control.routes()
    assert served, "no routes found"
    for pattern, methods in served:
        for method in methods:
            assert any(
                m == method and pattern.fullmatch(_sample(path)) for m, path in documented
            ), f"{method.upper()} {pattern.pattern} is not in /openapi.json"
    for method, path in documented:  # and nothing documented that is not served
        assert any(
            method in methods and pattern.fullmatch(_sample(path)) for pattern, methods in served
        ), f"{method.upper()} {path} is documented but not served"
    for schema in ("HoldDetailOut", "ResolveBody", "ErrorOut", "DecisionsOut"):
        assert schema in document["components"]["schemas"]


def _sample(path: str) -> str:
    return "/".join("h-abcdefghij" if p.startswith("{") else p for p in path.split("/"))


def test_decisions_filter_and_errors_are_json_with_a_hint(guard: Guard) -> None:
    guard.held("once-cm")
    assert guard.delete("harmless-cm").status_code == 200
    bob = guard.people["bob"]
    deadline = time.monotonic() + 10
    while (everything := bob.call("GET", "/v1/decisions")["decisions"])[0][
        "upstream_status"
    ] is None:  # statuses are recorded in order, after the response
        assert time.monotonic() < deadline, everything
        time.sleep(0.05)
    assert [(d["outcome"], d["upstream_status"]) for d in everything] == [
        ("allow", 200),
        ("hold", None),  # the guard's own answer is not the upstream's status
    ]
    assert bob.call("GET", "/v1/decisions?limit=1")["decisions"] == everything[:1]
    since = everything[0]["at"].replace("+00:00", "Z")
    assert [d["id"] for d in bob.call("GET", f"/v1/decisions?since={since}")["decisions"]] == [
        everything[0]["id"]
    ]
    assert bob.call("GET", "/v1/decisions?provider=aws")["decisions"] == []
    for query in ("since=yesterday", "since=2025-01-01T00:00:00", "limit=0"):
        with pytest.raises(ControlError) as bad:
            bob.call("GET", f"/v1/decisions?{query}")
        assert bad.value.status == 422 and bad.value.body["hint"], query
    with pytest.raises(ControlError) as missing:
        bob.hold("h-aaaaaaaaaa")
    assert missing.value.status == 404
    assert set(missing.value.body) == {"error", "hint"}
    admin_token = guard.service.config.control_token_file.read_text().strip()
    assert ControlClient(guard.control_url, admin_token).whoami()["kind"] == "admin"
    with pytest.raises(ControlError) as not_admin:
        bob.call("GET", "/v1/runtime")
    assert not_admin.value.status == 403
