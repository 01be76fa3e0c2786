"""Brokering in an enforced session: the real credential files are hidden in the sandbox,
the agent's environment, the files it can read and its process list hold no real
credential, and its tools still work through the guard with the stand-ins.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from .aws_verify import KeyRing, SigV4Gate
from .broker_fixtures import (
    REAL_DEFAULT,
    REAL_GITHUB,
    REAL_PROD,
    User,
    brokered_run,
    leaked,
    make_user,
    write_config,
)
from .enforce import require_enforce, require_tool
from .guard_fixtures import StartGuard, describe, guardproxy_cli, run_client
from .kube import KubeApiServer
from .pki import ThrowawayPki
from .servers import MotoServer

pytestmark = pytest.mark.slow

REAL_KUBE_TOKEN = "REALkubeTokenEnforced000000000000000000"

LOOK_AROUND = r"""
import json, os, sys
from pathlib import Path
seen = {"environ": dict(os.environ), "files": {}, "processes": {}}
roots = [Path(os.environ["HOME"]), Path(os.environ["KUBECONFIG"]).parent]
for root in roots:
    for path in root.rglob("*") if root.is_dir() else []:
        try:
            if path.is_file() and path.stat().st_size < 1 << 20:
                seen["files"][str(path)] = path.read_bytes().decode("latin-1")
        except OSError:
            seen["files"][str(path)] = "<unreadable>"
for proc in Path("/proc").iterdir():
    if proc.name.isdigit():
        entry = {}
        for part in ("cmdline", "environ"):
            try:
                entry[part] = (proc / part).read_bytes().decode("latin-1")
            except OSError:
                entry[part] = "<unreadable>"
        seen["processes"][proc.name] = entry
print(json.dumps(seen))
"""


@pytest.fixture
def aws() -> Iterator[MotoServer]:
    ring = KeyRing()
    ring.add(REAL_DEFAULT)
    ring.add(REAL_PROD)
    with MotoServer(wrap=lambda app: SigV4Gate(app, ring)) as server:
        server.reset()
        yield server
        server.reset()


@pytest.fixture
def kube() -> Iterator[KubeApiServer]:
    pki = ThrowawayPki.create()

    def admin(token: str) -> str | None:
        return "admin" if token == REAL_KUBE_TOKEN else None

    with KubeApiServer(pki, require_client_cert=False, token_user=admin) as server:
        yield server


def enforced_user(tmp_path: Path, kube: KubeApiServer) -> User:
    user = make_user(tmp_path / "home", {"GH_TOKEN": REAL_GITHUB})
    ca = base64.b64encode(kube.pki.ca.cert_pem).decode()
    user.write(".kube/config", yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "k", "cluster": {"server": kube.url,
                                               "certificate-authority-data": ca}}],
        "users": [{"name": "admin", "user": {"token": REAL_KUBE_TOKEN}}],
        "contexts": [{"name": "k", "context": {"cluster": "k", "user": "admin"}}],
        "current-context": "k",
    }))  # fmt: skip
    user.secrets += [REAL_GITHUB, REAL_KUBE_TOKEN]
    return user


def test_an_enforced_session_sees_no_real_credential_and_its_tools_work(
    aws: MotoServer, kube: KubeApiServer, tmp_path: Path
) -> None:
    require_enforce()
    aws_bin, kubectl = require_tool("aws"), require_tool("kubectl")
    user = enforced_user(tmp_path, kube)
    look = tmp_path / "look_around.py"
    look.write_text(LOOK_AROUND)
    script = (
        f'{aws_bin} --endpoint-url "$URL" sts get-caller-identity --output text && '
        f"{kubectl} get ns -o name && echo === && cat $HOME/.aws/credentials $HOME/.kube/config; "
        f"echo === && {sys.executable} {look}"
    )
    config = write_config(tmp_path / "guardproxy.yaml", {
        "aws": {"hosts": [f"127.0.0.1:{aws.port}"]},
        "github": {"hosts": ["github.com"]},
        "kubernetes": {},
    })  # fmt: skip
    proc = brokered_run(user, tmp_path / "guard", config, ["sh", "-c", script], "--enforce",
                        "--kube-host", f"127.0.0.1:{kube.port}", env={"URL": aws.url},
                        timeout=180)  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    tools, hidden_files, looked = proc.stdout.split("===\n")
    assert "arn:aws:sts::" in tools and "namespace/prod" in tools
    assert hidden_files.strip() == "", "the real credential files are visible in the sandbox"
    seen = json.loads(looked.strip().splitlines()[-1])
    assert seen["processes"], "the process list could not be read"
    assert seen["environ"]["AWS_ACCESS_KEY_ID"].startswith("GPAK")
    assert seen["environ"]["GH_TOKEN"].startswith("gpb_github_")
    for part in ("environ", "processes"):
        assert leaked(json.dumps(seen[part]), user) == [], f"a real credential in the {part}"
    leaking = [path for path, text in seen["files"].items() if leaked(text, user)]
    assert leaking == [], "real credentials in files the agent can read"
    assert any(path.endswith("/aws-credentials") for path in seen["files"])  # looked there
    assert {r.header("Authorization") for r in kube.requests} == {f"Bearer {REAL_KUBE_TOKEN}"}


def test_a_session_attached_to_a_running_guard_gets_its_stand_ins_from_it(
    kube: KubeApiServer, start_guard: StartGuard, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`run --proxy`: the session registers its kubeconfig with the guard (the control
    API), whose broker keeps the users' credentials and answers with the session's tokens;
    the guard's own environment holds the GitHub token it swaps in."""
    kubectl = require_tool("kubectl")
    monkeypatch.setenv("GUARD_GITHUB_TOKEN", REAL_GITHUB)
    guard = start_guard(
        brokers={"kubernetes": {}, "github": {"token": "env:GUARD_GITHUB_TOKEN"}},
        kubernetes_hosts=[f"127.0.0.1:{kube.port}"],
    )
    user = enforced_user(tmp_path, kube)
    user.environ.pop("GH_TOKEN")
    argv = [*guardproxy_cli(), "run", "--proxy", f"http://127.0.0.1:{guard.proxy_port}",
            "--data-dir", str(guard.data_dir), "--", "sh", "-c",
            f'{kubectl} get ns -o name && cat "$KUBECONFIG" && env']  # fmt: skip
    proc = run_client(argv, user.environ)
    assert proc.returncode == 0, describe(proc)
    assert "namespace/prod" in proc.stdout and "GH_TOKEN=gpb_github_" in proc.stdout
    assert leaked(proc.stdout, user) == []
    assert {r.header("Authorization") for r in kube.requests} == {f"Bearer {REAL_KUBE_TOKEN}"}


def test_guardproxy_env_exports_the_stand_ins_and_unsets_the_real_credentials(
    start_guard: StartGuard, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`eval "$(guardproxy env)"` puts a shell behind a running guard: brokered
    credentials are exported as stand-ins, the real ones it had are unset."""
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", REAL_DEFAULT.access_key)  # the guard's own
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", REAL_DEFAULT.secret)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    guard = start_guard(brokers={"aws": {}})
    user = make_user(tmp_path / "home", {"AWS_SESSION_TOKEN": "REALshellToken",
                                         "AWS_PROFILE": "prod-admin"})  # fmt: skip
    user.secrets.append("REALshellToken")
    proc = run_client([*guardproxy_cli(), "env", "--data-dir", str(guard.data_dir),
                       "--control", guard.control_url], user.environ)  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    assert "export AWS_ACCESS_KEY_ID=GPAK" in proc.stdout
    assert "unset AWS_SESSION_TOKEN" in proc.stdout and "unset AWS_PROFILE" in proc.stdout
    assert leaked(proc.stdout, user) == []
