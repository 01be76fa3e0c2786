"""GitHub REST (routes from the ghapi-shipped API description) and GraphQL mutations."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlencode

import pytest
from recognise_support import http

from guardproxy.action import Action, Confidence, Provider, Verb
from guardproxy.recognise.common import summary_of
from guardproxy.recognise.providers.github.mutations import judge_mutation
from guardproxy.recognise.providers.github.recogniser import (
    SPANNING_PARAMETERS,
    GitHubError,
    Route,
    looks_like_github,
    match_route,
    recognise_github,
    route_table,
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


@pytest.mark.parametrize(
    "body",
    [
        b'{"sha": "abc", "force": true, "force": false}',
        b'{"sha": "abc", "force": false, "force": true}',
    ],
)
def test_a_repeated_body_key_decides_both_values(body: bytes) -> None:
    request = http(
        "PATCH",
        "/repos/acme/api/git/refs/heads/main",
        host="api.github.com",
        port=443,
        headers={"content-type": "application/json"},
        body=body,
    )
    action = recognise_github(request)
    assert action.risk_tags == ["ambiguous:duplicate-key", "force-push"]
    assert [r.risk_tags for r in action.readings] == [["ambiguous:duplicate-key"]]
    assert action.confidence is Confidence.AMBIGUOUS


def test_most_specific_template_wins() -> None:
    found = match_route("GET", "/repos/acme/api/branches/main/protection")
    assert found is not None
    assert found.route.operation == "repos/get-branch-protection"
    assert found.params == {"owner": "acme", "repo": "api", "branch": "main"}


def test_get_on_a_ref_is_get_ref_not_the_repository() -> None:
    action = recognise_github(api("GET", "/repos/acme/api/git/refs/heads/release"))
    assert (action.operation, action.verb) == ("git/get-ref", Verb.READ)
    assert (action.resource.type, action.resource.name) == ("github:ref", "refs/heads/release")
    assert action.scope.repository == "acme/api"
    listed = recognise_github(api("GET", "/repos/acme/api/git/refs"))
    assert (listed.operation, listed.scope.repository) == ("git/list-refs", "acme/api")
    deleted = recognise_github(api("DELETE", "/repos/acme/api/git/refs/heads/release"))
    assert (deleted.operation, deleted.resource.name) == ("git/delete-ref", "refs/heads/release")


def _concrete(route: Route, value: Callable[[str], str]) -> str:
    return "/" + "/".join(value(s[1:-1]) if s.startswith("{") else s for s in route.segments)


def _every_route() -> list[Route]:
    return [route for routes in route_table().values() for route in routes]


def test_no_route_is_shadowed_by_a_greedier_one() -> None:
    """Every route of the table, with one-segment values and with slashes in the values
    GitHub lets hold them (refs, branches, paths), is matched back to itself."""
    wrong: list[str] = []
    for route in _every_route():
        for spans in (False, True):

            def value(name: str, spans: bool = spans) -> str:
                return (
                    f"v-{name}/w-{name}" if spans and name in SPANNING_PARAMETERS else f"v-{name}"
                )

            found = match_route(route.method, _concrete(route, value))
            if found is None or found.route != route:
                matched = found.route.operation if found else None
                wrong.append(f"{route.method} {'/'.join(route.segments)} -> {matched}")
    assert wrong == []


def test_only_refs_branches_and_paths_span_segments() -> None:
    """An owner, repository or id never takes a slash, whatever the path: with extra
    segments in any parameter, a match binds the extra segments only to a parameter
    that may hold a slash."""
    leaked: list[str] = []
    for route in _every_route():
        for name in {s[1:-1] for s in route.segments if s.startswith("{")}:

            def value(param: str, name: str = name) -> str:
                return f"v-{param}/git/refs/heads/x" if param == name else f"v-{param}"

            found = match_route(route.method, _concrete(route, value))
            if found is None:
                continue
            bad = {
                k: v for k, v in found.params.items() if "/" in v and k not in SPANNING_PARAMETERS
            }
            if bad:
                leaked.append(f"{route.method} {'/'.join(route.segments)}: {bad}")
    assert leaked == []


# ----------------------------------------------------------------------------- GraphQL


def gql(query: str, variables: object = None, operation_name: str = "") -> HttpRequest:
    payload: dict[str, object] = {"query": query}
    if variables is not None:
        payload["variables"] = variables
    if operation_name:
        payload["operationName"] = operation_name
    return api("POST", "/graphql", payload)


def raw(
    body: bytes,
    path: str = "/graphql",
    method: str = "POST",
    content_type: str = "application/json",
) -> HttpRequest:
    headers = {**UA, "content-type": content_type}
    return http(method, path, host="api.github.com", port=443, headers=headers, body=body)


def judged(action: Action) -> set[tuple[str, Verb, tuple[str, ...]]]:
    """(operation, verb, tags without the ambiguity ones) of the action and its readings."""
    return {
        (a.operation, a.verb, tuple(t for t in a.risk_tags if not t.startswith("ambiguous:")))
        for a in action.all_readings()
    }


DELETE_REF = 'deleteRef(input: {refId: "R"}) { clientMutationId }'
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
        {"i": {"branchProtectionRuleId": "B", "allowsForcePushes": True}},
        "graphql:updateBranchProtectionRule",
        Verb.UPDATE,
        ["protection-removal"],
    ),
    (
        'mutation { updateBranchProtectionRule(input: {branchProtectionRuleId: "B", '
        "isAdminEnforced: false}) { clientMutationId } }",
        None,
        "graphql:updateBranchProtectionRule",
        Verb.UPDATE,
        ["protection-removal"],
    ),
    (
        'mutation { updateBranchProtectionRule(input: {branchProtectionRuleId: "B", '
        "requiresApprovingReviews: true, requiredApprovingReviewCount: 2}) { clientMutationId } }",
        None,
        "graphql:updateBranchProtectionRule",
        Verb.UPDATE,
        [],
    ),
    (
        'mutation { updateRepositoryRuleset(input: {repositoryRulesetId: "S", '
        "enforcement: DISABLED}) { clientMutationId } }",
        None,
        "graphql:updateRepositoryRuleset",
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
    (
        'mutation { archiveRepository(input: {repositoryId: "R"}) { c } }',
        None,
        "graphql:archiveRepository",
        Verb.UPDATE,
        ["archive"],
    ),
    (
        'mutation { updateTeamsRepository(input: {repositoryId: "R", teamIds: ["T"], '
        "permission: ADMIN}) { c } }",
        None,
        "graphql:updateTeamsRepository",
        Verb.PERMISSION,
        [],
    ),
    (
        'mutation { frobnicateEverything(input: {id: "X"}) { c } }',
        None,
        "graphql:frobnicateEverything",
        Verb.UPDATE,
        [],
    ),
    ('{ repository(owner: "acme", name: "api") { id } }', None, "graphql:query", Verb.READ, []),
    ("mutation { __typename }", None, "graphql:mutation", Verb.READ, []),
]


@pytest.mark.parametrize(("query", "variables", "operation", "verb", "tags"), GQL_CASES)
def test_graphql(
    query: str, variables: object, operation: str, verb: Verb, tags: list[str]
) -> None:
    action = recognise_github(gql(query, variables))
    assert (action.operation, action.verb, action.risk_tags) == (operation, verb, tags)
    assert action.service == "graphql"
    assert action.confidence in (Confidence.EXACT, Confidence.HEURISTIC)


def test_graphql_enterprise_path() -> None:
    request = api(
        "POST",
        "/api/graphql",
        {"query": 'mutation { deleteRef(input: {refId: "R"}) { clientMutationId } }'},
        host="ghe.corp",
    )
    assert looks_like_github(request)
    assert recognise_github(request).operation == "graphql:deleteRef"


def test_every_mutation_field_is_an_action_most_dangerous_first() -> None:
    document = (
        'mutation { c: addComment(input: {subjectId: "I", body: "x"}) { c } '
        'u: updateRef(input: {refId: "R", oid: "a", force: true}) { c } '
        f"d: {DELETE_REF} __typename }}"
    )
    action = recognise_github(gql(document))
    assert [(a.operation, a.verb) for a in action.all_readings()] == [
        ("graphql:deleteRef", Verb.DELETE),
        ("graphql:updateRef", Verb.UPDATE),
        ("graphql:addComment", Verb.CREATE),
    ]
    assert action.confidence is Confidence.EXACT  # several operations, no ambiguity


def test_graphql_named_query_runs_alone() -> None:
    document = f"query Q {{ viewer {{ login }} }} mutation M {{ {DELETE_REF} }}"
    action = recognise_github(gql(document, operation_name="Q"))
    assert judged(action) == {("graphql:query", Verb.READ, ())}
    assert not action.readings
    action = recognise_github(gql(document, operation_name="M"))
    assert judged(action) == {("graphql:deleteRef", Verb.DELETE, ("branch-delete",))}


@pytest.mark.parametrize(
    ("document", "operation_name"),
    [
        # the spec makes these request errors (nothing runs); every operation is decided
        (f"query Q {{ viewer {{ login }} }} mutation M {{ {DELETE_REF} }}", None),
        (f"query Q {{ viewer {{ login }} }} mutation M {{ {DELETE_REF} }}", "Nope"),
        (f"query Q {{ viewer {{ login }} }} mutation Q {{ {DELETE_REF} }}", "Q"),
        (f"{{ viewer {{ login }} }} mutation {{ {DELETE_REF} }}", None),
        (f"query Q {{ viewer {{ login }} }} mutation M {{ {DELETE_REF} }}", ["Q"]),
        (f"mutation {{ {DELETE_REF} }}", "M"),
    ],
)
def test_graphql_operation_not_selected_decides_every_operation(
    document: str, operation_name: object
) -> None:
    payload = {"query": document, "operationName": operation_name}
    action = recognise_github(api("POST", "/graphql", payload))
    assert action.operation == "graphql:deleteRef"
    assert "ambiguous:graphql-operation" in action.risk_tags
    assert action.confidence is Confidence.AMBIGUOUS
    assert all("ambiguous:graphql-operation" in a.risk_tags for a in action.all_readings())


@pytest.mark.parametrize(
    "document",
    [
        f"mutation {{ ...F }} fragment F on Mutation {{ keep: {DELETE_REF} }}",
        f"mutation {{ ...F }} fragment F on Mutation {{ ...G }} fragment G on Mutation "
        f"{{ {DELETE_REF} }}",
        f"mutation {{ ... on Mutation {{ {DELETE_REF} }} }}",
        f"mutation {{ ... {{ ... @include(if: true) {{ {DELETE_REF} }} }} }}",
        f"mutation {{ ...F ...F }} fragment F on Mutation {{ {DELETE_REF} ...F }}",
        # judged all the same (stricter than the server)
        'mutation { deleteRef(input: {refId: "R"}) @skip(if: true) { clientMutationId } }',
        f"# {{ viewer }}\nmutation {{ n: __typename, {DELETE_REF} }} # }} query {{ x }}",
    ],
)
def test_graphql_fragments_aliases_directives(document: str) -> None:
    action = recognise_github(gql(document))
    assert judged(action) == {("graphql:deleteRef", Verb.DELETE, ("branch-delete",))}


UPDATE_REF_F = 'updateRef(input: {refId: "R", oid: "a", force: $f}) { c }'


@pytest.mark.parametrize(
    ("definition", "variables", "forced"),
    [
        ("$f: Boolean = false", {"f": True}, True),  # provided overrides the default
        ("$f: Boolean = true", None, True),  # the default applies
        ("$f: Boolean = true", {}, True),
        ("$f: Boolean = true", {"f": None}, False),  # explicit null is not the default
        ("$f: Boolean = true", {"f": False}, False),
        ("$f: Boolean", {"g": True}, False),  # absent: the argument is not given
        ("$f: Boolean", {"f": True, "force": False}, True),
    ],
)
def test_graphql_variables_and_defaults(definition: str, variables: object, forced: bool) -> None:
    query = f"mutation({definition}) {{ {UPDATE_REF_F} }}"
    action = recognise_github(gql(query, variables))
    assert action.operation == "graphql:updateRef"
    assert ("force-push" in action.risk_tags) is forced
    assert not action.readings


def test_graphql_variables_as_a_json_string_decide_both_readings() -> None:
    query = f"mutation($f: Boolean = false) {{ {UPDATE_REF_F} }}"
    action = recognise_github(gql(query, json.dumps({"f": True})))
    assert judged(action) == {
        ("graphql:updateRef", Verb.UPDATE, ("force-push",)),
        ("graphql:updateRef", Verb.UPDATE, ()),
    }
    assert action.risk_tags == ["ambiguous:graphql-variables", "force-push"]
    assert action.confidence is Confidence.AMBIGUOUS


def test_graphql_batch_decides_every_element() -> None:
    body = json.dumps(
        [{"query": "query { viewer { login } }"}, {"query": f"mutation {{ {DELETE_REF} }}"}]
    )
    action = recognise_github(raw(body.encode()))
    assert judged(action) == {
        ("graphql:deleteRef", Verb.DELETE, ("branch-delete",)),
        ("graphql:query", Verb.READ, ()),
    }
    assert "ambiguous:graphql-batch" in action.risk_tags


def test_graphql_duplicate_json_keys_decide_both() -> None:
    mutation = json.dumps(f"mutation {{ {DELETE_REF} }}")
    for body in (
        f'{{"query": {mutation}, "query": "query {{ viewer {{ login }} }}"}}',
        f'{{"query": "query {{ viewer {{ login }} }}", "query": {mutation}}}',
    ):
        action = recognise_github(raw(body.encode()))
        assert action.operation == "graphql:deleteRef"
        assert "ambiguous:duplicate-key" in action.risk_tags
        assert ("graphql:query", Verb.READ, ()) in judged(action)


def test_graphql_duplicate_key_inside_variables() -> None:
    query = json.dumps(f"mutation($f: Boolean) {{ {UPDATE_REF_F} }}")
    body = f'{{"query": {query}, "variables": {{"f": true, "f": false}}}}'
    action = recognise_github(raw(body.encode()))
    assert ("graphql:updateRef", Verb.UPDATE, ("force-push",)) in judged(action)


def test_graphql_get_with_a_mutation_in_the_url() -> None:
    # GraphQL over HTTP forbids running a mutation from a GET; what GitHub does is not
    # documented, so it is decided as if it ran.
    request = raw(b"", path="/graphql?" + urlencode({"query": f"mutation {{ {DELETE_REF} }}"}),
                  method="GET")  # fmt: skip
    assert recognise_github(request).operation == "graphql:deleteRef"


def test_graphql_url_variables_are_json_text() -> None:
    query = f"mutation($f: Boolean = false) {{ {UPDATE_REF_F} }}"
    path = "/graphql?" + urlencode({"query": query, "variables": json.dumps({"f": True})})
    action = recognise_github(raw(b"", path=path, method="GET"))
    assert (action.risk_tags, action.readings) == (["force-push"], [])


def test_graphql_url_and_body_both_decided() -> None:
    path = "/graphql?" + urlencode({"query": f"mutation {{ {DELETE_REF} }}"})
    body = json.dumps({"query": "query { viewer { login } }"}).encode()
    action = recognise_github(raw(body, path=path))
    assert action.operation == "graphql:deleteRef"
    assert "ambiguous:graphql-source" in action.risk_tags
    # operationName in the URL, document in the body (a merged reading)
    document = f"query Q {{ viewer {{ login }} }} mutation M {{ {DELETE_REF} }}"
    body = json.dumps({"query": document}).encode()
    action = recognise_github(raw(body, path="/graphql?operationName=M"))
    assert action.operation == "graphql:deleteRef"


def test_graphql_repeated_url_parameter_decides_each_value() -> None:
    path = "/graphql?" + urlencode(
        [("query", f"mutation {{ {DELETE_REF} }}"), ("query", "query { viewer { login } }")]
    )
    action = recognise_github(raw(b"", path=path, method="GET"))
    assert action.operation == "graphql:deleteRef"
    assert "ambiguous:duplicate-parameter" in action.risk_tags


@pytest.mark.parametrize(
    "content_type", ["application/graphql", "text/plain", "application/json", ""]
)
def test_graphql_raw_document_body(content_type: str) -> None:
    action = recognise_github(
        raw(f"mutation {{ {DELETE_REF} }}".encode(), content_type=content_type)
    )
    assert action.operation == "graphql:deleteRef"


def test_graphql_form_encoded_body() -> None:
    body = urlencode({"query": f"mutation {{ {DELETE_REF} }}"}).encode()
    action = recognise_github(raw(body, content_type="application/x-www-form-urlencoded"))
    assert action.operation == "graphql:deleteRef"


def test_graphql_update_refs_one_reading_per_ref_update() -> None:
    query = (
        "mutation($u: [RefUpdate!]!) "
        '{ updateRefs(input: {repositoryId: "R", refUpdates: $u}) { c } }'
    )
    updates = [
        {"name": "refs/heads/feature", "afterOid": "b" * 40},
        {"name": "refs/heads/main", "afterOid": "c" * 40, "force": True},
        {"name": "refs/heads/old", "afterOid": "0" * 40},
        {"name": "refs/tags/v1", "afterOid": "0" * 40},
    ]
    action = recognise_github(gql(query, {"u": updates}))
    readings = [(a.verb, a.resource.name, a.risk_tags) for a in action.all_readings()]
    assert readings == [
        (Verb.DELETE, "refs/heads/old", ["branch-delete", "bulk"]),
        (Verb.DELETE, "refs/tags/v1", ["bulk"]),
        (Verb.UPDATE, "refs/heads/main", ["force-push"]),
        (Verb.UPDATE, "refs/heads/feature", []),
    ]
    assert action.resource.type == "github:ref"
    # one object where a list is expected is coerced to a list of one
    single = {"name": "refs/heads/main", "afterOid": "0" * 40}
    action = recognise_github(gql(query, {"u": single}))
    assert (action.verb, action.risk_tags) == (Verb.DELETE, ["branch-delete"])


def test_graphql_many_ref_updates_keep_the_most_dangerous() -> None:
    query = (
        "mutation($u: [RefUpdate!]!) "
        '{ updateRefs(input: {repositoryId: "R", refUpdates: $u}) { c } }'
    )
    updates: list[dict[str, object]] = [
        {"name": f"refs/heads/b{i}", "afterOid": "b" * 40} for i in range(200)
    ]
    updates.append({"name": "refs/heads/main", "afterOid": "c" * 40, "force": True})
    action = recognise_github(gql(query, {"u": updates}))
    assert action.truncated
    assert len(action.all_readings()) == 64
    assert (action.resource.name, action.risk_tags) == ("refs/heads/main", ["force-push"])


def test_graphql_two_deletes_are_bulk() -> None:
    document = (
        'mutation { a: deleteRef(input: {refId: "1"}) { c } '
        'b: deleteRef(input: {refId: "2"}) { c } }'
    )
    assert recognise_github(gql(document)).risk_tags == ["branch-delete", "bulk"]
    # the same response key with the same arguments runs once
    document = f"mutation {{ {DELETE_REF} ...F }} fragment F on Mutation {{ {DELETE_REF} }}"
    assert recognise_github(gql(document)).risk_tags == ["branch-delete"]


def test_graphql_strings_and_comments_are_not_arguments() -> None:
    document = (
        '# force: true\nmutation { addComment(input: {subjectId: "I", body: "force: true"}) { c }'
        ' updateRef(input: {refId: "R", oid: """force: true } deleteRef"""}) { c } }'
    )
    action = recognise_github(gql(document))
    assert judged(action) == {
        ("graphql:updateRef", Verb.UPDATE, ()),
        ("graphql:addComment", Verb.CREATE, ()),
    }


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b'{"variables": {}}',
        b'["query"]',
        b"[]",
        b'{"query": 42}',
        b'{"query": "mutation { ...F }"}',
        b'{"query": "mutation { deleteRef(input: {refId: \\"R\\"}) { c }"}',
        b'{"query": "nonsense"}',
        b'{"query": "fragment F on Mutation { x }"}',
        b'{"query": "mutation { updateRef(input: {force: false, force: true}) { c } }"}',
        b'{"query": "mutation { updateRef(input: {refId: \\"R\\"}, input: {}) { c } }"}',
        b"\xff\xfe",
        b'{"query": "' + b"{ a " * 100_000 + b'"}',
        b'{"query": "' + b"{ a(x: " + b"[" * 20_000 + b") }" + b'"}',
    ],
)
def test_graphql_unreadable_is_unclassified(body: bytes) -> None:
    action = recognise_github(raw(body))
    assert action.verb is Verb.UNKNOWN
    assert (action.provider, action.service, action.confidence) == (
        Provider.GITHUB,
        "graphql",
        Confidence.UNKNOWN,
    )


def test_graphql_one_unreadable_element_of_a_batch_is_unclassified() -> None:
    body = json.dumps([{"query": "query { viewer { login } }"}, {"query": "mutation {"}])
    action = recognise_github(raw(body.encode()))
    assert action.verb is Verb.UNKNOWN
    assert ("graphql:query", Verb.READ, ()) in judged(action)


def test_graphql_plain_get_is_introspection() -> None:
    action = recognise_github(raw(b"", method="GET"))
    assert (action.operation, action.verb) == ("graphql:query", Verb.READ)
    posted = recognise_github(raw(b""))
    assert posted.verb is Verb.UNKNOWN


def test_graphql_reads_stay_one_action() -> None:
    action = recognise_github(gql("query A { viewer { login } } query B { viewer { id } }"))
    assert (action.operation, action.verb, action.readings) == ("graphql:query", Verb.READ, [])


GITHUB_MUTATIONS = [
    line.strip()
    for line in (Path(__file__).parent / "data" / "github_graphql_mutations.txt")
    .read_text()
    .splitlines()
    if line.strip() and not line.startswith("#")
]


def test_every_github_mutation_changes_something() -> None:
    """Every mutation of GitHub's public schema is classed as a change (never a read,
    never unknown), and every name the recogniser singles out is one of them."""
    assert len(GITHUB_MUTATIONS) > 200
    for name in GITHUB_MUTATIONS:
        [first, *_] = judge_mutation(name, {})
        assert first.verb not in (Verb.READ, Verb.UNKNOWN), name
    singled_out = {
        "deleteRef",
        "updateRef",
        "updateRefs",
        "deleteBranchProtectionRule",
        "deleteRepositoryRuleset",
        "updateBranchProtectionRule",
        "updateRepositoryRuleset",
        "archiveRepository",
        "approveDeployments",
        "rerequestCheckSuite",
        "updateTeamsRepository",
        "accessUserNamespaceRepository",
    }
    assert singled_out <= set(GITHUB_MUTATIONS)
