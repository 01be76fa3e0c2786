"""The tool matrix in enforced mode, root mode first: each real client inside the sandbox.

For each client, in one ``guardproxy run --enforce`` session with its own guard: a read
is allowed and arrives; a destroy is held with the upstream intact; a human approves
(through that guard's control API, while the session waits); the identical command,
run again in the session, passes. Root mode: the guard runs as a throwaway system
user, the sandbox's only link is its veth pair; the clients that ignore proxy
variables (Node's fetch, Go tools) use a name the guard resolves to loopback (the
sandbox's own 127.0.0.1 is the sandbox's). Rootless: the three tools the attached
matrix (test_enforce_clients.py) does not cover, git, terraform and gcloud, the same
way. Every guard is ``--upstream-allow loopback``: every upstream is on this machine's
loopback, every name the clients use is in the test's /etc/hosts, nothing is looked up.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from guardproxy.store import open_store
from guardproxy.store.base import HoldState

from .aws_verify import KeyRing, SigV4Gate
from .broker_fixtures import REAL_PROD, write_config
from .enforce import (
    UPSTREAM_NAME,
    EnforcedSession,
    GuardUser,
    make_guard_user,
    require_enforce,
    require_tool,
)
from .guard_fixtures import hold_id_in, read_decisions
from .kube import KubeApiServer, write_kubeconfig
from .pki import ThrowawayPki
from .servers import EchoServer, GitHttpServer, MotoServer, git_env, run_git
from .test_captures import FakeCompute
from .test_clients_aws import STACK, TEMPLATE, moto_actions, stack_status
from .test_clients_terraform import CLI_CONFIG, PLUGIN_MIRROR, configuration

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

VOLUME = "/v1.43/volumes/prod-data"


@pytest.fixture(scope="module")
def guard_user() -> Iterator[GuardUser]:
    yield from make_guard_user()


@pytest.fixture(autouse=True)
def _enforce_available() -> None:
    require_enforce()


@dataclass
class Tool:
    """A client's read and destroy commands, what must run first, and how to see that
    the destroy happened upstream."""

    read: list[str]
    destroy: list[str]
    destroyed: Callable[[], bool]
    setup: list[list[str]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    options: list[str] = field(default_factory=list)
    reachable: list[Path] = field(default_factory=list)
    """Where the tool is installed, if the guard user must be able to see it (pyenv's)."""


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUARDPROXY_")}
    env.pop("KUBECONFIG", None)
    env.update(HOME=str(tmp_path), AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")  # fmt: skip
    return env


def _cycle(tmp_path: Path, mode: str, guard: GuardUser | None, tool: Tool) -> EnforcedSession:
    """Read, destroy (held), approve while the session waits, the same destroy again."""
    session = EnforcedSession(
        tmp_path, mode, {**_env(tmp_path), **tool.env}, guard=guard, options=tool.options,
        reachable=tool.reachable,
    )  # fmt: skip
    steps: list[dict[str, Any]] = [
        *({"name": f"setup-{n}", "argv": argv, "must_pass": True}
          for n, argv in enumerate(tool.setup)),
        {"name": "read", "argv": tool.read, "must_pass": True},
        {"name": "destroy", "argv": tool.destroy},
        {"wait": str(session.approved)},
        {"name": "retry", "argv": tool.destroy},
    ]  # fmt: skip
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    session.start(steps, cwd=work)
    try:
        results = session.until_waiting()
        held = results["destroy"]
        assert "held for human approval" in held["out"], results
        hold_id = hold_id_in(held["out"])
        assert not tool.destroyed(), "the destroy reached the upstream before a decision"
        assert session.approve(hold_id)["state"] == "approved"
        session.proceed()
        code = session.finish()
        assert session.results["retry"]["code"] == 0, session.results["retry"]
        assert code == 0, session.stderr[-3000:]
    finally:
        session.stop()
    assert tool.destroyed()
    decisions = read_decisions(session.data_dir)
    assert any(d.outcome == "allow" and d.verb == "read" for d in decisions), decisions
    assert [d.outcome for d in decisions if d.hold_id == hold_id][:1] == ["hold"], decisions
    store = open_store(str(session.data_dir / "guardproxy.db"))
    try:
        hold = store.get_hold(hold_id)
    finally:
        store.close()
    assert hold is not None and hold.state == HoldState.RELEASED, hold
    return session


def _root_checks(session: EnforcedSession, guard: GuardUser) -> None:
    """Root mode: the guard's data directory is its own, closed to everyone else."""
    info = session.data_dir.stat()
    assert (info.st_uid, info.st_mode & 0o777) == (guard.uid, 0o700)
    assert (session.data_dir / "control-token").stat().st_uid == guard.uid


MODES = ["root"]


# ----------------------------------------------------------------- HTTP clients, echo


_REQUESTS = "import requests, sys; r = requests.request({m!r}, {u!r}); print(r.status_code, r.text[:300]); sys.exit(r.status_code >= 400)"  # noqa: E501
_HTTPX = "import httpx, sys; r = httpx.request({m!r}, {u!r}); print(r.status_code, r.text[:300]); sys.exit(r.status_code >= 400)"  # noqa: E501
_NODE = "fetch({u!r}, {{method: {m!r}}}).then(async r => {{ console.log(r.status, await r.text()); process.exit(r.ok ? 0 : 1) }})"  # noqa: E501


def _echo_tool(client: str, echo: EchoServer) -> Tool:
    proxied = f"http://127.0.0.1:{echo.port}{VOLUME}"  # through HTTP_PROXY
    captured = f"http://{UPSTREAM_NAME}:{echo.port}{VOLUME}"  # ignores the proxy
    builders: dict[str, Callable[[str], list[str]]] = {
        "curl": lambda m: ["curl", "-sS", "--fail-with-body", "-X", m, proxied],
        "curl-noproxy": lambda m: [
            "curl",
            "--noproxy",
            "*",
            "-sS",
            "--fail-with-body",
            "-X",
            m,
            captured,
        ],
        "requests": lambda m: [sys.executable, "-c", _REQUESTS.format(m=m, u=proxied)],
        "httpx": lambda m: [sys.executable, "-c", _HTTPX.format(m=m, u=proxied)],
        "node-fetch": lambda m: ["node", "-e", _NODE.format(m=m, u=captured)],
        "docker": lambda m: (
            [
                "docker",
                "-H",
                f"tcp://{UPSTREAM_NAME}:{echo.port}",
                "version",
                "--format",
                "{{.Client.Version}}",
            ]
            if m == "GET"
            else ["docker", "-H", f"tcp://{UPSTREAM_NAME}:{echo.port}", "volume", "rm", "prod-data"]
        ),
    }
    build = builders[client]

    def destroyed() -> bool:
        return any(r.method == "DELETE" and "/volumes/prod-data" in r.target
                   for r in echo.requests)  # fmt: skip

    return Tool(read=build("GET"), destroy=build("DELETE"), destroyed=destroyed)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "client", ["curl", "curl-noproxy", "requests", "httpx", "node-fetch", "docker"]
)
def test_http_clients(
    client: str, mode: str, guard_user: GuardUser, echo_server: EchoServer, tmp_path: Path
) -> None:
    if client == "node-fetch":
        require_tool("node")
    if client == "docker":
        require_tool("docker")
    session = _cycle(tmp_path, mode, guard_user, _echo_tool(client, echo_server))
    _root_checks(session, guard_user)


# ----------------------------------------------------------------------------- AWS


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


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("client", ["aws", "boto3"])
def test_aws(
    client: str, mode: str, guard_user: GuardUser, moto_server: MotoServer, tmp_path: Path
) -> None:
    endpoint = f"http://{UPSTREAM_NAME}:{moto_server.port}"
    template = tmp_path / "stack.json"
    template.write_text(TEMPLATE)
    if client == "aws":
        aws = require_tool("aws")
        base = [aws, "--endpoint-url", endpoint, "--output", "json", "cloudformation"]
        create = [*base, "create-stack", "--stack-name", STACK, "--template-body",
                  template.as_uri()]  # fmt: skip
        read, destroy = ([*base, "describe-stacks", "--stack-name", STACK],
                         [*base, "delete-stack", "--stack-name", STACK])  # fmt: skip
    else:
        script = tmp_path / "cfn.py"
        script.write_text(_BOTO3.format(url=endpoint, stack=STACK))
        create = [sys.executable, str(script), "create", str(template)]
        read, destroy = [sys.executable, str(script), "read"], [sys.executable, str(script), "x"]
    installed = [Path(read[0]).resolve().parent.parent] if client == "aws" else []  # pyenv's
    tool = Tool(read=read, destroy=destroy, setup=[create], reachable=installed,
                destroyed=lambda: bool(moto_actions(moto_server, "DeleteStack")))  # fmt: skip
    _cycle(tmp_path, mode, guard_user, tool)
    assert stack_status(moto_server) is None


_STAND_IN_CHECK = """
import os, sys
key = os.environ.get("AWS_ACCESS_KEY_ID", "")
sys.exit(0 if key.startswith("GPAK") and {real!r} not in repr(os.environ) else 1)
"""


@pytest.fixture
def gated_moto() -> Iterator[MotoServer]:
    """moto behind AWS's signature check, knowing only the user's real key."""
    ring = KeyRing()
    ring.add(REAL_PROD)
    with MotoServer(wrap=lambda app: SigV4Gate(app, ring)) as server:
        server.reset()
        yield server
        server.reset()


def test_aws_brokered_in_root_mode(
    guard_user: GuardUser, gated_moto: MotoServer, tmp_path: Path
) -> None:
    """Root mode brokers as rootless does: the agent holds stand-ins only, the guard
    (its own user) signs with the user's real key, the only key the upstream accepts."""
    endpoint = f"http://{UPSTREAM_NAME}:{gated_moto.port}"
    template = tmp_path / "stack.json"
    template.write_text(TEMPLATE)
    script = tmp_path / "cfn.py"
    script.write_text(_BOTO3.format(url=endpoint, stack=STACK))
    check = tmp_path / "stand_in.py"
    check.write_text(_STAND_IN_CHECK.format(real=REAL_PROD.secret))
    tool = Tool(
        read=[sys.executable, str(script), "read"],
        destroy=[sys.executable, str(script), "x"],
        setup=[[sys.executable, str(check)],
               [sys.executable, str(script), "create", str(template)]],
        destroyed=lambda: bool(moto_actions(gated_moto, "DeleteStack")),
        env={"AWS_ACCESS_KEY_ID": REAL_PROD.access_key, "AWS_SECRET_ACCESS_KEY": REAL_PROD.secret},
        options=["--config", str(write_config(tmp_path / "guardproxy.yaml", {
            "aws": {"hosts": [f"{UPSTREAM_NAME}:{gated_moto.port}"]}}))],
    )  # fmt: skip
    session = _cycle(tmp_path, "root", guard_user, tool)
    assert "credentials brokered by the guard" in session.stderr
    assert [a for a in ("CreateStack", "DescribeStacks", "DeleteStack")
            if not moto_actions(gated_moto, a)] == []  # fmt: skip


# ------------------------------------------------------------------- Go: kubectl


@pytest.mark.parametrize("mode", MODES)
def test_kubectl(
    mode: str, guard_user: GuardUser, kube_api: KubeApiServer, pki: ThrowawayPki, tmp_path: Path
) -> None:
    """Through the session kubeconfig's proxy-url (the guard's listener on the veth
    pair): the client certificate and the cluster's CA are handed to the guard."""
    kubectl = require_tool("kubectl")
    cluster = f"127.0.0.1:{kube_api.port}"
    kubeconfig = write_kubeconfig(
        tmp_path / "user-kubeconfig", kube_api.url, ca_pem=pki.ca.cert_pem,
        client_cert_pem=pki.client.cert_pem, client_key_pem=pki.client.key_pem,
    )  # fmt: skip
    config = yaml.safe_load(kubeconfig.read_text())
    config["users"][0]["user"]["token"] = "e2e-agent-token"
    kubeconfig.write_text(yaml.safe_dump(config, sort_keys=False))
    tool = Tool(
        read=[kubectl, "get", "ns"],
        destroy=[kubectl, "delete", "namespace", "prod"],
        destroyed=lambda: "prod" not in kube_api.namespaces(),
        env={"KUBECONFIG": str(kubeconfig)},
        options=["--kube-host", cluster, "--env", f"k8s:cluster:{cluster}=prod"],
    )
    _cycle(tmp_path, mode, guard_user, tool)
    assert [r.target for r in kube_api.log.matching("DELETE")] == ["/api/v1/namespaces/prod"]


# ------------------------------------------------------------------------- git push


@pytest.mark.parametrize("mode", ["root", "rootless"])
def test_git_push(
    mode: str, guard_user: GuardUser, git_server: GitHttpServer, tmp_path: Path
) -> None:
    """Deleting a branch of a prod repository is held; approved, the same push lands."""
    git = require_tool("git")
    home = tmp_path / "git-home"
    home.mkdir()
    environment = git_env(home)
    clone = tmp_path / "clone"
    run_git(["clone", "--quiet", git_server.repo_url, str(clone)], environment)
    git_server.log.clear()
    push = [git, "-C", str(clone), "push", "origin", "--delete", "feature-x"]
    tool = Tool(
        read=[git, "-C", str(clone), "fetch", "origin"],
        destroy=push,
        destroyed=lambda: "feature-x" not in git_server.branches(),
        env={k: v for k, v in environment.items() if k != "PATH"},
        options=["--env", "git:repo:repo=prod"],
    )
    _cycle(tmp_path, mode, guard_user if mode == "root" else None, tool)


# ------------------------------------------------------------ terraform + AWS provider


# rootless only: a minute a run, and root mode's capture of a Go client is what
# test_kubectl[root] and the docker CLI already show
@pytest.mark.parametrize("mode", ["rootless"])
def test_terraform(
    mode: str, guard_user: GuardUser, moto_server: MotoServer, tmp_path: Path
) -> None:
    """terraform (Go) with the real hashicorp/aws provider from the filesystem mirror:
    apply creates the prod bucket, plan reads it, destroy is held before DeleteBucket."""
    terraform = require_tool("terraform")
    if not any(PLUGIN_MIRROR.glob("registry.terraform.io/hashicorp/aws/*/*/terraform-provider-*")):
        pytest.skip(f"no hashicorp/aws provider in the filesystem mirror {PLUGIN_MIRROR}")
    stack = tmp_path / "stack"
    stack.mkdir()
    (stack / "main.tf").write_text(configuration(f"http://{UPSTREAM_NAME}:{moto_server.port}"))
    (tmp_path / "terraform.rc").write_text(CLI_CONFIG)
    tf_home = tmp_path / "tf-home"
    tf_home.mkdir()
    env = {"TF_CLI_CONFIG_FILE": str(tmp_path / "terraform.rc"),
           "TF_DATA_DIR": str(tmp_path / "tf-data"), "TF_IN_AUTOMATION": "1",
           "CHECKPOINT_DISABLE": "1", "HOME": str(tf_home)}  # fmt: skip
    tf = [terraform, f"-chdir={stack}"]
    flags = ["-input=false", "-no-color"]

    def bucket_gone() -> bool:
        return any(r.method == "DELETE" and r.path == "/prod-assets" for r in moto_server.requests)

    tool = Tool(
        setup=[[*tf, "init", *flags], [*tf, "apply", "-auto-approve", *flags]],
        read=[*tf, "plan", "-detailed-exitcode", *flags],
        destroy=[*tf, "destroy", "-auto-approve", *flags],
        destroyed=bucket_gone,
        env=env,
        options=["--allow-unix-sockets"],  # terraform talks to its provider over one
    )
    _cycle(tmp_path, mode, guard_user if mode == "root" else None, tool)
    decisions = [d for d in read_decisions(tmp_path / "data") if d.operation == "DeleteBucket"]
    assert [d.outcome for d in decisions][:1] == ["hold"] and decisions[0].environment == "prod"


# --------------------------------------------------------------------------- gcloud


def _gcloud_env(tmp_path: Path, compute: FakeCompute) -> dict[str, str]:
    token = tmp_path / "gcloud-token"
    token.write_text("ya29.fake-token-for-tests")
    config = tmp_path / "gcloud"
    config.mkdir(exist_ok=True)
    # compute.googleapis.com by name, on the fake's port: the guard recognises Google's
    # host and resolves it (the test's /etc/hosts) to the fake on loopback
    return {
        "CLOUDSDK_CONFIG": str(config),
        "CLOUDSDK_AUTH_ACCESS_TOKEN_FILE": str(token),
        "CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE":
            f"http://compute.googleapis.com:{compute.port}/compute/v1/",
        "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "true",
        "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "true",
        "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
        "CLOUDSDK_CORE_CHECK_GCE_METADATA": "false",
        "NO_GCE_CHECK": "True",
    }  # fmt: skip


@pytest.mark.parametrize("mode", ["root", "rootless"])
def test_gcloud(mode: str, guard_user: GuardUser, tmp_path: Path) -> None:
    gcloud = require_tool("gcloud")
    instance = ["compute", "instances"]
    where = ["vm-1", "--zone", "z", "--project", "p", "--format", "json"]
    with FakeCompute() as compute:

        def deleted() -> bool:
            return any(r.method == "DELETE" and r.path.endswith("/instances/vm-1")
                       for r in compute.requests)  # fmt: skip

        tool = Tool(
            read=[gcloud, *instance, "list", "--zones", "z", "--project", "p", "--format", "json"],
            destroy=[gcloud, *instance, "delete", *where, "--quiet"],
            destroyed=deleted,
            env=_gcloud_env(tmp_path, compute),
        )
        session = _cycle(tmp_path, mode, guard_user if mode == "root" else None, tool)
        assert not compute.handler_errors, compute.handler_errors
    gcp = [d for d in read_decisions(session.data_dir) if d.provider == "gcp"]
    assert {d.operation for d in gcp} >= {"compute.instances.list", "compute.instances.delete"}
    assert next(d.outcome for d in gcp if d.operation == "compute.instances.delete") == "hold"
