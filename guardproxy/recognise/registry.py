"""The provider registry: everything guardproxy knows about a provider, declared once.

Each provider is one module under ``guardproxy/recognise/providers/`` (a subpackage
when its parsers need several) that declares a :class:`ProviderModule`: how it claims
a request and how sure that is (:class:`Claim`), the recogniser that turns the request
into an :class:`~guardproxy.action.Action`, the grammar tried on a request nothing
claims (:class:`Fallback`), the error body its clients print (:class:`NativeError`),
its environment selectors (:class:`Selectors`), the environment-level containers
session history tracks (:class:`Containers`), the ids its responses name
(:class:`ResponseNames`) and its destructive operations (:class:`Example`).
``providers/__init__.py`` registers them; every other layer reads the registry and
knows no provider by name:

* dispatch (``recognise/dispatcher.py``) asks every claim, most certain first;
* the gate (``gate/responses.py``) answers a refusal with the provider's error body;
* environment resolution (``recognise/environment.py``) reads its selectors;
* session history (``session/history.py``) its containers, the name cache
  (``session/names.py``) its response names;
* the destructive catalogue (``recognise/catalogue.py``) its examples.

A provider module imports only what lies below the registry (the action, the request,
``recognise.common``, ``guardproxy.hosts``): the layers above call the functions it
declares, it never calls them.

The one thing outside the module is the provider's name in
:class:`~guardproxy.action.Provider`, the vocabulary of actions and policies (the
context's per-provider counts follow it); ``tests/recognise/test_registry.py`` checks
that every name has exactly one module.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from guardproxy.action import Action, Provider, Scope
from guardproxy.recognise.request import HttpRequest, RecogniseSettings

__all__ = [
    "REFUSED",
    "Claim",
    "Containers",
    "Example",
    "Fallback",
    "HostKey",
    "NativeError",
    "ProviderModule",
    "Registry",
    "ResponseNames",
    "Selectors",
    "Spelling",
    "json_error",
]

REFUSED = 403
"""The status of a denial or a pending hold: never 5xx, 429 or a throttling code (SDKs
retry those, and a retried destroy is the last thing we want)."""


@dataclass(frozen=True, slots=True)
class Claim:
    """One way a provider claims a request, by its real destination and shape."""

    priority: int
    """Lower is more certain. Dispatch asks every provider's claims in this order (two
    claims may not share a priority); the most certain claimant's recogniser builds
    the action, every other claimant's more-than-read reading is decided beside it."""
    name: str
    """What the claim tests, for tests and diagnostics: ``sigv4``, ``kube-host``."""
    test: Callable[[HttpRequest, RecogniseSettings], bool]
    reason: Callable[[HttpRequest], str]
    """Why it claims a request, as ``guardproxy recognise --explain`` says it:
    ``it is SigV4-signed for s3 in us-east-1``."""


@dataclass(frozen=True, slots=True)
class Fallback:
    """A structural grammar tried on a request nothing claims (an emulator or a
    ``kubectl proxy`` on loopback, without credentials or a known host): one that reads
    it as more than a read makes it that action."""

    priority: int
    """Lower first: the first grammar's action is the primary one."""
    applies: Callable[[HttpRequest], bool]
    """Whether the request is in the grammar's domain (the recogniser is then asked)."""


@dataclass(frozen=True, slots=True)
class NativeError:
    """A refusal in the client's own error format, so its CLI or SDK prints our message."""

    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    status: int = REFUSED


def json_error(content_type: str, value: object, *headers: tuple[str, str]) -> NativeError:
    """A compact JSON error body."""
    body = json.dumps(value, separators=(",", ":")).encode()
    return NativeError(content_type, body, tuple(headers))


ErrorBody = Callable[[HttpRequest, Action, str, str], NativeError]
"""``(request, action, message, reference)`` -> the provider's refusal."""

InBandRefusal = Callable[[HttpRequest, str, str, str], NativeError | None]
"""``(request, message, decision, reference)`` -> a refusal a protocol carries inside a
successful response (a git push report rejecting every ref), whatever the action's
provider; None when the request is not one it answers."""


@dataclass(frozen=True, slots=True)
class HostKey:
    """A form of environment selector that names a host: ``<prefix><host>[:<port>]``,
    then ``/<path>`` (optional, or required with ``path_required``). Configured keys of
    these forms are matched by every spelling of their host (``docker:LOCALHOST.``
    names the daemon on ``127.0.0.1``)."""

    prefix: str
    path_required: bool = False
    excluding: tuple[str, ...] = ()
    """Longer prefixes that are another form, without a host: ``git:repo:``."""


Spelling = Callable[[str], str]
"""A host -> the spelling environment resolution is trying: as written (lower-cased),
then canonical (``guardproxy.hosts.canonical_host``)."""


@dataclass(frozen=True, slots=True)
class Selectors:
    """A provider's environment selectors and name heuristic (``recognise/environment.py``)."""

    candidates: Callable[[Action, Spelling], list[str]]
    """The selectors that name what ``action`` touches, most specific first, every host
    in them passed through the spelling being tried. ``host:<glob>`` is tried after
    these for every provider."""
    host_keys: tuple[HostKey, ...] = ()
    names: Callable[[Action], list[str]] | None = None
    """The names the heuristic reads when no selector applies (``prod-calc`` -> prod);
    None: the environment is unknown."""


def _no_container(action: Action) -> str:
    return ""


def _no_containers(action: Action) -> list[str]:
    return []


@dataclass(frozen=True, slots=True)
class Containers:
    """Environment-level containers (a stack, a namespace, a resource group, a project,
    a workspace), for session history's rebuild signal."""

    destroyed: Callable[[Action], str] = _no_container
    """The container a delete or destroy ``action`` removes, or ''."""
    enclosing: Callable[[Action], list[str]] = _no_containers
    """The containers ``action`` happens inside."""


@dataclass(frozen=True, slots=True)
class ResponseNames:
    """Server ids of one resource type that responses name (``session/names.py``): an
    ``i-0abc…`` a terminate carries only, named ``web-1`` by the ``RunInstances`` or
    ``DescribeInstances`` response the proxy already passed on."""

    resource_type: str
    """The action's ``resource.type`` whose ids these are: ``aws:ec2:instance``."""
    id_prefix: str
    operations: frozenset[tuple[str, str]]
    """``(service, operation)`` whose successful responses list the ids."""
    parse: Callable[[bytes], list[tuple[str, dict[str, str]]]]
    """A response body -> ``[(id, tags)]``; nothing for a body it cannot read."""
    id_key: Callable[[Scope, str], str]
    """Where a learned id is kept, in the scope of the action that names it."""
    name_key: Callable[[Scope, str], str]
    """The resource key of a resource by its learned name (so a terminate and a later
    run of ``web-1`` compare equal)."""


@dataclass(frozen=True, slots=True)
class Example:
    """One destructive operation of a provider's API, for the destructive catalogue."""

    label: str
    """Unique within the provider: the operation key, with what sets variants apart."""
    request: HttpRequest | None = None
    """A real request, recognised by ``recognise()`` as the catalogue entry."""
    action: Action | None = None
    """Or the action itself, built from the provider's model (AWS: every operation of
    botocore's models), its environment set by the catalogue."""
    always: bool = True
    """The provider's API reference says it destroys; False: a candidate (every route,
    every mutation), kept only when the recogniser calls it destructive."""
    settings: RecogniseSettings | None = None
    """Settings the request is recognised under (a configured API server), the
    catalogue's environment selector added."""


@dataclass(frozen=True, slots=True)
class ProviderModule:
    """What guardproxy knows about one provider (see the module docstring)."""

    provider: Provider
    recognise: Callable[[HttpRequest], Action]
    """The request -> its action; may raise (dispatch fails closed)."""
    claims: tuple[Claim, ...] = ()
    fallback: Fallback | None = None
    layers_over: frozenset[Provider] = frozenset()
    """Other claimants whose readings of a request this one claims are further
    operations of it, not another protocol (SQL over BigQuery's Google Cloud API)."""
    error: ErrorBody | None = None
    """None: guardproxy's own JSON error."""
    in_band_refusal: InBandRefusal | None = None
    selectors: Selectors | None = None
    containers: Containers = field(default_factory=Containers)
    names: tuple[ResponseNames, ...] = ()
    destructive: Callable[[], Iterable[Example]] | None = None
    """Its destructive operations; None: it has none to catalogue (git pushes are judged
    per ref update by the GitHub set's branch rules, not by verb)."""
    warm_up: Callable[[], None] | None = None
    """Load what the first request would otherwise pay for (a model index)."""


@dataclass(frozen=True, slots=True)
class _Snapshot:
    modules: tuple[ProviderModule, ...]
    by_provider: dict[Provider, ProviderModule]
    claims: tuple[tuple[Claim, ProviderModule], ...]
    fallbacks: tuple[tuple[Fallback, ProviderModule], ...]
    host_keys: tuple[HostKey, ...]


def _snapshot(modules: tuple[ProviderModule, ...]) -> _Snapshot:
    by_provider: dict[Provider, ProviderModule] = {}
    for module in modules:
        if module.provider is Provider.UNKNOWN:
            raise ValueError("a provider module cannot be the unknown provider")
        if module.provider in by_provider:
            raise ValueError(f"provider {module.provider} is registered twice")
        by_provider[module.provider] = module
    claims = sorted(
        ((claim, module) for module in modules for claim in module.claims),
        key=lambda pair: pair[0].priority,
    )
    fallbacks = sorted(
        ((module.fallback, module) for module in modules if module.fallback is not None),
        key=lambda pair: pair[0].priority,
    )
    for ranked, what in ((claims, "claims"), (fallbacks, "fallbacks")):
        priorities = [item.priority for item, _ in ranked]
        if len(set(priorities)) != len(priorities):
            raise ValueError(f"two {what} share a priority: order them")
    host_keys = tuple(
        key
        for module in modules
        if module.selectors is not None
        for key in module.selectors.host_keys
    )
    return _Snapshot(modules, by_provider, tuple(claims), tuple(fallbacks), host_keys)


class Registry:
    """The registered provider modules, in registration order (the order reports list
    them in). Reads see one consistent set; :meth:`registered` changes it for a test."""

    def __init__(self, modules: Iterable[ProviderModule]) -> None:
        self._state = _snapshot(tuple(modules))
        self._lock = threading.Lock()
        self._version = 0

    def __iter__(self) -> Iterator[ProviderModule]:
        return iter(self._state.modules)

    def __len__(self) -> int:
        return len(self._state.modules)

    def get(self, provider: Provider) -> ProviderModule | None:
        return self._state.by_provider.get(provider)

    @property
    def claims(self) -> tuple[tuple[Claim, ProviderModule], ...]:
        """Every claim with its module, most certain first."""
        return self._state.claims

    @property
    def fallbacks(self) -> tuple[tuple[Fallback, ProviderModule], ...]:
        return self._state.fallbacks

    @property
    def version(self) -> int:
        """Changes whenever the registered modules do (for caches of what they declare)."""
        return self._version

    @property
    def host_keys(self) -> tuple[HostKey, ...]:
        """Every selector form that names a host, of every provider."""
        return self._state.host_keys

    @contextmanager
    def registered(self, *modules: ProviderModule) -> Iterator[None]:
        """``modules`` registered for the duration (each replacing the module of its
        provider, if any): how a test shows that a provider is its module alone."""
        with self._lock:
            before = self._state
            replaced = {module.provider for module in modules}
            kept = tuple(m for m in before.modules if m.provider not in replaced)
            self._state = _snapshot(kept + modules)
            self._version += 1
        try:
            yield
        finally:
            with self._lock:
                self._state = before
                self._version += 1
