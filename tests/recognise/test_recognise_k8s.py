"""Kubernetes: the API server's own request grammar, verbs, bodies and risk tags."""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest
from recognise_support import http, k8s_protobuf, pb_bytes, pb_varint

from guardproxy.action import Action, Confidence, Environment, Provider, Verb
from guardproxy.recognise import RecogniseSettings, recognise
from guardproxy.recognise.providers.k8s.patch import (
    PatchError,
    json_patch_effect,
    merge_patch_effect,
)
from guardproxy.recognise.providers.k8s.request_info import request_info
from guardproxy.recognise.providers.k8s.url import GoUrlError, parse_query, parse_target
from guardproxy.recognise.providers.k8s.yaml_docs import YamlError, go_resolve, load_documents

API_SERVER = "127.0.0.1:6443"
CLUSTER = "localhost:6443"
"""The cluster key: the API server's canonical host and port (every loopback spelling)."""
SETTINGS = RecogniseSettings(kubernetes_hosts=(API_SERVER,))
PROTOBUF = "application/vnd.kubernetes.protobuf"
MERGE = "application/merge-patch+json"


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
    assert action.resource.key == "k8s:localhost:6443:k8s:core:namespaces/prod"
    assert action.environment is Environment.PROD
    pod = k8s("DELETE", "/api/v1/namespaces/team-a/pods/web-1")
    assert pod.resource.key == "k8s:localhost:6443:team-a:k8s:core:pods/web-1"
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


# --------------------------------------------------------------------------- as kube-apiserver


@pytest.mark.parametrize(
    ("path", "watch"),
    [
        ("/api/v1/pods?watch=", True),  # Convert_Slice_string_To_bool: "" is true
        ("/api/v1/pods?watch=yes", True),
        ("/api/v1/pods?watch=FALSE", False),
        ("/api/v1/pods?watch=0&watch=1", False),  # the first value
    ],
)
def test_watch_is_read_as_apimachinery_converts_it(path: str, watch: bool) -> None:
    assert k8s("GET", path).operation == ("watch" if watch else "list")


@pytest.mark.parametrize(
    ("selector", "name"),
    [
        ("metadata.name=web", "web"),
        ("metadata.name==web", "web"),
        ("metadata.name!=web", ""),
        ("metadata.name = web", ""),  # no trimming: the field is "metadata.name "
        ("b=1,metadata.name=web", "web"),
        ("metadata.name=z,metadata.name=a", "a"),  # terms are sorted first
        ("metadata.name=a\\,b", "a,b"),  # an escaped comma
        ("metadata.name=a,b", ""),  # "b" is not a term: the selector does not parse
        ("metadata.name=a\\x", ""),  # an unknown escape
    ],
)
def test_the_field_selector_names_an_object_as_fields_parse_selector_does(
    selector: str, name: str
) -> None:
    info = request_info("GET", "/api/v1/namespaces/prod/pods", {"fieldSelector": [selector]})
    assert (info.verb, info.name) == ("list", name)


def test_the_namespace_is_the_paths_never_the_bodys() -> None:
    """EnsureObjectNamespaceMatchesRequestNamespace: a namespaced object's namespace must
    match the path's; a cluster-scoped object's is cleared."""
    body = {"metadata": {"name": "team-a", "namespace": "prod"}}
    action = k8s("POST", "/api/v1/namespaces", body)
    assert (action.resource.name, action.scope.namespace) == ("team-a", "team-a")
    pod = k8s("POST", "/api/v1/namespaces/dev/pods", {"metadata": {"name": "x", "namespace": "p"}})
    assert pod.scope.namespace == "dev"


def test_create_and_update_options_come_from_the_query_only() -> None:
    """A body's top-level dryRun is part of the object, not an option (create.go)."""
    body = {"metadata": {"name": "x"}, "dryRun": ["All"]}
    assert not k8s("POST", "/api/v1/namespaces/prod/configmaps", body).dry_run
    assert k8s("POST", "/api/v1/namespaces/prod/configmaps?dryRun=All", body).dry_run


def test_an_eviction_is_a_dry_run_by_its_query_or_its_delete_options() -> None:
    path = "/api/v1/namespaces/prod/pods/api-0/eviction"
    eviction: dict[str, Any] = {"kind": "Eviction", "metadata": {"name": "api-0"}}
    assert not k8s("POST", path, eviction).dry_run
    assert k8s("POST", path + "?dryRun=All", eviction).dry_run
    assert k8s("POST", path, {**eviction, "deleteOptions": {"dryRun": ["All"]}}).dry_run


@pytest.mark.parametrize(
    ("path", "body", "force"),
    [
        ("/api/v1/namespaces/p/pods/x?gracePeriodSeconds=-1", b"", True),
        ("/api/v1/namespaces/p/pods/x?gracePeriodSeconds=0x0", b"", False),  # a 400
        ("/api/v1/namespaces/p/pods/x?gracePeriodSeconds=0", b"{}", False),  # body wins
        (
            "/api/v1/namespaces/p/pods/x?ignoreStoreReadErrorWithClusterBreakingPotential=",
            b"",
            True,
        ),
        (
            "/api/v1/namespaces/p/pods/x",
            b'{"ignoreStoreReadErrorWithClusterBreakingPotential":true}',
            True,
        ),
    ],
)
def test_delete_options_that_force(path: str, body: bytes, force: bool) -> None:
    assert ("force" in k8s("DELETE", path, body).risk_tags) is force


@pytest.mark.parametrize(
    ("content_type", "verb"),
    [
        ("application/merge-patch+json", Verb.UPDATE),
        ("application/merge-patch+json; charset=utf-8", Verb.UPDATE),
        ("Application/Merge-Patch+Json", Verb.UNKNOWN),  # patch.go matches exactly: 415
        ("application/merge-patch+json ", Verb.UNKNOWN),
        ("application/json", Verb.UNKNOWN),
    ],
)
def test_the_patch_type_is_the_exact_content_type(content_type: str, verb: Verb) -> None:
    action = k8s("PATCH", "/apis/apps/v1/namespaces/p/deployments/web", {"spec": {}}, content_type)
    assert action.verb is verb


@pytest.mark.parametrize(
    ("content_type", "body", "name"),
    [
        ("", b'{"metadata":{"name":"a"}}', "a"),  # no Content-Type: JSON
        ("Application/JSON; charset=utf-8", b'{"metadata":{"name":"a"}}', "a"),
        ("application/yaml", b"metadata:\n  name: a\n", "a"),
        ("application/yaml", b"metadata: {name: 0x10}\n", ""),  # an int is not a name
        ("application/cbor", bytes.fromhex("a1686d65746164617461a1646e616d656161"), "a"),
    ],
)
def test_an_object_body_is_decoded_by_its_media_type(
    content_type: str, body: bytes, name: str
) -> None:
    action = k8s("POST", "/api/v1/namespaces/dev/configmaps", body, content_type)
    assert (action.verb, action.resource.name) == (Verb.CREATE, name)


def test_a_body_sent_with_a_media_type_the_api_server_refuses_is_unknown() -> None:
    assert k8s("DELETE", "/api/v1/namespaces/dev", b"{}", "text/plain").verb is Verb.UNKNOWN
    assert k8s("DELETE", "/api/v1/namespaces/dev", b"k8s\x00", PROTOBUF).verb is Verb.UNKNOWN


def test_a_get_or_exec_body_is_never_read() -> None:
    assert k8s("GET", "/api/v1/namespaces/p/pods", b"{not json").verb is Verb.READ
    assert k8s("POST", "/api/v1/namespaces/p/pods/x/exec", b"\xff").verb is Verb.EXECUTE


def test_repeated_protobuf_fields_are_read_as_gogo_protobuf_and_first_wins() -> None:
    meta = pb_bytes(1, b"dev-a") + pb_bytes(1, b"prod-b")
    raw = pb_bytes(1, meta) + pb_bytes(2, pb_varint(1, 3)) + pb_bytes(2, pb_varint(1, 0))
    type_meta = pb_bytes(1, b"apps/v1") + pb_bytes(2, b"Deployment")
    body = b"k8s\x00" + pb_bytes(1, type_meta) + pb_bytes(2, raw)
    action = k8s("PUT", "/apis/apps/v1/namespaces/p/deployments/web", body, PROTOBUF)
    # the last name and replicas win (gogo); the first-wins reading comes along
    assert "scale-to-zero" in action.risk_tags
    assert "ambiguous:duplicate-field" in action.risk_tags
    assert [("scale-to-zero" in r.risk_tags) for r in action.all_readings()] == [True, False]
    create = k8s("POST", "/apis/apps/v1/namespaces/p/deployments", body, PROTOBUF)
    assert [r.resource.name for r in create.all_readings()] == ["prod-b", "dev-a"]


def test_protobuf_delete_options_are_read() -> None:
    options = pb_varint(1, 0) + pb_bytes(5, b"All")
    type_meta = pb_bytes(1, b"meta.k8s.io/v1") + pb_bytes(2, b"DeleteOptions")
    body = b"k8s\x00" + pb_bytes(1, type_meta) + pb_bytes(2, options)
    action = k8s("DELETE", "/api/v1/namespaces/p/pods/x", body, PROTOBUF)
    assert action.dry_run and "force" in action.risk_tags


def test_a_json_key_given_twice_is_read_every_way() -> None:
    """Go: the last value wins, but a typed object merges a repeated object into the
    first; other parsers keep the first."""
    body = b'{"metadata":{"name":"dev-x"},"metadata":{"name":"prod-x"}}'
    action = k8s("POST", "/api/v1/namespaces", body)
    assert {r.resource.name for r in action.all_readings()} == {"dev-x", "prod-x"}
    assert action.confidence is Confidence.AMBIGUOUS


def test_several_content_types_are_each_a_reading() -> None:
    request = http(
        "PATCH",
        "/apis/apps/v1/namespaces/p/deployments/web",
        body=b"spec: {replicas: 0}",
    )
    request = type(request)(
        **{
            **request.__dict__,
            "headers": (
                ("content-type", "application/merge-patch+json"),
                ("content-type", "application/apply-patch+yaml"),
            ),
        }
    )
    action = recognise(request, SETTINGS)
    assert "ambiguous:content-type" in action.risk_tags
    assert [r.verb for r in action.all_readings()] == [Verb.UPDATE, Verb.UNKNOWN]
    assert "scale-to-zero" in action.risk_tags


def test_an_escaped_kubernetes_path_is_still_kubernetes_to_dispatch() -> None:
    request = http(
        "GET",
        "/api/v1/%6eamespaces/prod/pods/x/exec?command=sh",
        host="k8s.corp",
        port=443,
        headers={"authorization": "Bearer t"},
    )
    action = recognise(request, RecogniseSettings())
    assert (action.provider, action.verb) == (Provider.K8S, Verb.EXECUTE)


# --------------------------------------------------------------------------- the readers


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0", 0),
        ("-0", 0),
        ("+0", 0),
        ("00", 0),
        ("017", 15),  # a leading 0 is octal (strconv.ParseInt base 0)
        ("0o17", 15),
        ("0x1F", 31),
        ("0b101", 5),
        ("1_000", 1000),  # underscores dropped
        ("08", 8.0),  # not octal, then a yamlStyleFloat
        ("0e0", 0.0),
        ("1e3", 1000.0),
        (".5", 0.5),
        ("+.5", 0.5),
        (".5e999", ".5e999"),  # out of range: a string
        ("1:00", "1:00"),  # no sexagesimal numbers
        ("yes", True),
        ("Off", False),
        ("~", None),
        ("", None),
        ("2001-12-14", "2001-12-14"),  # a timestamp decodes into interface{} as its text
        ("0x", "0x"),
        ("9223372036854775808", 9223372036854775808),  # ParseUint after ParseInt
        ("abc", "abc"),
    ],
)
def test_plain_yaml_scalars_resolve_as_go_yaml_v2(text: str, value: object) -> None:
    resolved = go_resolve("tag:guardproxy:plain-scalar", text)
    assert resolved == value and type(resolved) is type(value)


def test_yaml_documents_merges_and_keys_as_sigs_k8s_io_yaml() -> None:
    [first, second] = load_documents(b"a: 1\n---\nb: 2\n---\n[[[\n")  # stops at the bad one
    assert (first.value, second.value) == ({"a": 1}, {"b": 2})
    merged = load_documents(b"spec:\n  replicas: 3\n  <<: {replicas: 0}\n")[0]
    assert (merged.value, merged.duplicates) == ({"spec": {"replicas": 0}}, True)
    spec_order = load_documents(b"spec:\n  replicas: 3\n  <<: {replicas: 0}\n", first_wins=True)
    assert spec_order[0].value == {"spec": {"replicas": 3}}
    assert load_documents(b"{1: a, true: b, 0x10: c}")[0].value == {
        "1": "a",
        "true": "b",
        "16": "c",
    }
    for bad in (b"~: a", b"a: .nan", b"a: &x [*x]", b"[[[", b"a: !!int x"):
        with pytest.raises(YamlError):
            load_documents(bad)


@pytest.mark.parametrize(
    ("target", "path", "query"),
    [
        ("/api/v1/pods?watch=1", "/api/v1/pods", {"watch": ["1"]}),
        ("/a%2Fb/%65?x=%41+b", "/a/b/e", {"x": ["A b"]}),
        ("/a+b?", "/a+b", {}),  # "+" is a space only in the query
        ("/a#b?c=1#d", "/a#b", {"c": ["1#d"]}),  # no fragment in a request target
        ("//api/v1", "//api/v1", {}),
        ("/x?a=1;b=2&c=3&d=%zz&=e&f", "/x", {"c": ["3"], "": ["e"], "f": [""]}),
    ],
)
def test_request_targets_as_go_net_url(target: str, path: str, query: dict[str, list[str]]) -> None:
    parsed = parse_target(target)
    assert (parsed.path, parse_query(parsed.raw_query)) == (path, query)


@pytest.mark.parametrize("target", ["/a%zz", "/a%4", "api/v1", "/a\x7fb", "/a\nb"])
def test_targets_go_refuses(target: str) -> None:
    with pytest.raises(GoUrlError):
        parse_target(target)


@pytest.mark.parametrize(
    ("patch", "replicas", "removed"),
    [
        ([{"op": "replace", "path": "/spec/replicas", "value": 0}], 0, False),
        ([{"op": "add", "path": "/spec", "value": {"replicas": 0.0}}], 0, False),
        ([{"op": "remove", "path": "/spec/replicas"}], None, False),
        (
            [
                {"op": "test", "path": "/spec/replicas", "value": 5},
                {"op": "move", "from": "/spec/replicas", "path": "/metadata/annotations/r"},
            ],
            None,
            False,
        ),
        ([{"op": "copy", "from": "/status/replicas", "path": "/spec/replicas"}], 0, False),
        ([{"op": "copy", "from": "/spec/replicas", "path": "/spec/replicas"}], None, False),
        (
            [
                {"op": "add", "path": "/metadata/labels", "value": {"n": 0}},
                {"op": "move", "from": "/metadata/labels/n", "path": "/spec/replicas"},
            ],
            0,
            False,
        ),
        ([{"op": "remove", "path": "/metadata/finalizers/0"}], None, True),
        ([{"op": "replace", "path": "/metadata/finalizers", "value": []}], None, True),
        ([{"op": "remove", "path": "/metadata/finalizers"}], None, True),
        ([{"op": "add", "path": "/metadata/finalizers/-", "value": "x"}], None, False),
        ([{"op": "replace", "path": "/metadata/finalizers", "value": ["x"]}], None, False),
    ],
)
def test_json_patch_effect(
    patch: list[dict[str, Any]], replicas: int | None, removed: bool
) -> None:
    assert json_patch_effect(patch) == (replicas, removed)


@pytest.mark.parametrize(
    "patch",
    [
        {"op": "add", "path": "/spec/replicas", "value": 0},  # not an array
        [{"op": "add", "path": "/spec/replicas"}],  # no value (evanphx adds null)
        [{"op": "bogus", "path": "/spec"}],
        [{"op": "remove", "path": "/a~2b"}],  # a bad escape
        [{"op": "remove", "path": ""}],
    ],
)
def test_json_patches_that_cannot_be_evaluated(patch: object) -> None:
    with pytest.raises(PatchError):
        json_patch_effect(patch)


@pytest.mark.parametrize(
    ("patch", "removed"),
    [
        ({"metadata": {"finalizers": None}}, True),
        ({"metadata": {"finalizers": []}}, True),
        ({"metadata": {"$deleteFromPrimitiveList/finalizers": ["kubernetes.io/pvc"]}}, True),
        ({"metadata": {"$patch": "replace", "name": "x"}}, True),
        ({"$patch": "replace", "metadata": {"name": "x", "finalizers": ["a"]}}, False),
        ({"metadata": None}, True),
        ({"metadata": {"finalizers": ["a"]}}, False),
        ({"spec": {"replicas": 0}}, False),
    ],
)
def test_merge_patch_finalizer_removal(patch: dict[str, Any], removed: bool) -> None:
    assert merge_patch_effect(patch)[1] is removed


def test_empty_segments_are_literal_to_the_api_server_and_merged_by_a_cleaning_proxy() -> None:
    """``strings.Split`` keeps the empty segment: namespace "" and resource pods, which
    the API server deletes in every namespace; merged, it deletes namespace "pods"."""
    action = k8s("DELETE", "/api/v1/namespaces//pods")
    readings = {(r.operation, r.resource.type, r.resource.name) for r in action.all_readings()}
    assert readings == {
        ("deletecollection", "k8s:core:pods", ""),
        ("delete", "k8s:core:namespaces", "pods"),
    }
    assert "ambiguous:path-normalisation" in action.risk_tags


def test_a_trailing_slash_changes_nothing() -> None:
    slashed = k8s("DELETE", "/api/v1/namespaces/prod/").model_dump(exclude={"request"})
    assert slashed == k8s("DELETE", "/api/v1/namespaces/prod").model_dump(exclude={"request"})


def test_status_is_not_scaled() -> None:
    """Replicas written through the status subresource are ignored by the API server."""
    body = {"spec": {"replicas": 0}}
    path = "/apis/apps/v1/namespaces/p/deployments/web"
    assert "scale-to-zero" not in k8s("PATCH", path + "/status", body, MERGE).risk_tags
    assert "scale-to-zero" in k8s("PATCH", path, body, MERGE).risk_tags


def test_an_update_names_the_object_of_its_path() -> None:
    """update.go: checkName refuses a body whose name differs from the URL's."""
    body = {"metadata": {"name": "dev-web"}, "spec": {"replicas": 1}}
    action = k8s("PUT", "/apis/apps/v1/namespaces/prod/deployments/web", body)
    assert action.resource.name == "web"


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_update_and_patch_dry_runs_come_from_the_query(method: str) -> None:
    path = "/apis/apps/v1/namespaces/prod/deployments/web"
    body = {"spec": {"replicas": 0}, "dryRun": ["All"]}
    content_type = MERGE if method == "PATCH" else "application/json"
    assert not k8s(method, path, body, content_type).dry_run
    assert k8s(method, path + "?dryRun=All", body, content_type).dry_run


def test_a_patch_copying_without_bound_is_refused_quickly() -> None:
    """Copies of the whole document double it each time: bounded, then unknown."""
    grow = [{"op": "add", "path": "/a", "value": list(range(100))}]
    grow += [{"op": "copy", "from": "", "path": f"/b{i}"} for i in range(40)]
    with pytest.raises(PatchError, match="copies too much"):
        json_patch_effect(grow)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/v1/namespaces/prod/pods/x/exec?command=sh&dryRun=All"),
        ("GET", "/api/v1/namespaces/prod/services/web/proxy/admin?dryRun=All"),
        ("DELETE", "/api/v1/namespaces/prod/services/web/proxy/data?dryRun=All"),
    ],
)
def test_connect_requests_are_never_dry_runs(method: str, path: str) -> None:
    action = k8s(method, path)
    assert (action.verb, action.dry_run) == (Verb.EXECUTE, False)


def test_a_coded_body_is_read_as_sent_and_as_a_decoding_proxy_would_forward_it() -> None:
    """The API server undoes no content coding: a gzip body it cannot decode changes
    nothing, a proxy in front that decodes it forwards the decoded one."""
    scale = "/apis/apps/v1/namespaces/prod/deployments/web/scale"
    zipped = gzip.compress(b'{"spec":{"replicas":0}}')
    action = k8s("PATCH", scale, zipped, MERGE, Content_Encoding="gzip")
    assert (action.verb, action.risk_tags) == (Verb.UPDATE, ["scale-to-zero"])
    # an options body sent as is, labelled gzip: the API server reads it raw and deletes
    plain = k8s("DELETE", "/api/v1/namespaces/prod?dryRun=All", b"{}", Content_Encoding="gzip")
    assert (plain.verb, plain.dry_run) == (Verb.DESTROY, False)
    # neither readable: unknown
    compress = k8s("PATCH", scale, b"\x1f\x9d\x90" + zipped, MERGE, Content_Encoding="compress")
    assert compress.verb is Verb.UNKNOWN
