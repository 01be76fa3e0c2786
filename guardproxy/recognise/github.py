"""The GitHub recogniser: REST and GraphQL API requests -> Actions.

REST is model-driven: the route table (``data/github_routes.json``: method, path
template and operationId of every operation in GitHub's REST API description, as
packaged by ``ghapi``; shipped as data so ghapi's dependencies are not ours), so
``operation`` is the OpenAPI operationId
(``repos/delete``, ``git/delete-ref``) for every endpoint GitHub documents, not just
the ones a hand-written table remembered. The most specific template wins (most
literal segments), and a parameter only spans several segments (``git/refs/heads/a/b``,
``branches/feat/x/protection``) when nothing matches segment for segment.

Verb classes start from the HTTP method and are overridden where the method
understates the danger (a repository delete destroys history; removing branch
protection or a ruleset is a ``protection-removal``; collaborator and team changes
are ``permission``; dispatching a workflow runs code).

GraphQL (``POST /graphql``) is parsed just far enough to name the top-level fields
of a mutation (``graphql:deleteRef``); the most dangerous one is the operation.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any
from urllib.parse import unquote

from guardproxy.action import Action, Confidence, Provider, Resource, Scope, Verb
from guardproxy.recognise.common import actor_of, cap, decoded_body, resource_key, summary_of
from guardproxy.recognise.request import HttpRequest

API_HOSTS = frozenset({"api.github.com", "uploads.github.com"})
_GHE_REST = "/api/v3"
_GHE_UPLOADS = "/api/uploads"
_GRAPHQL_PATHS = frozenset({"/graphql", "/api/graphql"})
ROUTES_FILE = "data/github_routes.json"

# ------------------------------------------------------------------ verb overrides

_DESTROY_OPERATIONS = frozenset({"repos/delete", "orgs/delete", "enterprise-admin/delete-org"})

# Operations that take a guard away. Deleting branch protection or one of its parts
# is not a data loss (the verb stays update), but it is what lets a later force push
# or delete through, so policies hold it in production.
_PROTECTION_REMOVALS = frozenset(
    {
        "repos/delete-branch-protection",
        "repos/delete-admin-branch-protection",
        "repos/delete-pull-request-review-protection",
        "repos/delete-commit-signature-protection",
        "repos/remove-status-check-protection",
        "repos/remove-status-check-contexts",
        "repos/delete-access-restrictions",
        "repos/delete-repo-ruleset",
        "repos/delete-org-ruleset",
        "orgs/delete-org-ruleset",
        "repos/delete-tag-protection",
        "repos/disable-private-vulnerability-reporting",
        "repos/disable-vulnerability-alerts",
        "secret-scanning/delete-push-protection-bypass",
    }
)

# Nouns in an operationId that mean "who may do what" rather than "what exists".
_PERMISSION_WORDS = re.compile(
    r"collaborator|permission|membership|member|(?:^|-)role|security-manager|deploy-key"
    r"|invitation|(?:^|-)secret|access-token|pat-grant|oidc|ssh-signing-key"
    r"|gpg-key|ssh-key|public-ssh-key|(?:^|-)admin(?:s|-|$)|transfer"
)
_EXECUTE_WORDS = re.compile(r"dispatch|re-run|rerun|run-workflow|force-cancel")

_METHOD_VERBS = {
    "GET": Verb.READ,
    "HEAD": Verb.READ,
    "POST": Verb.CREATE,
    "PUT": Verb.UPDATE,
    "PATCH": Verb.UPDATE,
    "DELETE": Verb.DELETE,
}

# Fields of a branch-protection PUT whose null/false (or, for the allow_* ones, true)
# value switches a guard off.
_GUARD_FIELDS = ("required_status_checks", "required_pull_request_reviews", "restrictions")
_GUARD_FLAGS = ("enforce_admins", "required_linear_history", "required_signatures")
_ALLOW_FLAGS = ("allow_force_pushes", "allow_deletions")

# Operations whose danger is in the body; only these bodies are parsed (others may be
# release assets or other binary uploads).
_BODY_OPERATIONS = frozenset({"git/update-ref", "repos/update-branch-protection", "repos/update"})

_PLURALS = {"repos": "repository", "branches": "branch", "statuses": "status", "aliases": "alias"}


# ------------------------------------------------------------------ route table


@dataclass(frozen=True, slots=True)
class Route:
    """One REST operation: its id, method and path template split into segments."""

    operation: str
    method: str
    segments: tuple[str, ...]

    @property
    def literals(self) -> int:
        return sum(1 for s in self.segments if not s.startswith("{"))

    @property
    def literal_set(self) -> frozenset[str]:
        return frozenset(s for s in self.segments if not s.startswith("{"))


@dataclass(frozen=True, slots=True)
class Match:
    route: Route
    params: dict[str, str]


@cache
def route_table() -> dict[str, tuple[Route, ...]]:
    """Routes by method, most literal segments first (loaded once, ~10 ms)."""
    data = json.loads(files("guardproxy.recognise").joinpath(ROUTES_FILE).read_text("utf-8"))
    by_method: dict[str, list[Route]] = {}
    for method, path, operation in data["routes"]:
        segments = tuple(s for s in str(path).split("/") if s)
        by_method.setdefault(method, []).append(Route(operation, method, segments))
    return {m: tuple(sorted(rs, key=lambda r: -r.literals)) for m, rs in by_method.items()}


def _strict(route: Route, parts: list[str]) -> dict[str, str] | None:
    if len(route.segments) != len(parts):
        return None
    params: dict[str, str] = {}
    for template, part in zip(route.segments, parts, strict=True):
        if template.startswith("{"):
            params[template[1:-1]] = part
        elif template != part:
            return None
    return params


@cache
def _loose_pattern(route: Route) -> re.Pattern[str]:
    pieces = [
        f"(?P<p{i}>.+)" if s.startswith("{") else re.escape(s) for i, s in enumerate(route.segments)
    ]
    return re.compile("^" + "/".join(pieces) + "$")


def _loose(route: Route, path: str) -> dict[str, str] | None:
    found = _loose_pattern(route).match(path)
    if found is None:
        return None
    return {
        route.segments[int(k[1:])][1:-1]: v for k, v in found.groupdict().items() if v is not None
    }


def match_route(method: str, path: str) -> Match | None:
    """The most specific route for ``method`` and an API-relative ``path``."""
    routes = route_table().get("GET" if method == "HEAD" else method, ())
    parts = [unquote(p) for p in path.split("/") if p]
    for route in routes:
        params = _strict(route, parts)
        if params is not None:
            return Match(route, params)
    joined = "/".join(parts)
    present = set(parts)
    for route in routes:
        if len(route.segments) > len(parts) or not route.literal_set <= present:
            continue  # cheap pre-check: only compile patterns that can match
        params = _loose(route, joined)
        if params is not None:
            return Match(route, params)
    return None


# ------------------------------------------------------------------ predicate


def api_path(request: HttpRequest) -> str | None:
    """The API-relative path, or None when the request is not for a GitHub API."""
    path = request.path_only
    host = request.host.lower()
    if host in API_HOSTS or (host.startswith("api.") and host.endswith(".ghe.com")):
        return path
    for prefix in (_GHE_REST, _GHE_UPLOADS):
        if path == prefix or path.startswith(prefix + "/"):
            return path[len(prefix) :] or "/"
    if path == "/api/graphql":
        return path
    return None


def looks_like_github(request: HttpRequest) -> bool:
    """api.github.com (and uploads), GHE.com data-residency APIs, or a GHE Server
    ``/api/v3``, ``/api/uploads`` or ``/api/graphql`` path on any host."""
    return api_path(request) is not None


# ------------------------------------------------------------------ REST


class GitHubError(ValueError):
    """A request the recogniser cannot read."""


def _json_body(request: HttpRequest) -> Any:
    """The JSON body, None when there is none; raises when it is there but unreadable
    (a force flag or a protection field could be in what we failed to read)."""
    body = decoded_body(request)
    if body is None:
        raise GitHubError("body too large or undecodable")
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise GitHubError("body is not JSON") from exc


def _singular(word: str) -> str:
    if word in _PLURALS:
        return _PLURALS[word]
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "sses", "xes")):
        return word[:-2]
    return word.removesuffix("s")


def _thing(segments: tuple[str, ...]) -> tuple[str, str]:
    """(resource type suffix, template parameter naming the resource) of a route.

    ``*repo`` stands for the repository itself (named ``owner/repo``). The type is the
    collection the named parameter sits in (``.../rulesets/{id}`` -> ``ruleset``) or,
    for a sub-document of a named thing, both (``branches/{b}/protection`` ->
    ``branch-protection``, as the shipped policy tests spell it).
    """
    last = segments[-1]
    prev = segments[-2] if len(segments) > 1 else ""
    if (prev, last) == ("{owner}", "{repo}"):
        return "repository", "*repo"
    if last.startswith("{"):
        return _singular(prev or "resource"), last[1:-1]
    if prev == "{repo}":
        # /repos/{o}/{r}/transfer acts on the repository; /repos/{o}/{r}/pulls on a collection.
        return (_singular(last), "") if last.endswith("s") else ("repository", "*repo")
    if prev.startswith("{") and len(segments) > 2:
        return f"{_singular(segments[-3])}-{last}", prev[1:-1]
    return _singular(last), ""


def _protection_weakened(body: Any) -> bool:
    """A branch-protection PUT that switches a guard off (null/false, or allows force)."""
    if not isinstance(body, dict):
        return False
    if any(k in body and not body[k] for k in _GUARD_FIELDS + _GUARD_FLAGS):
        return True
    return any(body.get(k) is True for k in _ALLOW_FLAGS)


def _rest_verb_and_tags(
    operation: str, method: str, params: dict[str, str], body: Any
) -> tuple[Verb, list[str]]:
    verb = _METHOD_VERBS.get(method, Verb.UNKNOWN)
    tags: list[str] = []
    if verb is Verb.READ:
        return verb, tags
    action = operation.split("/", 1)[1]
    if operation in _DESTROY_OPERATIONS:
        return Verb.DESTROY, tags
    if operation in _PROTECTION_REMOVALS:
        return Verb.UPDATE, ["protection-removal"]
    if operation == "git/delete-ref":
        if params.get("ref", "").startswith("heads/"):
            tags.append("branch-delete")
        return Verb.DELETE, tags
    if operation == "git/update-ref":
        if isinstance(body, dict) and body.get("force") is True:
            tags.append("force-push")
        return Verb.UPDATE, tags
    if operation == "repos/update-branch-protection":
        return Verb.UPDATE, ["protection-removal"] if _protection_weakened(body) else []
    if operation == "repos/update" and isinstance(body, dict):
        if body.get("archived") is True:
            tags.append("archive")
        if body.get("private") is False or body.get("visibility") == "public":
            tags.append("exposure")
        return Verb.UPDATE, tags
    if _EXECUTE_WORDS.search(action):
        return Verb.EXECUTE, tags
    if _PERMISSION_WORDS.search(action):
        return Verb.PERMISSION, tags
    return verb, tags


def _repository(params: dict[str, str]) -> str:
    if "owner" in params and "repo" in params:
        return f"{params.get('owner', '')}/{params.get('repo', '')}"
    return ""


def _action(request: HttpRequest, repository: str = "", **fields: Any) -> Action:
    base: dict[str, Any] = {
        "provider": Provider.GITHUB,
        "scope": Scope(repository=repository),
        "actor": actor_of(request),
        "request": summary_of(request),
    }
    base.update(fields)
    return Action.model_validate(base)


def _rest(request: HttpRequest, path: str) -> Action:
    method = request.method.upper()
    found = match_route(method, path)
    if found is None:
        readable = method in ("GET", "HEAD")
        return _action(
            request,
            verb=Verb.READ if readable else Verb.UNKNOWN,
            confidence=Confidence.HEURISTIC if readable else Confidence.UNKNOWN,
        )
    route, params = found.route, found.params
    body = _json_body(request) if route.operation in _BODY_OPERATIONS else None
    verb, tags = _rest_verb_and_tags(route.operation, method, params, body)
    repository = _repository(params)
    thing, param = _thing(route.segments)
    if route.operation.startswith("git/") and param == "ref":
        name = "refs/" + params["ref"]
    elif param == "*repo":
        name = f"{params.get('owner', '')}/{params.get('repo', '')}"
    else:
        name = params.get(param, "")
    name, truncated = cap(name)
    rtype = f"github:{thing}"
    key_scope = [request.host.lower(), *([repository] if repository else [])]
    return _action(
        request,
        repository,
        service=route.operation.split("/", 1)[0],
        operation=route.operation,
        verb=verb,
        resource=Resource(
            type=rtype, name=name, key=resource_key("github", key_scope, rtype, name)
        ),
        risk_tags=tags,
        confidence=Confidence.EXACT if verb is not Verb.UNKNOWN else Confidence.UNKNOWN,
        truncated=truncated,
    )


# ------------------------------------------------------------------ GraphQL

_GQL_TOKEN = re.compile(
    r'"""(?:[^"\\]|\\.|"(?!""))*"""|"(?:[^"\\\n]|\\.)*"|#[^\n]*|\.\.\.|[A-Za-z_][A-Za-z0-9_]*'
    r"|[{}()\[\]:@$!=,|&]|-?\d[\d.eE+-]*|\S",
    re.DOTALL,
)
_OPERATION_KEYWORDS = frozenset({"query", "mutation", "subscription"})


class GraphQLError(ValueError):
    """The query document is not one we can read."""


def _tokens(document: str) -> Iterator[str]:
    for token in _GQL_TOKEN.findall(document):
        if token.startswith("#") or token == ",":
            continue
        yield '""' if token.startswith('"') else token


def top_level_fields(document: str, operation_name: str = "") -> tuple[str, list[str]]:
    """(operation type, its top-level field names) of the operation ``document`` runs.

    Strings and comments are dropped before braces are counted, so a ``}`` in an
    argument cannot end a selection set early. Fragment spreads at the top level
    make the field list unknowable, which raises.
    """
    operations: list[tuple[str, str, list[str]]] = []
    tokens = list(_tokens(document))
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token == "fragment":
            kind, name = "fragment", ""
        elif token in _OPERATION_KEYWORDS:
            kind = token
            name = tokens[i + 1] if i + 1 < len(tokens) and tokens[i + 1][0].isalpha() else ""
        elif token == "{":
            kind, name = "query", ""
        else:
            raise GraphQLError(f"unexpected token {token[:20]!r}")
        paren = 0  # variable defaults may hold objects: ($in: Input = {a: 1})
        while i < len(tokens) and (tokens[i] != "{" or paren):
            paren += {"(": 1, ")": -1}.get(tokens[i], 0)
            i += 1
        fields, i = _selection(tokens, i)
        if kind != "fragment":
            operations.append((kind, name, fields))
    if not operations:
        raise GraphQLError("no operation")
    chosen = [op for op in operations if not operation_name or op[1] == operation_name]
    if len(chosen) != 1:
        # Without a (matching) operationName a multi-operation document is refused by
        # the server; judge it by its most dangerous operation all the same.
        chosen = [op for op in operations if op[0] == "mutation"] or operations
        return chosen[0][0], [f for op in chosen for f in op[2]]
    return chosen[0][0], chosen[0][2]


def _selection(tokens: list[str], start: int) -> tuple[list[str], int]:
    """Top-level field names of the selection set opening at ``start``; index after it."""
    if start >= len(tokens):
        raise GraphQLError("missing selection set")
    depth = 0
    paren = 0
    fields: list[str] = []
    i = start
    while i < len(tokens):
        token = tokens[i]
        if token == "(":
            paren += 1
        elif token == ")":
            paren -= 1
        elif paren == 0 and token == "{":
            depth += 1
        elif paren == 0 and token == "}":
            depth -= 1
            if depth == 0:
                return fields, i + 1
        elif paren == 0 and depth == 1:
            if token == "...":
                raise GraphQLError("fragment spread at the top level")
            if token[0].isalpha() or token[0] == "_":
                alias = i + 1 < len(tokens) and tokens[i + 1] == ":"
                if alias:
                    i += 2
                    token = tokens[i] if i < len(tokens) else ""
                if tokens[i - 1] != "@":
                    fields.append(token)
        i += 1
    raise GraphQLError("unbalanced braces")


def _has_true(value: Any, key: str) -> bool:
    """Whether ``key: true`` occurs anywhere in a JSON value (GraphQL variables)."""
    if isinstance(value, dict):
        return any((k == key and v is True) or _has_true(v, key) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_true(v, key) for v in value)
    return False


_GQL_PROTECTION_REMOVALS = frozenset(
    {"deleteBranchProtectionRule", "deleteRepositoryRuleset", "deleteTagProtectionRule"}
)
_GQL_PERMISSION = re.compile(r"Collaborator|Permission|Member|Role|Admin|Invitation|transfer")
_GQL_PREFIX_VERBS = (
    ("delete", Verb.DELETE),
    ("remove", Verb.DELETE),
    ("create", Verb.CREATE),
    ("add", Verb.CREATE),
    ("update", Verb.UPDATE),
)


def _mutation_field(field: str, text: str, variables: Any) -> tuple[Verb, list[str]]:
    """Verb class and risk tags of one top-level mutation field."""
    if field in _GQL_PROTECTION_REMOVALS:
        return Verb.UPDATE, ["protection-removal"]
    if field == "updateBranchProtectionRule":
        weakened = any(_has_true(variables, k) for k in ("allowsForcePushes", "allowsDeletions"))
        weakened |= bool(re.search(r"allows(?:ForcePushes|Deletions)\s*:\s*true", text))
        return Verb.UPDATE, ["protection-removal"] if weakened else []
    if field == "deleteRef":
        # The ref is a node id: branch or tag is unknowable here, so assume a branch.
        return Verb.DELETE, ["branch-delete"]
    if field in ("updateRef", "updateRefs"):
        forced = _has_true(variables, "force") or bool(re.search(r"\bforce\s*:\s*true", text))
        return Verb.UPDATE, ["force-push"] if forced else []
    if _GQL_PERMISSION.search(field):
        return Verb.PERMISSION, []
    for prefix, verb in _GQL_PREFIX_VERBS:
        if field.startswith(prefix):
            return verb, []
    return Verb.UPDATE, []


_SEVERITY = {
    Verb.DESTROY: 6,
    Verb.PERMISSION: 5,
    Verb.DELETE: 4,
    Verb.EXECUTE: 3,
    Verb.UPDATE: 2,
    Verb.CREATE: 1,
    Verb.READ: 0,
}


def _graphql(request: HttpRequest) -> Action:
    payload = _json_body(request) if request.method.upper() != "GET" else None
    if request.method.upper() == "GET":
        query = dict(request.query)
        payload = {"query": query.get("query", ""), "operationName": query.get("operationName")}
    if not isinstance(payload, dict) or not isinstance(payload.get("query"), str):
        raise GraphQLError("not a GraphQL request body")
    text = payload["query"]
    kind, fields = top_level_fields(text, str(payload.get("operationName") or ""))
    if kind != "mutation":
        return _action(
            request,
            service="graphql",
            operation=f"graphql:{kind}",
            verb=Verb.READ,
            confidence=Confidence.EXACT,
        )
    if not fields:
        raise GraphQLError("mutation without fields")
    variables = payload.get("variables")
    judged = [(field, *_mutation_field(field, text, variables)) for field in fields]
    field, verb, _ = max(judged, key=lambda item: (_SEVERITY[item[1]], bool(item[2])))
    tags = sorted({tag for _, _, ts in judged for tag in ts})
    if sum(1 for _, v, _ in judged if v in (Verb.DELETE, Verb.DESTROY)) > 1:
        tags.append("bulk")
    exact = field in _GQL_PROTECTION_REMOVALS or field in ("deleteRef", "updateRef", "updateRefs")
    return _action(
        request,
        service="graphql",
        operation=f"graphql:{field}",
        verb=verb,
        risk_tags=tags,
        confidence=Confidence.EXACT if exact else Confidence.HEURISTIC,
    )


def recognise_github(request: HttpRequest) -> Action:
    """The Action for a GitHub REST or GraphQL API request."""
    path = api_path(request)
    if path is None:
        raise ValueError("not a GitHub API request")
    if path in _GRAPHQL_PATHS:
        return _graphql(request)
    return _rest(request, path)
