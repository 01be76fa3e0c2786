"""GitHub: the provider module (see ``recognise/registry.py``).

Claims: api.github.com (and uploads), GHE.com data-residency APIs, or a GitHub
Enterprise Server ``/api/v3``, ``/api/uploads`` or ``/api/graphql`` path on any host.
The recogniser (``recogniser.py``) reads REST by GitHub's own route table and GraphQL
with graphql-core (``graphql_http.py``).

Selectors: ``github:<owner>/<repo>``, ``github:<owner>``, then ``git:repo:<owner/repo>``;
names: the repository and its owner.
"""

from __future__ import annotations

from guardproxy.action import Action, Provider
from guardproxy.recognise.providers.github import catalogue
from guardproxy.recognise.providers.github.recogniser import (
    looks_like_github,
    recognise_github,
    route_table,
)
from guardproxy.recognise.registry import (
    Claim,
    NativeError,
    ProviderModule,
    Selectors,
    Spelling,
    json_error,
)
from guardproxy.recognise.request import HttpRequest, RecogniseSettings

__all__ = ["PROVIDER"]


def _claims(request: HttpRequest, settings: RecogniseSettings) -> bool:
    return looks_like_github(request)


def _reason(request: HttpRequest) -> str:
    return "it is a GitHub REST or GraphQL API request"


def _error(request: HttpRequest, action: Action, message: str, reference: str) -> NativeError:
    body = {"message": message, "documentation_url": "", "status": "403"}
    return json_error("application/json; charset=utf-8", body)


def _selectors(action: Action, spell: Spelling) -> list[str]:
    """The repository, then its owner (an organisation or account; the scope's project
    is the owner too), then the repository on any host."""
    repository = action.scope.repository
    found = [f"github:{repository}"] if repository else []
    owners = [repository.partition("/")[0] if repository else "", action.scope.project]
    found += [f"github:{owner}" for owner in dict.fromkeys(o for o in owners if o)]
    return [*found, f"git:repo:{repository}"] if repository else found


def _names(action: Action) -> list[str]:
    return [n for n in (action.scope.repository, action.scope.project) if n]


def _warm_up() -> None:
    route_table()


PROVIDER = ProviderModule(
    provider=Provider.GITHUB,
    recognise=recognise_github,
    claims=(Claim(70, "github", _claims, _reason),),
    error=_error,
    selectors=Selectors(_selectors, names=_names),
    destructive=catalogue.destructive,
    warm_up=_warm_up,
)
