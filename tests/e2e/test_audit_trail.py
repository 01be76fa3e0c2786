"""The audit trail through the real proxy: no secret kept, a day replayed exactly.

A real guardproxy (mitmproxy, SQLite, the shipped bundle plus one deny rule) in front
of the echo upstream read as a Kubernetes API server; real HTTP clients; the real
``guardproxy`` CLI reading what was recorded.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from policy_helpers import DENY_RULE

from guardproxy.log import configure_logging

from .guard_fixtures import POLICIES, Guard, StartGuard
from .servers import EchoServer

# Real-looking credentials, as agents' tools send them.
AWS_KEY_ID = "ASIAZ4EXAMPLE2TEMPID"
SIGNATURE = "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
SESSION_TOKEN = "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQDexampleToken0123456789"
GITHUB_TOKEN = "ghp_R2d2C3p0x9Lk4Mn7Pq1Rs5Tu8Vw0Xy3Za6Bc"
DB_PASSWORD = "npg_s3cr3tP4ssw0rd"
NEON = f"postgresql://neondb_owner:{DB_PASSWORD}@ep-cool-darkness-123456.us-east-2.aws.neon.tech/db"
BODY_PASSWORD = "Tr0ub4dor&3-horse-battery"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
    "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
SECRETS = (AWS_KEY_ID, SIGNATURE, SESSION_TOKEN, GITHUB_TOKEN, DB_PASSWORD, BODY_PASSWORD, JWT)


def bundle_dir(tmp_path: Path, extra: str = DENY_RULE) -> Path:
    bundle = tmp_path / "policies"
    if not bundle.exists():
        shutil.copytree(POLICIES, bundle)
    (bundle / "test-extra.yaml").write_text(extra)
    return bundle


def start(start_guard: StartGuard, tmp_path: Path, echo: EchoServer) -> Guard:
    return start_guard(
        policies=bundle_dir(tmp_path),
        kubernetes_hosts=[f"127.0.0.1:{echo.port}"],
        hold_window_seconds=0.3,
    )


def cli_json(guard: Guard, *args: str) -> Any:
    proc = guard.cli(*args)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def cli_text(guard: Guard, *args: str) -> str:
    proc = guard.cli(*args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout + proc.stderr


@pytest.mark.slow
def test_no_secret_reaches_the_store_logs_export_or_holds(
    start_guard: StartGuard,
    tmp_path: Path,
    echo_server: EchoServer,
    capfd: pytest.CaptureFixture[str],
) -> None:
    logs = io.StringIO()
    configure_logging(level="debug", json=True, stream=logs)
    guard = start(start_guard, tmp_path, echo_server)
    session = guard.session("leaky")
    base = echo_server.url
    sigv4 = (
        f"AWS4-HMAC-SHA256 Credential={AWS_KEY_ID}/20261125/us-east-1/s3/aws4_request, "
        f"SignedHeaders=host;x-amz-date;x-amz-security-token, Signature={SIGNATURE}"
    )
    presigned = (
        f"{base}/reports/q4.csv?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        f"&X-Amz-Credential={AWS_KEY_ID}%2F20261125%2Fus-east-1%2Fs3%2Faws4_request"
        f"&X-Amz-Date=20261125T120000Z&X-Amz-Expires=3600"
        f"&X-Amz-Security-Token={SESSION_TOKEN.replace('/', '%2F')}"
        f"&X-Amz-SignedHeaders=host&X-Amz-Signature={SIGNATURE}"
    )
    with httpx.Client(proxy=session.proxy_url, timeout=15) as client:
        client.get(
            f"{base}/api/v1/namespaces/dev-app/configmaps",
            headers={"Authorization": sigv4, "X-Amz-Security-Token": SESSION_TOKEN},
        )
        client.get(presigned)
        client.post(
            f"{base}/api/v1/namespaces/dev-app/secrets",
            headers={"Authorization": f"Bearer {GITHUB_TOKEN}", "Neon-Connection-String": NEON},
            json={"metadata": {"name": "db"}, "stringData": {"password": BODY_PASSWORD}},
        )
        client.get(f"{base}/api/v1/namespaces/dev-app/configmaps/{JWT}")
        held = client.delete(
            f"{base}/api/v1/namespaces/prod",
            headers={"Authorization": f"Bearer {GITHUB_TOKEN}", "Neon-Connection-String": NEON},
        )
    assert held.status_code == 403 and "held" in held.text
    holds_output = json.dumps(guard.holds("all"))
    assert guard.holds("all"), "the prod delete should be held"
    guard.stop()  # writes the batched read records

    exported = cli_text(guard, "audit", "export", "--format", "jsonl")
    listed = cli_text(guard, "audit", "list", "--kind", "all", "--json")
    records = [json.loads(line) for line in exported.splitlines()]
    shown = "".join(cli_text(guard, "audit", "show", r["id"]) for r in records)
    assert len(records) >= 6
    stored = b"".join(p.read_bytes() for p in guard.data_dir.rglob("*") if p.is_file())
    captured = capfd.readouterr()
    structlog.reset_defaults()
    outputs = {
        "holds (control API)": holds_output,
        "audit export": exported,
        "audit list": listed,
        "audit show": shown,
        "logs": logs.getvalue(),
        "console": captured.out + captured.err,
        "data directory files": stored.decode("latin-1"),
    }
    assert "decision" in logs.getvalue()  # the logs were captured, not empty
    for where, text in outputs.items():
        for secret in (*SECRETS, session.proxy_url.split(":")[2].split("@")[0]):
            assert secret not in text, f"{secret[:10]}… leaked into {where}"


def _day(guard: Guard, echo: EchoServer) -> None:
    """A day of mixed traffic from two sessions: reads, writes, holds, a deny, an approval."""
    base = f"{echo.url}/api/v1/namespaces"
    alice, bob = guard.session("alice"), guard.session("bob")
    with (
        httpx.Client(proxy=alice.proxy_url, timeout=15) as a,
        httpx.Client(proxy=bob.proxy_url, timeout=15) as b,
    ):
        for i in range(6):
            a.get(f"{base}/dev-app/configmaps")
            b.get(f"{base}/staging/pods")
            a.post(f"{base}/dev-app/configmaps", json={"metadata": {"name": f"cm-{i}"}})
            b.put(f"{base}/staging/configmaps/cm-{i}", json={"metadata": {"name": f"cm-{i}"}})
            a.delete(f"{base}/dev-app/configmaps/cm-{i}")
        b.delete(f"{base}/dev-app/configmaps/forbidden")
        held = a.delete(f"{base}/prod")
        assert held.status_code == 403
        hold = guard.holds("pending")[0]
        for person in ("alice", "bob"):  # the prod namespace needs two people
            guard.approver(person).resolve(hold["id"], approve=True, reason="planned")
        assert a.delete(f"{base}/prod").status_code == 200
        a.post(f"{base}/prod/pods/api-0/exec?command=sh", content=b"")
        for i in range(12):  # a burst of deletes: history-dependent sequence rules
            b.delete(f"{base}/staging/configmaps/burst-{i}")


@pytest.mark.slow
def test_a_recorded_day_replays_exactly_and_a_changed_rule_shows_what_it_changes(
    start_guard: StartGuard, tmp_path: Path, echo_server: EchoServer
) -> None:
    guard = start(start_guard, tmp_path, echo_server)
    _day(guard, echo_server)
    guard.stop()
    assert cli_text(guard, "audit", "verify").startswith("audit trail intact")
    verified = cli_json(guard, "audit", "verify", "--json")
    writers = sorted(chain["writer"].split(" ", 3)[3] for chain in verified["chains"])
    assert writers == ["decision writer", "proxy"]  # "<host> pid <pid> <role>"
    assert verified["checkpoints"] >= 1 and verified["signatures_checked"]
    assert verified["not_yet_checkpointed"] == 0  # the last checkpoint was made at the stop

    same = cli_json(guard, "replay", "--policies", str(bundle_dir(tmp_path)), "--json")
    outcomes = {r.outcome for r in guard.decisions()}
    assert {"allow", "hold", "deny"} <= outcomes, outcomes
    assert same["replayed"] == len(guard.decisions()) >= 40
    assert same["changed"] == 0 and same["rule_changes"] == []
    assert same["exact"] == same["replayed"]  # every field of every decision reproduced

    candidate = tmp_path / "candidate"
    shutil.copytree(bundle_dir(tmp_path), candidate)
    (candidate / "test-extra.yaml").write_text(
        DENY_RULE + "    - id: hold-staging-configmap-update\n      decision: hold\n"
        "      match: {providers: [k8s], verbs: [update], environments: [staging]}\n"
        "      message: Staging configmaps change by review.\n"
        "      approval: {groups: [sre]}\n"
    )
    changed = cli_json(guard, "replay", "--policies", str(candidate), "--json")
    expected = {
        d.id
        for d in guard.decisions()
        if d.verb == "update" and d.provider == "k8s" and d.outcome == "allow"
    }
    assert len(expected) == 6
    assert {c["id"] for c in changed["changes"]} == expected
    assert changed["transitions"] == {"allow→hold": 6}
    table = cli_text(guard, "replay", "--policies", str(candidate))
    assert "6 would change" in table and "allow→hold" in table


@pytest.mark.slow
def test_a_shadow_bundle_is_recorded_not_enforced_and_replay_lists_the_differences(
    start_guard: StartGuard, tmp_path: Path, echo_server: EchoServer
) -> None:
    candidate = tmp_path / "candidate"
    shutil.copytree(bundle_dir(tmp_path), candidate)
    (candidate / "shadow.yaml").write_text(
        "apiVersion: guardproxy.dev/v1\nkind: PolicySet\nmetadata: {name: shadow}\n"
        "spec:\n  rules:\n    - id: deny-dev-create\n      decision: deny\n"
        "      match: {providers: [k8s], verbs: [create], environments: [dev]}\n"
        "      message: Not in dev.\n"
    )
    guard = start_guard(
        policies=bundle_dir(tmp_path),
        shadow_policies=candidate,
        kubernetes_hosts=[f"127.0.0.1:{echo_server.port}"],
        hold_window_seconds=0.3,
    )
    base = f"{echo_server.url}/api/v1/namespaces"
    with httpx.Client(proxy=guard.session("trial").proxy_url, timeout=15) as client:
        created = client.post(f"{base}/dev-app/configmaps", json={"metadata": {"name": "a"}})
        client.get(f"{base}/dev-app/configmaps")
    assert created.status_code == 200  # the shadow deny is not enforced
    assert len(echo_server.log.matching("POST")) == 1
    guard.stop()
    report = cli_json(guard, "replay", "--shadow", "--json")
    assert report["shadowed"] == 2
    [difference] = report["differences"]
    assert (difference["enforced"], difference["shadow"]) == ("allow", "deny")
    assert difference["shadow_rules"] == ["shadow/deny-dev-create"]
    assert "shadow:deny" in cli_text(guard, "audit", "list")
