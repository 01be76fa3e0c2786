"""Kubernetes: the API server's own request grammar, verbs, bodies and risk tags."""

from __future__ import annotations

import json
from typing import Any

import pytest
from recognise_support import http, k8s_protobuf

from guardproxy.action import Action, Confidence, Environment, Provider, Verb
from guardproxy.recognise import RecogniseSettings, recognise
from guardproxy.recognise.k8s import request_info

CLUSTER = "127.0.0.1:6443"
SETTINGS = RecogniseSettings(kubernetes_hosts=(CLUSTER,))
PROTOBUF = "application/vnd.kubernetes.protobuf"


def k8s(
    method: str,
    path: str,
    body: bytes | dict[str, Any] | list[Any] = b"",
    content_type: str = "application/json",
    **headers: str,
) -> Action:
    raw = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
    all_headers = {
        "Content-Type": content_type,
        **{k.replace("_", "-"): v for k, v in headers.items()},
    }
    return recognise(http(method, path, headers=all_headers, body=raw), SETTINGS)


# (method, path, operation, verb, resource type, name, namespace)
TABLE: list[tuple[str, str, str, Verb, str, str, str]] = [
    ("GET", "/api/v1/namespaces/prod/pods", "list", Verb.READ, "k8s:core:pods", "", "prod"),
    (
        "GET",
        "/api/v1/namespaces/prod/pods/web-1",
        "get",
        Verb.READ,
        "k8s:core:pods",
        "web-1",
        "prod",
    ),
    ("HEAD", "/api/v1/nodes/n1", "get", Verb.READ, "k8s:core:nodes", "n1", ""),
    ("GET", "/api/v1/pods?watch=1", "watch", Verb.READ, "k8s:core:pods", "", ""),
    (
        "GET",
        "/api/v1/pods?watch=true&resourceVersion=5",
        "watch",
        Verb.READ,
        "k8s:core:pods",
        "",
        "",
    ),
    ("GET", "/api/v1/pods?watch=0", "list", Verb.READ, "k8s:core:pods", "", ""),
    ("GET", "/api/v1/watch/namespaces/prod/pods", "watch", Verb.READ, "k8s:core:pods", "", "prod"),
    (
        "GET",
        "/api/v1/watch/namespaces/prod/pods/web-1",
        "watch",
        Verb.READ,
        "k8s:core:pods",
        "web-1",
        "prod",
    ),
    (
        "GET",
        "/api/v1/namespaces/prod/pods?fieldSelector=metadata.name%3Dweb-1",
        "list",
        Verb.READ,
        "k8s:core:pods",
        "web-1",
        "prod",
    ),
    (
        "GET",
        "/apis/apps/v1/namespaces/prod/deployments/web",
        "get",
        Verb.READ,
        "k8s:apps:deployments",
        "web",
        "prod",
    ),
    (
        "GET",
        "/api/v1/namespaces/prod/pods/web-1/log",
        "get",
        Verb.READ,
        "k8s:core:pods/log",
        "web-1",
        "prod",
    ),
    ("GET", "/api/v1/namespaces/prod", "get", Verb.READ, "k8s:core:namespaces", "prod", "prod"),
    (
        "PUT",
        "/api/v1/namespaces/prod/status",
        "update",
        Verb.UPDATE,
        "k8s:core:namespaces/status",
        "prod",
        "prod",
    ),
    (
        "PUT",
        "/apis/apps/v1/namespaces/prod/deployments/web",
        "update",
        Verb.UPDATE,
        "k8s:apps:deployments",
        "web",
        "prod",
    ),
    (
        "PATCH",
        "/apis/apps/v1/namespaces/prod/deployments/web",
        "patch",
        Verb.UPDATE,
        "k8s:apps:deployments",
        "web",
        "prod",
    ),
    (
        "DELETE",
        "/api/v1/namespaces/prod",
        "delete",
        Verb.DESTROY,
        "k8s:core:namespaces",
        "prod",
        "prod",
    ),
    (
        "DELETE",
        "/api/v1/persistentvolumes/pv-1",
        "delete",
        Verb.DESTROY,
        "k8s:core:persistentvolumes",
        "pv-1",
        "",
    ),
    (
        "DELETE",
        "/api/v1/namespaces/prod/persistentvolumeclaims/data",
        "delete",
        Verb.DESTROY,
        "k8s:core:persistentvolumeclaims",
        "data",
        "prod",
    ),
    (
        "DELETE",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com",
        "delete",
        Verb.DESTROY,
        "k8s:apiextensions.k8s.io:customresourcedefinitions",
        "widgets.example.com",
        "",
    ),
    (
        "DELETE",
        "/api/v1/namespaces/prod/pods/web-1",
        "delete",
        Verb.DELETE,
        "k8s:core:pods",
        "web-1",
        "prod",
    ),
    (
        "DELETE",
        "/apis/apps/v1/namespaces/prod/statefulsets/db",
        "delete",
        Verb.DELETE,
        "k8s:apps:statefulsets",
        "db",
        "prod",
    ),
    (
        "DELETE",
        "/apis/example.com/v1/namespaces/prod/widgets/w1",
        "delete",
        Verb.DELETE,
        "k8s:example.com:widgets",
        "w1",
        "prod",
    ),
    (
        "DELETE",
        "/apis/apps/v1/namespaces/prod/deployments",
        "deletecollection",
        Verb.DESTROY,
        "k8s:apps:deployments",
        "",
        "prod",
    ),
    (
        "POST",
        "/api/v1/namespaces/prod/pods/web-1/exec?command=sh",
        "exec",
        Verb.EXECUTE,
        "k8s:core:pods/exec",
        "web-1",
        "prod",
    ),
    (
        "GET",
        "/api/v1/namespaces/prod/pods/web-1/exec?command=sh&stdin=true",
        "exec",
        Verb.EXECUTE,
        "k8s:core:pods/exec",
        "web-1",
        "prod",
    ),
    (
        "POST",
        "/api/v1/namespaces/prod/pods/web-1/attach",
        "attach",
        Verb.EXECUTE,
        "k8s:core:pods/attach",
        "web-1",
        "prod",
    ),
    (
        "POST",
        "/api/v1/namespaces/prod/pods/web-1/portforward",
        "portforward",
        Verb.EXECUTE,
        "k8s:core:pods/portforward",
        "web-1",
        "prod",
    ),
    (
        "GET",
        "/api/v1/namespaces/prod/services/web/proxy/healthz",
        "get",
        Verb.EXECUTE,
        "k8s:core:services/proxy",
        "web",
        "prod",
    ),
    (
        "GET",
        "/api/v1/proxy/namespaces/prod/services/web",
        "proxy",
        Verb.EXECUTE,
        "k8s:core:services",
        "web",
        "prod",
    ),
    (
        "POST",
        "/api/v1/namespaces/prod/serviceaccounts/deployer/token",
        "create",
        Verb.PERMISSION,
        "k8s:core:serviceaccounts/token",
        "deployer",
        "prod",
    ),
    (
        "POST",
        "/api/v1/namespaces/prod/pods/web-1/eviction",
        "create",
        Verb.DELETE,
        "k8s:core:pods/eviction",
        "web-1",
        "prod",
    ),
    (
        "POST",
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        "create",
        Verb.READ,
        "k8s:authorization.k8s.io:selfsubjectaccessreviews",
        "",
        "",
    ),
    (
        "DELETE",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/prod/rolebindings/admins",
        "delete",
        Verb.PERMISSION,
        "k8s:rbac.authorization.k8s.io:rolebindings",
        "admins",
        "prod",
    ),
    (
        "FROB",
        "/api/v1/namespaces/prod/pods/web-1",
        "",
        Verb.UNKNOWN,
        "k8s:core:pods",
        "web-1",
        "prod",
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "operation", "verb", "rtype", "name", "namespace"), TABLE
)
def test_request_grammar(
    method: str, path: str, operation: str, verb: Verb, rtype: str, name: str, namespace: str
) -> None:
    action = k8s(method, path)
    assert action.provider is Provider.K8S
    assert (action.operation, action.verb) == (operation, verb)
    assert (action.resource.type, action.resource.name, action.scope.namespace) == (
        rtype,
        name,
        namespace,
    )
    assert action.scope.cluster == CLUSTER
    assert action.confidence is (Confidence.UNKNOWN if verb is Verb.UNKNOWN else Confidence.EXACT)


@pytest.mark.parametrize(
    "path",
    [
        "/api",
        "/apis",
        "/api/v1",
        "/apis/apps/v1",
        "/version",
        "/openapi/v2",
        "/openapi/v3/apis/apps/v1",
    ],
)
def test_discovery_is_read(path: str) -> None:
    action = k8s("GET", path)
    assert (action.provider, action.verb, action.operation, action.resource.type) == (
        Provider.K8S,
        Verb.READ,
        "get",
        "",
    )


def test_service_is_the_api_group() -> None:
    assert k8s("GET", "/api/v1/pods").service == "core"
    assert k8s("GET", "/apis/apps/v1/deployments").service == "apps"


def test_namespace_key_and_environment() -> None:
    action = k8s("DELETE", "/api/v1/namespaces/prod", {"propagationPolicy": "Background"})
    assert action.resource.key == "k8s:127.0.0.1:6443:k8s:core:namespaces/prod"
    assert action.environment is Environment.PROD
    pod = k8s("DELETE", "/api/v1/namespaces/team-a/pods/web-1")
    assert pod.resource.key == "k8s:127.0.0.1:6443:team-a:k8s:core:pods/web-1"
    assert pod.environment is Environment.UNKNOWN


def test_subresource_shares_the_object_key() -> None:
    scale = k8s(
        "PATCH", "/apis/apps/v1/namespaces/prod/deployments/web/scale", {"spec": {"replicas": 2}}
    )
    whole = k8s("DELETE", "/apis/apps/v1/namespaces/prod/deployments/web")
    assert scale.resource.key == whole.resource.key


# --------------------------------------------------------------------------- bodies


def test_create_name_from_json_body() -> None:
    action = k8s(
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "prod-app"}},
    )
    assert (action.operation, action.verb, action.resource.name) == (
        "create",
        Verb.CREATE,
        "prod-app",
    )
    assert action.scope.namespace == "prod-app"
    assert action.environment is Environment.PROD


def test_create_name_from_protobuf_body() -> None:
    """kubectl create sends protobuf: the name sits in the runtime.Unknown envelope."""
    body = k8s_protobuf("v1", "Namespace", "prod-app")
    action = k8s(
        "POST",
        "/api/v1/namespaces?fieldManager=kubectl-create&fieldValidation=Strict",
        body,
        PROTOBUF,
        Kubectl_Command="kubectl create namespace",
        User_Agent="kubectl/v1.32.4 (linux/amd64) kubernetes/4cb5f07",
    )
    assert (action.operation, action.resource.name) == ("create", "prod-app")
    assert action.risk_tags == ["kubectl:kubectl create namespace"]
    assert action.actor.tool == "kubectl"


def test_protobuf_deployment_in_a_namespace() -> None:
    body = k8s_protobuf("apps/v1", "Deployment", "web", namespace="payments", replicas=3)
    action = k8s("POST", "/apis/apps/v1/namespaces/payments/deployments", body, PROTOBUF)
    assert (action.resource.type, action.resource.name, action.scope.namespace) == (
        "k8s:apps:deployments",
        "web",
        "payments",
    )
    assert action.risk_tags == []


def test_rbac_create_is_a_permission_change() -> None:
    body = {
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "agent-admin"},
        "roleRef": {"name": "cluster-admin"},
    }
    action = k8s("POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", body)
    assert (action.service, action.verb, action.resource.name) == (
        "rbac.authorization.k8s.io",
        Verb.PERMISSION,
        "agent-admin",
    )
    assert action.resource.type == "k8s:rbac.authorization.k8s.io:clusterrolebindings"


# --------------------------------------------------------------------------- risk tags


@pytest.mark.parametrize(
    ("method", "path", "body", "content_type", "tags"),
    [
        (
            "PATCH",
            "/apis/apps/v1/namespaces/p/deployments/web/scale",
            {"spec": {"replicas": 0}},
            "application/merge-patch+json",
            ["scale-to-zero"],
        ),
        (
            "PATCH",
            "/apis/apps/v1/namespaces/p/deployments/web/scale",
            {"spec": {"replicas": 1}},
            "application/merge-patch+json",
            [],
        ),
        (
            "PATCH",
            "/apis/apps/v1/namespaces/p/deployments/web",
            {"spec": {"replicas": 0}},
            "application/strategic-merge-patch+json",
            ["scale-to-zero"],
        ),
        (
            "PATCH",
            "/apis/apps/v1/namespaces/p/statefulsets/db",
            [{"op": "replace", "path": "/spec/replicas", "value": 0}],
            "application/json-patch+json",
            ["scale-to-zero"],
        ),
        (
            "PUT",
            "/apis/apps/v1/namespaces/p/deployments/web/scale",
            k8s_protobuf("autoscaling/v1", "Scale", "web", "p", replicas=0),
            PROTOBUF,
            ["scale-to-zero"],
        ),
        (
            "PATCH",
            "/apis/apps/v1/namespaces/p/deployments/web?fieldManager=kubectl",
            b"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {replicas: 0}\n",
            "application/apply-patch+yaml",
            ["scale-to-zero"],
        ),
        (
            "POST",
            "/apis/apps/v1/namespaces/p/deployments",
            {"metadata": {"name": "web"}, "spec": {"replicas": 0}},
            "application/json",
            [],
        ),
        (
            "DELETE",
            "/api/v1/namespaces/p/pods/web-1?gracePeriodSeconds=0",
            b"",
            "application/json",
            ["force"],
        ),
        (
            "DELETE",
            "/api/v1/namespaces/p/pods/web-1",
            {"kind": "DeleteOptions", "gracePeriodSeconds": 0},
            "application/json",
            ["force"],
        ),
        (
            "DELETE",
            "/api/v1/namespaces/p/pods/web-1",
            {"kind": "DeleteOptions", "gracePeriodSeconds": 30},
            "application/json",
            [],
        ),
        ("DELETE", "/api/v1/namespaces/p/configmaps", b"", "application/json", ["bulk"]),
        (
            "PUT",
            "/api/v1/namespaces/stuck/finalize",
            {"spec": {"finalizers": []}},
            "application/json",
            ["force"],
        ),
    ],
)
def test_risk_tags(
    method: str,
    path: str,
    body: bytes | dict[str, Any] | list[Any],
    content_type: str,
    tags: list[str],
) -> None:
    assert k8s(method, path, body, content_type).risk_tags == tags


@pytest.mark.parametrize(
    ("path", "body", "dry"),
    [
        ("/api/v1/namespaces/prod?dryRun=All", b"", True),
        ("/api/v1/namespaces/prod", {"kind": "DeleteOptions", "dryRun": ["All"]}, True),
        ("/api/v1/namespaces/prod", b"", False),
    ],
)
def test_dry_run(path: str, body: bytes | dict[str, Any], dry: bool) -> None:
    assert k8s("DELETE", path, body).dry_run is dry


def test_kubectl_command_header_tags_any_request() -> None:
    action = k8s("DELETE", "/api/v1/namespaces/p/configmaps/cfg-b", Kubectl_Command="kubectl apply")
    assert action.risk_tags == ["kubectl:kubectl apply"]
    assert action.actor.tool == "kubectl"


def test_namespace_config_beats_cluster_config() -> None:
    settings = RecogniseSettings(
        kubernetes_hosts=(CLUSTER,),
        environments={f"k8s:cluster:{CLUSTER}": "prod", "k8s:namespace:sandbox": "dev"},
    )
    sandbox = recognise(http("DELETE", "/api/v1/namespaces/sandbox/pods/x"), settings)
    other = recognise(http("DELETE", "/api/v1/namespaces/team-a/pods/x"), settings)
    assert (sandbox.environment, other.environment) == (Environment.DEV, Environment.PROD)


def test_request_info_port_details() -> None:
    """Corner cases of NewRequestInfo kept as the API server has them."""
    info = request_info("GET", "/api/v1/namespaces/prod/pods/web/exec/extra")
    assert (info.resource, info.name, info.subresource) == ("pods", "web", "exec")
    proxied = request_info("GET", "/api/v1/proxy/namespaces/prod/pods/web/some/path")
    assert (proxied.verb, proxied.name, proxied.subresource) == ("proxy", "web", "")
    invalid = request_info("GET", "/api/v1/pods", {"fieldSelector": ["metadata.name=a/b"]})
    assert (invalid.verb, invalid.name) == ("list", "")
    short = request_info("GET", "/apis/apps")
    assert not short.is_resource_request
