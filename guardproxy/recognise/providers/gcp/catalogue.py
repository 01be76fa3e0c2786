"""Google Cloud's destructive operations: every discovery method ``classify`` calls a
delete, destroy or permission change, one request each."""

from __future__ import annotations

from collections.abc import Iterator

from guardproxy.recognise.examples import DESTRUCTIVE_VERBS, NAME, example_request
from guardproxy.recognise.providers.gcp.index import RouteSpec, shared_index
from guardproxy.recognise.providers.gcp.recogniser import classify
from guardproxy.recognise.registry import Example

__all__ = ["destructive"]


def destructive() -> Iterator[Example]:
    """One request per discovery method id that ``classify`` calls destructive.

    A method id is served by several API versions and hosts; the first stable
    version's template (sorted) stands for it.
    """
    index = shared_index()
    chosen: dict[str, tuple[tuple[bool, str, str, str], str, RouteSpec]] = {}
    for host, specs in index.routes.items():
        for spec in specs:
            if not spec.method_id or spec.http_method in ("GET", "HEAD"):
                continue
            verb, _exact = classify(spec.api, spec.method_id, spec.collection, spec.http_method)
            if verb not in DESTRUCTIVE_VERBS:
                continue
            unstable = "alpha" in spec.version or "beta" in spec.version
            rank = (unstable, spec.version, host, spec.template)
            if spec.method_id not in chosen or rank < chosen[spec.method_id][0]:
                chosen[spec.method_id] = (rank, host, spec)
    for method_id, (_rank, host, spec) in sorted(chosen.items()):
        request = example_request(spec.http_method, host, _fill_template(spec.template))
        yield Example(f"gcp:{spec.api}:{method_id}", request)


def _fill_template(template: str) -> str:
    """A discovery template with every ``{x}`` / ``{+x}`` replaced by a plain name."""
    out: list[str] = []
    rest = template
    while "{" in rest:
        before, _, after = rest.partition("{")
        _name, _, rest = after.partition("}")
        out += [before, NAME]
    out.append(rest)
    return "".join(out)
