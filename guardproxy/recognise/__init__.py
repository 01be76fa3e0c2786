"""Recognise: turn one intercepted HTTP request into the normalised :class:`Action`.

``recognise(request, settings)`` finds every recogniser that claims the request by its
real destination and shape, builds the action from the most certain one, then
resolves the environment. It never raises: whatever goes wrong inside the most
certain recogniser yields an Action with ``verb=unknown`` and ``confidence=unknown``
(which the policy bundle never allows by default), with the provider as far as
dispatch knew it and the actor and request summary filled in.

Claimants, most certain first (see ``dispatch_reason``): a configured Kubernetes API
server (matched by canonical host, see ``hosts``); a SigV4 ``Authorization`` header
(AWS, whatever the host); a git smart-HTTP path; SQL carriers; Google Cloud, Azure
Resource Manager and GitHub by host; a Kubernetes-shaped request; a presigned SigV4
query (``X-Amz-Credential``); an AWS endpoint host; Terraform Cloud's JSON:API; the
Docker Engine API (the weakest guess).

A request more than one recogniser parses is ambiguous: the server that receives it
runs one protocol, and the proxy cannot tell which. Every other claimant that
classifies it as more than a read adds its action as a reading (``ambiguous:protocol``),
so the policy engine decides that reading too and the strictest outcome applies; a
claimant that reads it as a read or cannot classify it adds nothing (else every
request two recognisers look at would be denied).

A request nothing claims is generic: GET/HEAD/OPTIONS read (heuristic), anything else
unknown. Before settling for that, the structural grammars (the Kubernetes API path
grammar, the Docker Engine API grammar, an AWS ``X-Amz-Target`` or ``Action=`` call)
are tried: one that parses it as more than a read makes it that action, with the
generic reading kept beside it, so a ``kubectl proxy`` on loopback (no token, no
kubectl user agent) is never an unclassified "local development" request.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache

from guardproxy.action import Action, Confidence, Provider, Verb
from guardproxy.recognise import gcp_index
from guardproxy.recognise.aws import recognise_aws
from guardproxy.recognise.aws_index import AwsIndex, shared_index
from guardproxy.recognise.aws_wire import header_scopes, is_aws_host, query_scopes
from guardproxy.recognise.azure import looks_like_azure, recognise_azure
from guardproxy.recognise.common import actor_of, summary_of
from guardproxy.recognise.docker import api_path, looks_like_docker, recognise_docker
from guardproxy.recognise.environment import resolve_environment
from guardproxy.recognise.gcp import looks_like_gcp, recognise_gcp
from guardproxy.recognise.git import is_git_request, recognise_git
from guardproxy.recognise.github import looks_like_github, recognise_github, route_table
from guardproxy.recognise.hosts import HostSet
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

PROTOCOL = "ambiguous:protocol"
"""Risk tag of an action (and its readings) that more than one recogniser parses."""

_LAYERS = frozenset({(Provider.SQL, Provider.GCP)})
"""(primary, other) claimants that read two layers of one request rather than two
protocols: BigQuery's query endpoints are SQL statements *and* Google Cloud API calls.
The other's readings are further operations of the request, not an ambiguity."""

_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_CBOR_CALL = re.compile(r"^/service/[^/]+/operation/[^/]+$")
_DOCKER_ROOTS = frozenset(
    {
        "containers", "images", "volumes", "networks", "exec", "build", "system", "plugins",
        "services", "tasks", "nodes", "secrets", "configs", "swarm", "distribution", "session",
        "_ping", "version", "info", "events", "auth", "commit",
    }
)  # fmt: skip
"""First path segments of the Docker Engine API (``docker.py``'s collections and
system paths): only these are read with the Docker grammar when nothing claims a
request, so an ordinary web app's ``/api/items`` is not."""


@lru_cache(maxsize=64)
def _kubernetes_hosts(configured: tuple[str, ...]) -> HostSet:
    return HostSet.of(configured)


def _is_kubernetes_host(request: HttpRequest, settings: RecogniseSettings) -> bool:
    """Whether the destination is a configured API server, by any spelling of its host
    (``localhost``, ``127.1``, ``[::ffff:127.0.0.1]``, ``K8S.corp.``...)."""
    if not settings.kubernetes_hosts:
        return False
    return (request.host, request.port) in _kubernetes_hosts(settings.kubernetes_hosts)


@dataclass(frozen=True, slots=True)
class _Claim:
    provider: Provider
    why: str  # which test claimed it; the sentence is written by _reason


def _claims(request: HttpRequest, settings: RecogniseSettings) -> list[_Claim]:
    """Every recogniser that claims ``request``, most certain first, one per provider."""
    found: list[_Claim] = []
    if _is_kubernetes_host(request, settings):
        found.append(_Claim(Provider.K8S, "kube-host"))
    if header_scopes(request):
        found.append(_Claim(Provider.AWS, "sigv4"))
    if is_git_request(request):
        found.append(_Claim(Provider.GIT, "git"))
    # SQL carriers first: BigQuery's query endpoints live on a googleapis.com host
    if looks_like_sql(request):
        found.append(_Claim(Provider.SQL, "sql"))
    if looks_like_gcp(request):
        found.append(_Claim(Provider.GCP, "gcp"))
    if looks_like_azure(request):
        found.append(_Claim(Provider.AZURE, "azure"))
    if looks_like_github(request):
        found.append(_Claim(Provider.GITHUB, "github"))
    if looks_like_kubernetes(request):
        found.append(_Claim(Provider.K8S, "k8s"))
    if query_scopes(request):
        found.append(_Claim(Provider.AWS, "presigned"))
    if is_aws_host(request.host):
        found.append(_Claim(Provider.AWS, "aws-host"))
    if looks_like_tfc(request):
        found.append(_Claim(Provider.TFC, "tfc"))
    if looks_like_docker(request):
        found.append(_Claim(Provider.DOCKER, "docker"))
    if len(found) < 2:
        return found
    distinct: list[_Claim] = []
    for claim in found:
        if all(c.provider is not claim.provider for c in distinct):
            distinct.append(claim)
    return distinct


def _reason(claim: _Claim, request: HttpRequest) -> str:
    """Why ``claim`` claims ``request``, as ``recognise --explain`` says it."""
    if claim.why in ("sigv4", "presigned"):
        scopes = header_scopes(request) if claim.why == "sigv4" else query_scopes(request)
        scope = scopes[0]
        where = f"{scope.service} in {scope.region or '(no region)'}"
        if claim.why == "sigv4":
            return f"it is SigV4-signed for {where}"
        return f"its query carries a SigV4 credential for {where} (a presigned URL)"
    return {
        "kube-host": f"{request.host}:{request.port} is a configured Kubernetes API server",
        "git": "its path is a git smart-HTTP endpoint",
        "sql": "it carries SQL to a known SQL-over-HTTP endpoint",
        "gcp": f"{request.host} is a Google Cloud API host",
        "azure": f"{request.host} is Azure Resource Manager",
        "github": "it is a GitHub REST or GraphQL API request",
        "k8s": "it is shaped like a Kubernetes API request (path, kubectl headers)",
        "aws-host": f"{request.host} is an AWS endpoint",
        "tfc": "it is a Terraform Cloud/Enterprise JSON:API request",
        "docker": "it is shaped like a Docker Engine API request",
    }[claim.why]


def dispatch(request: HttpRequest, settings: RecogniseSettings) -> Provider:
    """Which provider's recogniser owns ``request`` (the most certain claimant)."""
    claims = _claims(request, settings)
    return claims[0].provider if claims else Provider.UNKNOWN


def dispatch_reason(
    request: HttpRequest, settings: RecogniseSettings, *, aws_index: AwsIndex | None = None
) -> tuple[Provider, str]:
    """The provider of the action ``recognise`` builds and why, for ``guardproxy
    recognise --explain``: the most certain claimant, the other claimants whose
    readings are decided with it (and those that add none), or the structural grammar
    that classified an unclaimed request."""
    claims = _claims(request, settings)
    if not claims:
        structural = _structural(request, aws_index)
        if not structural:
            return (
                Provider.UNKNOWN,
                "no infrastructure recogniser claims it (generic: verb from method)",
            )
        first = structural[0]
        others = ", ".join(f"{a.provider} {a.operation or a.verb}" for a in structural[1:])
        return first.provider, (
            "no recogniser claims it by host or headers, but it parses as a "
            f"{first.provider} request ({first.operation or first.verb}, {first.verb})"
            + (f"; also as {others}" if others else "")
            + "; the generic reading is decided beside it"
        )
    reason = _reason(claims[0], request)
    for claim in claims[1:]:
        extra = _secondary(request, claim.provider, aws_index)
        if extra:
            what = ", ".join(f"{a.operation or a.verb} ({a.verb})" for a in extra)
            reason += (
                f"; also parsed as {claim.provider} because {_reason(claim, request)}: "
                f"{what} decided as a reading"
            )
        else:
            reason += (
                f"; also parsed as {claim.provider} because {_reason(claim, request)}, "
                "which reads it "
                "as a read or cannot classify it (no reading added)"
            )
    return claims[0].provider, reason


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


def _secondary(request: HttpRequest, provider: Provider, index: AwsIndex | None) -> list[Action]:
    """The readings another claimant adds: all of its readings but the reads when it
    classifies the request as more than a read, nothing when it reads it as a read or
    cannot classify it. A claimant that fails on the request adds an unknown reading:
    it claimed the request and cannot say what it does."""
    try:
        found = _recognise(request, provider, index).all_readings()
    except Exception:
        return [_failed(request, provider)]
    if not any(a.verb not in (Verb.READ, Verb.UNKNOWN) for a in found):
        return []
    return [a for a in found if a.verb is not Verb.READ]


def _kubernetes_path(request: HttpRequest) -> bool:
    """Whether the path is one only Kubernetes serves: ``looks_like_kubernetes``'s path
    grammar (a core resource under ``/api/v1``, ``/apis/<group>/<version>``), asked
    without its credential condition (``kubectl proxy`` adds the token upstream)."""
    bearer = replace(request, headers=(("authorization", "Bearer -"), *request.headers))
    return looks_like_kubernetes(bearer)


def _structural(request: HttpRequest, index: AwsIndex | None) -> list[Action]:
    """Actions the structural grammars read an unclaimed request as, when more than a
    read: the Kubernetes API path grammar, the Docker Engine API grammar, an AWS call
    named by ``X-Amz-Target`` or an ``Action=`` field (an emulator reached without a
    signature). A grammar that fails on a request it recognises gives an unknown
    action: never a silent allow."""
    found: list[Action] = []
    attempts: list[tuple[Provider, Callable[[HttpRequest], Action]]] = []
    if _kubernetes_path(request):
        attempts.append((Provider.K8S, recognise_k8s))
    if api_path(request).strip("/").split("/", 1)[0] in _DOCKER_ROOTS:
        attempts.append((Provider.DOCKER, recognise_docker))
    if (
        request.header("x-amz-target")
        or _CBOR_CALL.match(request.path_only)
        or "ction=" in request.path
        or b"ction=" in request.body
    ):
        aws = index if index is not None else shared_index()
        attempts.append((Provider.AWS, lambda r: recognise_aws(r, aws)))
    for provider, recogniser in attempts:
        try:
            readings = recogniser(request).all_readings()
        except Exception:
            found.append(_failed(request, provider))
            continue
        if any(a.verb not in (Verb.READ, Verb.UNKNOWN) for a in readings):
            found.extend(a for a in readings if a.verb is not Verb.READ)
    return found


def _ambiguous(action: Action) -> Action:
    return action.model_copy(
        update={
            "confidence": Confidence.AMBIGUOUS if action.classified else action.confidence,
            "risk_tags": action.risk_tags
            if PROTOCOL in action.risk_tags
            else [*action.risk_tags, PROTOCOL],
        }
    )


def _with_readings(primary: Action, extra: list[Action]) -> Action:
    """``primary`` with ``extra`` added to its readings, all marked ambiguous."""
    readings = [_ambiguous(r) for r in (*primary.readings, *extra)]
    return _ambiguous(primary).model_copy(update={"readings": readings})


def _recognise_claimed(
    request: HttpRequest, claims: list[_Claim], index: AwsIndex | None
) -> Action:
    if not claims:
        generic = _generic(request)
        structural = _structural(request, index)
        if not structural:
            return generic
        first = structural[0].model_copy(update={"readings": []})
        return _with_readings(first, [*structural[1:], generic])
    action = _recognise(request, claims[0].provider, index)
    extra: list[Action] = []
    layered: list[Action] = []
    for claim in claims[1:]:
        found = _secondary(request, claim.provider, index)
        if (claims[0].provider, claim.provider) in _LAYERS:
            layered.extend(found)
        else:
            extra.extend(found)
    if extra:
        action = _with_readings(action, extra)
    if layered:
        action = action.model_copy(update={"readings": [*action.readings, *layered]})
    return action


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
        claims = _claims(request, settings)
        provider = claims[0].provider if claims else Provider.UNKNOWN
        action = _recognise_claimed(request, claims, aws_index)
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
