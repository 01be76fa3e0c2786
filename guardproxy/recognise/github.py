"""The GitHub recogniser: REST and GraphQL API requests -> Actions.

REST is model-driven: the route table (``data/github_routes.json``: method, path
template and operationId of every operation in GitHub's REST API description, as
packaged by ``ghapi``; shipped as data so ghapi's dependencies are not ours), so
``operation`` is the OpenAPI operationId
(``repos/delete``, ``git/delete-ref``) for every endpoint GitHub documents, not just
the ones a hand-written table remembered. The most specific template wins (most
literal segments), and only parameters whose values GitHub lets hold a slash (refs,
branches, paths, tags: ``git/refs/heads/a/b``, ``branches/feat/x/protection``) span
several segments, and only when nothing matches segment for segment. An owner or a
repository never spans: ``GET /repos/o/r/git/refs/heads/x`` is not ``repos/get`` of a
repository named ``r/git/refs/heads/x``.

Verb classes start from the HTTP method and are overridden where the method
understates the danger (a repository delete destroys history; removing branch
protection or a ruleset is a ``protection-removal``; collaborator and team changes
are ``permission``; dispatching a workflow runs code).

GraphQL (``/graphql``) is read by ``graphql_http`` with graphql-core (the reference
implementation's port): every mutation field of the operation the server selects is an
action (``graphql:deleteRef``), the most dangerous one first and the others its
readings; every reading of an ambiguous request (several operations and no name, a
batch, duplicate keys, URL and body) is decided, and an unreadable one is unclassified.
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
from guardproxy.recognise.graphql_http import Execution, json_readings, read_graphql
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

# Most dangerous first: the order of an action's readings.
_SEVERITY = {
    Verb.UNKNOWN: 7,
    Verb.DESTROY: 6,
    Verb.PERMISSION: 5,
    Verb.DELETE: 4,
    Verb.EXECUTE: 3,
    Verb.UPDATE: 2,
    Verb.CREATE: 1,
    Verb.READ: 0,
}

# Fields of a branch-protection PUT whose null/false (or, for the allow_* ones, true)
# value switches a guard off.
_GUARD_FIELDS = ("required_status_checks", "required_pull_request_reviews", "restrictions")
_GUARD_FLAGS = ("enforce_admins", "required_linear_history", "required_signatures")
_ALLOW_FLAGS = ("allow_force_pushes", "allow_deletions")

# Ruleset updates (PUT, the whole ruleset: enforcement, target, conditions, bypass
# actors, rules; GitHub REST "Update a repository/organization ruleset"). A ruleset that
# stops being enforced, enforces no rule, or changes what it applies to or who may
# bypass it guards less than before: as much a protection removal as deleting it.
_RULESET_UPDATES = frozenset({"repos/update-repo-ruleset", "repos/update-org-ruleset"})
_RULESET_SCOPE_FIELDS = ("target", "conditions", "bypass_actors")

# Operations whose danger is in the body; only these bodies are parsed (others may be
# release assets or other binary uploads).
_BODY_OPERATIONS = frozenset(
    {
        "git/update-ref",
        "repos/update-branch-protection",
        "repos/update",
        "orgs/update",
        *_RULESET_UPDATES,
    }
)
# ``PATCH /orgs/{org}`` fields that set what every member may do in every repository
# (GitHub REST "Update an organization"): a permission change under an update's name.
_ORG_PERMISSION_FIELDS = ("default_repository_permission",)

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


# Parameters whose values may hold a slash, so that they span path segments: git ref
# names (``heads/feature/x``), branch and tag names, file paths and ``base...head``
# comparisons. Every other parameter (owner, repo, org, ids) is one segment: GitHub
# names never contain a slash, and the API wants them URL-encoded where they could.
SPANNING_PARAMETERS = frozenset({"ref", "branch", "tag", "path", "dir", "basehead"})

# Paths GitHub still serves that its current description no longer lists (earlier
# versions of the REST description documented them under these operationIds; the
# current ones are ``git/ref/{ref}`` and ``git/matching-refs/{ref}``). Without them a
# GET on a ref fell through to ``repos/get``.
_LEGACY_ROUTES = (
    ("GET", "/repos/{owner}/{repo}/git/refs/{ref}", "git/get-ref"),
    ("GET", "/repos/{owner}/{repo}/git/refs", "git/list-refs"),
)


@cache
def route_table() -> dict[str, tuple[Route, ...]]:
    """Routes by method, most literal segments first (loaded once, ~10 ms)."""
    data = json.loads(files("guardproxy.recognise").joinpath(ROUTES_FILE).read_text("utf-8"))
    by_method: dict[str, list[Route]] = {}
    known = {(m, p) for m, p, _ in data["routes"]}
    legacy = [r for r in _LEGACY_ROUTES if (r[0], r[1]) not in known]
    for method, path, operation in [*data["routes"], *legacy]:
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


def _loose(
    segments: tuple[str, ...], parts: list[str], params: dict[str, str]
) -> dict[str, str] | None:
    """Match with spanning parameters taking one or more segments (longest first)."""
    if not segments:
        return params if not parts else None
    template, rest = segments[0], segments[1:]
    if not template.startswith("{"):
        if parts and parts[0] == template:
            return _loose(rest, parts[1:], params)
        return None
    name = template[1:-1]
    if name not in SPANNING_PARAMETERS:
        return _loose(rest, parts[1:], {**params, name: parts[0]}) if parts else None
    for end in range(len(parts) - len(rest), 0, -1):
        found = _loose(rest, parts[end:], {**params, name: "/".join(parts[:end])})
        if found is not None:
            return found
    return None


def match_route(method: str, path: str) -> Match | None:
    """The most specific route for ``method`` and an API-relative ``path``."""
    routes = route_table().get("GET" if method == "HEAD" else method, ())
    parts = [unquote(p) for p in path.split("/") if p]
    for route in routes:
        params = _strict(route, parts)
        if params is not None:
            return Match(route, params)
    present = set(parts)
    for route in routes:
        if len(route.segments) > len(parts) or not route.literal_set <= present:
            continue  # cheap pre-check: only walk templates that can match
        if not SPANNING_PARAMETERS.intersection(s[1:-1] for s in route.segments):
            continue  # segment for segment was tried above
        params = _loose(route.segments, parts, {})
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


def _json_bodies(request: HttpRequest) -> list[Any]:
    """The JSON body's readings (two when an object repeats a key: first and last wins),
    ``[None]`` when there is none; raises when it is there but unreadable (a force flag
    or a protection field could be in what we failed to read)."""
    body = decoded_body(request)
    if body is None:
        raise GitHubError("body too large or undecodable")
    if not body.strip():
        return [None]
    try:
        readings = json_readings(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise GitHubError("body is not UTF-8") from exc
    if readings is None:
        raise GitHubError("body is not JSON")
    return readings[0]


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


def _ruleset_body_weakened(body: Any) -> bool:
    """A ruleset update that is not enforced (``disabled``, ``evaluate``), has no rules,
    or changes the refs it targets or who may bypass it."""
    if not isinstance(body, dict):
        return False
    if "enforcement" in body and body["enforcement"] != "active":
        return True
    if "rules" in body and not body["rules"]:
        return True
    return any(k in body for k in _RULESET_SCOPE_FIELDS)


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
    if operation in _RULESET_UPDATES:
        return Verb.UPDATE, ["protection-removal"] if _ruleset_body_weakened(body) else []
    if operation == "orgs/update" and isinstance(body, dict):
        if any(k in body for k in _ORG_PERMISSION_FIELDS):
            return Verb.PERMISSION, tags
        return Verb.UPDATE, tags
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


def _owner(params: dict[str, str]) -> str:
    """The organisation or account the route acts in (``/orgs/{org}``, ``/repos/{owner}``)."""
    return params.get("org") or params.get("owner") or ""


def _action(request: HttpRequest, repository: str = "", owner: str = "", **fields: Any) -> Action:
    # scope.project holds the owning organisation, as it holds Terraform Cloud's.
    base: dict[str, Any] = {
        "provider": Provider.GITHUB,
        "scope": Scope(repository=repository, project=owner),
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
    bodies = _json_bodies(request) if route.operation in _BODY_OPERATIONS else [None]
    judged = [_rest_verb_and_tags(route.operation, method, params, body) for body in bodies]
    distinct = list(dict.fromkeys((verb, tuple(tags)) for verb, tags in judged))
    distinct.sort(key=lambda vt: (-_SEVERITY[vt[0]], -len(vt[1])))
    ambiguous = ["ambiguous:duplicate-key"] if len(distinct) > 1 else []
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
    resource = Resource(type=rtype, name=name, key=resource_key("github", key_scope, rtype, name))
    actions = [
        _action(
            request,
            repository,
            _owner(params),
            service=route.operation.split("/", 1)[0],
            operation=route.operation,
            verb=verb,
            resource=resource,
            risk_tags=sorted({*tags, *ambiguous}) if ambiguous else list(tags),
            confidence=(
                Confidence.UNKNOWN
                if verb is Verb.UNKNOWN
                else Confidence.AMBIGUOUS
                if ambiguous
                else Confidence.EXACT
            ),
            truncated=truncated,
        )
        for verb, tags in distinct
    ]
    # A key given twice in the body (``"force": false, "force": true``): every reading.
    return actions[0].model_copy(update={"readings": actions[1:]}) if ambiguous else actions[0]


# ------------------------------------------------------------------ GraphQL
#
# The request is read by graphql_http (graphql-core); here each root field of a mutation
# becomes an action, named ``graphql:<field>`` and classed from GitHub's mutation name and
# its resolved arguments. Names are GitHub's public schema's (octokit/graphql-schema,
# schema.graphql); a name not listed here is at least an ``update``, never a read.

_GQL_PROTECTION_REMOVALS = frozenset(
    {"deleteBranchProtectionRule", "deleteRepositoryRuleset", "deleteTagProtectionRule"}
)
# UpdateBranchProtectionRuleInput fields that switch a guard off when true / when false
# (the GraphQL names of the REST fields in _ALLOW_FLAGS and _GUARD_FIELDS/_GUARD_FLAGS).
_GQL_ALLOW_FLAGS = ("allowsForcePushes", "allowsDeletions")
_GQL_GUARD_FLAGS = (
    "requiresStatusChecks",
    "requiresApprovingReviews",
    "restrictsPushes",
    "isAdminEnforced",
    "requiresLinearHistory",
    "requiresCommitSignatures",
)
# UpdateBranchProtectionRuleInput fields that move the rule off the branches it guards
# (``pattern``) or exempt actors from it: any value given guards less, or other refs.
_GQL_RULE_SCOPE = (
    "pattern",
    "bypassForcePushActorIds",
    "bypassPullRequestActorIds",
    "pushActorIds",
)
_GQL_UNENFORCED = frozenset({"DISABLED", "EVALUATE"})  # RuleEnforcement values that guard nothing
# UpdateRepositoryRulesetInput fields that change which refs a ruleset applies to or who
# may bypass it.
_GQL_RULESET_SCOPE = ("target", "conditions", "bypassActors")
_GQL_EXECUTE = frozenset({"approveDeployments", "rerequestCheckSuite"})
_GQL_PERMISSIONS = frozenset({"updateTeamsRepository", "accessUserNamespaceRepository"})
_GQL_PERMISSION = re.compile(
    r"Collaborator|Permission|Member|Role|Admin|Invitation|IdentityProvider|IpAllowList"
    r"|TwoFactor|DeployKey|^transfer"
)
_GQL_PREFIX_VERBS = (
    ("delete", Verb.DELETE),
    ("remove", Verb.DELETE),
    ("create", Verb.CREATE),
    ("add", Verb.CREATE),
    ("update", Verb.UPDATE),
)
ZERO_OID = "0" * 40
"""``afterOid`` of an ``updateRefs`` ref update that deletes the ref (GitHub's docs)."""


@dataclass(frozen=True)
class _Judged:
    """How one GraphQL root field (or one ref update of ``updateRefs``) is classed."""

    operation: str
    verb: Verb
    tags: tuple[str, ...] = ()
    confidence: Confidence = Confidence.EXACT
    ref: str = ""


def _values(value: Any, key: str) -> Iterator[Any]:
    """Every value of member ``key`` anywhere in a resolved argument value."""
    if isinstance(value, dict):
        for k, v in value.items():
            if k == key:
                yield v
            yield from _values(v, key)
    elif isinstance(value, list):
        for item in value:
            yield from _values(item, key)


def _has_true(value: Any, key: str) -> bool:
    return any(v is True for v in _values(value, key))


def _branch_protection_weakened(arguments: dict[str, Any]) -> bool:
    if any(_has_true(arguments, k) for k in _GQL_ALLOW_FLAGS):
        return True
    if any(True for k in _GQL_RULE_SCOPE for _ in _values(arguments, k)):
        return True
    if any(v == 0 for v in _values(arguments, "requiredApprovingReviewCount")):
        return True
    return any(v is False or v is None for k in _GQL_GUARD_FLAGS for v in _values(arguments, k))


def _ruleset_weakened(arguments: dict[str, Any]) -> bool:
    if any(v in _GQL_UNENFORCED for v in _values(arguments, "enforcement")):
        return True
    if any(True for k in _GQL_RULESET_SCOPE for _ in _values(arguments, k)):
        return True
    return any(v == [] or v is None for v in _values(arguments, "rules"))


def _ref_updates(name: str, arguments: dict[str, Any]) -> list[_Judged]:
    """One reading per ref update of ``updateRefs`` (a list, or one object the server
    coerces to a list of one); a zero ``afterOid`` deletes the ref."""
    updates: list[Any] = []
    for found in _values(arguments, "refUpdates"):
        updates += found if isinstance(found, list) else [found]
    judged: list[_Judged] = []
    for update in updates:
        if not isinstance(update, dict):
            continue
        ref = str(update.get("name") or "")
        if update.get("afterOid") == ZERO_OID:
            tags = ("branch-delete",) if ref.startswith("refs/heads/") else ()
            judged.append(_Judged(f"graphql:{name}", Verb.DELETE, tags, ref=ref))
        else:
            tags = ("force-push",) if update.get("force") is True else ()
            judged.append(_Judged(f"graphql:{name}", Verb.UPDATE, tags, ref=ref))
    return judged or [_Judged(f"graphql:{name}", Verb.UPDATE, confidence=Confidence.HEURISTIC)]


def judge_mutation(name: str, arguments: dict[str, Any]) -> list[_Judged]:
    """How GitHub mutation ``name`` with resolved ``arguments`` is classed (one entry,
    or one per ref update of ``updateRefs``)."""
    operation = f"graphql:{name}"
    if name in _GQL_PROTECTION_REMOVALS:
        return [_Judged(operation, Verb.UPDATE, ("protection-removal",))]
    if name == "updateBranchProtectionRule":
        weakened = _branch_protection_weakened(arguments)
        return [_Judged(operation, Verb.UPDATE, ("protection-removal",) if weakened else ())]
    if name == "updateRepositoryRuleset":
        weakened = _ruleset_weakened(arguments)
        return [_Judged(operation, Verb.UPDATE, ("protection-removal",) if weakened else ())]
    if name == "deleteRef":
        # The ref is a node id: branch or tag is unknowable here, so assume a branch.
        return [_Judged(operation, Verb.DELETE, ("branch-delete",))]
    if name == "updateRef":
        forced = _has_true(arguments, "force")
        return [_Judged(operation, Verb.UPDATE, ("force-push",) if forced else ())]
    if name == "updateRefs":
        return _ref_updates(name, arguments)
    if name == "archiveRepository":
        return [_Judged(operation, Verb.UPDATE, ("archive",))]
    if name in _GQL_EXECUTE:
        return [_Judged(operation, Verb.EXECUTE)]
    if name in _GQL_PERMISSIONS:
        return [_Judged(operation, Verb.PERMISSION)]
    if _GQL_PERMISSION.search(name):
        return [_Judged(operation, Verb.PERMISSION, confidence=Confidence.HEURISTIC)]
    for prefix, verb in _GQL_PREFIX_VERBS:
        if name.startswith(prefix):
            return [_Judged(operation, verb, confidence=Confidence.HEURISTIC)]
    return [_Judged(operation, Verb.UPDATE, confidence=Confidence.HEURISTIC)]


def _judge_execution(execution: Execution) -> list[_Judged]:
    """Every action one execution performs: its mutation fields, or one read."""
    if execution.error:
        return [_Judged("graphql", Verb.UNKNOWN, confidence=Confidence.UNKNOWN)]
    if execution.operation != "mutation":
        return [_Judged(f"graphql:{execution.operation}", Verb.READ)]
    judged = [j for f in execution.fields for j in judge_mutation(f.name, f.arguments)]
    if not judged:  # only __typename: nothing runs
        return [_Judged("graphql:mutation", Verb.READ)]
    deletes = sum(1 for j in judged if j.verb in (Verb.DELETE, Verb.DESTROY))
    if deletes > 1:
        judged = [
            _Judged(j.operation, j.verb, (*j.tags, "bulk"), j.confidence, j.ref)
            if j.verb in (Verb.DELETE, Verb.DESTROY)
            else j
            for j in judged
        ]
    return judged


MAX_GRAPHQL_ACTIONS = 64
"""Distinct actions kept per GraphQL request (the most dangerous first); more sets
``truncated``."""


def _graphql_action(request: HttpRequest, judged: _Judged, ambiguities: list[str]) -> Action:
    confidence = judged.confidence
    if ambiguities and confidence is not Confidence.UNKNOWN:
        confidence = Confidence.AMBIGUOUS
    resource = Resource()
    if judged.ref:
        name, _ = cap(judged.ref)
        key = resource_key("github", [request.host.lower()], "github:ref", name)
        resource = Resource(type="github:ref", name=name, key=key)
    return _action(
        request,
        service="graphql",
        operation=judged.operation,
        verb=judged.verb,
        resource=resource,
        risk_tags=sorted({*judged.tags, *ambiguities}),
        confidence=confidence,
    )


def _graphql(request: HttpRequest) -> Action:
    """Every root field any reading of the request executes, as an action; the most
    dangerous is the action, the others its readings."""
    reading = read_graphql(request)
    ambiguities = sorted(reading.tags)
    judged = list(dict.fromkeys(j for e in reading.executions for j in _judge_execution(e)))
    judged.sort(key=lambda j: (-_SEVERITY[j.verb], -len(j.tags)))
    truncated = len(judged) > MAX_GRAPHQL_ACTIONS
    first, *others = [
        _graphql_action(request, j, ambiguities) for j in judged[:MAX_GRAPHQL_ACTIONS]
    ]
    return first.model_copy(update={"readings": others, "truncated": truncated})


def recognise_github(request: HttpRequest) -> Action:
    """The Action for a GitHub REST or GraphQL API request."""
    path = api_path(request)
    if path is None:
        raise ValueError("not a GitHub API request")
    if path in _GRAPHQL_PATHS:
        return _graphql(request)
    return _rest(request, path)
