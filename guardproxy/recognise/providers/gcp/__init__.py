"""Google Cloud: the provider module (see ``recognise/registry.py``).

Claims: a Google API host (``*.googleapis.com``). The recogniser (``recogniser.py``)
finds the discovery method (``index.py``) from the host, method and path.

Selectors: ``gcp:project:<id>``; names: the resource. Containers: projects.
"""

from __future__ import annotations

from guardproxy.action import Action, Provider
from guardproxy.recognise.providers.gcp import catalogue
from guardproxy.recognise.providers.gcp.index import shared_index
from guardproxy.recognise.providers.gcp.recogniser import looks_like_gcp, recognise_gcp
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

__all__ = ["PROVIDER"]

_PROJECTS = "gcp:cloudresourcemanager:projects"


def _claims(request: HttpRequest, settings: RecogniseSettings) -> bool:
    return looks_like_gcp(request)


def _reason(request: HttpRequest) -> str:
    return f"{request.host} is a Google Cloud API host"


def _recognise(request: HttpRequest) -> Action:
    return recognise_gcp(request)


def _error(request: HttpRequest, action: Action, message: str, reference: str) -> NativeError:
    error = {"code": 403, "message": message, "status": "PERMISSION_DENIED"}
    return json_error("application/json; charset=UTF-8", {"error": error})


def _selectors(action: Action, spell: Spelling) -> list[str]:
    return [f"gcp:project:{action.scope.project}"] if action.scope.project else []


def _names(action: Action) -> list[str]:
    # the project a resource lives in is read like a Kubernetes namespace
    return [
        action.resource.name or action.resource.id,
        action.scope.namespace,
        action.scope.project,
    ]


def _destroyed(action: Action) -> str:
    if action.resource.type.lower() == _PROJECTS:
        return f"gcp:project/{action.resource.name}"
    return ""


def _enclosing(action: Action) -> list[str]:
    project = action.scope.project
    if project and "projects" not in action.resource.type.lower():
        return [f"gcp:project/{project}"]
    return []


def _warm_up() -> None:
    shared_index()


PROVIDER = ProviderModule(
    provider=Provider.GCP,
    recognise=_recognise,
    claims=(Claim(50, "gcp", _claims, _reason),),
    error=_error,
    selectors=Selectors(_selectors, names=_names),
    containers=Containers(destroyed=_destroyed, enclosing=_enclosing),
    destructive=catalogue.destructive,
    warm_up=_warm_up,
)
