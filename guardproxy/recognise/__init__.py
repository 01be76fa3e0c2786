"""Recognise: turn one intercepted HTTP request into the normalised :class:`Action`.

``recognise(request, settings)`` picks the recogniser by the request's real
destination and shape, then resolves the environment. It never raises: whatever goes
wrong inside a recogniser yields an Action with ``verb=unknown`` and
``confidence=unknown`` (which the policy bundle never allows by default), with the
provider as far as dispatch knew it and the actor and request summary filled in.

Dispatch order, most certain first (see ``dispatch_reason``): a configured Kubernetes
API server; a SigV4 signature (AWS, whatever the host); a git smart-HTTP path; SQL
carriers; Google Cloud, Azure Resource Manager and GitHub by host; a Kubernetes-shaped
request; an AWS endpoint host; Terraform Cloud's JSON:API; the Docker Engine API
(the weakest guess); anything else is generic: provider unknown, GET/HEAD/OPTIONS
read (heuristic).
"""

from __future__ import annotations

from collections.abc import Callable

from guardproxy.action import Action, Confidence, Provider, Verb
from guardproxy.recognise import gcp_index
from guardproxy.recognise.aws import recognise_aws
from guardproxy.recognise.aws_index import AwsIndex, shared_index
from guardproxy.recognise.aws_wire import credential_scope, is_aws_host
from guardproxy.recognise.azure import looks_like_azure, recognise_azure
from guardproxy.recognise.common import actor_of, summary_of
from guardproxy.recognise.docker import looks_like_docker, recognise_docker
from guardproxy.recognise.environment import resolve_environment
from guardproxy.recognise.gcp import looks_like_gcp, recognise_gcp
from guardproxy.recognise.git import is_git_request, recognise_git
from guardproxy.recognise.github import looks_like_github, recognise_github, route_table
from guardproxy.recognise.k8s import looks_like_kubernetes, recognise_k8s
from guardproxy.recognise.request import HttpRequest, RecogniseSettings
from guardproxy.recognise.sql import looks_like_sql, recognise_sql
from guardproxy.recognise.tfc import looks_like_tfc, recognise_tfc

__all__ = [
    "HttpRequest",
    "RecogniseSettings",
    "dispatch",
    "dispatch_reason",
    "recognise",
    "warm_up",
]

_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _is_kubernetes_host(request: HttpRequest, settings: RecogniseSettings) -> bool:
    if not settings.kubernetes_hosts:
        return False
    host = request.host.lower()
    configured = {h.lower() for h in settings.kubernetes_hosts}
    return host in configured or f"{host}:{request.port}" in configured


def dispatch(request: HttpRequest, settings: RecogniseSettings) -> Provider:
    """Which provider's recogniser owns ``request``."""
    return dispatch_reason(request, settings)[0]


def dispatch_reason(request: HttpRequest, settings: RecogniseSettings) -> tuple[Provider, str]:
    """The owning provider and why, for `guardproxy recognise --explain`."""
    if _is_kubernetes_host(request, settings):
        return Provider.K8S, f"{request.host}:{request.port} is a configured Kubernetes API server"
    scope = credential_scope(request)
    if scope is not None:
        return (
            Provider.AWS,
            f"it is SigV4-signed for {scope.service} in {scope.region or '(no region)'}",
        )
    if is_git_request(request):
        return Provider.GIT, "its path is a git smart-HTTP endpoint"
    # SQL carriers first: BigQuery's query endpoints live on a googleapis.com host
    if looks_like_sql(request):
        return Provider.SQL, "it carries SQL to a known SQL-over-HTTP endpoint"
    if looks_like_gcp(request):
        return Provider.GCP, f"{request.host} is a Google Cloud API host"
    if looks_like_azure(request):
        return Provider.AZURE, f"{request.host} is Azure Resource Manager"
    if looks_like_github(request):
        return Provider.GITHUB, "it is a GitHub REST or GraphQL API request"
    if looks_like_kubernetes(request):
        return Provider.K8S, "it is shaped like a Kubernetes API request (path, kubectl headers)"
    if is_aws_host(request.host):
        return Provider.AWS, f"{request.host} is an AWS endpoint"
    if looks_like_tfc(request):
        return Provider.TFC, "it is a Terraform Cloud/Enterprise JSON:API request"
    if looks_like_docker(request):
        return Provider.DOCKER, "it is shaped like a Docker Engine API request"
    return Provider.UNKNOWN, "no infrastructure recogniser claims it (generic: verb from method)"


_RECOGNISERS: dict[Provider, Callable[[HttpRequest], Action]] = {
    Provider.K8S: recognise_k8s,
    Provider.GIT: recognise_git,
    Provider.SQL: recognise_sql,
    Provider.GCP: recognise_gcp,
    Provider.AZURE: recognise_azure,
    Provider.GITHUB: recognise_github,
    Provider.TFC: recognise_tfc,
    Provider.DOCKER: recognise_docker,
}


def _generic(request: HttpRequest) -> Action:
    """A request no infrastructure recogniser claims: reads are probably reads."""
    readable = request.method.upper() in _READ_METHODS
    return Action(
        provider=Provider.UNKNOWN,
        verb=Verb.READ if readable else Verb.UNKNOWN,
        actor=actor_of(request),
        request=summary_of(request),
        confidence=Confidence.HEURISTIC if readable else Confidence.UNKNOWN,
    )


def _recognise(request: HttpRequest, provider: Provider, index: AwsIndex | None) -> Action:
    if provider is Provider.AWS:
        return recognise_aws(request, index if index is not None else shared_index())
    recogniser = _RECOGNISERS.get(provider)
    return recogniser(request) if recogniser is not None else _generic(request)


def _failed(request: HttpRequest, provider: Provider) -> Action:
    """Fail closed: the provider as far as known, nothing classified."""
    try:
        actor = actor_of(request)
        summary = summary_of(request)
    except Exception:
        return Action(provider=provider)
    return Action(provider=provider, actor=actor, request=summary)


def warm_up() -> None:
    """Load the AWS model index now (a proxy calls this at start-up).

    Otherwise the first AWS request pays for it: milliseconds from the cache, a few
    seconds when the cache has to be built for a new botocore version.
    """
    shared_index()
    gcp_index.shared_index()
    route_table()


def recognise(
    request: HttpRequest, settings: RecogniseSettings, *, aws_index: AwsIndex | None = None
) -> Action:
    """The Action ``request`` performs. Never raises.

    ``aws_index`` overrides the process-wide AWS model index (loaded on first use).
    """
    provider = Provider.UNKNOWN
    try:
        provider = dispatch(request, settings)
        action = _recognise(request, provider, aws_index)
        return action.each_reading(
            lambda reading: reading.model_copy(
                update={"environment": resolve_environment(reading, settings.environments)}
            )
        )
    except Exception:
        # Deliberately broad: a recogniser bug must never let a request through
        # unclassified-but-allowed, nor crash the proxy. Nothing about the request
        # is logged here (headers and bodies may hold secrets).
        return _failed(request, provider)
