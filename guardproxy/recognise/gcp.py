"""The Google Cloud recogniser: a ``*.googleapis.com`` REST request -> an Action.

The operation is the discovery method id (``compute.instances.delete``), found by
``gcp_index`` from the host, HTTP method and path; it usually equals the IAM
permission, which keeps the policy vocabulary natural. The verb class is read off the
method's last segment (Google's API design guide fixes a small vocabulary: get,
list, create, update, delete, plus custom verbs), the scope from the path
parameters. gRPC requests (``/google.<pkg>.<Service>/<Method>``) are not modelled and
fail closed.

Where the request can be read more than one way, every reading is decided: a query
parameter given twice (``validateOnly=false&validateOnly=true``) is a dry run only when
every value says so and forced when any does; an ``X-HTTP-Method-Override`` header
(which Google's front end honours, e.g. the Cloud Storage JSON API documents it) makes
the overriding method a further reading, the most dangerous first.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any
from urllib.parse import unquote

from guardproxy.action import Action, Confidence, Provider, Resource, Scope, Verb
from guardproxy.recognise.common import actor_of, cap, decoded_body, resource_key, summary_of
from guardproxy.recognise.gcp_index import BATCH, GcpIndex, RouteMatch, shared_index
from guardproxy.recognise.request import HttpRequest

_GOOGLEAPIS = "googleapis.com"

# A locational endpoint the documents do not list: "us-central1-run.googleapis.com".
_LOCATIONAL = re.compile(r"^([a-z]+-[a-z]+\d+)-([a-z0-9-]+\.googleapis\.com)$")

_PROJECT_PARAMS = ("project", "projectId", "projectsId", "projectName")
_REGION_PARAMS = ("zone", "region", "location", "locationsId", "zonesId", "regionsId")

_TRUE = frozenset({"true", "1", "True", "TRUE"})

# Whole last segments first: they override the leading word.
_BY_NAME: dict[str, Verb] = {
    "aggregatedList": Verb.READ,
    "getIamPolicy": Verb.READ,
    "testIamPermissions": Verb.READ,
    "setIamPolicy": Verb.PERMISSION,
    "undelete": Verb.UPDATE,
    # Obtaining a token the caller may already obtain grants nothing new (as for AWS
    # STS AssumeRole): otherwise every gcloud command would be held.
    "token": Verb.READ,
    "destroy": Verb.DESTROY,  # KMS key versions: the key material is gone for good
    "purge": Verb.DESTROY,
    "wipe": Verb.DESTROY,
    "deleteall": Verb.DESTROY,
}


def _each(verb: Verb, words: str) -> dict[str, Verb]:
    return dict.fromkeys(words.split(), verb)


# The word naming what a method does (see _action_word): "aggregatedList" -> "aggregated".
_BY_WORD: dict[str, Verb] = {
    **_each(
        Verb.READ,
        (
            "get list search lookup fetch check validate query retrieve read find count "
            "analyze calculate compute predict detect suggest evaluate simulate preview "
            "explain show describe verify sign generate test wait download stream poll "
            "is has inspect estimate compare diagnose troubleshoot resolve view lint pull"
        ),
    ),
    **_each(
        Verb.CREATE,
        (
            "insert create clone copy import upload publish send submit provision register "
            "subscribe ingest upsert duplicate instantiate recreate backup snapshot "
            "allocate reserve enroll mint issue launch export compose rewrite"
        ),
    ),
    **_each(
        Verb.UPDATE,
        (
            "patch update set start stop resize add resume pause suspend enable disable "
            "restore reset restart reboot move rollback revert upgrade apply attach "
            "detach modify mutate replace rename promote demote failover switchover "
            "deploy undeploy activate deactivate approve reject accept cancel abandon "
            "complete commit mark acknowledge rotate configure reconfigure migrate "
            "release renew refresh repair sync label tag edit write append alter "
            "finalize advance lock unlock retry rerun reschedule schedule archive "
            "transfer change close open extend adjust hibernate switch deprecate seek "
            "announce withdraw relocate invalidate expand request report acquire reencrypt"
        ),
    ),
    **_each(Verb.DELETE, "delete remove unregister unsubscribe deprovision drop truncate"),
    **_each(Verb.EXECUTE, "run execute invoke call trigger perform process"),
    **_each(Verb.PERMISSION, "revoke grant share unshare impersonate"),
}

# Deleting one of these deletes data or an environment: (api, collection).
_DESTROY = frozenset(
    {
        ("cloudresourcemanager", "projects"),
        ("compute", "instances"),
        ("compute", "disks"),
        ("compute", "regionDisks"),
        ("compute", "snapshots"),
        ("compute", "machineImages"),
        ("container", "clusters"),
        ("sqladmin", "instances"),
        ("sqladmin", "databases"),
        ("sqladmin", "backupRuns"),
        ("sqladmin", "backups"),
        ("storage", "buckets"),
        ("bigquery", "datasets"),
        ("bigquery", "tables"),
        ("spanner", "instances"),
        ("spanner", "databases"),
        ("spanner", "backups"),
        ("bigtableadmin", "instances"),
        ("bigtableadmin", "clusters"),
        ("bigtableadmin", "tables"),
        ("bigtableadmin", "backups"),
        ("firestore", "databases"),
        ("redis", "instances"),
        ("redis", "clusters"),
        ("alloydb", "clusters"),
        ("alloydb", "backups"),
        ("file", "instances"),
        ("file", "backups"),
        ("secretmanager", "secrets"),
    }
)

# APIs whose every change is about who may do what.
_PERMISSION_APIS = frozenset({"iam", "iamcredentials", "accesscontextmanager"})

# Methods on a collection rather than one member: their last path parameter is the parent.
_COLLECTION_WORDS = frozenset({"list", "aggregated", "insert", "create"})


def looks_like_gcp(request: HttpRequest) -> bool:
    """Whether ``request`` goes to a Google API host (``*.googleapis.com``)."""
    host = request.host.lower().rstrip(".")
    return host == _GOOGLEAPIS or host.endswith("." + _GOOGLEAPIS)


_WORD = re.compile(r"[A-Za-z][a-z]*")

# Prefixes that say how many, not what: "batchDelete" deletes, "bulkInsert" creates.
_QUANTIFIERS = frozenset({"batch", "bulk"})


def _words(segment: str) -> list[str]:
    """Lower-case words of a camelCase (or CamelCase) method name."""
    return [w.lower() for w in _WORD.findall(segment)]


def _leading_word(segment: str) -> str:
    words = _words(segment)
    return words[0] if words else segment.lower()


def _action_word(segment: str) -> str:
    """The word naming what the method does: the first one after batch/bulk."""
    words = _words(segment)
    while len(words) > 1 and words[0] in _QUANTIFIERS:
        words = words[1:]
    return words[0] if words else segment.lower()


def classify(api: str, method_id: str, collection: str, http_method: str) -> tuple[Verb, bool]:
    """(verb class, exact?) of a method; inexact means guessed from the HTTP method."""
    last = method_id.rsplit(".", 1)[-1]
    verb = _BY_NAME.get(last) or _BY_WORD.get(_action_word(last))
    exact = verb is not None
    if verb is None:
        # Google's design guide: GET never mutates; a custom POST verb usually does.
        verb = {"GET": Verb.READ, "DELETE": Verb.DELETE}.get(http_method.upper(), Verb.UPDATE)
    if verb is Verb.DELETE and (api, collection) in _DESTROY:
        verb = Verb.DESTROY
    if api in _PERMISSION_APIS and verb not in (Verb.READ, Verb.PERMISSION):
        verb = Verb.PERMISSION
    return verb, exact


def _host(request: HttpRequest, index: GcpIndex) -> tuple[str | None, str]:
    """(indexed host, region the host itself names)."""
    host = request.host.lower().rstrip(".")
    locational = _LOCATIONAL.match(host)
    region = locational.group(1) if locational is not None else ""
    found = index.canonical_host(host)
    if found is None and locational is not None:
        found = index.canonical_host(locational.group(2))
    return found, region


def _param(params: dict[str, str], names: tuple[str, ...]) -> str:
    for name in names:
        value = params.get(name)
        if value:
            return value
    return ""


def _body_name(request: HttpRequest) -> str:
    """The ``name`` a create/insert body gives its new resource (last path segment)."""
    body = decoded_body(request, limit=256 * 1024)
    if not body:
        return ""
    try:
        decoded = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return ""
    name = decoded.get("name") if isinstance(decoded, dict) else None
    return name.rsplit("/", 1)[-1] if isinstance(name, str) else ""


def _on_collection(match: RouteMatch) -> bool:
    """Whether the method acts on a collection rather than on one member of it.

    Either its name says so (list, insert, create...) or the template ends in the
    collection after the last parameter (``instances/{instance}/users``: the last
    parameter names the parent, and the member travels in the query).
    """
    spec = match.spec
    if _action_word(spec.method_id.rsplit(".", 1)[-1]) in _COLLECTION_WORDS:
        return True
    tail = spec.template[spec.template.rfind("}") + 1 :]
    return tail.lstrip("/").split("/", 1)[0] == spec.collection


def _resource_name(match: RouteMatch, request: HttpRequest) -> str:
    """The member the method acts on: the last path parameter, or for collection
    methods the name a create gives (query ``<singular>Id``/``name``, or the body)."""
    spec = match.spec
    if _on_collection(match):
        singular = spec.collection[:-1] if spec.collection.endswith("s") else spec.collection
        query = dict(request.query)
        from_query = query.get(f"{singular}Id") or query.get("name")
        if from_query:
            return from_query
        if request.method.upper() == "POST":
            return _body_name(request)
        return ""
    if not match.params:
        return ""
    # The raw value's last segment: a "{+name}" template captures the whole resource
    # path, while an encoded "/" (a storage object "a%2Fb") stays part of the name.
    return unquote(list(match.params.values())[-1].rsplit("/", 1)[-1])


_METHOD_OVERRIDES = frozenset({"x-http-method-override", "x-http-method", "x-method-override"})
METHOD_OVERRIDE = "ambiguous:method-override"
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


def _any_true(request: HttpRequest, key: str) -> bool:
    return any(v in _TRUE for v in request.query_values.get(key, ()))


def _all_true(request: HttpRequest, key: str) -> bool:
    values = request.query_values.get(key, ())
    return bool(values) and all(v in _TRUE for v in values)


# Settings whose off value removes a deletion protection (Compute and Cloud SQL
# ``deletionProtection``/``settings.deletionProtectionEnabled``, Bigtable and Cloud Run
# ``deletionProtection``, Spanner ``enableDropProtection``, Firestore
# ``deleteProtectionState``), in the query or anywhere in the body.
_PROTECTION_FLAGS = frozenset(
    {"deletionprotection", "deletionprotectionenabled", "enabledropprotection"}
)
_PROTECTION_OFF = frozenset({"false", "0", "delete_protection_disabled"})


def _json_pairs(request: HttpRequest) -> list[tuple[str, Any]]:
    """Every (lower-case key, value) pair anywhere in a JSON body (a key given twice
    keeps both); none when there is no readable JSON body."""
    body = decoded_body(request, limit=256 * 1024)
    if not body:
        return []
    pairs: list[tuple[str, Any]] = []

    def keep(items: list[tuple[str, Any]]) -> dict[str, Any]:
        pairs.extend((k.lower(), v) for k, v in items)
        return dict(items)

    try:
        json.loads(body, object_pairs_hook=keep)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return []
    return pairs


def _off(value: Any) -> bool:
    return value is False or (isinstance(value, str) and value.lower() in _PROTECTION_OFF)


def _protection_removed(request: HttpRequest, pairs: list[tuple[str, Any]]) -> bool:
    query = [(k.lower(), v) for k, v in request.query]
    flags = [v for k, v in [*query, *pairs] if k in _PROTECTION_FLAGS]
    states = [v for k, v in pairs if k == "deleteprotectionstate"]
    return any(_off(v) for v in [*flags, *states])


def _risk_tags(request: HttpRequest, method_id: str, verb: Verb) -> list[str]:
    last = method_id.rsplit(".", 1)[-1]
    tags: list[str] = []
    if verb not in (Verb.READ, Verb.CREATE):
        pairs = _json_pairs(request)
        if _protection_removed(request, pairs):
            tags.append("protection-removal")
        versioning = [v for k, v in pairs if k == "versioning"]
        if method_id in ("storage.buckets.patch", "storage.buckets.update") and any(
            isinstance(v, dict) and v.get("enabled") is False for v in versioning
        ):
            tags.append("versioning-suspended")
    if _leading_word(last) in ("batch", "bulk") and verb is not Verb.READ:
        tags.append("bulk")
    if _any_true(request, "force") or _any_true(request, "deleteContents"):
        tags.append("force")
    if method_id.startswith("secretmanager.") and last == "access":
        tags.append("secret-read")
    return tags


def _is_token_exchange(request: HttpRequest) -> bool:
    """OAuth's token endpoint, which no discovery document describes.

    Every gcloud and client-library call starts by refreshing its access token here;
    obtaining a token the caller may already obtain grants nothing new.
    """
    return (
        request.host.lower() == "oauth2.googleapis.com"
        and request.method.upper() == "POST"
        and request.path_only.rstrip("/") == "/token"
    )


def _unmatched(request: HttpRequest, service: str, region: str) -> Action:
    return Action(
        provider=Provider.GCP,
        service=service,
        scope=Scope(region=region),
        actor=actor_of(request),
        request=summary_of(request),
    )


def _overrides(request: HttpRequest) -> list[str]:
    """Methods a method-override header names other than the request's own."""
    method = request.method.upper()
    found = (
        item.strip().upper()
        for name, value in request.headers
        if name in _METHOD_OVERRIDES
        for item in value.split(",")
    )
    return list(dict.fromkeys(m for m in found if m and m != method))


def recognise_gcp(request: HttpRequest, index: GcpIndex | None = None) -> Action:
    """The Action for a Google API request (environment is resolved by the caller).

    ``index`` defaults to the process-wide discovery index. A method override is a
    further reading (see the module docstring).
    """
    overrides = _overrides(request)
    action = _recognise_one(request, index)
    if not overrides:
        return action
    actions = [action, *(_recognise_one(replace(request, method=m), index) for m in overrides)]
    actions.sort(key=lambda a: -_SEVERITY[a.verb])
    marked = [
        a.model_copy(
            update={
                "risk_tags": [*a.risk_tags, METHOD_OVERRIDE],
                "confidence": Confidence.AMBIGUOUS if a.classified else a.confidence,
            }
        )
        for a in actions
    ]
    return marked[0].model_copy(update={"readings": marked[1:]})


def _recognise_one(request: HttpRequest, index: GcpIndex | None) -> Action:
    if _is_token_exchange(request):
        return Action(
            provider=Provider.GCP,
            service="oauth2",
            operation="oauth2.token",
            verb=Verb.READ,
            actor=actor_of(request),
            request=summary_of(request),
            confidence=Confidence.EXACT,
        )
    index = index if index is not None else shared_index()
    host, host_region = _host(request, index)
    guessed_service = request.host.lower().split(".", 1)[0]
    if host is None:
        return _unmatched(request, guessed_service, host_region)
    match = index.match(host, request.method, request.path_only)
    if match is None:
        return _unmatched(request, guessed_service, host_region)
    spec = match.spec
    if spec.collection == BATCH:
        # Many calls in one multipart body: not decoded, so nothing is known of them.
        return _unmatched(request, spec.api, host_region).model_copy(
            update={"operation": f"{spec.api}.batch", "risk_tags": ["bulk"]}
        )
    verb, exact = classify(spec.api, spec.method_id, spec.collection, request.method)
    params = {k: unquote(v) for k, v in match.params.items()}
    project = _param(params, _PROJECT_PARAMS) or dict(request.query).get("project", "")
    region = _param(params, _REGION_PARAMS) or host_region
    name, cut = cap(_resource_name(match, request))
    if (spec.api, spec.collection) == ("cloudresourcemanager", "projects") and not project:
        project = name  # a project's own methods are scoped to itself
    rtype = f"gcp:{spec.api}:{spec.collection}" if spec.collection else f"gcp:{spec.api}"
    if match.ambiguous:
        confidence = Confidence.AMBIGUOUS
    else:
        confidence = Confidence.EXACT if exact else Confidence.HEURISTIC
    return Action(
        provider=Provider.GCP,
        service=spec.api,
        operation=spec.method_id,
        verb=verb,
        resource=Resource(
            type=rtype, name=name, key=resource_key("gcp", (project, region), rtype, name)
        ),
        scope=Scope(project=project, region=region),
        risk_tags=_risk_tags(request, spec.method_id, verb),
        actor=actor_of(request),
        request=summary_of(request),
        confidence=confidence,
        dry_run=_all_true(request, "validateOnly"),
        truncated=cut,
    )
