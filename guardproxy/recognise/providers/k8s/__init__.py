"""Kubernetes: the provider module (see ``recognise/registry.py``).

Claims: a configured API server (``--kube-host``, by any spelling of its host, the
most certain claim there is); a request shaped like a Kubernetes API call
(``claims.py``). Unclaimed, a path only Kubernetes serves is still read as Kubernetes
(a ``kubectl proxy`` on loopback adds the token upstream). The recogniser
(``recogniser.py``) reads the request as kube-apiserver does.

Selectors: ``k8s:namespace:<name>`` (or ``k8s:namespace:<host:port>/<name>`` for one
cluster), ``k8s:cluster:<host[:port]>``; names: the resource and the namespace.
Containers: namespaces.
"""

from __future__ import annotations

from functools import lru_cache

from guardproxy.action import Action, Provider
from guardproxy.hosts import HostSet, host_port, split_host_port
from guardproxy.recognise.providers.k8s import catalogue
from guardproxy.recognise.providers.k8s.claims import looks_like_kubernetes, shaped_like_kubernetes
from guardproxy.recognise.providers.k8s.recogniser import recognise_k8s
from guardproxy.recognise.registry import (
    Claim,
    Containers,
    Fallback,
    HostKey,
    NativeError,
    ProviderModule,
    Selectors,
    Spelling,
    json_error,
)
from guardproxy.recognise.request import HttpRequest, RecogniseSettings

__all__ = ["PROVIDER"]

_NAMESPACES = ":namespaces"


@lru_cache(maxsize=64)
def _api_servers(configured: tuple[str, ...]) -> HostSet:
    return HostSet.of(configured)


def _configured(request: HttpRequest, settings: RecogniseSettings) -> bool:
    """Whether the destination is a configured API server, by any spelling of its host
    (``localhost``, ``127.1``, ``[::ffff:127.0.0.1]``, ``K8S.corp.``...)."""
    if not settings.kubernetes_hosts:
        return False
    return (request.host, request.port) in _api_servers(settings.kubernetes_hosts)


def _configured_reason(request: HttpRequest) -> str:
    return f"{request.host}:{request.port} is a configured Kubernetes API server"


def _shaped(request: HttpRequest, settings: RecogniseSettings) -> bool:
    return looks_like_kubernetes(request)


def _shaped_reason(request: HttpRequest) -> str:
    return "it is shaped like a Kubernetes API request (path, kubectl headers)"


def _error(request: HttpRequest, action: Action, message: str, reference: str) -> NativeError:
    """A ``Status`` object, as the API server refuses (kubectl prints its message)."""
    kind = action.resource.type.rsplit(":", 1)[-1].split("/", 1)[0]  # k8s:<group>:<resource>
    status = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "Forbidden",
        "details": {"name": action.resource.name, "kind": kind},
        "code": 403,
    }
    return json_error("application/json", status)


_cluster_parts = lru_cache(maxsize=256)(split_host_port)


def _selectors(action: Action, spell: Spelling) -> list[str]:
    scope = action.scope
    if not scope.cluster:
        return [f"k8s:namespace:{scope.namespace}"] if scope.namespace else []
    named, port = _cluster_parts(scope.cluster)
    host = spell(named)
    cluster = host_port(host, port) if port is not None else host
    found = []
    if scope.namespace:
        found += [f"k8s:namespace:{cluster}/{scope.namespace}", f"k8s:namespace:{scope.namespace}"]
    return [*found, f"k8s:cluster:{cluster}", f"k8s:cluster:{host}"]


def _names(action: Action) -> list[str]:
    return [action.resource.name or action.resource.id, action.scope.namespace]


def _namespace(cluster: str, name: str) -> str:
    return f"k8s:{cluster}:namespace/{name}"


def _destroyed(action: Action) -> str:
    if action.resource.type.lower().endswith(_NAMESPACES):
        return _namespace(action.scope.cluster, action.resource.name)
    return ""


def _enclosing(action: Action) -> list[str]:
    scope = action.scope
    if scope.namespace and not action.resource.type.lower().endswith(_NAMESPACES):
        return [_namespace(scope.cluster, scope.namespace)]
    return []


PROVIDER = ProviderModule(
    provider=Provider.K8S,
    recognise=recognise_k8s,
    claims=(
        Claim(10, "kube-host", _configured, _configured_reason),
        Claim(80, "k8s", _shaped, _shaped_reason),
    ),
    fallback=Fallback(10, shaped_like_kubernetes),
    error=_error,
    selectors=Selectors(
        _selectors,
        host_keys=(HostKey("k8s:cluster:"), HostKey("k8s:namespace:", path_required=True)),
        names=_names,
    ),
    containers=Containers(destroyed=_destroyed, enclosing=_enclosing),
    destructive=catalogue.destructive,
)
