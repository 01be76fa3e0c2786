"""The Kubernetes recogniser: API server requests -> Actions.

The URL grammar is parsed exactly as the API server itself does it, by a port of
``RequestInfoFactory.NewRequestInfo`` (k8s.io/apiserver/pkg/endpoints/request/
requestinfo.go), so ``operation`` is the same verb RBAC authorises (get, list, watch,
create, update, patch, delete, deletecollection), or exec/attach/portforward for the
subresources that open a shell or a tunnel.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from guardproxy.action import Action, Confidence, Provider, Resource, Scope, Verb
from guardproxy.recognise.common import actor_of, cap, decoded_body, resource_key, summary_of
from guardproxy.recognise.k8s_body import BodyFacts, body_facts
from guardproxy.recognise.request import HttpRequest

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

_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})


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


def _valid_name(name: str) -> bool:
    """``path.IsValidPathSegmentName``: what may stand for a name in a URL path."""
    return name not in ("", ".", "..") and "/" not in name and "%" not in name


def _selected_name(field_selector: str) -> str:
    """``metadata.name`` when the field selector requires exactly one name."""
    for term in field_selector.split(","):
        key, sep, value = term.partition("==") if "==" in term else term.partition("=")
        if sep and key.strip() == "metadata.name" and not key.endswith("!"):
            return value.strip()
    return ""


def request_info(method: str, path: str, query: list[tuple[str, str]]) -> RequestInfo:
    """Port of ``RequestInfoFactory.NewRequestInfo`` (without its error returns)."""
    method = method.upper()
    non_resource = RequestInfo(is_resource_request=False, verb=method.lower())
    parts = [p for p in path.strip("/").split("/")] if path.strip("/") else []
    if len(parts) < 3 or parts[0] not in _API_PREFIXES:
        return non_resource
    prefix, parts = parts[0], parts[1:]
    group = ""
    if prefix not in _GROUPLESS_PREFIXES:
        if len(parts) < 2:
            return non_resource
        group, parts = parts[0], parts[1:]
    version, parts = parts[0], parts[1:]
    if not parts:
        return non_resource

    if parts[0] in _SPECIAL_VERBS:
        if len(parts) < 2:
            return non_resource
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

    values = dict(query)
    if not name and verb == "get":
        verb = "watch" if values.get("watch", "") in _TRUE else "list"
        selected = _selected_name(values.get("fieldSelector", ""))
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
        return Verb.UPDATE
    if verb == "delete":
        if not sub and (group, resource) in _DESTROY_RESOURCES:
            return Verb.DESTROY
        return Verb.DELETE
    return Verb.UNKNOWN


_COMMAND = re.compile(r"\s+")


def _risk_tags(
    request: HttpRequest, info: RequestInfo, verb: Verb, facts: BodyFacts, query: dict[str, str]
) -> list[str]:
    tags: list[str] = []
    if info.verb == "deletecollection":
        tags.append("bulk")
    if info.verb in ("delete", "deletecollection"):
        grace = query.get("gracePeriodSeconds")
        if grace == "0" or facts.grace_period == 0:
            tags.append("force")
    if info.resource == "namespaces" and info.subresource == "finalize":
        # Rewriting a namespace's finalizers forces a stuck deletion through.
        tags.append("force")
    if (
        info.verb in ("update", "patch", "create")
        and info.subresource in _SCALABLE_SUBRESOURCES
        and facts.replicas == 0
        and (info.verb != "create" or info.subresource == "scale")
    ):
        tags.append("scale-to-zero")
    command = _kubectl_tag(request)
    if command:
        tags.append(command)
    return tags


def _kubectl_tag(request: HttpRequest) -> str:
    """``kubectl:<command>`` from the Kubectl-Command header (``kubectl:kubectl apply``)."""
    command = _COMMAND.sub(" ", request.header("kubectl-command").strip())[:64]
    return f"kubectl:{command}" if command else ""


def recognise_k8s(request: HttpRequest) -> Action:
    """The Action for a request to a Kubernetes API server."""
    query_pairs = request.query
    info = request_info(request.method, request.path_only, query_pairs)
    cluster = f"{request.host.lower()}:{request.port}"
    actor = actor_of(request)
    summary = summary_of(request)
    if not info.is_resource_request:
        readable = request.method.upper() in ("GET", "HEAD", "OPTIONS")
        command = _kubectl_tag(request)
        return Action(
            provider=Provider.K8S,
            operation=info.verb,
            verb=Verb.READ if readable else Verb.UNKNOWN,
            scope=Scope(cluster=cluster),
            risk_tags=[command] if command else [],
            actor=actor,
            request=summary,
            confidence=Confidence.EXACT if readable else Confidence.UNKNOWN,
        )

    group = info.api_group or "core"
    verb = _verb_class(info, group)
    body = decoded_body(request)
    facts = body_facts(body or b"", request.header("content-type").lower())
    query = dict(query_pairs)

    operation = info.subresource if info.subresource in _EXEC_SUBRESOURCES else info.verb
    name = info.name or (facts.name if info.verb == "create" else "")
    namespace = info.namespace or facts.namespace
    if info.resource == "namespaces" and name and not namespace:
        namespace = name
    name, truncated = cap(name)

    base_type = f"k8s:{group}:{info.resource}"
    rtype = f"{base_type}/{info.subresource}" if info.subresource else base_type
    key_scope = [cluster]
    if namespace and info.resource != "namespaces":
        key_scope.append(namespace)
    dry_run = any(k == "dryRun" and v == "All" for k, v in query_pairs) or facts.dry_run
    return Action(
        provider=Provider.K8S,
        service=group,
        operation=operation,
        verb=verb,
        resource=Resource(
            type=rtype, name=name, key=resource_key("k8s", key_scope, base_type, name)
        ),
        scope=Scope(cluster=cluster, namespace=namespace),
        risk_tags=_risk_tags(request, info, verb, facts, query),
        actor=actor,
        request=summary,
        confidence=Confidence.EXACT if verb is not Verb.UNKNOWN else Confidence.UNKNOWN,
        dry_run=dry_run,
        truncated=truncated,
    )


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


def looks_like_kubernetes(request: HttpRequest) -> bool:
    """Whether a request to an unconfigured host is a Kubernetes API call.

    ``/api/v1/...`` is common to many REST APIs, so a path alone is not enough: it takes
    kubectl's own marks (``Kubectl-Command``, a ``kubectl/`` user agent), a managed
    cluster endpoint (EKS, AKS), or a bearer token together with a path only Kubernetes
    uses (a core resource under ``/api/v1``, or ``/apis/<group>/<version>`` with a
    Kubernetes-style version and a dotted or built-in group).
    """
    if request.header("kubectl-command") or request.user_agent.startswith("kubectl/"):
        return True  # kubectl talks to nothing but API servers (/version, /openapi too)
    if request.host.lower().endswith(_MANAGED_SUFFIXES):
        return True
    path = request.path_only
    if not path.startswith(("/api/", "/apis/")) and path not in ("/api", "/apis"):
        return False
    if not request.header("authorization").lower().startswith("bearer "):
        return False
    parts = [p for p in path.split("/") if p]
    if parts[0] == "api":
        return (len(parts) == 2 and parts[1] == "v1") or (
            len(parts) >= 3 and parts[1] == "v1" and parts[2] in _CORE_RESOURCES
        )
    return (
        len(parts) >= 3
        and ("." in parts[1] or parts[1] in _DOTLESS_GROUPS)
        and bool(_VERSION.match(parts[2]))
    )
