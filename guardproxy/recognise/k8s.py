"""The Kubernetes recogniser: API server requests -> Actions, read as kube-apiserver reads them.

The request is read the way the API server itself reads it, step by step:

* the target as Go's ``net/url`` parses it (:mod:`.k8s_url`): the *decoded* path, so
  ``%2F`` separates segments and ``%65xec`` is ``exec``; a bad ``%`` escape is a 400
  (unknown action); query pairs as ``url.ParseQuery`` keeps them (``;`` pairs dropped);
* the path's meaning by a port of ``RequestInfoFactory.NewRequestInfo``
  (kubernetes/kubernetes ``staging/src/k8s.io/apiserver/pkg/endpoints/request/
  requestinfo.go``), so ``operation`` is the verb RBAC authorises (get, list, watch,
  create, update, patch, delete, deletecollection), or exec/attach/portforward for the
  subresources that open a shell or a tunnel. Dot segments are literal to the API
  server; the paths a normalising proxy would make of them are further readings;
* query options as apimachinery converts them (``pkg/runtime/conversion.go``,
  ``pkg/apis/meta/v1/zz_generated.conversion.go``): a scalar option takes the *first*
  value of a repeated key (``Convert_Slice_string_To_*``), a bool is false only for
  ``0`` and ``false`` (any case), ``dryRun`` keeps every value and means dry run only
  when each is ``All``;
* delete options from the body when there is one, else from the query, never both
  (``handlers/delete.go``: ``if len(body) > 0 { decode body } else { decode query }``
  in ``DeleteResource`` and ``DeleteCollection``); create, update and patch options
  from the query only (``create.go``, ``update.go``, ``patch.go``);
* bodies by the decoder the ``Content-Type`` selects (:mod:`.k8s_body`), with the
  effective change of patches on the fields the policies read (:mod:`.k8s_patch`).

Neither the API server nor go-restful honours ``X-HTTP-Method-Override`` (neither
kubernetes/apiserver nor emicklei/go-restful has any method override; routing is on
``req.Method``), but a gateway in front of it may, so an override is a further reading.

Where a request has several readings (a repeated parameter whose values differ, a
repeated body key, several documents, dot segments, a method override, several
``Content-Type`` headers) every distinct one is decided: the most dangerous is the
action, the others are its ``readings``, all marked ``ambiguous`` with a risk tag
``ambiguous:<why>``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from guardproxy.action import (
    Action,
    Actor,
    Confidence,
    Provider,
    RequestSummary,
    Resource,
    Scope,
    Verb,
)
from guardproxy.recognise.common import actor_of, cap, decoded_body, resource_key, summary_of
from guardproxy.recognise.k8s_body import (
    UNREADABLE,
    BodyFacts,
    BodyReading,
    Purpose,
    read_body,
)
from guardproxy.recognise.k8s_url import (
    GoUrlError,
    RequestTarget,
    parse_query,
    parse_target,
    path_readings,
    split_path,
)
from guardproxy.recognise.request import HttpRequest

__all__ = [
    "Reading",
    "RequestInfo",
    "looks_like_kubernetes",
    "recognise_k8s",
    "request_info",
    "request_readings",
]

_API_PREFIXES = frozenset({"api", "apis"})
_GROUPLESS_PREFIXES = frozenset({"api"})
_SPECIAL_VERBS = frozenset({"proxy", "watch"})
_SPECIAL_VERBS_NO_SUBRESOURCES = frozenset({"proxy"})
_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})

_METHOD_VERBS = {
    "POST": "create",
    "GET": "get",
    "HEAD": "get",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}

_EXEC_SUBRESOURCES = frozenset({"exec", "attach", "portforward"})

# Deleting these deletes data or everything inside them: a namespace takes all its
# objects, a PV/PVC its volume (with the default Delete reclaim policy), a CRD every
# custom resource of its kind.
_DESTROY_RESOURCES = frozenset(
    {
        ("core", "namespaces"),
        ("core", "persistentvolumes"),
        ("core", "persistentvolumeclaims"),
        ("apiextensions.k8s.io", "customresourcedefinitions"),
    }
)

_RBAC_GROUP = "rbac.authorization.k8s.io"

# Review objects are questions, not changes: creating one persists nothing.
_REVIEW_GROUPS = frozenset({"authorization.k8s.io", "authentication.k8s.io"})

_SCALABLE_SUBRESOURCES = frozenset({"", "scale"})

# The kind a protobuf body of these endpoints decodes as when its envelope names none
_ENDPOINT_KINDS = {
    "deployments": "Deployment",
    "statefulsets": "StatefulSet",
    "replicasets": "ReplicaSet",
    "replicationcontrollers": "ReplicationController",
}
_SUBRESOURCE_KINDS = {"scale": "Scale", "eviction": "Eviction"}

# Options whose first value the API server takes (and so whose later values another
# reader might take instead); dryRun keeps every value and is not among them.
_SCALAR_OPTIONS = (
    "watch",
    "fieldSelector",
    "gracePeriodSeconds",
    "ignoreStoreReadErrorWithClusterBreakingPotential",
)

_METHOD_OVERRIDES = frozenset({"x-http-method-override", "x-http-method", "x-method-override"})

_SEVERITY = {
    Verb.DESTROY: 7,
    Verb.DELETE: 6,
    Verb.PERMISSION: 5,
    Verb.EXECUTE: 4,
    Verb.UPDATE: 3,
    Verb.CREATE: 2,
    Verb.UNKNOWN: 1,
    Verb.READ: 0,
}
MAX_READINGS = 64


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """The fields of the API server's ``RequestInfo`` that the recogniser uses."""

    is_resource_request: bool
    verb: str
    api_prefix: str = ""
    api_group: str = ""
    api_version: str = ""
    namespace: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""


# ------------------------------------------------------------------ query options


def _first(query: Mapping[str, Sequence[str]], key: str) -> str | None:
    values = query.get(key)
    return values[0] if values else None


def _option_bool(value: str | None) -> bool:
    """``Convert_Slice_string_To_bool``: false only for no value, ``0`` or ``false``
    (``strings.EqualFold``); anything else, the empty string included, is true."""
    return value is not None and value != "0" and value.casefold() != "false"


_GO_INT = re.compile(r"[+-]?[0-9]+")


def _option_int(value: str | None) -> int | None:
    """``strconv.ParseInt(value, 10, 64)`` (None where the API server answers 400)."""
    if value is None or not _GO_INT.fullmatch(value) or not value.isascii():
        return None
    number = int(value)
    return number if -(1 << 63) <= number < (1 << 63) else None


def _option_dry_run(query: Mapping[str, Sequence[str]]) -> bool:
    """``DryRun`` takes every ``dryRun`` value; a dry run needs at least one and only
    ``All`` (``ValidateDryRun`` refuses any other value, so nothing runs)."""
    values = query.get("dryRun") or []
    return bool(values) and all(v == "All" for v in values)


def _unescape_selector_value(text: str) -> str | None:
    """``fields.UnescapeValue``: ``\\\\``, ``\\,`` and ``\\=`` only; a bare ``,`` or
    ``=`` or any other escape is an error (None)."""
    out: list[str] = []
    escaped = False
    for char in text:
        if escaped:
            if char not in "\\,=":
                return None
            out.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char in ",=":
            return None
        else:
            out.append(char)
    return None if escaped else "".join(out)


def _split_terms(selector: str) -> list[str]:
    """``fields.splitTerms``: commas split terms unless backslash-escaped."""
    terms, start, escaped = [], 0, False
    for index, char in enumerate(selector):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ",":
            terms.append(selector[start:index])
            start = index + 1
    terms.append(selector[start:])
    return terms


def _selected_name(field_selector: str) -> str:
    """``metadata.name`` when the field selector requires exactly one name.

    Port of ``fields.ParseSelector`` + ``RequiresExactMatch`` (k8s.io/apimachinery
    ``pkg/fields/selector.go``): terms sorted, split at the first ``!=``, ``==`` or
    ``=`` (no trimming), values unescaped; the first ``metadata.name`` equality term
    after sorting names the object. A selector that does not parse names nothing.
    """
    if not field_selector:
        return ""
    found = ""
    for term in sorted(_split_terms(field_selector)):
        if not term:
            continue
        match = re.search(r"!=|==|=", term)
        if match is None:
            return ""
        value = _unescape_selector_value(term[match.end() :])
        if value is None:
            return ""
        if not found and match.group() != "!=" and term[: match.start()] == "metadata.name":
            found = value
    return found


def _valid_name(name: str) -> bool:
    """``content.IsPathSegmentName``: what may stand for a name in a URL path."""
    return name not in ("", ".", "..") and "/" not in name and "%" not in name


def request_info(
    method: str, path: str, query: Mapping[str, Sequence[str]] | None = None
) -> RequestInfo:
    """Port of ``RequestInfoFactory.NewRequestInfo`` (without its error returns) for
    the decoded ``path`` and the query values."""
    query = query or {}
    method = method.upper()
    non_resource = RequestInfo(is_resource_request=False, verb=method.lower())
    parts = split_path(path)
    if len(parts) < 3 or parts[0] not in _API_PREFIXES:
        return non_resource
    prefix, parts = parts[0], parts[1:]
    group = ""
    if prefix not in _GROUPLESS_PREFIXES:
        if len(parts) < 3:
            return non_resource
        group, parts = parts[0], parts[1:]
    version, parts = parts[0], parts[1:]

    if parts[0] in _SPECIAL_VERBS:
        if len(parts) < 2:
            return non_resource  # an error to NewRequestInfo: the API server answers 500
        verb, parts = parts[0], parts[1:]
    else:
        verb = _METHOD_VERBS.get(method, "")

    namespace = ""
    if parts[0] == "namespaces" and len(parts) > 1:
        namespace = parts[1]
        if len(parts) > 2 and parts[2] not in _NAMESPACE_SUBRESOURCES:
            parts = parts[2:]

    resource = name = subresource = ""
    if len(parts) >= 3 and verb not in _SPECIAL_VERBS_NO_SUBRESOURCES:
        subresource = parts[2]
    if len(parts) >= 2:
        name = parts[1]
    if parts:
        resource = parts[0]

    if not name and verb == "get":
        verb = "watch" if _option_bool(_first(query, "watch")) else "list"
        selected = _selected_name(_first(query, "fieldSelector") or "")
        if _valid_name(selected):
            name = selected
    if not name and verb == "delete":
        verb = "deletecollection"
    return RequestInfo(
        is_resource_request=True,
        verb=verb,
        api_prefix=prefix,
        api_group=group,
        api_version=version,
        namespace=namespace,
        resource=resource,
        subresource=subresource,
        name=name,
    )


# ------------------------------------------------------------------ classification


def _verb_class(info: RequestInfo, group: str) -> Verb:
    resource, sub, verb = info.resource, info.subresource, info.verb
    if sub in _EXEC_SUBRESOURCES:
        return Verb.EXECUTE
    if verb in ("get", "list", "watch"):
        return Verb.EXECUTE if sub == "proxy" else Verb.READ
    if verb == "proxy" or sub == "proxy":
        return Verb.EXECUTE
    if verb == "deletecollection":
        return Verb.DESTROY
    if group == _RBAC_GROUP and verb in ("create", "update", "patch", "delete"):
        return Verb.PERMISSION
    if verb == "create":
        if group in _REVIEW_GROUPS and resource.endswith("reviews"):
            return Verb.READ
        if resource == "serviceaccounts" and sub == "token":
            return Verb.PERMISSION
        if resource == "pods" and sub == "eviction":
            return Verb.DELETE
        return Verb.CREATE
    if verb in ("update", "patch"):
        if resource == "certificatesigningrequests" and sub == "approval":
            return Verb.PERMISSION
        if resource == "pods" and sub == "ephemeralcontainers":
            # kubectl debug: a container with any command and the pod's volumes and
            # process namespace runs inside a running pod, as an exec does
            return Verb.EXECUTE
        return Verb.UPDATE
    if verb == "delete":
        if not sub and (group, resource) in _DESTROY_RESOURCES:
            return Verb.DESTROY
        return Verb.DELETE
    return Verb.UNKNOWN


def _purpose(info: RequestInfo) -> Purpose | None:
    """What the API server decodes the body of this request as (None: it reads none)."""
    if info.subresource in _EXEC_SUBRESOURCES or "proxy" in (info.verb, info.subresource):
        return None  # connect handlers stream, they decode no object
    if info.verb in ("create", "update"):
        return Purpose.OBJECT
    if info.verb == "patch":
        return Purpose.PATCH
    if info.verb in ("delete", "deletecollection"):
        return Purpose.DELETE_OPTIONS
    return None


@dataclass(frozen=True, slots=True)
class _Effect:
    """What the request does beyond its verb: the facts the policies read."""

    dry_run: bool = False
    force: bool = False
    scale_to_zero: bool = False


def _effect(
    info: RequestInfo, facts: BodyFacts, query: Mapping[str, Sequence[str]], body: bool
) -> _Effect:
    verb = info.verb
    # only the handlers that decode options dry-run; a connect (exec, proxy) or read
    # does not, whatever its query says
    dry_run = _purpose(info) is not None and _option_dry_run(query)
    force = False
    if verb in ("delete", "deletecollection"):
        if body:  # the body's DeleteOptions, and nothing from the query
            grace, dry_run, unsafe = facts.grace_period, facts.dry_run, facts.unsafe_delete
        else:
            grace = _option_int(_first(query, "gracePeriodSeconds"))
            unsafe = _option_bool(_first(query, "ignoreStoreReadErrorWithClusterBreakingPotential"))
        # 0 skips graceful termination; a negative period is 1 s today and was immediate
        # on older servers (registry/rest/delete.go: BeforeDelete)
        force = (grace is not None and grace <= 0) or unsafe
    elif info.resource == "pods" and info.subresource == "eviction":
        # registry/core/pod/storage/eviction.go: propagateDryRun takes either
        dry_run = dry_run or facts.dry_run
        grace = facts.grace_period
        force = (grace is not None and grace <= 0) or facts.unsafe_delete
    if info.resource == "namespaces" and info.subresource == "finalize":
        force = True  # rewriting a namespace's finalizers forces a stuck deletion through
    if verb in ("update", "patch") and facts.finalizers_removed:
        force = True  # so does emptying an object's finalizers
    scale_to_zero = (
        verb in ("update", "patch", "create")
        and info.subresource in _SCALABLE_SUBRESOURCES
        and facts.replicas == 0
        and (verb != "create" or info.subresource == "scale")
    )
    return _Effect(dry_run=dry_run, force=force, scale_to_zero=scale_to_zero)


_COMMAND = re.compile(r"\s+")


def _kubectl_tag(request: HttpRequest) -> str:
    """``kubectl:<command>`` from the Kubectl-Command header (``kubectl:kubectl apply``)."""
    command = _COMMAND.sub(" ", request.header("kubectl-command").strip())[:64]
    return f"kubectl:{command}" if command else ""


@dataclass
class _Request:
    """What every reading of one request shares."""

    cluster: str
    actor: Actor
    summary: RequestSummary
    kubectl: str
    request: HttpRequest
    content_types: list[str]
    ambiguities: set[str] = field(default_factory=set)
    _bodies: dict[tuple[Purpose, str, str], BodyReading] = field(default_factory=dict)

    @property
    def body(self) -> bytes:
        return self.request.body

    def body_reading(self, purpose: Purpose, content_type: str, kind: str) -> BodyReading:
        key = (purpose, content_type, kind)
        reading = self._bodies.get(key)
        if reading is None:
            reading = self._read(purpose, content_type, kind)
            self._bodies[key] = reading
            self.ambiguities.update(reading.ambiguities)
        return reading

    def _read(self, purpose: Purpose, content_type: str, kind: str) -> BodyReading:
        """The body as the API server reads it: the bytes as sent, since it undoes no
        content coding (kubernetes/apiserver compresses responses only) and Go's
        net/http refuses any transfer coding but chunked. A coded body is then also
        read decoded, as a proxy in front that decodes it would forward it; a reading
        that cannot be made is dropped while another one stands (the API server refuses
        a coded body it cannot decode: it changes nothing)."""
        raw = read_body(self.body, content_type, purpose, kind=kind)
        if not self.body or not _coded(self.request):
            return raw
        decoded = decoded_body(self.request)
        plain = UNREADABLE
        if decoded is not None:
            plain = read_body(decoded, content_type, purpose, kind=kind)
        usable = [r for r in (raw, plain) if not r.unreadable]
        if not usable:
            return UNREADABLE
        facts = tuple(dict.fromkeys(f for r in usable for f in r.facts))
        why = {w for r in usable for w in r.ambiguities}
        if len(usable) > 1:
            why.add("content-encoding")
        return BodyReading(facts, tuple(sorted(why)))

    def tags(self, *more: str) -> list[str]:
        return [tag for tag in (*more, self.kubectl) if tag]


def _coded(request: HttpRequest) -> bool:
    """Whether the body carries a content coding, or a transfer coding beyond chunked."""
    codings = [
        coding.strip().lower()
        for name in ("content-encoding", "transfer-encoding")
        for value in request.header_values(name)
        for coding in value.split(",")
    ]
    return any(c not in ("", "identity", "chunked") for c in codings)


def _non_resource(shared: _Request, info: RequestInfo, method: str) -> Action:
    readable = method in ("GET", "HEAD", "OPTIONS")
    return Action(
        provider=Provider.K8S,
        operation=info.verb,
        verb=Verb.READ if readable else Verb.UNKNOWN,
        scope=Scope(cluster=shared.cluster),
        risk_tags=shared.tags(),
        actor=shared.actor,
        request=shared.summary,
        confidence=Confidence.EXACT if readable else Confidence.UNKNOWN,
    )


@dataclass(frozen=True, slots=True)
class Reading:
    """One way the request can be read: the inputs an action was decided from.

    ``path`` is decoded; ``query`` the values a reader takes (a scalar option's first
    value is the one it uses); ``facts`` what the body says for ``purpose`` (None: no
    body is read), ``unreadable`` when it could not be read.
    """

    method: str
    path: str
    query: Mapping[str, Sequence[str]]
    content_type: str = ""
    purpose: Purpose | None = None
    body: bool = False
    facts: BodyFacts = field(default_factory=BodyFacts)
    unreadable: bool = False


def _resource_actions(
    shared: _Request, info: RequestInfo, method: str, path: str, query: Mapping[str, Sequence[str]]
) -> list[tuple[Reading, Action]]:
    group = info.api_group or "core"
    verb = _verb_class(info, group)
    operation = info.subresource if info.subresource in _EXEC_SUBRESOURCES else info.verb
    base_type = f"k8s:{group}:{info.resource}"
    rtype = f"{base_type}/{info.subresource}" if info.subresource else base_type
    purpose = _purpose(info)
    has_body = bool(shared.body) and purpose is not None
    readings: list[Reading] = []
    if purpose is None or not shared.body:
        readings.append(Reading(method, path, query, purpose=purpose))
    else:
        kind = _SUBRESOURCE_KINDS.get(info.subresource) or _ENDPOINT_KINDS.get(info.resource, "")
        for content_type in shared.content_types:
            body = shared.body_reading(purpose, content_type, kind)
            readings.extend(
                Reading(method, path, query, content_type, purpose, True, facts, body.unreadable)
                for facts in body.facts
            )
    actions = []
    for reading in readings:
        facts = reading.facts
        name = info.name or (facts.name if info.verb == "create" else "")
        namespace = info.namespace
        if info.resource == "namespaces" and name and not namespace:
            namespace = name
        name, truncated = cap(name)
        key_scope = [shared.cluster]
        if namespace and info.resource != "namespaces":
            key_scope.append(namespace)
        effect = _effect(info, facts, query, has_body)
        tags = [
            "bulk" if info.verb == "deletecollection" else "",
            "force" if effect.force else "",
            "scale-to-zero" if effect.scale_to_zero else "",
        ]
        known = verb is not Verb.UNKNOWN and not reading.unreadable
        action = Action(
            provider=Provider.K8S,
            service=group,
            operation=operation,
            verb=verb if not reading.unreadable else Verb.UNKNOWN,
            resource=Resource(
                type=rtype, name=name, key=resource_key("k8s", key_scope, base_type, name)
            ),
            scope=Scope(cluster=shared.cluster, namespace=namespace),
            risk_tags=shared.tags(*tags),
            actor=shared.actor,
            request=shared.summary,
            confidence=Confidence.EXACT if known else Confidence.UNKNOWN,
            dry_run=effect.dry_run,
            truncated=truncated,
        )
        actions.append((reading, action))
    return actions


def _query_views(query: dict[str, list[str]]) -> list[dict[str, list[str]]]:
    """The query as the API server reads it (first value of a scalar option), then, if
    a scalar option repeats with different values, as a last-value reader would."""
    if all(len(values) == 1 for values in query.values()) or not any(
        len(set(query.get(key, ()))) > 1 for key in _SCALAR_OPTIONS
    ):
        return [query]
    last = {
        key: (values[::-1] if key in _SCALAR_OPTIONS else values) for key, values in query.items()
    }
    return [query, last]


def _methods(request: HttpRequest) -> list[str]:
    """The request's method, then any other method an override header names."""
    methods = [request.method.upper()]
    for name, value in request.headers:
        if name in _METHOD_OVERRIDES:
            method = value.strip().upper()
            if method and method not in methods:
                methods.append(method)
    return methods


def _unknown(cluster: str, request: HttpRequest, kubectl: str) -> Action:
    """A target the API server refuses to parse (400), or more readings than are
    decided: nothing to classify."""
    return Action(
        provider=Provider.K8S,
        scope=Scope(cluster=cluster),
        risk_tags=[kubectl] if kubectl else [],
        actor=actor_of(request),
        request=summary_of(request),
        confidence=Confidence.UNKNOWN,
    )


def _danger(action: Action) -> tuple[int, bool, int]:
    return (-_SEVERITY[action.verb], action.dry_run, -len(action.risk_tags))


def request_readings(request: HttpRequest) -> tuple[list[tuple[Reading, Action]], set[str]]:
    """Every reading of ``request`` with the action it makes (the API server's first),
    and why there are several. No readings: the API server cannot parse the target.
    An action repeated by several readings is listed once."""
    content_types = list(dict.fromkeys(request.header_values("content-type"))) or [""]
    shared = _Request(
        cluster=f"{request.host.lower()}:{request.port}",
        actor=actor_of(request),
        summary=summary_of(request),
        kubectl=_kubectl_tag(request),
        request=request,
        content_types=content_types,
    )
    try:
        target: RequestTarget = parse_target(request.path)
    except GoUrlError:
        return [], set()
    if len(content_types) > 1:
        shared.ambiguities.add("content-type")
    methods = _methods(request)
    if len(methods) > 1:
        shared.ambiguities.add("method-override")
    paths = path_readings(target)
    if len(paths) > 1:
        shared.ambiguities.add("path-normalisation")
    views = _query_views(parse_query(target.raw_query))
    if len(views) > 1:
        shared.ambiguities.add("repeated-parameter")

    found: list[tuple[Reading, Action]] = []
    for method in methods:
        for path in paths:
            for query in views:
                info = request_info(method, path, query)
                if info.is_resource_request:
                    pairs = _resource_actions(shared, info, method, path, query)
                else:
                    pairs = [(Reading(method, path, query), _non_resource(shared, info, method))]
                found.extend(p for p in pairs if all(p[1] != a for _, a in found))
                if len(found) > MAX_READINGS:
                    shared.ambiguities.add("too-many-readings")
                    return found, shared.ambiguities
    return found, shared.ambiguities


def recognise_k8s(request: HttpRequest) -> Action:
    """The Action for a request to a Kubernetes API server (with its other readings)."""
    found, ambiguities = request_readings(request)
    if not found or "too-many-readings" in ambiguities:
        return _unknown(f"{request.host.lower()}:{request.port}", request, _kubectl_tag(request))
    return _combine([action for _, action in found], ambiguities)


def _combine(candidates: list[Action], ambiguities: set[str]) -> Action:
    """The most dangerous reading with the others as its readings (stable: among
    equally dangerous ones the API server's own reading comes first)."""
    if not ambiguities and len(candidates) == 1:
        return candidates[0]
    tags = [f"ambiguous:{why}" for why in sorted(ambiguities or {"reading"})]
    ordered = sorted(candidates, key=_danger)
    marked = [
        action.model_copy(
            update={
                "risk_tags": [*action.risk_tags, *tags],
                "confidence": Confidence.AMBIGUOUS
                if action.verb is not Verb.UNKNOWN
                else Confidence.UNKNOWN,
            }
        )
        for action in ordered
    ]
    return marked[0].model_copy(update={"readings": marked[1:]})


# ------------------------------------------------------------------ dispatch heuristic

_VERSION = re.compile(r"^v\d+(?:(?:alpha|beta)\d+)?$")

# Built-in API groups without a dot in their name; every other group (CRDs, the
# *.k8s.io groups) has one.
_DOTLESS_GROUPS = frozenset(
    {"apps", "batch", "autoscaling", "policy", "extensions", "apiregistration"}
)


# The core (legacy) API's resources and special verbs: a fixed set.
_CORE_RESOURCES = frozenset(
    {
        "bindings",
        "componentstatuses",
        "configmaps",
        "endpoints",
        "events",
        "limitranges",
        "namespaces",
        "nodes",
        "persistentvolumeclaims",
        "persistentvolumes",
        "pods",
        "podtemplates",
        "replicationcontrollers",
        "resourcequotas",
        "secrets",
        "serviceaccounts",
        "services",
        "watch",
        "proxy",
    }
)


# Managed API server endpoints: ``<id>.<zone>.<region>.eks.amazonaws.com`` for EKS
# (its own management API is ``eks.<region>.amazonaws.com``, which does not end so),
# ``<name>-<hash>.hcp.<region>.azmk8s.io`` for AKS.
_MANAGED_SUFFIXES = (".eks.amazonaws.com", ".azmk8s.io")


def _kubernetes_path(path: str) -> bool:
    parts = split_path(path)
    if not parts or parts[0] not in _API_PREFIXES:
        return False
    if parts[0] == "api":
        return (len(parts) == 2 and parts[1] == "v1") or (
            len(parts) >= 3 and parts[1] == "v1" and parts[2] in _CORE_RESOURCES
        )
    return (
        len(parts) >= 3
        and ("." in parts[1] or parts[1] in _DOTLESS_GROUPS)
        and bool(_VERSION.match(parts[2]))
    )


def looks_like_kubernetes(request: HttpRequest) -> bool:
    """Whether a request to an unconfigured host is a Kubernetes API call.

    ``/api/v1/...`` is common to many REST APIs, so a path alone is not enough: it takes
    kubectl's own marks (``Kubectl-Command``, a ``kubectl/`` user agent), a managed
    cluster endpoint (EKS, AKS), or a bearer token together with a path only Kubernetes
    uses (a core resource under ``/api/v1``, or ``/apis/<group>/<version>`` with a
    Kubernetes-style version and a dotted or built-in group). The path is read as the
    API server decodes it (and as a normalising proxy would clean it), so an escaped
    or dotted spelling of a Kubernetes path is still one.
    """
    if request.header("kubectl-command") or request.user_agent.startswith("kubectl/"):
        return True  # kubectl talks to nothing but API servers (/version, /openapi too)
    if request.host.lower().endswith(_MANAGED_SUFFIXES):
        return True
    if not request.header("authorization").lower().startswith("bearer "):
        return False
    try:
        paths = path_readings(parse_target(request.path))
    except GoUrlError:
        paths = [request.path_only]
    return any(_kubernetes_path(path) for path in paths)
