"""Kubernetes credential brokering end to end: the session kubeconfig carries a session
token per user; the guard presents the user's real client certificate, bearer token or
exec-plugin token to that user's clusters. The fake API servers (tests/e2e/kube.py)
require the real certificate (mutual TLS against their own client CA) or the real token.
"""

from __future__ import annotations

import base64
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from .broker_fixtures import User, brokered_run, leaked, make_user, write_config
from .conftest import require_binary
from .guard_fixtures import describe
from .kube import KubeApiServer
from .pki import ThrowawayPki

pytestmark = pytest.mark.slow

REAL_KUBE_TOKEN = "REALkubeToken0000000000000000000000000000"
CONTEXTS = [("static", "static", "token-user"), ("plugin", "plugin", "exec-user")]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def cluster(name: str, server: KubeApiServer) -> dict[str, Any]:
    ca = b64(server.pki.ca.cert_pem)
    return {"name": name, "cluster": {"server": server.url, "certificate-authority-data": ca}}


def write_kubeconfig(user: User, clusters: list[dict[str, Any]], users: list[dict[str, Any]],
                     contexts: list[tuple[str, str, str]]) -> Path:  # fmt: skip
    config = {
        "apiVersion": "v1", "kind": "Config", "clusters": clusters, "users": users,
        "contexts": [{"name": n, "context": {"cluster": c, "user": u}} for n, c, u in contexts],
        "current-context": contexts[0][0], "preferences": {},
    }  # fmt: skip
    return user.write(".kube/config", yaml.safe_dump(config, sort_keys=False))


def kube_user(home: Path) -> User:
    user = make_user(home)
    user.environ["KUBECACHEDIR"] = str(home / ".kube" / "cache")
    return user


def kube_options(*servers: KubeApiServer) -> list[str]:
    return [option for s in servers for option in ("--kube-host", f"127.0.0.1:{s.port}")]


@pytest.fixture
def two_clusters() -> Iterator[tuple[KubeApiServer, KubeApiServer]]:
    with KubeApiServer(ThrowawayPki.create()) as a, KubeApiServer(ThrowawayPki.create()) as b:
        yield a, b


def test_two_clusters_on_one_host_name_each_get_their_own_certificate(
    two_clusters: tuple[KubeApiServer, KubeApiServer], tmp_path: Path
) -> None:
    """Both API servers are 127.0.0.1 (two ports), each with its own client CA; kubectl
    talks to both at once in one session. A certificate chosen by host name (the old
    <host>.pem) would hand one cluster the other's certificate."""
    kubectl = require_binary("kubectl")
    a, b = two_clusters
    user = kube_user(tmp_path / "home")
    users = [{"name": f"admin-{n}", "user": {"client-certificate-data": b64(s.pki.client.cert_pem),
                                              "client-key-data": b64(s.pki.client.key_pem)}}
             for n, s in (("a", a), ("b", b))]  # fmt: skip
    write_kubeconfig(user, [cluster("a", a), cluster("b", b)], users,
                     [("a", "a", "admin-a"), ("b", "b", "admin-b")])  # fmt: skip
    user.secrets += [a.pki.client.key_pem.decode().splitlines()[1],
                     b.pki.client.key_pem.decode().splitlines()[1]]  # fmt: skip
    script = (
        f"{kubectl} --context a get ns -o name > {tmp_path}/a.out & pa=$!; "
        f"{kubectl} --context b get ns -o name > {tmp_path}/b.out & pb=$!; "
        'wait $pa && wait $pb && cat "$KUBECONFIG"'
    )
    config = write_config(tmp_path / "guardproxy.yaml", {})
    proc = brokered_run(user, tmp_path / "guard", config, ["sh", "-c", script],
                        *kube_options(a, b))  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    for server in (a, b):
        assert server.requests and {r.client_cn for r in server.requests} == {"kube-admin"}
    assert "namespace/prod" in (tmp_path / "a.out").read_text()
    assert leaked(proc.stdout, user) == [], "a private key reached the session kubeconfig"
    session = yaml.safe_load(proc.stdout)
    assert {u["name"]: list(u["user"]) for u in session["users"]} == {
        "admin-a": ["token"],
        "admin-b": ["token"],
    }


EXEC_PLUGIN = r"""#!{python}
import json, sys, time
from pathlib import Path
issued = Path({issued!r})
n = len(issued.read_text().splitlines()) if issued.exists() else 0
token, expires = f"REALexecToken{{n:04d}}", time.time() + 3
with issued.open("a") as handle:
    handle.write(json.dumps([token, expires]) + "\n")
stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires))
print(json.dumps({{"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                  "status": {{"token": token, "expirationTimestamp": stamp}}}}))
"""


@pytest.fixture
def token_clusters(tmp_path: Path) -> Iterator[tuple[KubeApiServer, KubeApiServer, Path]]:
    """One API server accepting the user's static token, one accepting the exec plugin's
    tokens until each expires."""
    issued = tmp_path / "issued.jsonl"

    def exec_user(token: str) -> str | None:
        for line in issued.read_text().splitlines() if issued.exists() else []:
            known, expires = json.loads(line)
            if known == token and time.time() < expires:
                return "exec-admin"
        return None

    def static_user(token: str) -> str | None:
        return "token-admin" if token == REAL_KUBE_TOKEN else None

    pki = ThrowawayPki.create()
    with (
        KubeApiServer(pki, require_client_cert=False, token_user=static_user) as static,
        KubeApiServer(pki, require_client_cert=False, token_user=exec_user) as plugin,
    ):
        yield static, plugin, issued


def test_token_and_exec_plugin_users_are_brokered_and_refreshed(
    token_clusters: tuple[KubeApiServer, KubeApiServer, Path], tmp_path: Path
) -> None:
    kubectl = require_binary("kubectl")
    static, plugin, issued = token_clusters
    user = kube_user(tmp_path / "home")
    plugin_source = EXEC_PLUGIN.format(python=sys.executable, issued=str(issued))
    helper = user.write("bin/get-token", plugin_source, mode=0o755)
    users = [
        {"name": "token-user", "user": {"token": REAL_KUBE_TOKEN}},
        {"name": "exec-user", "user": {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1", "command": str(helper),
            "interactiveMode": "Never"}}},
    ]  # fmt: skip
    write_kubeconfig(user, [cluster("static", static), cluster("plugin", plugin)], users, CONTEXTS)
    user.secrets += [REAL_KUBE_TOKEN, "REALexecToken"]
    script = (
        f"{kubectl} --context static get ns -o name && "
        f"for i in 1 2 3 4 5; do {kubectl} --context plugin get ns -o name || exit 1; sleep 1; "
        'done; echo ===; cat "$KUBECONFIG"; echo ===; env'
    )
    config = write_config(tmp_path / "guardproxy.yaml", {"kubernetes": {}})
    proc = brokered_run(user, tmp_path / "guard", config, ["sh", "-c", script],
                        *kube_options(static, plugin))  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    assert leaked(proc.stdout, user) == []
    kubectl_out, kubeconfig, _ = proc.stdout.split("===\n")
    assert "namespace/prod" in kubectl_out
    session = yaml.safe_load(kubeconfig)
    assert {u["name"]: list(u["user"]) for u in session["users"]} == {
        "token-user": ["token"],
        "exec-user": ["token"],
    }
    runs = issued.read_text().splitlines()
    assert len(runs) >= 2, "the exec plugin's token expired but was not refreshed"
    for server in (static, plugin):
        assert server.requests and all(r.header("Authorization") for r in server.requests)
    assert not any("gpb_" in (r.header("Authorization") or "") for r in plugin.requests)


AROUND = r"""
import json, os, ssl, urllib.request, urllib.error
import yaml
config = yaml.safe_load(open(os.environ["KUBECONFIG"]))
out = {}
context = ssl._create_unverified_context()
direct = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                     urllib.request.HTTPSHandler(context=context))
for entry in config["users"]:
    cluster = {"token-user": "static", "exec-user": "plugin"}[entry["name"]]
    [server] = [c["cluster"]["server"] for c in config["clusters"] if c["name"] == cluster]
    request = urllib.request.Request(server + "/api/v1/namespaces",
                                     headers={"Authorization": "Bearer " + entry["user"]["token"]})
    try:
        direct.open(request, timeout=10)
        out[entry["name"]] = 200
    except urllib.error.HTTPError as error:
        out[entry["name"]] = error.code
print(json.dumps(out))
"""


def test_around_the_guard_the_session_tokens_fail_authentication(
    token_clusters: tuple[KubeApiServer, KubeApiServer, Path], tmp_path: Path
) -> None:
    static, plugin, _ = token_clusters
    user = kube_user(tmp_path / "home")
    users = [{"name": "token-user", "user": {"token": REAL_KUBE_TOKEN}},
             {"name": "exec-user", "user": {"token": REAL_KUBE_TOKEN + "x"}}]  # fmt: skip
    write_kubeconfig(user, [cluster("static", static), cluster("plugin", plugin)], users, CONTEXTS)
    config = write_config(tmp_path / "guardproxy.yaml", {"kubernetes": {}})
    proc = brokered_run(user, tmp_path / "guard", config, [sys.executable, "-c", AROUND],
                        *kube_options(static, plugin))  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"token-user": 401,
                                                                "exec-user": 401}  # fmt: skip
