"""GitHub's destructive operations: every REST route of ``route_table()`` and every
mutation of GitHub's public GraphQL schema, kept when the recogniser calls them
destructive."""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from importlib.resources import files

from guardproxy.recognise.examples import NAME, example_request
from guardproxy.recognise.providers.github.recogniser import route_table
from guardproxy.recognise.registry import Example

__all__ = ["destructive", "graphql_mutations"]

_HOST = "api.github.com"
_VALUES = {"owner": "acme", "org": "acme", "enterprise": "acme", "repo": NAME}
_HEADERS = (("user-agent", "GitHub CLI 2.60.0"), ("authorization", "token x"))


def _value(parameter: str) -> str:
    if parameter in _VALUES:
        return _VALUES[parameter]
    if parameter == "ref":
        return f"heads/{NAME}"
    if parameter.endswith(("_id", "_number", "number", "id")):
        return "7"
    return NAME


def destructive() -> Iterator[Example]:
    """Every REST route (DELETE, POST, PUT, PATCH) and every GraphQL mutation."""
    for method, routes in route_table().items():
        if method in ("GET", "HEAD"):
            continue
        for route in routes:
            path = "/" + "/".join(
                _value(s[1:-1]) if s.startswith("{") else s for s in route.segments
            )
            request = example_request(method, _HOST, path, headers=_HEADERS)
            yield Example(f"github:{route.operation}", request, always=False)
    for mutation in graphql_mutations():
        query = f"mutation {{ {mutation}(input: {{}}) {{ clientMutationId }} }}"
        request = example_request("POST", _HOST, "/graphql", {"query": query}, _HEADERS)
        yield Example(f"github:graphql:{mutation}", request, always=False)


@cache
def graphql_mutations() -> tuple[str, ...]:
    """The mutation fields of GitHub's public GraphQL schema (shipped data file)."""
    text = files("guardproxy.recognise").joinpath("data/github_graphql_mutations.txt")
    lines = text.read_text("utf-8").splitlines()
    return tuple(s for s in (line.strip() for line in lines) if s and not s.startswith("#"))
