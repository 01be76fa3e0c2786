"""Impact previews and the namespace export for Kubernetes, through a real guard, against
the fake API server (tests/e2e/kube.py, serving workloads).

The agent deletes with a bearer token the API server accepts; the guard's own reads
present the credential the proxy presents for the held request (that token). The
server's request log is the ground truth: the export's reads come before the delete,
and a delete is forwarded once, after the approval.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from .guard_fixtures import Guard, GuardSession, StartGuard, describe
from .impact_fixtures import approver_env, hold_deletes_bundle, in_thread, wait_for_impact
from .kube import KubeApiServer
from .pki import PkiFiles, ThrowawayPki

pytestmark = pytest.mark.slow

TOKEN = "agent-cluster-token"


@pytest.fixture
def cluster(pki: ThrowawayPki) -> Iterator[KubeApiServer]:
    tokens = {TOKEN: "agent"}
    with KubeApiServer(
        pki, require_client_cert=False, token_user=tokens.get, workloads=True
    ) as server:
        yield server


def _obj(kind: str, name: str, api: str = "v1", **extra: Any) -> dict[str, Any]:
    return {"apiVersion": api, "kind": kind, "metadata": {"name": name}, **extra}


@pytest.fixture
def guard(
    start_guard: StartGuard, tmp_path: Path, cluster: KubeApiServer, pki_files: PkiFiles
) -> Guard:
    return start_guard(
        policies=hold_deletes_bundle(tmp_path / "policies"), hold_window_seconds=60,
        kubernetes_hosts=[f"127.0.0.1:{cluster.port}"], upstream_ca_files=[pki_files.ca_cert],
    )  # fmt: skip


def agent_delete(guard: Guard, session: GuardSession, url: str) -> httpx.Response:
    ca = ssl.create_default_context(cafile=guard.config.ca_dir / "mitmproxy-ca-cert.pem")
    with httpx.Client(proxy=session.proxy_url, verify=ca, timeout=120) as client:
        return client.delete(url, headers={"Authorization": f"Bearer {TOKEN}"})


def seed_namespace(cluster: KubeApiServer) -> None:
    """prod holds (besides the seeded pods api-0 and api-1) two deployments, a stateful
    set, two claims, a service, a config map and a secret."""
    store = cluster.store
    for name in ("api", "worker"):
        store.create("deployments", "prod", _obj("Deployment", name, "apps/v1"))
    store.create("statefulsets", "prod", _obj("StatefulSet", "db", "apps/v1"))
    for name in ("data-db-0", "uploads"):
        store.create("persistentvolumeclaims", "prod", _obj("PersistentVolumeClaim", name))
    store.create("services", "prod", _obj("Service", "api"))
    store.create("configmaps", "prod", _obj("ConfigMap", "settings", data={"mode": "prod"}))
    store.create("secrets", "prod", _obj("Secret", "db-password", data={"p": "c2VjcmV0"}))


def test_namespace_delete_counts_its_workloads_and_is_exported_before_release(
    guard: Guard, cluster: KubeApiServer
) -> None:
    seed_namespace(cluster)
    session = guard.session("impact-kube")
    live = in_thread(lambda: agent_delete(guard, session, f"{cluster.url}/api/v1/namespaces/prod"))
    hold = wait_for_impact(guard, guard.wait_for_pending_hold()["id"])
    impact = hold["impact"]
    assert impact["status"] == "known", impact
    assert impact["impact"]["counts"] == {
        "deployments": 2, "statefulsets": 1, "persistentvolumeclaims": 2, "services": 1,
        "pods": 2,
    }  # fmt: skip
    assert impact["summary"] == (
        "namespace prod: 2 deployments, 1 statefulset, 2 persistentvolumeclaims, 1 service, 2 pods"
    )
    assert "prod" in cluster.namespaces()

    done = guard.cli(
        "approve", hold["id"], "--reason", "export first", "--with", "snapshot",
        env=approver_env(guard), timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, describe(done)
    assert live.join().status_code == 200
    assert "prod" not in cluster.namespaces()

    [step] = guard.hold(hold["id"])["safety_steps"]
    folder = Path(step["result"]["folder"])
    exported = {
        path.name: list(yaml.safe_load_all(path.read_text())) for path in folder.glob("*.yaml")
    }
    names = {f: sorted(o["metadata"]["name"] for o in objs) for f, objs in exported.items()}
    assert names == {
        "apps_v1_deployments.yaml": ["api", "worker"],
        "apps_v1_statefulsets.yaml": ["db"],
        "v1_persistentvolumeclaims.yaml": ["data-db-0", "uploads"],
        "v1_services.yaml": ["api"],
        "v1_configmaps.yaml": ["settings"],
        "v1_pods.yaml": ["api-0", "api-1"],
    }
    assert exported["v1_configmaps.yaml"][0]["data"] == {"mode": "prod"}
    assert step["result"]["secrets_included"] is False and "Secrets left out" in step["text"]
    # ground truth: every read of the export came before the one delete, no secret was read
    log = [(r.method, r.path) for r in cluster.all_requests]
    delete = log.index(("DELETE", "/api/v1/namespaces/prod"))
    reads = [n for n, (m, p) in enumerate(log) if m == "GET" and "/namespaces/prod/" in p]
    assert reads and max(reads) < delete
    assert [entry for entry in log if entry[0] == "DELETE"] == [
        ("DELETE", "/api/v1/namespaces/prod")
    ]
    assert not any(p.endswith("/secrets") for _, p in log)


def test_the_policy_may_export_secrets_too(
    start_guard: StartGuard, tmp_path: Path, cluster: KubeApiServer, pki_files: PkiFiles
) -> None:
    guard = start_guard(
        policies=hold_deletes_bundle(tmp_path / "secret-policies", secrets=True),
        hold_window_seconds=60, kubernetes_hosts=[f"127.0.0.1:{cluster.port}"],
        upstream_ca_files=[pki_files.ca_cert],
    )  # fmt: skip
    seed_namespace(cluster)
    session = guard.session("impact-kube-secrets")
    live = in_thread(lambda: agent_delete(guard, session, f"{cluster.url}/api/v1/namespaces/prod"))
    hold = guard.wait_for_pending_hold()
    guard.approver("alice").resolve(hold["id"], approve=True, reason="ok", steps=["snapshot"])
    live.join()
    [step] = guard.hold(hold["id"])["safety_steps"]
    secrets = Path(step["result"]["folder"]) / "v1_secrets.yaml"
    assert yaml.safe_load(secrets.read_text())["metadata"]["name"] == "db-password"


def test_volume_and_definition_deletes_show_what_binds_them(
    guard: Guard, cluster: KubeApiServer
) -> None:
    store = cluster.store
    store.create("persistentvolumes", None, _obj(
        "PersistentVolume", "pv-data",
        spec={"capacity": {"storage": "50Gi"}, "persistentVolumeReclaimPolicy": "Delete",
              "claimRef": {"namespace": "prod", "name": "data-db-0"}},
        status={"phase": "Bound"},
    ))  # fmt: skip
    store.create("pods", "prod", _obj(
        "Pod", "db-0", spec={"containers": [], "volumes": [
            {"name": "data", "persistentVolumeClaim": {"claimName": "data-db-0"}}]},
    ))  # fmt: skip
    store.create("customresourcedefinitions", None, _obj(
        "CustomResourceDefinition", "widgets.example.com", "apiextensions.k8s.io/v1",
        spec={"group": "example.com", "names": {"plural": "widgets", "kind": "Widget"},
              "scope": "Namespaced", "versions": [{"name": "v1", "served": True,
                                                   "storage": True}]},
    ))  # fmt: skip
    for namespace, name in (("prod", "w1"), ("prod", "w2"), ("dev", "w3")):
        store.create("widgets", namespace, _obj("Widget", name, "example.com/v1"))
    session = guard.session("impact-kube-bindings")
    deletes = {
        "pv": f"{cluster.url}/api/v1/persistentvolumes/pv-data",
        "crd": f"{cluster.url}/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
        "widgets.example.com",
    }
    found: dict[str, dict[str, Any]] = {}
    for what, url in deletes.items():
        live = in_thread(lambda url=url: agent_delete(guard, session, url))  # type: ignore[misc]
        hold = guard.wait_for_pending_hold()
        found[what] = wait_for_impact(guard, hold["id"])["impact"]
        guard.approver("alice").resolve(hold["id"], approve=False, reason="seen enough")
        live.join()
        time.sleep(0.1)
    pv = found["pv"]
    assert pv["status"] == "known", pv
    assert pv["impact"]["claim"] == {"namespace": "prod", "name": "data-db-0"}
    assert pv["impact"]["pods"] == ["db-0"] and pv["impact"]["capacity"] == "50Gi"
    assert "mounted by 1 pod (db-0)" in pv["summary"]
    crd = found["crd"]
    assert crd["status"] == "known", crd
    assert crd["impact"]["objects"] == 3 and crd["impact"]["namespaces"] == ["dev", "prod"]
    assert crd["summary"].startswith("3 custom resources of widgets.example.com")
    assert not [r for r in cluster.requests if r.method == "DELETE"]
