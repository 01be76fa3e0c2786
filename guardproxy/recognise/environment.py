"""Which environment an action touches: site configuration first, names second.

Policies hold destroys in ``prod`` *and* ``unknown``, so getting this wrong in the
safe direction costs a human a click, while wrongly saying ``dev`` lets a production
destroy through. Hence: configured selectors win; the name heuristic only runs when no
selector applies and, when names disagree, picks the most production-like answer.

Selectors (keys of ``RecogniseSettings.environments``) are declared by each provider
module (``Selectors`` in the registry: ``k8s:namespace:``, ``aws:account:``,
``github:``, ``git:``, ``docker:``...; the README lists them), most specific first; the
first one configured decides. After them, for every action, ``host:<glob>`` on the
destination host (or ``host:port``), the most specific glob winning.

Hosts are matched by every spelling (``guardproxy/hosts.py``): a selector naming
``127.0.0.1``, ``K8S.corp.`` or ``10.0.0.5`` names the same server as ``localhost``,
``k8s.corp`` or ``0x0a.0.0.5``. It never makes an answer weaker: the selectors are
looked up once with the host as written (lower-cased, as always) and once with its
canonical form against the configuration's keys in canonical form, and the stricter
answer applies (prod, then unknown, staging, dev). Two configured keys that name the
same host in different spellings count as one, with the stricter value.

The names the heuristic reads are the provider's (``Selectors.names``); a provider
without names (or no provider) is ``unknown``.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

from guardproxy.action import Action, Environment
from guardproxy.hosts import HostPattern, canonical_host, host_port, split_host_port
from guardproxy.recognise.naming import environment_from_names, parse_environment, strictest
from guardproxy.recognise.providers import PROVIDERS
from guardproxy.recognise.registry import HostKey, Selectors

__all__ = ["canonical_selector", "resolve_environment"]

_HOST = "host:"


def canonical_selector(key: str, host_keys: tuple[HostKey, ...]) -> str:
    """``key`` with the host of a host-naming selector form in canonical form
    (``docker:LOCALHOST.:2375`` -> ``docker:localhost:2375``); other keys unchanged."""
    for form in host_keys:
        if not key.startswith(form.prefix) or (form.excluding and key.startswith(form.excluding)):
            continue
        hostport, slash, tail = key[len(form.prefix) :].partition("/")
        if form.path_required and not slash:
            continue
        host, port = split_host_port(hostport)
        if not host:
            continue
        canonical = canonical_host(host)
        where = host_port(canonical, port) if port is not None else canonical
        return f"{form.prefix}{where}{slash}{tail}"
    return key


@dataclass(frozen=True, slots=True)
class _Table:
    """The configured selectors, parsed once per configuration."""

    written: tuple[tuple[re.Pattern[str], int, Environment], ...]
    """The ``host:`` globs as written (lower-cased, compiled), with their literal length."""
    keys: dict[str, Environment]
    """Every other key, host-naming ones canonical; keys that meet keep the stricter value."""
    patterns: tuple[tuple[HostPattern, Environment], ...]
    """The ``host:`` selectors, matched by every spelling."""
    plain: bool
    """Every key and pattern is written in canonical form (none changed, none met): a host
    written canonically then finds what the canonical lookup would."""


@lru_cache(maxsize=32)
def _table(items: tuple[tuple[str, str], ...], registry: int) -> _Table:
    written: list[tuple[re.Pattern[str], int, Environment]] = []
    keys: dict[str, Environment] = {}
    patterns: list[tuple[HostPattern, Environment]] = []
    host_keys = PROVIDERS.host_keys
    plain = True
    for key, value in items:
        environment = parse_environment(value)
        if key.startswith(_HOST):
            text = key[len(_HOST) :].lower()
            literal = len(text) - sum(text.count(c) for c in "*?[]")
            written.append((re.compile(fnmatch.translate(text)), literal, environment))
            pattern = HostPattern.of(text)
            patterns.append((pattern, environment))
            plain = plain and pattern.canonical and pattern.text == text
            continue
        canonical = canonical_selector(key, host_keys)
        known = keys.get(canonical)
        plain = plain and canonical == key and known is None
        keys[canonical] = environment if known is None else strictest((known, environment))
    return _Table(tuple(written), keys, tuple(patterns), plain)


def _by_written_host(host: str, port: int, table: _Table) -> Environment | None:
    """The ``host:<glob>`` selector matching ``host`` (or ``host:port``) as written, most
    specifically (the number of literal characters in the glob, so ``host:db.prod.corp``
    beats ``host:*.corp`` whatever order the configuration lists them in); of equally
    specific ones, the strictest."""
    if not host or not table.written:
        return None
    targets = (host, f"{host}:{port}")
    best: tuple[int, Environment] | None = None
    for glob, literal, environment in table.written:
        if glob.match(targets[0]) or glob.match(targets[1]):
            best = _better(best, literal, environment)
    return best[1] if best is not None else None


def _by_any_spelling(host: str, port: int, table: _Table) -> Environment | None:
    """The ``host:`` selector naming ``host`` by any spelling, most specifically."""
    if not host:
        return None
    best: tuple[int, Environment] | None = None
    for pattern, environment in table.patterns:
        if pattern.matches(host, port):
            best = _better(best, pattern.specificity, environment)
    return best[1] if best is not None else None


def _better(
    best: tuple[int, Environment] | None, specificity: int, environment: Environment
) -> tuple[int, Environment]:
    if best is None or specificity > best[0]:
        return specificity, environment
    if specificity == best[0]:
        return specificity, strictest((best[1], environment))
    return best


def _first(candidates: list[str], lookup: Mapping[str, str]) -> Environment | None:
    for selector in candidates:
        found = lookup.get(selector)
        if found is not None:
            return parse_environment(found)
    return None


def _first_canonical(
    candidates: list[str], lookup: Mapping[str, Environment]
) -> Environment | None:
    for selector in candidates:
        found = lookup.get(selector)
        if found is not None:
            return found
    return None


def _configured(
    action: Action, selectors: Selectors | None, environments: Mapping[str, str]
) -> Environment | None:
    table = _table(tuple(environments.items()), PROVIDERS.version)
    host, port = action.request.host, action.request.port
    written = selectors.candidates(action, str.lower) if selectors else []
    canonical = selectors.candidates(action, canonical_host) if selectors else []
    as_written = _first(written, environments)
    if as_written is None:
        as_written = _by_written_host(host.lower(), port, table)
    if (
        table.plain
        and canonical == written
        and ":" not in host
        and canonical_host(host) == host.lower()
    ):
        return as_written  # written canonically: the canonical lookup finds the same
    in_canonical = _first_canonical(canonical, table.keys)
    if in_canonical is None:
        in_canonical = _by_any_spelling(host, port, table)
    found = [e for e in (as_written, in_canonical) if e is not None]
    return strictest(found) if found else None


def resolve_environment(action: Action, environments: Mapping[str, str]) -> Environment:
    """The environment of ``action``: configuration, else the name heuristic, else unknown."""
    module = PROVIDERS.get(action.provider)
    selectors = module.selectors if module is not None else None
    if environments:
        configured = _configured(action, selectors, environments)
        if configured is not None:
            return configured
    if selectors is None or selectors.names is None:
        return Environment.UNKNOWN
    return environment_from_names(selectors.names(action))
