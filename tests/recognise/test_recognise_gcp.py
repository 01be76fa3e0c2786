"""Google Cloud: discovery-driven method ids, verb classes, scope and risk tags.

The sweep lets google-api-python-client itself build a request for every method of a
dozen APIs (static discovery, anonymous credentials: nothing is sent) and asserts
the recogniser maps each URL back to exactly the method id that produced it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from google.auth.credentials import AnonymousCredentials
from googleapiclient.discovery import (  # type: ignore[import-untyped]
    build,
    fix_method_name,
    key2param,
)
from recognise_support import http

from guardproxy.action import Action, Confidence, Provider, Verb
from guardproxy.recognise.providers.gcp.index import GcpIndex, documents_dir, load_index
from guardproxy.recognise.providers.gcp.recogniser import looks_like_gcp, recognise_gcp
from guardproxy.recognise.request import HttpRequest

SWEEP = [
    ("compute", "v1"),
    ("storage", "v1"),
    ("sqladmin", "v1beta4"),
    ("sqladmin", "v1"),
    ("container", "v1"),
    ("cloudresourcemanager", "v1"),
    ("cloudresourcemanager", "v3"),
    ("iam", "v1"),
    ("run", "v2"),
    ("bigquery", "v2"),
    ("pubsub", "v1"),
    ("dns", "v1"),
]


@pytest.fixture(scope="session")
def gcp_index() -> GcpIndex:
    """The discovery index, loaded once (built and cached on the first run)."""
    return load_index()


# --------------------------------------------------------------------------- sweep

_GROUP = re.compile(r"\((?:[^()])*\)[?*+]?")
_CLASS = re.compile(r"\[[^\]]+\](?:\{[^}]*\}|[+*?])?|\.[+*]")


def _value(name: str, param: dict[str, Any]) -> Any:
    """A value the client library accepts for a required parameter."""
    pattern = param.get("pattern")
    if isinstance(pattern, str):
        bare = pattern.strip("^$")
        value = bare
        while _GROUP.search(value):
            value = _GROUP.sub("v1", value)
        value = _CLASS.sub("v1", value).replace("\\", "")
        return next((c for c in (value, "v1", "a", "1") if re.fullmatch(bare, c)), value)
    if "enum" in param:
        return param["enum"][0]
    return {"integer": 1, "boolean": False}.get(param.get("type", ""), f"{name}-1")


def _methods(node: dict[str, Any], client: Any) -> Iterator[tuple[dict[str, Any], Any]]:
    """(method description, bound client method) for every method under ``node``."""
    for name, method in (node.get("methods") or {}).items():
        yield method, getattr(client, fix_method_name(name))
    for name, child in (node.get("resources") or {}).items():
        yield from _methods(child, getattr(client, fix_method_name(name))())


def as_request(built: Any) -> HttpRequest:
    """The client library's (unsent) request as the proxy would see it."""
    url = urlsplit(built.uri)
    body = built.body or b""
    return HttpRequest(
        method=built.method,
        scheme=url.scheme,
        host=url.hostname or "",
        port=url.port or 443,
        path=url.path + (f"?{url.query}" if url.query else ""),
        headers=tuple((k.lower(), str(v)) for k, v in built.headers.items()),
        body=body.encode() if isinstance(body, str) else body,
    )


def sweep(api: str, version: str, index: GcpIndex) -> tuple[int, list[str]]:
    """(requests generated, mismatches) over every method of one API version."""
    document = json.loads((documents_dir() / f"{api}.{version}.json").read_text())
    credentials = AnonymousCredentials()  # type: ignore[no-untyped-call]
    client = build(api, version, credentials=credentials, static_discovery=True)
    total = 0
    misses: list[str] = []
    for method, bound in _methods(document, client):
        kwargs = {
            key2param(k): _value(k, p)
            for k, p in (method.get("parameters") or {}).items()
            if p.get("required")
        }
        if method.get("request"):
            kwargs["body"] = {}
        action = recognise_gcp(as_request(bound(**kwargs)), index)
        total += 1
        if action.operation != method["id"] or action.provider is not Provider.GCP:
            misses.append(f"{method['id']} -> {action.operation!r}")
    return total, misses


@pytest.mark.parametrize(("api", "version"), SWEEP, ids=[f"{a}.{v}" for a, v in SWEEP])
def test_every_method_maps_back_to_its_id(api: str, version: str, gcp_index: GcpIndex) -> None:
    total, misses = sweep(api, version, gcp_index)
    assert total > 30
    assert misses == []


# --------------------------------------------------------------------------- examples


def gcp(
    index: GcpIndex, method: str, host: str, path: str, body: bytes = b"", **headers: str
) -> Action:
    named = {k.replace("_", "-"): v for k, v in headers.items()}
    return recognise_gcp(http(method, path, host=host, port=443, headers=named, body=body), index)


def test_compute_instance_delete_is_a_destroy_with_scope(gcp_index: GcpIndex) -> None:
    action = gcp(
        gcp_index,
        "DELETE",
        "compute.googleapis.com",
        "/compute/v1/projects/acme-prod/zones/europe-west1-b/instances/web-1",
        user_agent="google-cloud-sdk gcloud/500.0.0",
    )
    assert action.provider is Provider.GCP
    assert (action.service, action.operation) == ("compute", "compute.instances.delete")
    assert action.verb is Verb.DESTROY
    assert action.confidence is Confidence.EXACT
    assert action.resource.type == "gcp:compute:instances"
    assert action.resource.name == "web-1"
    assert action.resource.key == "gcp:acme-prod:europe-west1-b:gcp:compute:instances/web-1"
    assert (action.scope.project, action.scope.region) == ("acme-prod", "europe-west1-b")
    assert action.actor.tool == "gcloud"


# (method, host, path, operation, verb, resource type, name, project, region)
TABLE: list[tuple[str, str, str, str, Verb, str, str, str, str]] = [
    (
        "DELETE",
        "container.googleapis.com",
        "/v1/projects/acme/locations/us-central1/clusters/prod-gke",
        "container.projects.locations.clusters.delete",
        Verb.DESTROY,
        "gcp:container:clusters",
        "prod-gke",
        "acme",
        "us-central1",
    ),
    (
        "DELETE",
        "container.googleapis.com",
        "/v1/projects/acme/zones/us-central1-a/clusters/prod-gke/nodePools/pool-1",
        "container.projects.zones.clusters.nodePools.delete",
        Verb.DELETE,
        "gcp:container:nodePools",
        "pool-1",
        "acme",
        "us-central1-a",
    ),
    (
        "DELETE",
        "sqladmin.googleapis.com",
        "/v1/projects/acme/instances/orders-db",
        "sql.instances.delete",
        Verb.DESTROY,
        "gcp:sqladmin:instances",
        "orders-db",
        "acme",
        "",
    ),
    (
        "DELETE",
        "sqladmin.googleapis.com",
        "/sql/v1beta4/projects/acme/instances/orders-db/users?name=app&host=%25",
        "sql.users.delete",
        Verb.DELETE,
        "gcp:sqladmin:users",
        "app",
        "acme",
        "",
    ),
    (
        "DELETE",
        "storage.googleapis.com",
        "/storage/v1/b/acme-logs",
        "storage.buckets.delete",
        Verb.DESTROY,
        "gcp:storage:buckets",
        "acme-logs",
        "",
        "",
    ),
    (
        "DELETE",
        "www.googleapis.com",
        "/storage/v1/b/acme-logs/o/2026%2F11%2Fapp.log",
        "storage.objects.delete",
        Verb.DELETE,
        "gcp:storage:objects",
        "2026/11/app.log",
        "",
        "",
    ),
    (
        "GET",
        "compute.googleapis.com",
        "/compute/v1/projects/acme/aggregated/instances",
        "compute.instances.aggregatedList",
        Verb.READ,
        "gcp:compute:instances",
        "",
        "acme",
        "",
    ),
    (
        "POST",
        "compute.googleapis.com",
        "/compute/v1/projects/acme/zones/us-east1-b/instances/web-1/stop",
        "compute.instances.stop",
        Verb.UPDATE,
        "gcp:compute:instances",
        "web-1",
        "acme",
        "us-east1-b",
    ),
    (
        "DELETE",
        "cloudresourcemanager.googleapis.com",
        "/v3/projects/acme-prod",
        "cloudresourcemanager.projects.delete",
        Verb.DESTROY,
        "gcp:cloudresourcemanager:projects",
        "acme-prod",
        "acme-prod",
        "",
    ),
    (
        "DELETE",
        "cloudresourcemanager.googleapis.com",
        "/v1/projects/acme-prod",
        "cloudresourcemanager.projects.delete",
        Verb.DESTROY,
        "gcp:cloudresourcemanager:projects",
        "acme-prod",
        "acme-prod",
        "",
    ),
    (
        "POST",
        "cloudresourcemanager.googleapis.com",
        "/v1/projects/acme-prod:setIamPolicy",
        "cloudresourcemanager.projects.setIamPolicy",
        Verb.PERMISSION,
        "gcp:cloudresourcemanager:projects",
        "acme-prod",
        "acme-prod",
        "",
    ),
    (
        "POST",
        "iam.googleapis.com",
        "/v1/projects/acme/serviceAccounts/ci@acme.iam.gserviceaccount.com/keys",
        "iam.projects.serviceAccounts.keys.create",
        Verb.PERMISSION,
        "gcp:iam:keys",
        "",
        "acme",
        "",
    ),
    (
        "DELETE",
        "bigquery.googleapis.com",
        "/bigquery/v2/projects/acme/datasets/events",
        "bigquery.datasets.delete",
        Verb.DESTROY,
        "gcp:bigquery:datasets",
        "events",
        "acme",
        "",
    ),
    (
        "POST",
        "run.googleapis.com",
        "/v2/projects/acme/locations/europe-west1/jobs/nightly:run",
        "run.projects.locations.jobs.run",
        Verb.EXECUTE,
        "gcp:run:jobs",
        "nightly",
        "acme",
        "europe-west1",
    ),
    (
        "DELETE",
        "dns.googleapis.com",
        "/dns/v1/projects/acme/managedZones/acme-com",
        "dns.managedZones.delete",
        Verb.DELETE,
        "gcp:dns:managedZones",
        "acme-com",
        "acme",
        "",
    ),
    (
        "POST",
        "cloudkms.googleapis.com",
        "/v1/projects/acme/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/3:destroy",
        "cloudkms.projects.locations.keyRings.cryptoKeys.cryptoKeyVersions.destroy",
        Verb.DESTROY,
        "gcp:cloudkms:cryptoKeyVersions",
        "3",
        "acme",
        "global",
    ),
]


@pytest.mark.parametrize(
    ("method", "host", "path", "operation", "verb", "rtype", "name", "project", "region"),
    TABLE,
    ids=[row[3] for row in TABLE],
)
def test_table(
    gcp_index: GcpIndex,
    method: str,
    host: str,
    path: str,
    operation: str,
    verb: Verb,
    rtype: str,
    name: str,
    project: str,
    region: str,
) -> None:
    action = gcp(gcp_index, method, host, path)
    assert action.operation == operation
    assert action.verb is verb
    assert action.resource.type == rtype
    assert action.resource.name == name
    assert (action.scope.project, action.scope.region) == (project, region)


def test_dataset_delete_contents_is_forced(gcp_index: GcpIndex) -> None:
    path = "/bigquery/v2/projects/acme/datasets/events?deleteContents=true"
    action = gcp(gcp_index, "DELETE", "bigquery.googleapis.com", path)
    assert action.verb is Verb.DESTROY
    assert action.risk_tags == ["force"]


def test_batch_delete_is_bulk(gcp_index: GcpIndex) -> None:
    path = "/bigquery/v2/projects/acme/datasets/d/tables/t/rowAccessPolicies:batchDelete"
    action = gcp(gcp_index, "POST", "bigquery.googleapis.com", path)
    assert action.operation == "bigquery.rowAccessPolicies.batchDelete"
    assert action.verb is Verb.DELETE
    assert "bulk" in action.risk_tags


def test_insert_names_the_new_resource_from_the_body(gcp_index: GcpIndex) -> None:
    body = json.dumps({"name": "web-2", "machineType": "zones/z/machineTypes/e2-small"})
    action = gcp(
        gcp_index,
        "POST",
        "compute.googleapis.com",
        "/compute/v1/projects/acme/zones/us-east1-b/instances",
        body=body.encode(),
    )
    assert (action.operation, action.verb) == ("compute.instances.insert", Verb.CREATE)
    assert action.resource.name == "web-2"


def test_create_names_the_new_resource_from_the_query(gcp_index: GcpIndex) -> None:
    path = "/v2/projects/acme/locations/us-central1/services?serviceId=api"
    action = gcp(gcp_index, "POST", "run.googleapis.com", path)
    assert action.operation == "run.projects.locations.services.create"
    assert action.resource.name == "api"


def test_validate_only_is_a_dry_run(gcp_index: GcpIndex) -> None:
    path = "/v2/projects/acme/locations/us-central1/services/api?validateOnly=true"
    action = gcp(gcp_index, "DELETE", "run.googleapis.com", path)
    assert action.operation == "run.projects.locations.services.delete"
    assert action.dry_run


def test_media_upload_path(gcp_index: GcpIndex) -> None:
    path = "/upload/storage/v1/b/acme-logs/o?uploadType=media&name=a.txt"
    action = gcp(gcp_index, "POST", "storage.googleapis.com", path)
    assert (action.operation, action.verb) == ("storage.objects.insert", Verb.CREATE)
    assert action.resource.name == "a.txt"


def test_mtls_and_locational_hosts(gcp_index: GcpIndex) -> None:
    path = "/compute/v1/projects/acme/zones/z/instances/i"
    mtls = gcp(gcp_index, "DELETE", "compute.mtls.googleapis.com", path)
    assert mtls.operation == "compute.instances.delete"
    run_path = "/v2/projects/acme/locations/us-central1/services/api"
    local = gcp(gcp_index, "GET", "us-central1-run.googleapis.com", run_path)
    assert (local.operation, local.verb) == ("run.projects.locations.services.get", Verb.READ)
    knative = "/apis/serving.knative.dev/v1/namespaces/acme/services/api"
    listed = gcp(gcp_index, "DELETE", "europe-west1-run.googleapis.com", knative)
    assert (listed.operation, listed.scope.region) == (
        "run.namespaces.services.delete",
        "europe-west1",
    )


def test_secret_access_is_a_tagged_read(gcp_index: GcpIndex) -> None:
    path = "/v1/projects/acme/secrets/db-password/versions/latest:access"
    action = gcp(gcp_index, "GET", "secretmanager.googleapis.com", path)
    assert action.verb is Verb.READ
    assert action.risk_tags == ["secret-read"]


def test_token_refresh_is_a_read(gcp_index: GcpIndex) -> None:
    action = gcp(gcp_index, "POST", "oauth2.googleapis.com", "/token")
    assert (action.operation, action.verb) == ("oauth2.token", Verb.READ)


@pytest.mark.parametrize(
    ("method", "host", "path"),
    [
        ("POST", "storage.googleapis.com", "/batch/storage/v1"),
        ("DELETE", "compute.googleapis.com", "/compute/v1/nothing/here"),
        ("POST", "pubsub.googleapis.com", "/google.pubsub.v1.Publisher/DeleteTopic"),
        ("DELETE", "unheard-of.googleapis.com", "/v1/things/x"),
    ],
)
def test_what_is_not_modelled_fails_closed(
    gcp_index: GcpIndex, method: str, host: str, path: str
) -> None:
    action = gcp(gcp_index, method, host, path)
    assert action.provider is Provider.GCP
    assert action.verb is Verb.UNKNOWN
    assert not action.classified


def test_unknown_custom_verbs_are_heuristic(gcp_index: GcpIndex) -> None:
    path = "/compute/v1/projects/acme/global/urlMaps/m/invalidateCache"
    assert gcp(gcp_index, "POST", "compute.googleapis.com", path).confidence is Confidence.EXACT
    path = "/v1/projects/acme/zones/z/clusters/c/legacyAbac"
    action = gcp(gcp_index, "POST", "container.googleapis.com", path)
    assert (action.verb, action.confidence) == (Verb.UPDATE, Confidence.HEURISTIC)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("compute.googleapis.com", True),
        ("www.googleapis.com", True),
        ("COMPUTE.GOOGLEAPIS.COM", True),
        ("googleapis.com.evil.example", False),
        ("notgoogleapis.com", False),
        ("management.azure.com", False),
    ],
)
def test_looks_like_gcp(host: str, expected: bool) -> None:
    assert looks_like_gcp(http("GET", "/", host=host, port=443)) is expected
