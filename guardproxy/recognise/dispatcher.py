"""Recognise: turn one intercepted HTTP request into the normalised :class:`Action`.

``recognise(request, settings)`` finds every provider that claims the request by its
real destination and shape (the claims of the provider registry, ``registry.py``),
builds the action from the most certain one, then resolves the environment. It never
raises: whatever goes wrong inside the most certain recogniser yields an Action with
``verb=unknown`` and ``confidence=unknown`` (which the policy bundle never allows by
default), with the provider as far as dispatch knew it and the actor and request
summary filled in.

Claims are asked most certain first (their priorities; ``guardproxy recognise
--explain`` names the one that decided): a configured Kubernetes API server, a SigV4
``Authorization`` header, a git smart-HTTP path, SQL carriers, Google Cloud, Azure
Resource Manager and GitHub by host, a Kubernetes-shaped request, a presigned SigV4
query, an AWS endpoint host, Terraform Cloud's JSON:API, the Docker Engine API (the
weakest guess). Each provider counts once, at its most certain claim.

A request more than one recogniser parses is ambiguous: the server that receives it
runs one protocol, and the proxy cannot tell which. Every other claimant that
classifies it as more than a read adds its action as a reading (``ambiguous:protocol``),
so the policy engine decides that reading too and the strictest outcome applies; a
claimant that reads it as a read or cannot classify it adds nothing (else every
request two recognisers look at would be denied). A claimant the primary one declares
it layers over (SQL over BigQuery's Google Cloud API) adds its readings as further
operations of the request, not as an ambiguity.

A request nothing claims is generic: GET/HEAD/OPTIONS read (heuristic), anything else
unknown. Before settling for that, the providers' fallback grammars (the Kubernetes API
path grammar, the Docker Engine API grammar, an AWS ``X-Amz-Target`` or ``Action=``
call) are tried: one that parses it as more than a read makes it that action, with the
generic reading kept beside it, so a ``kubectl proxy`` on loopback (no token, no
kubectl user agent) is never an unclassified "local development" request.
"""

from __future__ import annotations

from guardproxy.action import Action, Confidence, Provider, Verb
from guardproxy.recognise.common import actor_of, summary_of
from guardproxy.recognise.environment import resolve_environment
from guardproxy.recognise.providers import PROVIDERS
from guardproxy.recognise.registry import Claim, ProviderModule
from guardproxy.recognise.request import HttpRequest, RecogniseSettings

__all__ = ["PROTOCOL", "dispatch", "dispatch_reason", "recognise", "warm_up"]

PROTOCOL = "ambiguous:protocol"
"""Risk tag of an action (and its readings) that more than one recogniser parses."""

_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

_Claimant = tuple[Claim, ProviderModule]


def _claims(request: HttpRequest, settings: RecogniseSettings) -> list[_Claimant]:
    """Every provider that claims ``request``, most certain first, each at its most
    certain claim."""
    found: list[_Claimant] = []
    claimed: list[Provider] = []
    for claim, module in PROVIDERS.claims:
        if module.provider not in claimed and claim.test(request, settings):
            found.append((claim, module))
            claimed.append(module.provider)
    return found


def dispatch(request: HttpRequest, settings: RecogniseSettings) -> Provider:
    """Which provider's recogniser owns ``request`` (the most certain claimant)."""
    claims = _claims(request, settings)
    return claims[0][1].provider if claims else Provider.UNKNOWN


def dispatch_reason(request: HttpRequest, settings: RecogniseSettings) -> tuple[Provider, str]:
    """The provider of the action ``recognise`` builds and why, for ``guardproxy
    recognise --explain``: the most certain claimant, the other claimants whose
    readings are decided with it (and those that add none), or the fallback grammar
    that classified an unclaimed request."""
    claims = _claims(request, settings)
    if not claims:
        structural = _structural(request)
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
    claim, module = claims[0]
    reason = claim.reason(request)
    for other, other_module in claims[1:]:
        extra = _secondary(request, other_module)
        if extra:
            what = ", ".join(f"{a.operation or a.verb} ({a.verb})" for a in extra)
            reason += (
                f"; also parsed as {other_module.provider} because {other.reason(request)}: "
                f"{what} decided as a reading"
            )
        else:
            reason += (
                f"; also parsed as {other_module.provider} because {other.reason(request)}, "
                "which reads it "
                "as a read or cannot classify it (no reading added)"
            )
    return module.provider, reason


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


def _failed(request: HttpRequest, provider: Provider) -> Action:
    """Fail closed: the provider as far as known, nothing classified."""
    try:
        actor = actor_of(request)
        summary = summary_of(request)
    except Exception:
        return Action(provider=provider)
    return Action(provider=provider, actor=actor, request=summary)


def _secondary(request: HttpRequest, module: ProviderModule) -> list[Action]:
    """The readings another claimant adds: all of its readings but the reads when it
    classifies the request as more than a read, nothing when it reads it as a read or
    cannot classify it. A claimant that fails on the request adds an unknown reading:
    it claimed the request and cannot say what it does."""
    try:
        found = module.recognise(request).all_readings()
    except Exception:
        return [_failed(request, module.provider)]
    if not any(a.verb not in (Verb.READ, Verb.UNKNOWN) for a in found):
        return []
    return [a for a in found if a.verb is not Verb.READ]


def _structural(request: HttpRequest) -> list[Action]:
    """Actions the fallback grammars read an unclaimed request as, when more than a
    read. A grammar that fails on a request in its domain gives an unknown action:
    never a silent allow."""
    found: list[Action] = []
    for fallback, module in PROVIDERS.fallbacks:
        if not fallback.applies(request):
            continue
        try:
            readings = module.recognise(request).all_readings()
        except Exception:
            found.append(_failed(request, module.provider))
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


def _recognise_claimed(request: HttpRequest, claims: list[_Claimant]) -> Action:
    if not claims:
        generic = _generic(request)
        structural = _structural(request)
        if not structural:
            return generic
        first = structural[0].model_copy(update={"readings": []})
        return _with_readings(first, [*structural[1:], generic])
    primary = claims[0][1]
    action = primary.recognise(request)
    extra: list[Action] = []
    layered: list[Action] = []
    for _, module in claims[1:]:
        found = _secondary(request, module)
        if module.provider in primary.layers_over:
            layered.extend(found)
        else:
            extra.extend(found)
    if extra:
        action = _with_readings(action, extra)
    if layered:
        action = action.model_copy(update={"readings": [*action.readings, *layered]})
    return action


def warm_up() -> None:
    """Load the providers' model indexes now (a proxy calls this at start-up).

    Otherwise the first request pays for them: milliseconds from the cache, a few
    seconds when a cache has to be built for a new botocore version.
    """
    for module in PROVIDERS:
        if module.warm_up is not None:
            module.warm_up()


def recognise(request: HttpRequest, settings: RecogniseSettings) -> Action:
    """The Action ``request`` performs. Never raises."""
    provider = Provider.UNKNOWN
    try:
        claims = _claims(request, settings)
        provider = claims[0][1].provider if claims else Provider.UNKNOWN
        action = _recognise_claimed(request, claims)
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
