"""GitHub REST (routes from the ghapi-shipped API description) and GraphQL mutations."""

from __future__ import annotations

import json

import pytest
from recognise_support import http

from guardproxy.action import Confidence, Provider, Verb
from guardproxy.recognise.common import summary_of
from guardproxy.recognise.github import (
    GitHubError,
    GraphQLError,
    looks_like_github,
    match_route,
    recognise_github,
    top_level_fields,
)
from guardproxy.recognise.request import HttpRequest

UA = {"user-agent": "GitHub CLI 2.62.0", "authorization": "token ghp_secret"}


def api(method: str, path: str, body: object = None, host: str = "api.github.com") -> HttpRequest:
    data = b"" if body is None else json.dumps(body).encode()
    headers = {**UA, **({"content-type": "application/json"} if data else {})}
    return http(method, path, host=host, port=443, headers=headers, body=data)


# (method, path, body) -> (operation, verb, resource type, resource name, risk tags)
REST_CASES: list[tuple[str, str, object, str, Verb, str, str, list[str]]] = [
    (
        "DELETE",
        "/repos/acme/api",
        None,
        "repos/delete",
        Verb.DESTROY,
        "github:repository",
        "acme/api",
        [],
    ),
    ("GET", "/repos/acme/api", None, "repos/get", Verb.READ, "github:repository", "acme/api", []),
    (
        "DELETE",
        "/repos/acme/api/git/refs/heads/feature/x",
        None,
        "git/delete-ref",
        Verb.DELETE,
        "github:ref",
        "refs/heads/feature/x",
        ["branch-delete"],
    ),
    (
        "DELETE",
        "/repos/acme/api/git/refs/tags/v1.0",
        None,
        "git/delete-ref",
        Verb.DELETE,
        "github:ref",
        "refs/tags/v1.0",
        [],
    ),
    (
        "PATCH",
        "/repos/acme/api/git/refs/heads/main",
        {"sha": "a" * 40, "force": True},
        "git/update-ref",
        Verb.UPDATE,
        "github:ref",
        "refs/heads/main",
        ["force-push"],
    ),
    (
        "PATCH",
        "/repos/acme/api/git/refs/heads/main",
        {"sha": "a" * 40},
        "git/update-ref",
        Verb.UPDATE,
        "github:ref",
        "refs/heads/main",
        [],
    ),
    (
        "DELETE",
        "/repos/acme/api/branches/main/protection",
        None,
        "repos/delete-branch-protection",
        Verb.UPDATE,
        "github:branch-protection",
        "main",
        ["protection-removal"],
    ),
    (
        "DELETE",
        "/repos/acme/api/branches/release/2026.11/protection",
        None,
        "repos/delete-branch-protection",
        Verb.UPDATE,
        "github:branch-protection",
        "release/2026.11",
        ["protection-removal"],
    ),
    (
        "PUT",
        "/repos/acme/api/branches/main/protection",
        {
            "required_status_checks": None,
            "enforce_admins": False,
            "required_pull_request_reviews": None,
            "restrictions": None,
        },
        "repos/update-branch-protection",
        Verb.UPDATE,
        "github:branch-protection",
        "main",
        ["protection-removal"],
    ),
    (
        "PUT",
        "/repos/acme/api/branches/main/protection",
        {
            "required_status_checks": {"strict": True, "contexts": ["ci"]},
            "enforce_admins": True,
            "required_pull_request_reviews": {"required_approving_review_count": 2},
            "restrictions": {"users": [], "teams": []},
        },
        "repos/update-branch-protection",
        Verb.UPDATE,
        "github:branch-protection",
        "main",
        [],
    ),
    (
        "DELETE",
        "/repos/acme/api/rulesets/42",
        None,
        "repos/delete-repo-ruleset",
        Verb.UPDATE,
        "github:ruleset",
        "42",
        ["protection-removal"],
    ),
    (
        "PUT",
        "/repos/acme/api/collaborators/mallory",
        {"permission": "admin"},
        "repos/add-collaborator",
        Verb.PERMISSION,
        "github:collaborator",
        "mallory",
        [],
    ),
    (
        "PUT",
        "/orgs/acme/teams/core/repos/acme/api",
        {"permission": "admin"},
        "teams/add-or-update-repo-permissions-in-org",
        Verb.PERMISSION,
        "github:repository",
        "acme/api",
        [],
    ),
    (
        "POST",
        "/repos/acme/api/actions/workflows/deploy.yml/dispatches",
        {"ref": "main"},
        "actions/create-workflow-dispatch",
        Verb.EXECUTE,
        "github:workflow-dispatches",
        "deploy.yml",
        [],
    ),
    (
        "POST",
        "/repos/acme/api/transfer",
        {"new_owner": "evil"},
        "repos/transfer",
        Verb.PERMISSION,
        "github:repository",
        "acme/api",
        [],
    ),
    (
        "PATCH",
        "/repos/acme/api",
        {"visibility": "public"},
        "repos/update",
        Verb.UPDATE,
        "github:repository",
        "acme/api",
        ["exposure"],
    ),
    (
        "PATCH",
        "/repos/acme/api",
        {"archived": True},
        "repos/update",
        Verb.UPDATE,
        "github:repository",
        "acme/api",
        ["archive"],
    ),
    (
        "POST",
        "/repos/acme/api/pulls",
        {"title": "x", "head": "f", "base": "main"},
        "pulls/create",
        Verb.CREATE,
        "github:pull",
        "",
        [],
    ),
    ("GET", "/repos/acme/api/pulls/7", None, "pulls/get", Verb.READ, "github:pull", "7", []),
    ("HEAD", "/user", None, "users/get-authenticated", Verb.READ, "github:user", "", []),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "operation", "verb", "rtype", "name", "tags"), REST_CASES
)
def test_rest(
    method: str,
    path: str,
    body: object,
    operation: str,
    verb: Verb,
    rtype: str,
    name: str,
    tags: list[str],
) -> None:
    request = api(method, path, body)
    assert looks_like_github(request)
    action = recognise_github(request)
    assert action.provider is Provider.GITHUB
    assert (action.operation, action.verb) == (operation, verb)
    assert (action.resource.type, action.resource.name) == (rtype, name)
    assert action.risk_tags == tags
    assert action.confidence is Confidence.EXACT
    assert action.service == operation.split("/", maxsplit=1)[0]
    if path.startswith("/repos/"):
        assert action.scope.repository == "acme/api"


def test_enterprise_server_prefix_and_key() -> None:
    request = api("DELETE", "/api/v3/repos/acme/api/git/refs/heads/old", host="ghe.corp")
    assert looks_like_github(request)
    action = recognise_github(request)
    assert action.operation == "git/delete-ref"
    assert action.risk_tags == ["branch-delete"]
    assert action.resource.key == "github:ghe.corp:acme/api:github:ref/refs/heads/old"
    assert action.actor.tool == "gh"


def test_request_summary_keeps_no_secrets() -> None:
    action = recognise_github(api("DELETE", "/repos/acme/api"))
    assert action.request == summary_of(api("DELETE", "/repos/acme/api"))
    assert "ghp_secret" not in action.model_dump_json()


@pytest.mark.parametrize(
    ("method", "path", "host"),
    [
        ("GET", "/repos/acme/api", "example.com"),
        ("POST", "/api/v1/namespaces", "api.corp"),
        ("GET", "/acme/api.git/info/refs", "github.com"),
    ],
)
def test_not_github(method: str, path: str, host: str) -> None:
    assert not looks_like_github(http(method, path, host=host, port=443))


def test_unknown_route_fails_closed_for_writes() -> None:
    write = recognise_github(api("POST", "/no/such/endpoint", {}))
    assert (write.verb, write.confidence) == (Verb.UNKNOWN, Confidence.UNKNOWN)
    read = recognise_github(api("GET", "/no/such/endpoint"))
    assert (read.verb, read.confidence) == (Verb.READ, Confidence.HEURISTIC)


def test_unreadable_body_raises_rather_than_missing_a_force() -> None:
    request = http(
        "PATCH",
        "/repos/acme/api/git/refs/heads/main",
        host="api.github.com",
        port=443,
        headers={"content-type": "application/json"},
        body=b"{not json",
    )
    with pytest.raises(GitHubError):
        recognise_github(request)


def test_most_specific_template_wins() -> None:
    found = match_route("GET", "/repos/acme/api/branches/main/protection")
    assert found is not None
    assert found.route.operation == "repos/get-branch-protection"
    assert found.params == {"owner": "acme", "repo": "api", "branch": "main"}


# ----------------------------------------------------------------------------- GraphQL


def gql(query: str, variables: object = None, operation_name: str = "") -> HttpRequest:
    payload: dict[str, object] = {"query": query}
    if variables is not None:
        payload["variables"] = variables
    if operation_name:
        payload["operationName"] = operation_name
    return api("POST", "/graphql", payload)


GQL_CASES: list[tuple[str, object, str, Verb, list[str]]] = [
    (
        "mutation($id: ID!) { deleteRef(input: {refId: $id}) { clientMutationId } }",
        {"id": "REF_1"},
        "graphql:deleteRef",
        Verb.DELETE,
        ["branch-delete"],
    ),
    (
        "mutation U($i: UpdateRefInput!) { updateRef(input: $i) { ref { name } } }",
        {"i": {"refId": "R", "oid": "a" * 40, "force": True}},
        "graphql:updateRef",
        Verb.UPDATE,
        ["force-push"],
    ),
    (
        'mutation { updateRef(input: {refId: "R", oid: "abc", force: true}) { ref { name } } }',
        None,
        "graphql:updateRef",
        Verb.UPDATE,
        ["force-push"],
    ),
    (
        'mutation { updateRef(input: {refId: "R", oid: "abc"}) { ref { name } } }',
        None,
        "graphql:updateRef",
        Verb.UPDATE,
        [],
    ),
    (
        'mutation { deleteBranchProtectionRule(input: {branchProtectionRuleId: "B"}) '
        "{ clientMutationId } }",
        None,
        "graphql:deleteBranchProtectionRule",
        Verb.UPDATE,
        ["protection-removal"],
    ),
    (
        "mutation($i: UpdateBranchProtectionRuleInput!) { updateBranchProtectionRule(input: $i) "
        "{ branchProtectionRule { id } } }",
        {"i": {"allowsForcePushes": True}},
        "graphql:updateBranchProtectionRule",
        Verb.UPDATE,
        ["protection-removal"],
    ),
    (
        'mutation { a: addComment(input: {subjectId: "I", body: "} mutation"}) { clientMutationId }'
        ' b: deleteRef(input: {refId: "R"}) { clientMutationId } }',
        None,
        "graphql:deleteRef",
        Verb.DELETE,
        ["branch-delete"],
    ),
    ("query { viewer { login } }", None, "graphql:query", Verb.READ, []),
    (
        'mutation($i: DeleteRefInput = {refId: "R"}) { deleteRef(input: $i) { c } }',
        None,
        "graphql:deleteRef",
        Verb.DELETE,
        ["branch-delete"],
    ),
    (
        'mutation { mergePullRequest(input: {pullRequestId: "P"}) { c } }',
        None,
        "graphql:mergePullRequest",
        Verb.UPDATE,
        [],
    ),
    ('{ repository(owner: "acme", name: "api") { id } }', None, "graphql:query", Verb.READ, []),
]


@pytest.mark.parametrize(("query", "variables", "operation", "verb", "tags"), GQL_CASES)
def test_graphql(
    query: str, variables: object, operation: str, verb: Verb, tags: list[str]
) -> None:
    action = recognise_github(gql(query, variables))
    assert (action.operation, action.verb, action.risk_tags) == (operation, verb, tags)
    assert action.service == "graphql"


def test_graphql_enterprise_path() -> None:
    request = api(
        "POST",
        "/api/graphql",
        {"query": 'mutation { deleteRef(input: {refId: "R"}) { clientMutationId } }'},
        host="ghe.corp",
    )
    assert looks_like_github(request)
    assert recognise_github(request).operation == "graphql:deleteRef"


def test_graphql_picks_the_named_operation() -> None:
    document = 'query Q { viewer { login } } mutation M { deleteRef(input: {refId: "R"}) { c } }'
    assert recognise_github(gql(document, operation_name="Q")).verb is Verb.READ
    assert recognise_github(gql(document)).operation == "graphql:deleteRef"


def test_graphql_two_deletes_are_bulk() -> None:
    document = (
        'mutation { a: deleteRef(input: {refId: "1"}) { c } '
        'b: deleteRef(input: {refId: "2"}) { c } }'
    )
    assert recognise_github(gql(document)).risk_tags == ["branch-delete", "bulk"]


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b'{"variables": {}}',
        b'["query"]',
        b'{"query": "mutation { ...F }"}',
        b'{"query": "mutation { deleteRef(input: {refId: \\"R\\"}) { c }"}',
        b'{"query": "nonsense"}',
    ],
)
def test_graphql_garbage_raises(body: bytes) -> None:
    request = http(
        "POST",
        "/graphql",
        host="api.github.com",
        port=443,
        body=body,
        headers={"content-type": "application/json"},
    )
    with pytest.raises(ValueError):
        recognise_github(request)


def test_top_level_fields_ignores_strings_and_comments() -> None:
    kind, fields = top_level_fields(
        '# deleteRef\nmutation { closeIssue(input: {issueId: "x", reason: "{ deleteRef }"}) { c } }'
    )
    assert (kind, fields) == ("mutation", ["closeIssue"])
    with pytest.raises(GraphQLError):
        top_level_fields("mutation { a { b }")
