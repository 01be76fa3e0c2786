"""Which environment an action touches: site configuration first, names second.

Policies hold destroys in ``prod`` *and* ``unknown``, so getting this wrong in the
safe direction costs a human a click, while wrongly saying ``dev`` lets a production
destroy through. Hence: configured selectors win; the name heuristic only runs when no
selector applies and, when names disagree, picks the most production-like answer.

Selectors (keys of ``RecogniseSettings.environments``), most specific first:

* ``k8s:namespace:<name>`` (or ``k8s:namespace:<host:port>/<name>`` for one cluster)
* ``k8s:cluster:<host[:port]>``
* ``aws:account:<id>``, ``gcp:project:<id>``, ``azure:subscription:<id>``
* ``git:repo:<owner/repo>``
* ``host:<glob>`` on the destination host (or ``host:port``)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase

from guardproxy.action import Action, Environment, Provider

_TOKEN_SPLIT = re.compile(r"[-_./:\s]+")

_NAME_TOKENS: dict[str, Environment] = {
    "prod": Environment.PROD,
    "production": Environment.PROD,
    "prd": Environment.PROD,
    "staging": Environment.STAGING,
    "stage": Environment.STAGING,
    "stg": Environment.STAGING,
    "dev": Environment.DEV,
    "development": Environment.DEV,
    "test": Environment.DEV,
    "sandbox": Environment.DEV,
}

# When several names point different ways, the most dangerous reading wins.
_SEVERITY = {Environment.PROD: 3, Environment.STAGING: 2, Environment.DEV: 1}

# Providers whose resource names are infrastructure names. Git refs are not: a branch
# called ``test-fix`` says nothing about the environment its repository deploys to.
_NAMED_PROVIDERS = frozenset({Provider.AWS, Provider.K8S, Provider.GCP, Provider.AZURE})


def _parse(value: str) -> Environment:
    try:
        return Environment(value.strip().lower())
    except ValueError:
        return Environment.UNKNOWN


def environment_from_names(names: Iterable[str]) -> Environment:
    """The environment a set of names suggests, by whole tokens (``prod-calc`` -> prod)."""
    best = Environment.UNKNOWN
    for name in names:
        for token in _TOKEN_SPLIT.split(name.lower()):
            found = _NAME_TOKENS.get(token)
            if found is not None and _SEVERITY[found] > _SEVERITY.get(best, 0):
                best = found
    return best


def _configured(action: Action, environments: Mapping[str, str]) -> Environment | None:
    scope = action.scope
    candidates: list[str] = []
    if scope.namespace and action.provider is Provider.K8S:
        if scope.cluster:
            candidates.append(f"k8s:namespace:{scope.cluster}/{scope.namespace}")
        candidates.append(f"k8s:namespace:{scope.namespace}")
    if scope.cluster:
        candidates.append(f"k8s:cluster:{scope.cluster}")
        host = scope.cluster.rsplit(":", 1)[0] if ":" in scope.cluster else scope.cluster
        candidates.append(f"k8s:cluster:{host}")
    if scope.account:
        candidates.append(f"aws:account:{scope.account}")
    if scope.project:
        candidates.append(f"gcp:project:{scope.project}")
    if scope.subscription:
        candidates.append(f"azure:subscription:{scope.subscription}")
    if scope.repository:
        candidates.append(f"git:repo:{scope.repository}")
    for selector in candidates:
        if selector in environments:
            return _parse(environments[selector])
    return _by_host(action.request.host.lower(), action.request.port, environments)


def _by_host(host: str, port: int, environments: Mapping[str, str]) -> Environment | None:
    """The ``host:<glob>`` selector matching ``host`` (or ``host:port``) most specifically.

    Specificity is the number of literal characters in the glob, so ``host:db.prod.corp``
    beats ``host:*.corp`` whatever order the configuration lists them in.
    """
    if not host:
        return None
    targets = (host, f"{host}:{port}")
    best: tuple[int, str] | None = None
    for selector, value in environments.items():
        if not selector.startswith("host:"):
            continue
        pattern = selector[len("host:") :].lower()
        if any(fnmatchcase(target, pattern) for target in targets):
            literal = len(pattern) - sum(pattern.count(c) for c in "*?[]")
            if best is None or literal > best[0]:
                best = (literal, value)
    return _parse(best[1]) if best is not None else None


def resolve_environment(action: Action, environments: Mapping[str, str]) -> Environment:
    """The environment of ``action``: configuration, else the name heuristic, else unknown."""
    configured = _configured(action, environments)
    if configured is not None:
        return configured
    if action.provider not in _NAMED_PROVIDERS:
        return Environment.UNKNOWN
    names = [action.resource.name or action.resource.id, action.scope.namespace]
    return environment_from_names(n for n in names if n)
