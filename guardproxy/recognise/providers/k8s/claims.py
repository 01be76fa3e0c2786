"""How a request is recognised as Kubernetes without a configured API server: the
shape of its path and headers (a port of the API server's own path grammar), or a
managed cluster endpoint."""

from __future__ import annotations

import re
from dataclasses import replace

from guardproxy.hosts import canonical_host
from guardproxy.recognise.providers.k8s.request_info import API_PREFIXES
from guardproxy.recognise.providers.k8s.url import (
    GoUrlError,
    parse_target,
    path_readings,
    split_path,
)
from guardproxy.recognise.request import HttpRequest

__all__ = ["looks_like_kubernetes", "shaped_like_kubernetes"]

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
    if not parts or parts[0] not in API_PREFIXES:
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
    if canonical_host(request.host).endswith(_MANAGED_SUFFIXES):
        return True
    if not request.header("authorization").lower().startswith("bearer "):
        return False
    try:
        paths = path_readings(parse_target(request.path))
    except GoUrlError:
        paths = [request.path_only]
    return any(_kubernetes_path(path) for path in paths)


def shaped_like_kubernetes(request: HttpRequest) -> bool:
    """Whether the path is one only Kubernetes serves: ``looks_like_kubernetes``'s path
    grammar (a core resource under ``/api/v1``, ``/apis/<group>/<version>``), asked
    without its credential condition (``kubectl proxy`` adds the token upstream)."""
    bearer = replace(request, headers=(("authorization", "Bearer -"), *request.headers))
    return looks_like_kubernetes(bearer)
