"""Kubernetes's destructive operations: every built-in resource of a current release
(``DELETE`` of a named object and of the collection), RBAC writes, eviction, token
requests and CSR approval, as kubectl sends them to a configured API server."""

from __future__ import annotations

from collections.abc import Iterator

from guardproxy.recognise.examples import NAME, example_request
from guardproxy.recognise.registry import Example
from guardproxy.recognise.request import RecogniseSettings

__all__ = ["destructive"]

_HOST = "k8s.calc.internal"
_PORT = 6443
_SETTINGS = RecogniseSettings(kubernetes_hosts=(f"{_HOST}:{_PORT}",))

# The built-in resources of Kubernetes 1.34 served by default (GA groups; beta APIs are
# off by default), from the API reference (kubernetes.io/docs/reference/kubernetes-api,
# and kubernetes/kubernetes api/discovery/aggregated_v2.json): (group, version, resource,
# namespaced, supports deletecollection). Every one supports delete.
_K8S_RESOURCES: tuple[tuple[str, str, str, bool, bool], ...] = (
    ("", "v1", "configmaps", True, True),
    ("", "v1", "endpoints", True, True),
    ("", "v1", "events", True, True),
    ("", "v1", "limitranges", True, True),
    ("", "v1", "namespaces", False, False),
    ("", "v1", "nodes", False, True),
    ("", "v1", "persistentvolumeclaims", True, True),
    ("", "v1", "persistentvolumes", False, True),
    ("", "v1", "pods", True, True),
    ("", "v1", "podtemplates", True, True),
    ("", "v1", "replicationcontrollers", True, True),
    ("", "v1", "resourcequotas", True, True),
    ("", "v1", "secrets", True, True),
    ("", "v1", "serviceaccounts", True, True),
    ("", "v1", "services", True, True),
    ("admissionregistration.k8s.io", "v1", "mutatingwebhookconfigurations", False, True),
    ("admissionregistration.k8s.io", "v1", "validatingadmissionpolicies", False, True),
    ("admissionregistration.k8s.io", "v1", "validatingadmissionpolicybindings", False, True),
    ("admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations", False, True),
    ("apiextensions.k8s.io", "v1", "customresourcedefinitions", False, True),
    ("apiregistration.k8s.io", "v1", "apiservices", False, True),
    ("apps", "v1", "controllerrevisions", True, True),
    ("apps", "v1", "daemonsets", True, True),
    ("apps", "v1", "deployments", True, True),
    ("apps", "v1", "replicasets", True, True),
    ("apps", "v1", "statefulsets", True, True),
    ("autoscaling", "v2", "horizontalpodautoscalers", True, True),
    ("batch", "v1", "cronjobs", True, True),
    ("batch", "v1", "jobs", True, True),
    ("certificates.k8s.io", "v1", "certificatesigningrequests", False, True),
    ("coordination.k8s.io", "v1", "leases", True, True),
    ("discovery.k8s.io", "v1", "endpointslices", True, True),
    ("events.k8s.io", "v1", "events", True, True),
    ("flowcontrol.apiserver.k8s.io", "v1", "flowschemas", False, True),
    ("flowcontrol.apiserver.k8s.io", "v1", "prioritylevelconfigurations", False, True),
    ("networking.k8s.io", "v1", "ingressclasses", False, True),
    ("networking.k8s.io", "v1", "ingresses", True, True),
    ("networking.k8s.io", "v1", "ipaddresses", False, True),
    ("networking.k8s.io", "v1", "networkpolicies", True, True),
    ("networking.k8s.io", "v1", "servicecidrs", False, True),
    ("node.k8s.io", "v1", "runtimeclasses", False, True),
    ("policy", "v1", "poddisruptionbudgets", True, True),
    ("rbac.authorization.k8s.io", "v1", "clusterrolebindings", False, True),
    ("rbac.authorization.k8s.io", "v1", "clusterroles", False, True),
    ("rbac.authorization.k8s.io", "v1", "rolebindings", True, True),
    ("rbac.authorization.k8s.io", "v1", "roles", True, True),
    ("resource.k8s.io", "v1", "deviceclasses", False, True),
    ("resource.k8s.io", "v1", "resourceclaims", True, True),
    ("resource.k8s.io", "v1", "resourceclaimtemplates", True, True),
    ("resource.k8s.io", "v1", "resourceslices", False, True),
    ("scheduling.k8s.io", "v1", "priorityclasses", False, True),
    ("storage.k8s.io", "v1", "csidrivers", False, True),
    ("storage.k8s.io", "v1", "csinodes", False, True),
    ("storage.k8s.io", "v1", "csistoragecapacities", True, True),
    ("storage.k8s.io", "v1", "storageclasses", False, True),
    ("storage.k8s.io", "v1", "volumeattachments", False, True),
    ("storage.k8s.io", "v1", "volumeattributesclasses", False, True),
)

_RBAC_KINDS = {
    "roles": "Role",
    "rolebindings": "RoleBinding",
    "clusterroles": "ClusterRole",
    "clusterrolebindings": "ClusterRoleBinding",
}


def _k8s_collection(group: str, version: str, resource: str, namespaced: bool) -> str:
    base = f"/api/{version}" if not group else f"/apis/{group}/{version}"
    return f"{base}/namespaces/{NAME}/{resource}" if namespaced else f"{base}/{resource}"


def _k8s(label: str, method: str, path: str, body: object = None) -> Example:
    headers: tuple[tuple[str, str], ...] = (
        ("user-agent", "kubectl/v1.34.0 (linux/amd64) kubernetes/0000000"),
    )
    if method == "PATCH":  # kubectl patch's default; plain JSON is no patch type (415)
        headers += (("content-type", "application/strategic-merge-patch+json"),)
    request = example_request(method, _HOST, path, body or b"", headers, port=_PORT)
    return Example(label, request, settings=_SETTINGS)


def destructive() -> Iterator[Example]:
    """Every built-in resource's delete and deletecollection, RBAC writes, eviction,
    token requests and CSR approval, sent to a configured API server."""
    for group, version, resource, namespaced, collection in _K8S_RESOURCES:
        where = _k8s_collection(group, version, resource, namespaced)
        kind = f"k8s:{group or 'core'}:{resource}"
        yield _k8s(f"{kind}:delete", "DELETE", f"{where}/{NAME}")
        if collection:
            yield _k8s(f"{kind}:deletecollection", "DELETE", where)
        if resource in _RBAC_KINDS:
            body: dict[str, object] = {
                "apiVersion": f"{group}/{version}",
                "kind": _RBAC_KINDS[resource],
                "metadata": {"name": NAME},
            }
            yield _k8s(f"{kind}:create", "POST", where, body)
            yield _k8s(f"{kind}:update", "PUT", f"{where}/{NAME}", body)
            yield _k8s(f"{kind}:patch", "PATCH", f"{where}/{NAME}", {"rules": []})
    pods = _k8s_collection("", "v1", "pods", True)
    eviction = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": NAME}}
    yield _k8s("k8s:core:pods/eviction:create", "POST", f"{pods}/{NAME}/eviction", eviction)
    accounts = _k8s_collection("", "v1", "serviceaccounts", True)
    token = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest"}
    yield _k8s("k8s:core:serviceaccounts/token:create", "POST", f"{accounts}/{NAME}/token", token)
    csrs = _k8s_collection("certificates.k8s.io", "v1", "certificatesigningrequests", False)
    approval = {"status": {"conditions": [{"type": "Approved", "status": "True"}]}}
    for method in ("PUT", "PATCH"):
        yield _k8s(
            f"k8s:certificates.k8s.io:certificatesigningrequests/approval:{method.lower()}",
            method,
            f"{csrs}/{NAME}/approval",
            approval,
        )
