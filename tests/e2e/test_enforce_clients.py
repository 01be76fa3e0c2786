"""The tool matrix in enforced mode: each real client, unmodified, inside the sandbox.

For each client: a read is allowed and arrives; a destroy is held with the upstream
intact; a human approves; the identical command, run again (a new enforced session
from the same directory), passes once. Clients that ignore proxy variables (Node's
fetch, Go talking to loopback) are captured transparently; the others use the
in-sandbox proxy listener. Every upstream is on the host's loopback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from .enforce import require_enforce, require_tool
from .guard_fixtures import Guard, StartGuard, describe, guardproxy_cli, hold_id_in, run_client
from .kube import KubeApiServer, write_kubeconfig
from .pki import ThrowawayPki
from .servers import EchoServer, MotoServer
from .test_clients_aws import STACK, TEMPLATE, moto_actions, stack_status

pytestmark = pytest.mark.slow

VOLUME = "/v1.43/volumes/prod-data"


@pytest.fixture(autouse=True)
def _enforce_available() -> None:
    require_enforce()


@dataclass
class Enforced:
    """``guardproxy run --enforce --proxy`` against one guard, from one directory."""

    guard: Guard
    env: dict[str, str]
    cwd: Path

    def __call__(self, *command: str) -> subprocess.CompletedProcess[str]:
        argv = [*guardproxy_cli(), "run", "--enforce", "--proxy",
                f"http://127.0.0.1:{self.guard.proxy_port}", "--data-dir",
                str(self.guard.data_dir), "--", *command]  # fmt: skip
        return run_client(argv, self.env, cwd=self.cwd)


def _enforced(guard: Guard, tmp_path: Path) -> Enforced:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUARDPROXY_")}
    env.pop("KUBECONFIG", None)
    env.update(HOME=str(tmp_path), AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")  # fmt: skip
    work = tmp_path / "work"
    work.mkdir()
    return Enforced(guard, env, work)


@pytest.fixture
def enforced(start_guard: StartGuard, tmp_path: Path) -> Enforced:
    return _enforced(start_guard(hold_window_seconds=1), tmp_path)


def _held(proc: subprocess.CompletedProcess[str]) -> str:
    text = proc.stdout + proc.stderr
    assert "held for human approval" in text, describe(proc)
    return hold_id_in(text)


def _cycle(
    enforced: Enforced,
    read: list[str],
    destroy: list[str],
    destroyed: Callable[[], bool],
) -> None:
    """Read allowed; destroy held (upstream intact); approve; the same destroy passes."""
    done = enforced(*read)
    assert done.returncode == 0, describe(done)
    held = enforced(*destroy)
    hold_id = _held(held)
    assert not destroyed(), "the destroy reached the upstream before a decision"
    assert enforced.guard.hold(hold_id)["state"] == "pending"
    enforced.guard.on_call.approve(hold_id, reason="approved in the enforce matrix")
    again = enforced(*destroy)
    assert again.returncode == 0, describe(again)
    assert destroyed()
    assert enforced.guard.hold(hold_id)["state"] == "released"
    decisions = enforced.guard.decisions()
    assert any(d.outcome == "allow" and d.verb == "read" for d in decisions), decisions


# ----------------------------------------------------------------- HTTP clients, echo


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


_REQUESTS = "import requests, sys; r = requests.request({m!r}, {u!r}); print(r.status_code, r.text[:300]); sys.exit(r.status_code >= 400)"  # noqa: E501
_HTTPX = "import httpx, sys; r = httpx.request({m!r}, {u!r}); print(r.status_code, r.text[:300]); sys.exit(r.status_code >= 400)"  # noqa: E501
_NODE = "fetch({u!r}, {{method: {m!r}}}).then(async r => {{ console.log(r.status, await r.text()); process.exit(r.ok ? 0 : 1) }})"  # noqa: E501

ECHO_CLIENTS: dict[str, Callable[[str, str], list[str]]] = {
    "curl": lambda m, u: ["curl", "-sS", "--fail-with-body", "-X", m, u],
    "requests": lambda m, u: _python(_REQUESTS.format(m=m, u=u)),
    "httpx": lambda m, u: _python(_HTTPX.format(m=m, u=u)),
    "node-fetch": lambda m, u: ["node", "-e", _NODE.format(m=m, u=u)],
}


@pytest.mark.parametrize("client", sorted(ECHO_CLIENTS))
def test_http_clients(client: str, enforced: Enforced, echo_server: EchoServer) -> None:
    url = f"http://127.0.0.1:{echo_server.port}{VOLUME}"
    build = ECHO_CLIENTS[client]
    if client == "node-fetch":
        require_tool("node")

    def destroyed() -> bool:
        return any(r.method == "DELETE" for r in echo_server.requests)

    _cycle(enforced, build("GET", url), build("DELETE", url), destroyed)


def test_docker_cli(enforced: Enforced, echo_server: EchoServer) -> None:
    docker = require_tool("docker")
    host = ["-H", f"tcp://127.0.0.1:{echo_server.port}"]

    def destroyed() -> bool:
        return any(r.method == "DELETE" and "/volumes/prod-data" in r.target
                   for r in echo_server.requests)  # fmt: skip

    _cycle(enforced, [docker, *host, "version", "--format", "{{.Client.Version}}"],
           [docker, *host, "volume", "rm", "prod-data"], destroyed)  # fmt: skip


# ----------------------------------------------------------------------------- AWS


def test_aws_cli(enforced: Enforced, moto_server: MotoServer, tmp_path: Path) -> None:
    aws = require_tool("aws")
    template = tmp_path / "stack.json"
    template.write_text(TEMPLATE)
    base = [aws, "--endpoint-url", moto_server.url, "--output", "json", "cloudformation"]
    created = enforced(*base, "create-stack", "--stack-name", STACK, "--template-body",
                       template.as_uri())  # fmt: skip
    assert created.returncode == 0, describe(created)
    _cycle(enforced, [*base, "describe-stacks", "--stack-name", STACK],
           [*base, "delete-stack", "--stack-name", STACK],
           lambda: bool(moto_actions(moto_server, "DeleteStack")))  # fmt: skip
    assert stack_status(moto_server) is None


_BOTO3 = """
import boto3, sys
cfn = boto3.client("cloudformation", endpoint_url={url!r})
if sys.argv[1] == "create":
    cfn.create_stack(StackName={stack!r}, TemplateBody=open(sys.argv[2]).read())
elif sys.argv[1] == "read":
    print(cfn.describe_stacks(StackName={stack!r})["Stacks"][0]["StackStatus"])
else:
    cfn.delete_stack(StackName={stack!r})
"""


def test_boto3(enforced: Enforced, moto_server: MotoServer, tmp_path: Path) -> None:
    script = tmp_path / "cfn.py"
    script.write_text(_BOTO3.format(url=moto_server.url, stack=STACK))
    template = tmp_path / "stack.json"
    template.write_text(TEMPLATE)
    created = enforced(sys.executable, str(script), "create", str(template))
    assert created.returncode == 0, describe(created)
    _cycle(enforced, [sys.executable, str(script), "read"],
           [sys.executable, str(script), "delete"],
           lambda: bool(moto_actions(moto_server, "DeleteStack")))  # fmt: skip


# ------------------------------------------------------------------- Go: kubectl


@pytest.mark.parametrize("route", ["proxy-url", "captured"])
def test_kubectl(
    route: str,
    start_guard: StartGuard,
    kube_api: KubeApiServer,
    pki: ThrowawayPki,
    tmp_path: Path,
) -> None:
    """Through the session kubeconfig's proxy-url, and (captured) with the proxy-url
    removed inside the sandbox: Go then dials the loopback server itself."""
    kubectl = require_tool("kubectl")
    cluster = f"127.0.0.1:{kube_api.port}"
    guard = start_guard(hold_window_seconds=1, kubernetes_hosts=[cluster],
                        environments={f"k8s:cluster:{cluster}": "prod"})  # fmt: skip
    enforced = _enforced(guard, tmp_path)
    kubeconfig = write_kubeconfig(
        tmp_path / "user-kubeconfig", kube_api.url, ca_pem=pki.ca.cert_pem,
        client_cert_pem=pki.client.cert_pem, client_key_pem=pki.client.key_pem,
    )  # fmt: skip
    config = yaml.safe_load(kubeconfig.read_text())
    config["users"][0]["user"]["token"] = "e2e-agent-token"
    kubeconfig.write_text(yaml.safe_dump(config, sort_keys=False))
    enforced.env["KUBECONFIG"] = str(kubeconfig)
    prefix = [kubectl]
    if route == "captured":
        direct = 'sed "/proxy-url/d" "$KUBECONFIG" > "$HOME/kc-direct" && '
        direct += 'KUBECONFIG="$HOME/kc-direct" exec "$0" "$@"'
        prefix = ["sh", "-c", direct, kubectl]

    def destroyed() -> bool:
        return "prod" not in kube_api.namespaces()

    _cycle(enforced, [*prefix, "get", "ns"], [*prefix, "delete", "namespace", "prod"],
           destroyed)  # fmt: skip
    assert [r.target for r in kube_api.log.matching("DELETE")] == ["/api/v1/namespaces/prod"]
