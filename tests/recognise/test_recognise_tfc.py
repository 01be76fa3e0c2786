"""Terraform Cloud / Enterprise JSON:API requests as go-tfe sends them."""

from __future__ import annotations

import gzip
import json

import pytest
from recognise_support import http

from guardproxy.action import Confidence, Provider, Verb
from guardproxy.recognise.request import HttpRequest
from guardproxy.recognise.tfc import TfcError, looks_like_tfc, recognise_tfc

JSON_API = "application/vnd.api+json"
HEADERS = {
    "content-type": JSON_API,
    "accept": JSON_API,
    "authorization": "Bearer atlasv1.secret",
    "user-agent": "go-tfe",
}


def tfc(method: str, path: str, body: object = None, host: str = "app.terraform.io") -> HttpRequest:
    data = b"" if body is None else json.dumps(body).encode()
    return http(method, path, host=host, port=443, headers=HEADERS, body=data)


def run(attributes: dict[str, object], workspace: str = "ws-prod-network") -> dict[str, object]:
    return {
        "data": {
            "type": "runs",
            "attributes": attributes,
            "relationships": {"workspace": {"data": {"type": "workspaces", "id": workspace}}},
        }
    }


CASES: list[tuple[str, str, object, str, Verb, str, str, str, list[str]]] = [
    # method, path, body -> operation, verb, resource type, name, organisation, tags
    (
        "POST",
        "/api/v2/runs",
        run({"is-destroy": True, "auto-apply": True}),
        "runs.create",
        Verb.DESTROY,
        "tfc:workspace",
        "ws-prod-network",
        "",
        ["destroy-run", "auto-apply"],
    ),
    (
        "POST",
        "/api/v2/runs",
        run({"message": "plan"}),
        "runs.create",
        Verb.UPDATE,
        "tfc:workspace",
        "ws-prod-network",
        "",
        [],
    ),
    (
        "POST",
        "/api/v2/runs",
        run({"auto-apply": True}),
        "runs.create",
        Verb.UPDATE,
        "tfc:workspace",
        "ws-prod-network",
        "",
        ["auto-apply"],
    ),
    (
        "POST",
        "/api/v2/runs",
        run({"replace-addrs": ["aws_db_instance.main"], "target-addrs": ["module.db"]}),
        "runs.create",
        Verb.UPDATE,
        "tfc:workspace",
        "ws-prod-network",
        "",
        ["replace", "targeted"],
    ),
    (
        "POST",
        "/api/v2/runs",
        run({"plan-only": True}),
        "runs.create",
        Verb.UPDATE,
        "tfc:workspace",
        "ws-prod-network",
        "",
        ["plan-only"],
    ),
    (
        "POST",
        "/api/v2/runs/run-abc/actions/apply",
        {"comment": "ok"},
        "runs.apply",
        Verb.UPDATE,
        "tfc:run",
        "run-abc",
        "",
        [],
    ),
    (
        "POST",
        "/api/v2/runs/run-abc/actions/force-cancel",
        None,
        "runs.force-cancel",
        Verb.UPDATE,
        "tfc:run",
        "run-abc",
        "",
        ["force"],
    ),
    (
        "DELETE",
        "/api/v2/organizations/acme/workspaces/prod-network",
        None,
        "workspaces.delete",
        Verb.DESTROY,
        "tfc:workspace",
        "prod-network",
        "acme",
        [],
    ),
    (
        "DELETE",
        "/api/v2/workspaces/ws-abc",
        None,
        "workspaces.delete",
        Verb.DESTROY,
        "tfc:workspace",
        "ws-abc",
        "",
        [],
    ),
    (
        "POST",
        "/api/v2/workspaces/ws-abc/actions/safe-delete",
        None,
        "workspaces.safe-delete",
        Verb.DESTROY,
        "tfc:workspace",
        "ws-abc",
        "",
        [],
    ),
    (
        "POST",
        "/api/v2/organizations/acme/workspaces/prod-network/actions/safe-delete",
        None,
        "workspaces.safe-delete",
        Verb.DESTROY,
        "tfc:workspace",
        "prod-network",
        "acme",
        [],
    ),
    (
        "POST",
        "/api/v2/workspaces/ws-abc/actions/lock",
        {"reason": "x"},
        "workspaces.lock",
        Verb.UPDATE,
        "tfc:workspace",
        "ws-abc",
        "",
        [],
    ),
    (
        "POST",
        "/api/v2/workspaces/ws-abc/actions/force-unlock",
        None,
        "workspaces.force-unlock",
        Verb.UPDATE,
        "tfc:workspace",
        "ws-abc",
        "",
        ["force"],
    ),
    (
        "POST",
        "/api/v2/workspaces/ws-abc/state-versions",
        {"data": {"type": "state-versions", "attributes": {"serial": 9, "md5": "x"}}},
        "state-versions.create",
        Verb.UPDATE,
        "tfc:workspace",
        "ws-abc",
        "",
        ["state-overwrite"],
    ),
    (
        "PATCH",
        "/api/v2/organizations/acme/workspaces/prod-network",
        {"data": {"type": "workspaces", "attributes": {"auto-apply": True}}},
        "workspaces.update",
        Verb.UPDATE,
        "tfc:workspace",
        "prod-network",
        "acme",
        ["auto-apply"],
    ),
    (
        "GET",
        "/api/v2/organizations/acme/workspaces/prod-network",
        None,
        "workspaces.show",
        Verb.READ,
        "tfc:workspace",
        "prod-network",
        "acme",
        [],
    ),
    (
        "GET",
        "/api/v2/organizations/acme/workspaces",
        None,
        "workspaces.list",
        Verb.READ,
        "tfc:workspace",
        "",
        "acme",
        [],
    ),
    ("GET", "/api/v2/runs/run-abc", None, "runs.show", Verb.READ, "tfc:run", "run-abc", "", []),
    (
        "DELETE",
        "/api/v2/organizations/acme",
        None,
        "organizations.delete",
        Verb.DESTROY,
        "tfc:organization",
        "acme",
        "acme",
        [],
    ),
    (
        "POST",
        "/api/v2/team-workspaces",
        {"data": {"type": "team-workspaces", "attributes": {"access": "admin"}}},
        "team-workspaces.create",
        Verb.PERMISSION,
        "tfc:team-workspace",
        "",
        "",
        [],
    ),
    (
        "POST",
        "/api/v2/teams/team-abc/relationships/users",
        {"data": [{"type": "users", "id": "alice"}]},
        "team-members.create",
        Verb.PERMISSION,
        "tfc:team-member",
        "",
        "",
        [],
    ),
    (
        "DELETE",
        "/api/v2/teams/team-abc/relationships/organization-memberships",
        {"data": [{"type": "organization-memberships", "id": "ou-abc"}]},
        "team-members.delete",
        Verb.PERMISSION,
        "tfc:team-member",
        "",
        "",
        [],
    ),
    (
        "POST",
        "/api/v2/organizations/acme/organization-memberships",
        {"data": {"type": "organization-memberships", "attributes": {"email": "a@b.c"}}},
        "organization-memberships.create",
        Verb.PERMISSION,
        "tfc:organization-membership",
        "",
        "acme",
        [],
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "operation", "verb", "rtype", "name", "org", "tags"), CASES
)
def test_tfc(
    method: str,
    path: str,
    body: object,
    operation: str,
    verb: Verb,
    rtype: str,
    name: str,
    org: str,
    tags: list[str],
) -> None:
    request = tfc(method, path, body)
    assert looks_like_tfc(request)
    action = recognise_tfc(request)
    assert action.provider is Provider.TFC
    assert (action.operation, action.verb) == (operation, verb)
    assert (action.resource.type, action.resource.name, action.scope.project) == (rtype, name, org)
    assert action.risk_tags == tags
    assert action.confidence is Confidence.EXACT
    assert action.service == operation.split(".", maxsplit=1)[0]
    assert "atlasv1" not in action.model_dump_json()


def test_terraform_enterprise_by_media_type() -> None:
    request = tfc("DELETE", "/api/v2/workspaces/ws-abc", host="tfe.corp")
    assert looks_like_tfc(request)
    assert recognise_tfc(request).resource.key == "tfc:tfe.corp:tfc:workspace/ws-abc"


def test_unlisted_writes_are_heuristic() -> None:
    action = recognise_tfc(tfc("POST", "/api/v2/workspaces/ws-abc/vars", {"data": {}}))
    assert (action.operation, action.verb, action.confidence) == (
        "vars.create",
        Verb.CREATE,
        Confidence.HEURISTIC,
    )


@pytest.mark.parametrize(
    ("path", "host", "headers"),
    [
        ("/api/v2/statements", "acct.snowflakecomputing.com", {"content-type": "application/json"}),
        ("/api/v2/workspaces", "example.com", {"content-type": "application/json"}),
        ("/v1/runs", "app.terraform.io", {"content-type": JSON_API}),
    ],
)
def test_not_tfc(path: str, host: str, headers: dict[str, str]) -> None:
    assert not looks_like_tfc(http("POST", path, host=host, port=443, headers=headers))


@pytest.mark.parametrize(
    "body", [b"{not json", b"[]", b'{"data": []}', b'{"data": {"attributes": "x"}}']
)
def test_garbage_run_bodies_raise(body: bytes) -> None:
    request = http(
        "POST", "/api/v2/runs", host="app.terraform.io", port=443, headers=HEADERS, body=body
    )
    with pytest.raises(TfcError):
        recognise_tfc(request)


def test_gzipped_body_is_read() -> None:
    body = gzip.compress(json.dumps(run({"is-destroy": True})).encode())
    request = http(
        "POST",
        "/api/v2/runs",
        host="app.terraform.io",
        port=443,
        headers={**HEADERS, "content-encoding": "gzip"},
        body=body,
    )
    assert recognise_tfc(request).risk_tags == ["destroy-run"]
