"""Operating guardproxy: metrics, health and readiness, policy hot reload, shutdown.

Real mitmproxy, real sockets, the echo upstream as a Kubernetes API server (as in
test_guard.py): a DELETE of namespace `prod` is held, a GET is allowed, a DELETE of
configmap `forbidden` is denied by the extra rule.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from guardproxy.config import ProxyConfig
from guardproxy.control.client import ControlError
from guardproxy.store import open_store
from guardproxy.store.base import HoldState

from .guard_fixtures import POLICIES, guardproxy_cli
from .servers import EchoServer
from .test_guard import NAMESPACE_PROD, Guard, deletes, make_bundle, start_guard

FORBIDDEN = "/api/v1/namespaces/dev/configmaps/forbidden"
NEW_RULE = """\
apiVersion: guardproxy.dev/v1
kind: PolicySet
metadata: {name: test-reloaded}
spec:
  rules:
    - id: deny-reloaded-configmap
      decision: deny
      match: {providers: [k8s], resourceNames: [reloaded]}
      message: The configmap {action.resource.name} was forbidden by a reload.
"""
BROKEN_RULE = """\
apiVersion: guardproxy.dev/v1
kind: PolicySet
metadata: {name: test-broken}
spec:
  rules:
    - id: broken
      decision: explode
      match: {providers: [k8s]}
"""


def get(url: str, token: str | None = None) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def samples(exposition: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus text exposition, by name and labels."""
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(exposition.decode()):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
          **labels: str) -> float:  # fmt: skip
    return found.get((name, frozenset(labels.items())), 0.0)


def total(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
          **labels: str) -> float:  # fmt: skip
    """Sum of ``name`` over every label set that includes ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in found.items() if n == name and wanted <= ls)


def control_url(guard: Guard) -> str:
    return guard.control.url


def recorded_digests(data_dir: Path) -> dict[str, str]:
    """Decision id (and `outcome:resource name`) -> the bundle digest its decision names."""
    store = open_store(str(data_dir / "guardproxy.db"))
    try:
        records = store.list_decisions(limit=1000)
    finally:
        store.close()
    found: dict[str, str] = {}
    for record in records:
        digest = json.loads(record.decision_json)["bundle_digest"]
        name = json.loads(record.action_json)["resource"]["name"]
        found[record.id] = found[f"{record.outcome}:{name}"] = digest
    return found


@pytest.fixture
def ops_guard(tmp_path: Path, echo_server: EchoServer) -> Iterator[Guard]:
    running = start_guard(tmp_path, echo_server, metrics_listen="127.0.0.1:0")
    yield running
    running.background.stop()


# -- metrics


def test_metrics_count_real_requests_by_outcome_provider_and_verb(
    ops_guard: Guard, echo_server: EchoServer
) -> None:
    guard = ops_guard
    status, body = get(f"{control_url(guard)}/metrics")  # no token: scrapers carry none
    assert status == 200
    before = samples(body)
    assert total(before, "guardproxy_decisions_total") == 0
    assert value(before, "guardproxy_holds_pending") == 0

    with EchoServer() as unknown, guard.client() as client:
        assert client.get(f"{echo_server.url}/api/v1/namespaces").status_code == 200
        assert client.delete(f"{echo_server.url}{FORBIDDEN}").status_code == 403
        held = client.delete(f"{echo_server.url}{NAMESPACE_PROD}")
        # not a Kubernetes host: no recogniser classifies it (the shipped bundle lets
        # unclassified local development traffic through)
        local = client.post(f"{unknown.url}/anything", content=b"x")
    assert held.headers["X-Guardproxy-Decision"] == "hold"
    assert local.status_code == 200

    status, body = get(f"{control_url(guard)}/metrics")
    after = samples(body)
    assert value(after, "guardproxy_decisions_total", outcome="allow", provider="k8s",
                 verb="read") == 1  # fmt: skip
    assert total(after, "guardproxy_decisions_total", outcome="deny", provider="k8s") == 1
    assert total(after, "guardproxy_decisions_total", outcome="hold", provider="k8s") == 1
    assert value(after, "guardproxy_decisions_total", outcome="allow", provider="unknown",
                 verb="unknown") == 1  # fmt: skip
    assert value(after, "guardproxy_unclassified_actions_total", provider="unknown",
                 host="127.0.0.1") == 1  # fmt: skip
    assert value(after, "guardproxy_decision_latency_seconds_count") == 4
    assert 0 < value(after, "guardproxy_decision_latency_seconds_sum") < 4
    assert value(after, "guardproxy_holds_created_total") == 1
    assert value(after, "guardproxy_holds_pending") == 1  # read from the store
    digest = guard.background.service.bundle.digest
    assert value(after, "guardproxy_policy_bundle_info", digest=digest) == 1

    (hold,) = guard.holds("pending")
    guard.approve(hold["id"])
    status, body = get(f"{control_url(guard)}/metrics")
    resolved = samples(body)
    assert value(resolved, "guardproxy_hold_wait_seconds_count", state="approved") == 1
    assert value(resolved, "guardproxy_holds_pending") == 0
    assert total(resolved, "guardproxy_requests_failed_closed_total") == 0
    assert total(resolved, "guardproxy_store_errors_total") == 0


def test_the_metrics_port_serves_probes_only_and_sessions_cannot_reach_it(
    ops_guard: Guard,
) -> None:
    ops = ops_guard.background.service.ops_server
    assert ops is not None
    base = f"http://127.0.0.1:{ops.port}"
    assert get(f"{base}/metrics")[0] == 200
    assert get(f"{base}/healthz")[0] == 200
    assert get(f"{base}/readyz")[0] == 200
    token = ops_guard.config.control_token_file.read_text().strip()
    assert get(f"{base}/v1/holds", token)[0] == 404  # nothing that acts lives here
    with ops_guard.client() as client:
        through_proxy = client.get(f"{base}/metrics")
    assert through_proxy.status_code == 403
    assert "cannot reach guardproxy's own control API" in through_proxy.text


# -- health and readiness


def test_readyz_checks_policies_store_and_proxy_and_fails_when_the_store_does(
    ops_guard: Guard,
) -> None:
    url = control_url(ops_guard)
    status, body = get(f"{url}/readyz")
    assert status == 200, body
    ready = json.loads(body)
    assert ready["ok"] is True
    assert ready["checks"]["policies"]["bundle"] == ops_guard.background.service.bundle.digest
    assert ready["checks"]["store"] == {"ok": True}
    assert ready["checks"]["proxy"]["listening"] == [f"127.0.0.1:{ops_guard.port}"]

    ops_guard.background.service.store.close()  # the database goes away
    status, body = get(f"{url}/readyz")
    assert status == 503
    failing = json.loads(body)
    assert failing["ok"] is False
    assert failing["checks"]["store"]["ok"] is False
    assert "closed" in failing["checks"]["store"]["error"]
    assert failing["checks"]["policies"]["ok"] is True
    assert get(f"{url}/healthz") == (200, b'{"ok": true, "status": "alive"}')
    metrics = samples(get(f"{url}/metrics")[1])
    assert value(metrics, "guardproxy_store_errors_total", operation="readiness") == 1


# -- policy hot reload


def test_a_broken_bundle_is_refused_and_a_good_one_is_recorded_on_the_next_decision(
    ops_guard: Guard, echo_server: EchoServer
) -> None:
    guard = ops_guard
    service = guard.background.service
    policies = guard.config.policies
    first = service.bundle.digest
    with guard.client() as client:
        before = client.delete(f"{echo_server.url}{FORBIDDEN}")

    (policies / "broken.yaml").write_text(BROKEN_RULE)
    with pytest.raises(ControlError) as refused:
        guard.control.call("POST", "/v1/policies/reload")
    assert refused.value.status == 409
    report = refused.value.body
    assert report["ok"] is False and report["result"] == "refused"
    assert report["bundle"] == first
    assert any("broken.yaml:7:" in line and "decision" in line for line in report["errors"]), report
    assert service.bundle.digest == first

    with guard.client() as client:
        still = client.delete(f"{echo_server.url}{FORBIDDEN}")
        not_yet = client.delete(f"{echo_server.url}/api/v1/namespaces/dev/configmaps/reloaded")
    assert still.status_code == 403

    (policies / "broken.yaml").unlink()
    (policies / "reloaded.yaml").write_text(NEW_RULE)
    report = guard.control.call("POST", "/v1/policies/reload")
    assert report["ok"] is True and report["result"] == "loaded"
    assert report["previous"] == first
    assert report["added"] == ["test-reloaded/deny-reloaded-configmap"]
    assert report["removed"] == []
    assert report["rules"] == report["previous_rules"] + 1
    second = report["bundle"]
    assert second != first and service.bundle.digest == second
    assert json.loads((guard.config.data_dir / "runtime.json").read_text())["bundle"] == second

    with guard.client() as client:
        after = client.delete(f"{echo_server.url}/api/v1/namespaces/dev/configmaps/reloaded")
    assert after.status_code == 403
    assert "was forbidden by a reload" in after.json()["message"]
    assert not_yet.status_code == 200  # the old bundle had no such rule

    digests = recorded_digests(guard.config.data_dir)
    assert digests[before.headers["X-Guardproxy-Id"]] == first
    assert digests[still.headers["X-Guardproxy-Id"]] == first
    assert digests["allow:reloaded"] == first  # forwarded: no decision header
    assert digests[after.headers["X-Guardproxy-Id"]] == second

    again = guard.control.call("POST", "/v1/policies/reload")
    assert again["result"] == "unchanged" and again["bundle"] == second
    metrics = samples(get(f"{control_url(guard)}/metrics")[1])
    assert value(metrics, "guardproxy_policy_reloads_total", result="refused") == 1
    assert value(metrics, "guardproxy_policy_reloads_total", result="loaded") == 1
    assert value(metrics, "guardproxy_policy_bundle_info", digest=second) == 1
    assert value(metrics, "guardproxy_policy_bundle_info", digest=first) == 0


def test_reload_needs_the_token_and_the_cli_reports_refusals(ops_guard: Guard) -> None:
    url = control_url(ops_guard)
    request = urllib.request.Request(f"{url}/v1/policies/reload", method="POST", data=b"")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with pytest.raises(urllib.error.HTTPError) as unauthorised:
        opener.open(request, timeout=10)
    assert unauthorised.value.code == 401

    env = {k: v for k, v in os.environ.items() if not k.startswith("GUARDPROXY_")}
    data_dir = str(ops_guard.config.data_dir)
    (ops_guard.config.policies / "broken.yaml").write_text(BROKEN_RULE)
    refused = subprocess.run(
        [*guardproxy_cli(), "policy", "reload", "--data-dir", data_dir],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert refused.returncode == 1, refused.stderr
    assert "broken.yaml:" in refused.stderr and "stays in force" in refused.stderr
    (ops_guard.config.policies / "broken.yaml").unlink()
    (ops_guard.config.policies / "reloaded.yaml").write_text(NEW_RULE)
    loaded = subprocess.run(
        [*guardproxy_cli(), "policy", "reload", "--data-dir", data_dir],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert loaded.returncode == 0, loaded.stderr
    assert "loaded bundle" in loaded.stdout


def test_a_changed_file_is_reloaded_when_watching(tmp_path: Path, echo_server: EchoServer) -> None:
    guard = start_guard(tmp_path, echo_server, watch_policies_seconds=0.1)
    try:
        service = guard.background.service
        first = service.bundle.digest
        (guard.config.policies / "reloaded.yaml").write_text(NEW_RULE)
        deadline = time.monotonic() + 10
        while service.bundle.digest == first and time.monotonic() < deadline:
            time.sleep(0.05)
        assert service.bundle.digest != first
        second = service.bundle.digest
        (guard.config.policies / "broken.yaml").write_text(BROKEN_RULE)
        deadline = time.monotonic() + 10
        refused = 0.0
        while refused == 0 and time.monotonic() < deadline:
            metrics = samples(get(f"{control_url(guard)}/metrics")[1])
            refused = value(metrics, "guardproxy_policy_reloads_total", result="refused")
            time.sleep(0.05)
        assert refused == 1
        assert service.bundle.digest == second
    finally:
        guard.background.stop()


@pytest.mark.slow
def test_sighup_reloads_a_real_serve_process(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    policies = make_bundle(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUARDPROXY_")}
    command = [*guardproxy_cli(), "serve", "--data-dir", str(data_dir), "--policies",
               str(policies), "--listen", "127.0.0.1:0", "--control", "127.0.0.1:0"]  # fmt: skip
    runtime = data_dir / "runtime.json"
    log_file = tmp_path / "serve.log"
    with (
        log_file.open("w") as log,
        subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        ) as serve,
    ):
        try:
            first = _wait_for(lambda: _runtime_bundle(runtime), None, serve, log_file)
            (policies / "reloaded.yaml").write_text(NEW_RULE)
            serve.send_signal(signal.SIGHUP)
            second = _wait_for(lambda: _runtime_bundle(runtime), first, serve, log_file)
            assert second != first
            (policies / "broken.yaml").write_text(BROKEN_RULE)
            serve.send_signal(signal.SIGHUP)
            _wait_for(
                lambda: "policy.reload_refused" in log_file.read_text() or None,
                None, serve, log_file,
            )  # fmt: skip
            assert _runtime_bundle(runtime) == second
            serve.send_signal(signal.SIGTERM)
            assert serve.wait(timeout=30) == 0
        finally:
            if serve.poll() is None:
                serve.kill()
    output = log_file.read_text()
    assert "broken.yaml:" in output  # the loader's file:line problems are logged
    assert "guardproxy.stopped" in output


COMMON_RULES = sorted(
    f"common/{rule['id']}"
    for rule in yaml.safe_load((POLICIES / "common.yaml").read_text())["spec"]["rules"]
)
"""Every rule of the shipped common set, read from the file (a new rule changes no test)."""


@pytest.mark.slow
def test_an_emptied_policy_file_is_refused_and_every_reload_names_the_rules_it_changes(
    tmp_path: Path,
) -> None:
    """The reported failure: truncating common.yaml and sending SIGHUP dropped its
    rules (prod deletes passed). Now the reload is refused; a removal on purpose (the
    file deleted) loads and says which rules went, in the log and in `policy reload`."""
    data_dir = tmp_path / "data"
    policies = make_bundle(tmp_path)
    common = (policies / "common.yaml").read_text()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUARDPROXY_")}
    command = [*guardproxy_cli(), "serve", "--data-dir", str(data_dir), "--policies",
               str(policies), "--listen", "127.0.0.1:0", "--control", "127.0.0.1:0"]  # fmt: skip
    runtime = data_dir / "runtime.json"
    log_file = tmp_path / "serve.log"

    def events(name: str) -> list[dict[str, Any]]:
        lines = log_file.read_text().splitlines()
        return [e for e in map(_json_or_none, lines) if e and e.get("event") == name]

    with (
        log_file.open("w") as log,
        subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        ) as serve,
    ):
        try:
            first = _wait_for(lambda: _runtime_bundle(runtime), None, serve, log_file)
            (policies / "common.yaml").write_text("# emptied by a bad merge\n")
            serve.send_signal(signal.SIGHUP)
            [refused] = _wait_for(lambda: events("policy.reload_refused") or None, None, serve,
                                  log_file)  # fmt: skip
            assert refused["source"] == "sighup" and refused["kept"] == first
            assert any("common.yaml:1:1:" in e and "holds no policy document" in e
                       for e in refused["errors"]), refused  # fmt: skip
            assert _runtime_bundle(runtime) == first

            (policies / "common.yaml").unlink()  # removing the rules on purpose
            serve.send_signal(signal.SIGHUP)
            second = _wait_for(lambda: _runtime_bundle(runtime), first, serve, log_file)
            [loaded] = events("policy.reloaded")
            assert (loaded["added"], loaded["removed"]) == ([], COMMON_RULES)
            assert loaded["previous_rules"] - loaded["rules"] == len(COMMON_RULES)
            [warned] = events("policy.rules_removed")
            assert warned["level"] == "warning" and warned["rules"] == COMMON_RULES

            (policies / "common.yaml").write_text(common)
            cli = subprocess.run(
                [*guardproxy_cli(), "policy", "reload", "--data-dir", str(data_dir)],
                env=env, capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert cli.returncode == 0, cli.stderr
            assert f"added {len(COMMON_RULES)} rule(s): {', '.join(COMMON_RULES)}" in cli.stdout
            assert "removed 0 rule(s)" in cli.stdout
            assert _wait_for(lambda: _runtime_bundle(runtime), second, serve, log_file) == first
            assert events("policy.reloaded")[-1]["source"] == "api"
            serve.send_signal(signal.SIGTERM)
            assert serve.wait(timeout=30) == 0
        finally:
            if serve.poll() is None:
                serve.kill()


def _json_or_none(line: str) -> dict[str, Any] | None:
    try:
        found = json.loads(line)
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


def _runtime_bundle(runtime: Path) -> str | None:
    try:
        return str(json.loads(runtime.read_text())["bundle"])
    except (OSError, ValueError, KeyError):
        return None


def _wait_for(read: Any, unlike: Any, process: subprocess.Popen[bytes], log: Path) -> Any:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        found = read()
        if found is not None and found != unlike:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out; serve said:\n{log.read_text()}")


# -- graceful shutdown


def test_shutdown_answers_a_live_held_request_natively_and_keeps_its_hold_pending(
    tmp_path: Path, echo_server: EchoServer
) -> None:
    guard = start_guard(tmp_path, echo_server, hold_window_seconds=60)
    responses: list[httpx.Response] = []

    def send() -> None:
        with httpx.Client(proxy=guard.proxy_url, timeout=60) as client:
            responses.append(client.delete(f"{echo_server.url}{NAMESPACE_PROD}"))

    client = threading.Thread(target=send)
    stopped = False
    try:
        client.start()
        deadline = time.monotonic() + 15
        while not guard.holds("pending") and time.monotonic() < deadline:
            time.sleep(0.05)
        (hold,) = guard.holds("pending")
        started = time.monotonic()
        guard.background.stop()
        stopped = True
        client.join(timeout=30)
        assert not client.is_alive()
        assert time.monotonic() - started < 15  # not the 60 s hold window
    finally:
        if not stopped:
            guard.background.stop()
        client.join(timeout=5)
    (response,) = responses
    assert response.status_code == 403  # a status kubectl does not retry
    status = response.json()
    assert status["kind"] == "Status" and status["reason"] == "Forbidden"
    assert (
        f"guardproxy is shutting down; the hold {hold['id']} stays pending; "
        "retry the same call later" in status["message"]
    )
    assert response.headers["X-Guardproxy-Decision"] == "hold"
    assert deletes(echo_server) == 0
    store = open_store(str(guard.config.data_dir / "guardproxy.db"))
    try:
        kept = store.get_hold(hold["id"])
        (decision,) = store.list_decisions(limit=10)
    finally:
        store.close()
    assert kept is not None and kept.state is HoldState.PENDING  # neither denied nor released
    assert response.headers["X-Guardproxy-Id"] == hold["id"]
    assert decision.outcome == "hold" and decision.hold_id == hold["id"]  # recorded
    with pytest.raises(httpx.ConnectError), httpx.Client(proxy=guard.proxy_url) as late:
        late.get(f"{echo_server.url}/api/v1/namespaces")


# -- configuration


def test_listening_beyond_loopback_needs_an_explicit_opt_in(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="loopback only"):
        ProxyConfig(data_dir=tmp_path, control="0.0.0.0:8081")
    config = ProxyConfig(
        data_dir=tmp_path, listen="0.0.0.0:8080", control="0.0.0.0:8081", allow_remote_listen=True
    )
    assert config.control == "0.0.0.0:8081"


@pytest.mark.parametrize("spelling", ["localhost.", "api.localhost", "127.1", "127.0.0.1"])
def test_no_spelling_of_this_host_reaches_the_control_api_through_the_proxy(
    ops_guard: Guard, spelling: str
) -> None:
    control = ops_guard.background.service.control
    assert control is not None
    token = ops_guard.config.control_token_file.read_text().strip()
    with ops_guard.client() as client:
        response = client.get(
            f"http://{spelling}:{control.port}/v1/holds",
            headers={"Authorization": f"Bearer {token}"},
        )
    assert response.status_code == 403, response.text  # refused by name, whatever DNS says
    assert "cannot reach guardproxy's own control API" in response.json()["message"]
