"""``guardproxy replay --flows``: a mitmproxy flow file decided as the guard would have.

The flow file is written with mitmproxy's own FlowWriter from HTTP flows built with
mitmproxy's API, and read back by the CLI through mitmproxy's FlowReader.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from mitmproxy import connection, http, io
from policy_helpers import DENY_RULE

from guardproxy.cli.main import main
from guardproxy.store import DecisionRecord, SqliteStore

POLICIES = Path(__file__).resolve().parents[2] / "policies"
CLUSTER_PORT = 6443
T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC).timestamp()


def flow(
    n: int, client: str, method: str, url: str, body: bytes = b"", **headers: str
) -> http.HTTPFlow:
    client_conn = connection.Client(
        peername=(client, 50000 + n), sockname=("127.0.0.1", 8080), timestamp_start=T0 + n
    )
    server_conn = connection.Server(address=("127.0.0.1", CLUSTER_PORT))
    made = http.HTTPFlow(client_conn, server_conn)
    fields = [(k.encode(), v.encode()) for k, v in (headers or {"accept": "*/*"}).items()]
    made.request = http.Request.make(method, url, body, fields)
    made.request.timestamp_start = T0 + n
    made.request.timestamp_end = T0 + n + 0.01
    made.response = http.Response.make(200, b"{}", {"content-type": "application/json"})
    return made


def k8s_url(path: str) -> str:
    return f"https://127.0.0.1:{CLUSTER_PORT}{path}"


@pytest.fixture
def flow_file(tmp_path: Path) -> Path:
    flows = [
        flow(0, "10.0.0.1", "GET", k8s_url("/api/v1/namespaces")),
        flow(1, "10.0.0.1", "DELETE", k8s_url("/api/v1/namespaces/prod")),
        flow(2, "10.0.0.2", "DELETE", k8s_url("/api/v1/namespaces/dev-app/configmaps/forbidden")),
        flow(
            3,
            "10.0.0.2",
            "POST",
            "https://cloudformation.us-east-1.amazonaws.com/",
            b"Action=DescribeStacks&Version=2010-05-15",
            **{"content-type": "application/x-www-form-urlencoded"},
        ),
    ]
    # a burst of deletes from one client: the later ones are held by the session's
    # destructive budget, which only a history replayed in order can know
    flows += [
        flow(10 + i, "10.0.0.3", "DELETE", k8s_url(f"/api/v1/namespaces/staging/pods/p-{i}"))
        for i in range(12)
    ]
    flows[1].metadata["guardproxy.decision"] = "d-recorded-prod"
    flows[0].metadata["guardproxy.decision"] = "d-recorded-read"
    path = tmp_path / "capture.flows"
    with path.open("wb") as handle:
        writer = io.FlowWriter(handle)  # type: ignore[no-untyped-call]
        for each in flows:
            writer.add(each)
    return path


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    target = tmp_path / "policies"
    shutil.copytree(POLICIES, target)
    (target / "test-extra.yaml").write_text(DENY_RULE)
    return target


def replay(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["replay", *args])
    return code, capsys.readouterr().out


def test_flows_are_decided_in_order_with_session_history(
    flow_file: Path, bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = replay(
        capsys,
        "--flows", str(flow_file), "--policies", str(bundle),
        "--kubernetes-host", f"127.0.0.1:{CLUSTER_PORT}", "--json",
    )  # fmt: skip
    assert code == 0
    report = json.loads(out)
    decisions = {d["flow"]: d for d in report["decisions"]}
    assert report["requests"] == 16 and report["skipped"] == 0
    assert decisions[0]["outcome"] == "allow"
    assert decisions[1]["outcome"] == "hold"
    assert "k8s/hold-prod-namespace-delete" in decisions[1]["rules"]
    assert decisions[2]["outcome"] == "deny"
    assert decisions[2]["rules"] == ["test-extra/deny-forbidden-configmap"]
    assert decisions[3]["action"] == "aws cloudformation DescribeStacks"
    burst = [decisions[4 + i]["outcome"] for i in range(12)]
    assert burst[0] == "allow" and burst[-1] == "hold"  # the budget runs out mid-burst
    assert decisions[4]["session"] == "anonymous:10.0.0.3"
    assert sum(report["distribution"].values()) == 16
    assert report["with_recorded_decision"] == 0  # no store given: nothing to compare


def test_flows_carrying_guardproxy_decisions_show_the_differences(
    tmp_path: Path, flow_file: Path, bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "data"
    with SqliteStore(data_dir / "guardproxy.db") as store:
        at = datetime.fromtimestamp(T0, UTC)
        for decision_id, outcome in (("d-recorded-prod", "allow"), ("d-recorded-read", "allow")):
            store.append_decision(
                DecisionRecord(
                    id=decision_id, at=at, session_id="s", action_json="{}", context_json="{}",
                    decision_json=json.dumps({"outcome": outcome}), outcome=outcome,
                )
            )  # fmt: skip
    code, out = replay(
        capsys,
        "--flows", str(flow_file), "--policies", str(bundle), "--data-dir", str(data_dir),
        "--kubernetes-host", f"127.0.0.1:{CLUSTER_PORT}", "--json", "--fail-on-change",
    )  # fmt: skip
    report = json.loads(out)
    assert code == 1
    assert report["with_recorded_decision"] == 2
    assert [(d["flow"], d["recorded"], d["outcome"]) for d in report["differences"]] == [
        (1, "allow", "hold")
    ]
    code, out = replay(
        capsys,
        "--flows", str(flow_file), "--policies", str(bundle), "--data-dir", str(data_dir),
        "--kubernetes-host", f"127.0.0.1:{CLUSTER_PORT}",
    )  # fmt: skip
    assert code == 0
    assert "16 requests" in out and "1 differ from what guardproxy recorded" in out


def test_an_unreadable_flow_file_is_a_clear_error(
    tmp_path: Path, bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.flows"
    broken.write_bytes(b"this is not a flow file")
    assert main(["replay", "--flows", str(broken), "--policies", str(bundle)]) == 2
    assert "cannot read flows" in capsys.readouterr().err


def test_a_tampered_recorded_decision_is_not_compared_against(
    tmp_path: Path, flow_file: Path, bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "data"
    with SqliteStore(data_dir / "guardproxy.db") as store:
        at = datetime.fromtimestamp(T0, UTC)
        for decision_id in ("d-recorded-prod", "d-recorded-read"):
            store.append_decision(
                DecisionRecord(
                    id=decision_id, at=at, session_id="s", action_json="{}", context_json="{}",
                    decision_json=json.dumps({"outcome": "hold"}), outcome="hold",
                )
            )  # fmt: skip
    with sqlite3.connect(data_dir / "guardproxy.db") as db:
        db.execute(
            "UPDATE audit_log SET payload = replace(payload, '\"hold\"', '\"allow\"')"
            " WHERE record_id = 'd-recorded-prod'"
        )
    arguments = ["--flows", str(flow_file), "--policies", str(bundle), "--data-dir",
                 str(data_dir), "--kubernetes-host", f"127.0.0.1:{CLUSTER_PORT}"]  # fmt: skip
    assert main(["replay", *arguments]) == 1
    err = capsys.readouterr().err
    assert "the audit trail is broken at chain 1 record #1 (d-recorded-prod)" in err
    assert main(["replay", *arguments, "--allow-broken-chain", "--json"]) == 0
    captured = capsys.readouterr()
    assert "warning: the audit trail is broken" in captured.err
    assert json.loads(captured.out)["chain"]["intact"] is False


def test_the_proxy_settings_replay_takes_are_checked(
    tmp_path: Path, flow_file: Path, bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    arguments = ["replay", "--flows", str(flow_file), "--policies", str(bundle), "--json"]
    config = tmp_path / "guardproxy.yaml"
    config.write_text(f"kubernetes_hosts: ['127.0.0.1:{CLUSTER_PORT}']\ndestructive_budget: 3\n")
    assert main([*arguments, "--config", str(config)]) == 0
    burst = [d["outcome"] for d in json.loads(capsys.readouterr().out)["decisions"][4:]]
    assert burst == ["allow"] * 3 + ["hold"] * 9  # the config file's budget, not 10
    for wrong, message in (
        (["--config", str(tmp_path / "missing.yaml")], "cannot read the config file"),
        (["--env", "prod"], "--env 'prod': write SELECTOR=ENV"),
        (["--destructive-budget", "0"], "destructive_budget: Input should be greater than"),
    ):
        assert main([*arguments, *wrong]) == 2
        assert message in capsys.readouterr().err
