"""Every destructive operation the recognisers know, as the actions they produce.

The shipped bundle promises to hold every delete, destroy and permission change in a
production or unknown environment (unless an allowlist entry says why not). This
catalogue is what that promise is measured against (``guardproxy.audit.coverage``,
``guardproxy policy test --coverage``, ``tests/test_bundle_coverage.py``).

Each provider module lists its own destructive operations (``ProviderModule.destructive``
in the registry): AWS every operation of botocore's models its verb classifier calls
destructive, as the action the recogniser builds for it (the AWS sweep test proves the
recogniser maps each operation's request back to it); every other provider a real
request per destructive operation, run here through the real ``recognise()``, so the
catalogue holds what the recognisers actually produce (Kubernetes' built-in
resources, GitHub's REST routes and GraphQL mutations, GCP's discovery methods, ARM
types, Terraform Cloud and Docker routes, SQL statements through each carrier). Lists
written rather than read from a model follow the providers' API references, cited
beside each list.

An entry whose request the recogniser does not class as destructive stays in the
catalogue (with the action as recognised) when the provider's reference says it
destroys: the coverage then counts it as allowed, which is what the bundle does with
it. A candidate (every route, every mutation) is kept only when it is destructive.

The environment is made ``prod`` with a ``host:*`` selector (every request-built entry)
or set on the action (a model-built one); ``unknown`` uses names that carry no
environment token. Recognise layer only: nothing here knows about policies.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace

from guardproxy.action import Action, Environment, Provider
from guardproxy.recognise.dispatcher import recognise
from guardproxy.recognise.examples import DESTRUCTIVE_VERBS
from guardproxy.recognise.providers import PROVIDERS
from guardproxy.recognise.registry import Example
from guardproxy.recognise.request import RecogniseSettings

__all__ = [
    "DESTRUCTIVE_VERBS",
    "Destructive",
    "catalogue",
    "catalogued_providers",
    "operation_key",
]


@dataclass(frozen=True, slots=True)
class Destructive:
    """One destructive operation and the action the recogniser made of it."""

    provider: Provider
    label: str
    """Unique within the catalogue: the operation key, with what sets variants apart."""
    action: Action

    @property
    def key(self) -> str:
        """What an allowlist entry names (see ``operation_key``)."""
        return operation_key(self.action)


def operation_key(action: Action) -> str:
    """``provider:service:operation`` (``aws:sqs:DeleteMessage``); for Kubernetes, whose
    operation is the RBAC verb, ``<resource type>:<verb>`` (``k8s:core:events:delete``).

    ``policies/common.yaml`` computes the same key in CEL (variable ``operationKey``)
    to look it up in its allowlist of low-risk deletes.
    """
    if action.provider is Provider.K8S:
        return f"{action.resource.type}:{action.operation}"
    return f"{action.provider}:{action.service}:{action.operation}"


def catalogued_providers() -> tuple[Provider, ...]:
    """The providers the catalogue covers, in the order reports list them (the
    registry's)."""
    return tuple(m.provider for m in PROVIDERS if m.destructive is not None)


def catalogue(
    environment: Environment, providers: Collection[Provider] | None = None
) -> list[Destructive]:
    """Every destructive operation of ``providers`` (default: every catalogued one) as
    recognised in ``environment``, ordered by provider then label."""
    selectors = {} if environment is Environment.UNKNOWN else {"host:*": str(environment)}
    entries: list[Destructive] = []
    for module in PROVIDERS:
        if module.destructive is None or (
            providers is not None and module.provider not in providers
        ):
            continue
        found: dict[str, Destructive] = {}
        for example in module.destructive():
            action = _action(example, environment, selectors)
            if action is None or (not example.always and not _destructive(action)):
                continue
            found.setdefault(example.label, Destructive(module.provider, example.label, action))
        entries += sorted(found.values(), key=lambda e: e.label)
    return entries


def _action(example: Example, environment: Environment, selectors: dict[str, str]) -> Action | None:
    if example.action is not None:
        return example.action.model_copy(update={"environment": environment})
    if example.request is None:
        return None
    settings = replace(example.settings or RecogniseSettings(), environments=selectors)
    return recognise(example.request, settings)


def _destructive(action: Action) -> bool:
    return any(r.verb in DESTRUCTIVE_VERBS for r in action.all_readings())
