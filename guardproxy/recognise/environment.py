"""Which environment an action touches: site configuration first, names second.

Policies hold destroys in ``prod`` *and* ``unknown``, so getting this wrong in the
safe direction costs a human a click, while wrongly saying ``dev`` lets a production
destroy through. Hence: configured selectors win; the name heuristic only runs when no
selector applies and, when names disagree, picks the most production-like answer.

Selectors (keys of ``RecogniseSettings.environments``), most specific first:

* ``k8s:namespace:<name>`` (or ``k8s:namespace:<host:port>/<name>`` for one cluster)
* ``k8s:cluster:<host[:port]>``
* ``aws:account:<id>``, ``gcp:project:<id>``, ``azure:subscription:<id>``
* ``github:<owner>/<repo>``, then ``github:<owner>`` (an organisation or account)
* ``git:<host>[:<port>]/<path>`` for a repository, or any leading part of its path
  (``git:github.com/acme`` for all of acme's), then ``git:<host>[:<port>]``
* ``git:repo:<owner/repo>`` (any host; GitHub API requests too)
* ``docker:<host>[:<port>]`` for a Docker daemon
* ``host:<glob>`` on the destination host (or ``host:port``)

Names read by the heuristic: the resource and namespace for AWS, Kubernetes, GCP and
Azure, and the container a resource lives in (a GCP project, an Azure resource group;
for an S3 object its bucket, never its key, which names a path inside it); the
repository and its owner for GitHub and git (``acme/prod-web`` -> prod); the
daemon's host name and the container, volume, network, service, secret or config for
Docker (``prod-data`` -> prod), not images (a tag names a build) nor the name a create
gives (the agent chose it). Git refs are never read: a branch called ``test-fix`` says
nothing about where its repository deploys.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase

from guardproxy.action import Action, Environment, Provider, Verb

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

# Tokens that are also top-level domains (.dev is a gTLD, .test reserved by RFC 2606):
# as the last label of a dotted name they are a domain, not an environment.
_TLD_TOKENS = frozenset({"dev", "test"})

# When several names point different ways, the most dangerous reading wins.
_SEVERITY = {Environment.PROD: 3, Environment.STAGING: 2, Environment.DEV: 1}

# Providers whose resource names are infrastructure names. Git refs are not: a branch
# called ``test-fix`` says nothing about the environment its repository deploys to, so
# for GitHub and git only the repository and its owner are read.
_NAMED_PROVIDERS = frozenset({Provider.AWS, Provider.K8S, Provider.GCP, Provider.AZURE})
_REPOSITORY_PROVIDERS = frozenset({Provider.GITHUB, Provider.GIT})
# Docker things a user names on the daemon; image and plugin names come from
# registries and tags (``app:test`` is a build, not an environment).
_DOCKER_NAMED_TYPES = frozenset(
    {"docker:container", "docker:volume", "docker:network", "docker:service", "docker:secret",
     "docker:config"}
)  # fmt: skip


def _parse(value: str) -> Environment:
    try:
        return Environment(value.strip().lower())
    except ValueError:
        return Environment.UNKNOWN


def environment_from_names(names: Iterable[str]) -> Environment:
    """The environment a set of names suggests, by whole tokens (``prod-calc`` -> prod)."""
    best = Environment.UNKNOWN
    for name in names:
        for token in _TOKEN_SPLIT.split(_without_tld(name.lower())):
            found = _NAME_TOKENS.get(token)
            if found is not None and _SEVERITY[found] > _SEVERITY.get(best, 0):
                best = found
    return best


def _without_tld(name: str) -> str:
    """``name`` without a last dotted label that is a top-level domain (see above)."""
    head, dot, last = name.rstrip(".").rpartition(".")
    if dot and head and last in _TLD_TOKENS:
        return head
    return name


def _path_prefixes(path: str) -> list[str]:
    """``a/b/c``, ``a/b``, ``a``: a repository path and its parents, longest first."""
    parts = [p for p in path.split("/") if p]
    return ["/".join(parts[:n]) for n in range(len(parts), 0, -1)]


def _repository_candidates(action: Action) -> list[str]:
    """``github:`` and ``git:`` selectors of a GitHub or git action, most specific first."""
    scope = action.scope
    candidates: list[str] = []
    if action.provider is Provider.GITHUB:
        if scope.repository:
            candidates.append(f"github:{scope.repository}")
        owners = [scope.repository.partition("/")[0] if scope.repository else "", scope.project]
        candidates += [f"github:{owner}" for owner in dict.fromkeys(o for o in owners if o)]
    elif action.provider is Provider.GIT:
        host = action.request.host.lower()
        hosts = [f"{host}:{action.request.port}", host] if action.request.port else [host]
        for prefix in _path_prefixes(scope.repository):
            candidates += [f"git:{h}/{prefix}" for h in hosts]
        candidates += [f"git:{h}" for h in hosts]
    return candidates


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
    if scope.project and action.provider is not Provider.GITHUB:
        candidates.append(f"gcp:project:{scope.project}")  # GitHub's project is its owner
    if scope.subscription:
        candidates.append(f"azure:subscription:{scope.subscription}")
    candidates += _repository_candidates(action)
    if scope.repository:
        candidates.append(f"git:repo:{scope.repository}")
    if action.provider is Provider.DOCKER:
        host = action.request.host.lower()
        candidates += [f"docker:{host}:{action.request.port}", f"docker:{host}"]
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
    if action.provider in _REPOSITORY_PROVIDERS:
        return environment_from_names(
            n for n in (action.scope.repository, action.scope.project) if n
        )
    if action.provider is Provider.DOCKER:
        # A create names the thing it makes: the agent chose that name, and it says
        # nothing about the daemon (a privileged container called test-x owns a prod host).
        named = action.resource.type in _DOCKER_NAMED_TYPES and action.verb is not Verb.CREATE
        daemon = action.request.host  # the daemon's own name: docker.prod.corp
        return environment_from_names([daemon, *([action.resource.name] if named else [])])
    if action.provider not in _NAMED_PROVIDERS:
        return Environment.UNKNOWN
    name = action.resource.name or action.resource.id
    if action.resource.type == "aws:s3:object":
        name = name.split("/", 1)[0]  # the bucket: a key names a path, not an environment
    names = [name, action.scope.namespace, action.scope.resource_group]
    if action.provider is Provider.GCP:
        names.append(action.scope.project)
    return environment_from_names(n for n in names if n)
