"""Azure Resource Manager: the provider module (see ``recognise/registry.py``).

Claims ARM hosts (public and sovereign clouds). The recogniser (``recogniser.py``)
derives the RBAC operation from the method and the path, read by ``arm.py``; ``body.py``
reads what a write's body says its method does not; ``catalogue.py`` lists the
destructive examples. Refusals are ARM's ``AuthorizationFailed``; selectors
``azure:subscription:<id>``, names the resource and its resource group; containers:
resource groups.
"""

from __future__ import annotations

from guardproxy.action import Action, Provider
from guardproxy.recognise.providers.azure.arm import looks_like_azure, parse_path
from guardproxy.recognise.providers.azure.catalogue import destructive
from guardproxy.recognise.providers.azure.recogniser import recognise_azure
from guardproxy.recognise.registry import (
    Claim,
    Containers,
    NativeError,
    ProviderModule,
    Selectors,
    Spelling,
    json_error,
)
from guardproxy.recognise.request import HttpRequest, RecogniseSettings

__all__ = ["PROVIDER", "looks_like_azure", "parse_path", "recognise_azure"]


def _claims(request: HttpRequest, settings: RecogniseSettings) -> bool:
    return looks_like_azure(request)


def _reason(request: HttpRequest) -> str:
    return f"{request.host} is Azure Resource Manager"


def _error(request: HttpRequest, action: Action, message: str, reference: str) -> NativeError:
    error = {"code": "AuthorizationFailed", "message": message}
    return json_error("application/json; charset=utf-8", {"error": error})


def _selectors(action: Action, spell: Spelling) -> list[str]:
    subscription = action.scope.subscription
    return [f"azure:subscription:{subscription}"] if subscription else []


def _names(action: Action) -> list[str]:
    # the resource group a resource lives in is read like a Kubernetes namespace
    return [
        action.resource.name or action.resource.id,
        action.scope.namespace,
        action.scope.resource_group,
    ]


def _resource_group(subscription: str, name: str) -> str:
    return f"azure:{subscription.lower()}:resourcegroup/{name.lower()}"


def _destroyed(action: Action) -> str:
    if action.resource.type.lower().endswith("/resourcegroups"):
        return _resource_group(action.scope.subscription, action.resource.name)
    return ""


def _enclosing(action: Action) -> list[str]:
    scope = action.scope
    if scope.resource_group and not action.resource.type.lower().endswith("/resourcegroups"):
        return [_resource_group(scope.subscription, scope.resource_group)]
    return []


PROVIDER = ProviderModule(
    provider=Provider.AZURE,
    recognise=recognise_azure,
    claims=(Claim(60, "azure", _claims, _reason),),
    error=_error,
    selectors=Selectors(_selectors, names=_names),
    containers=Containers(destroyed=_destroyed, enclosing=_enclosing),
    destructive=destructive,
)
