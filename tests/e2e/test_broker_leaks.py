"""Real credentials never reach what guardproxy keeps or tells: the store (decisions,
holds and their request snapshots), its logs, the hold listing and the console's API,
webhooks, the audit export. A brokered session makes allowed, held and refused requests
to AWS and GitHub; then every one of those places is searched for the real secrets.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from guardproxy.control.client import ControlClient

from .aws_verify import KeyRing, SigV4Gate
from .broker_fixtures import (
    REAL_DEFAULT,
    REAL_GITHUB,
    REAL_PROD,
    brokered_run,
    leaked,
    make_user,
    write_config,
)
from .guard_fixtures import Guard, describe, guard_config, guardproxy_cli, run_client
from .servers import EchoServer, MotoServer
from .token_fakes import GithubServer

pytestmark = pytest.mark.slow

SCRIPT = r"""
import json, os, subprocess, urllib.request, urllib.error
import boto3
from botocore.config import Config
url = os.environ["URL"]
cfn = boto3.client("cloudformation", endpoint_url=url, region_name="us-east-1",
                   config=Config(retries={"max_attempts": 1}))
template = json.dumps({"Resources": {"Q": {"Type": "AWS::SQS::Queue", "Properties": {}}}})
cfn.create_stack(StackName="prod-calc", TemplateBody=template)
try:
    cfn.delete_stack(StackName="prod-calc")  # held (prod teardown), never approved
except Exception as error:
    print("held:", type(error).__name__)
request = urllib.request.Request(os.environ["GITHUB"] + "/user",
                                 headers={"Authorization": "token " + os.environ["GH_TOKEN"]})
print(urllib.request.urlopen(request, timeout=30).status)
bad = urllib.request.Request(os.environ["GITHUB"] + "/user",
                             headers={"Authorization": "token gpb_github_" + "a" * 32})
try:
    urllib.request.urlopen(bad, timeout=30)
except urllib.error.HTTPError as error:
    print("refused:", error.code)
"""


@pytest.fixture
def upstreams(tmp_path: Path) -> Iterator[tuple[MotoServer, GithubServer, EchoServer]]:
    ring = KeyRing()
    ring.add(REAL_DEFAULT)
    ring.add(REAL_PROD)
    with (
        MotoServer(wrap=lambda app: SigV4Gate(app, ring)) as aws,
        GithubServer(tmp_path / "github", REAL_GITHUB) as github,
        EchoServer() as hooks,
    ):
        aws.reset()
        yield aws, github, hooks
        aws.reset()


def test_no_real_credential_in_store_logs_holds_webhooks_or_exports(
    upstreams: tuple[MotoServer, GithubServer, EchoServer], tmp_path: Path
) -> None:
    aws, github, hooks = upstreams
    user = make_user(tmp_path / "home", {"GH_TOKEN": REAL_GITHUB, "HOOK_SECRET": "s3cret"})
    user.secrets.append(REAL_GITHUB)
    brokers = {
        "aws": {"hosts": [f"127.0.0.1:{aws.port}"]},
        "github": {"hosts": [f"127.0.0.1:{github.port}"]},
    }
    hook = {"kind": "webhook", "url": f"{hooks.url}/hook", "secret_env": "HOOK_SECRET"}
    config = write_config(tmp_path / "guardproxy.yaml", brokers, notifications=[hook])
    data_dir = tmp_path / "guard"
    proc = brokered_run(user, data_dir, config, [sys.executable, "-c", SCRIPT],
                        env={"URL": aws.url, "GITHUB": github.url})  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    assert "held:" in proc.stdout and "200" in proc.stdout and "refused: 403" in proc.stdout
    assert hooks.requests, "the hold was not notified"
    places: dict[str, str] = {"guard's log and the agent's output": proc.stdout + proc.stderr}
    for path in sorted(data_dir.glob("guardproxy.db*")):
        places[path.name] = path.read_bytes().decode("latin-1")
    places["webhooks"] = "\n".join(r.body.decode("utf-8", "replace") for r in hooks.requests)
    exported = run_client([*guardproxy_cli(), "audit", "export", "--data-dir", str(data_dir)],
                          user.environ)  # fmt: skip
    assert exported.returncode == 0 and exported.stdout, describe(exported)
    places["audit export"] = exported.stdout
    # the console's data: the control API of a guard on this data directory
    guard = Guard(guard_config(data_dir)).start()
    try:
        token = guard.add_approver("alice", "senior")
        approver = ControlClient(guard.control_url, token)
        [hold] = approver.holds("all")
        detail = approver.call("GET", f"/v1/holds/{hold['id']}")
    finally:
        guard.stop()
    assert detail["request"], "the hold shows the request to approvers"
    places["holds and the console's hold view"] = json.dumps([hold, detail])
    for place, text in places.items():
        assert leaked(text, user) == [], f"a real credential in {place}"
