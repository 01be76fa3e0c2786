"""GitHub GraphQL requests that used to pass as harmless: end to end through the real proxy.

A loopback echo server stands in for GitHub Enterprise Server (``/api/graphql`` on any
host is GitHub's GraphQL endpoint to the recogniser). Every request is sent through a
real guardproxy with the shipped policies; a destructive mutation must be held or
denied and never arrive upstream, while a plain query and a harmless mutation are
forwarded (so the upstream log is known to work).

Each case below was forwarded by the hand-written reader this replaced (a token regex
and text searches): it read only the last of duplicate JSON keys, ignored a query in the
URL next to a body, saw ``force: true`` only when spelled literally or under a variable
named ``force``, did not know ``updateRefs`` deletes with a zero ``afterOid``, nor that
a disabled ruleset or an unenforced protection rule removes a guard.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from e2e.guard_fixtures import Guard, StoredDecision, guard_starter
from e2e.servers import EchoServer

GRAPHQL = "/api/graphql"
DELETE_REF = 'deleteRef(input: {refId: "REF_main"}) { clientMutationId }'
VIEWER = "query { viewer { login } }"


@pytest.fixture(scope="module")
def upstream() -> Iterator[EchoServer]:
    with EchoServer() as server:
        yield server
        assert not server.handler_errors, server.handler_errors


@pytest.fixture(scope="module")
def guard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guard]:
    """One guard for the module (shipped policies, a short hold window)."""
    starter = guard_starter(Path(tmp_path_factory.mktemp("guard")))
    start = next(starter)
    try:
        yield start(hold_window_seconds=0.5)
    finally:
        next(starter, None)  # runs guard_starter's teardown: every guard stopped


def send(
    guard: Guard,
    upstream: EchoServer,
    body: bytes,
    *,
    query: str = "",
    method: str = "POST",
    content_type: str = "application/json",
) -> httpx.Response:
    upstream.log.clear()
    url = f"{upstream.url}{GRAPHQL}" + (f"?{query}" if query else "")
    headers = {"content-type": content_type, "authorization": "bearer ghp_e2e"}
    with httpx.Client(proxy=guard.session().proxy_url, timeout=30) as client:
        return client.request(method, url, content=body, headers=headers)


def decision_of(guard: Guard, response: httpx.Response) -> StoredDecision:
    """The stored decision a refusal names (by decision or hold id; written within ~1 s)."""
    reference = response.headers["X-Guardproxy-Id"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = [d for d in guard.decisions() if reference in (d.id, d.hold_id)]
        if found:
            return found[0]
        time.sleep(0.1)
    raise AssertionError(f"no stored decision for {reference}")


def payload(query: str, variables: object = None, operation_name: str | None = None) -> bytes:
    document: dict[str, object] = {"query": query}
    if variables is not None:
        document["variables"] = variables
    if operation_name is not None:
        document["operationName"] = operation_name
    return json.dumps(document).encode()


UPDATE_REF_F = 'updateRef(input: {refId: "REF_main", oid: "abc", force: $f}) { clientMutationId }'

# (case id, body, URL query, method) -> the operation the guard must decide
BYPASSES: list[tuple[str, bytes, str, str, str]] = [
    (
        "duplicate-query-key-mutation-first",
        f'{{"query": {json.dumps(f"mutation {{ {DELETE_REF} }}")}, "query": "{VIEWER}"}}'.encode(),
        "",
        "POST",
        "graphql:deleteRef",
    ),
    (
        "mutation-in-the-url-query-in-the-body",
        payload(VIEWER),
        urlencode({"query": f"mutation {{ {DELETE_REF} }}"}),
        "POST",
        "graphql:deleteRef",
    ),
    (
        "repeated-url-query-mutation-first",
        b"",
        urlencode([("query", f"mutation {{ {DELETE_REF} }}"), ("query", VIEWER)]),
        "GET",
        "graphql:deleteRef",
    ),
    (
        "force-from-a-variable-overriding-its-default",
        payload(f"mutation($f: Boolean = false) {{ {UPDATE_REF_F} }}", {"f": True}),
        "",
        "POST",
        "graphql:updateRef",
    ),
    (
        "force-from-a-variable-default",
        payload(f"mutation($f: Boolean = true) {{ {UPDATE_REF_F} }}"),
        "",
        "POST",
        "graphql:updateRef",
    ),
    (
        "branch-deleted-by-update-refs",
        payload(
            "mutation($u: [RefUpdate!]!) "
            '{ updateRefs(input: {repositoryId: "R", refUpdates: $u}) { clientMutationId } }',
            {"u": [{"name": "refs/heads/main", "afterOid": "0" * 40}]},
        ),
        "",
        "POST",
        "graphql:updateRefs",
    ),
    (
        "force-pushes-allowed-through-a-variable",
        payload(
            "mutation($a: Boolean) { updateBranchProtectionRule(input: "
            '{branchProtectionRuleId: "B", allowsForcePushes: $a}) { clientMutationId } }',
            {"a": True},
        ),
        "",
        "POST",
        "graphql:updateBranchProtectionRule",
    ),
    (
        "admins-exempted-from-branch-protection",
        payload(
            'mutation { updateBranchProtectionRule(input: {branchProtectionRuleId: "B", '
            "isAdminEnforced: false}) { clientMutationId } }"
        ),
        "",
        "POST",
        "graphql:updateBranchProtectionRule",
    ),
    (
        "ruleset-disabled",
        payload(
            'mutation { updateRepositoryRuleset(input: {repositoryRulesetId: "S", '
            "enforcement: DISABLED}) { clientMutationId } }"
        ),
        "",
        "POST",
        "graphql:updateRepositoryRuleset",
    ),
]


@pytest.mark.parametrize(
    ("body", "query", "method", "operation"),
    [case[1:] for case in BYPASSES],
    ids=[case[0] for case in BYPASSES],
)
def test_destructive_mutation_is_stopped_before_the_upstream(
    guard: Guard, upstream: EchoServer, body: bytes, query: str, method: str, operation: str
) -> None:
    response = send(guard, upstream, body, query=query, method=method)
    assert response.headers.get("X-Guardproxy-Decision") in ("hold", "deny"), response.text
    assert response.status_code >= 400
    assert upstream.requests == [], "a destructive mutation reached GitHub undecided"
    decided = decision_of(guard, response)
    assert (decided.provider, decided.operation) == ("github", operation)
    assert decided.outcome in ("hold", "deny")


def test_a_query_and_a_harmless_mutation_are_forwarded(guard: Guard, upstream: EchoServer) -> None:
    response = send(guard, upstream, payload(VIEWER))
    assert response.status_code == 200, response.text
    assert [r.path for r in upstream.requests] == [GRAPHQL]
    comment = 'mutation { addComment(input: {subjectId: "I", body: "force: true"}) { c } }'
    response = send(guard, upstream, payload(comment))
    assert response.status_code == 200, response.text
    assert len(upstream.requests) == 1
    # an unreadable document is never forwarded
    response = send(guard, upstream, b'{"query": "mutation { deleteRef(input: {"}')
    assert response.headers.get("X-Guardproxy-Decision") == "deny"
    assert upstream.requests == []


@pytest.mark.parametrize(
    "body",
    [
        payload(
            f"mutation M($f: Boolean) {{ ...F }} fragment F on Mutation {{ ok: {UPDATE_REF_F} }}",
            {"f": True},
        ),
        json.dumps([{"query": VIEWER}, {"query": f"mutation {{ {DELETE_REF} }}"}]).encode(),
    ],
    ids=["fragment", "batch"],
)
def test_fragments_and_batches_are_read_not_refused_blindly(
    guard: Guard, upstream: EchoServer, body: bytes
) -> None:
    """Not a bypass before (the old reader refused these as unreadable, so they were
    denied): now they are read, and held for what they do."""
    response = send(guard, upstream, body)
    assert response.headers.get("X-Guardproxy-Decision") == "hold", response.text
    assert upstream.requests == []
    assert decision_of(guard, response).operation.startswith("graphql:")


def test_rest_force_given_twice_is_held(guard: Guard, upstream: EchoServer) -> None:
    """``"force": true, "force": false``: a first-wins parser forces, a last-wins one
    does not; both are decided, so the force push is held."""
    upstream.log.clear()
    body = b'{"sha": "' + b"a" * 40 + b'", "force": true, "force": false}'
    url = f"{upstream.url}/api/v3/repos/acme/api/git/refs/heads/main"
    with httpx.Client(proxy=guard.session().proxy_url, timeout=30) as client:
        response = client.patch(url, content=body, headers={"content-type": "application/json"})
    assert response.headers.get("X-Guardproxy-Decision") == "hold", response.text
    assert upstream.requests == []
    decided = decision_of(guard, response)
    assert (decided.operation, decided.environment) == ("git/update-ref", "unknown")
    assert "force-push" in decided.risk_tags
