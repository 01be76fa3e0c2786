"""The structured ``match`` block, compiled to plain predicates (no CEL)."""

from __future__ import annotations

import fnmatch
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from guardproxy.action import Action, Environment, Provider, Verb
from guardproxy.context import Context
from guardproxy.policy.model import Match


def _matcher(pattern: re.Pattern[str], patterns: list[str]) -> Callable[[str], bool]:
    """``pattern.match(value) is not None`` for the globs ``pattern`` was made of: a set
    lookup when none of them has a wildcard (``fnmatch.translate`` of such a glob
    matches that exact string only)."""
    if patterns and not any(set(p) & set("*?[") for p in patterns):
        names = frozenset(patterns)
        return names.__contains__
    match = pattern.match
    return lambda value: match(value) is not None


def _globs(patterns: list[str] | None) -> re.Pattern[str] | None:
    if patterns is None:
        return None
    if not patterns:
        return re.compile(r"(?!)")  # an explicit empty list matches nothing (lint reports it)
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))


def _all_of(
    checks: list[Callable[[Action, Context], bool]],
) -> Callable[[Action, Context], bool] | None:
    """One closure that holds when every check does (None for no checks)."""
    if not checks:
        return None
    if len(checks) == 1:
        return checks[0]
    if len(checks) == 2:
        first, second = checks
        return lambda a, c: first(a, c) and second(a, c)
    if len(checks) == 3:
        first, second, third = checks
        return lambda a, c: first(a, c) and second(a, c) and third(a, c)
    return lambda a, c: all(check(a, c) for check in checks)


STATIC_FIELDS = ("provider", "verb", "environment", "service", "operation", "dry_run")
"""The action's fields (with ``resource.type``) that ``Matcher.static`` reads, with
the provider and verb the bundle indexes on: what the engine keys its per-action
rule selection on."""
_NO_CONTEXT = Context()
"""What a static check is given for a context: it reads none."""


@dataclass(frozen=True)
class Matcher:
    """Every key that is set must match; within a key any listed value may."""

    providers: frozenset[Provider] | None
    verbs: frozenset[Verb] | None
    environments: frozenset[Environment] | None
    services: re.Pattern[str] | None
    operations: re.Pattern[str] | None
    resource_types: re.Pattern[str] | None
    resource_names: re.Pattern[str] | None
    risk_tags: re.Pattern[str] | None
    hosts: re.Pattern[str] | None
    agents: re.Pattern[str] | None
    signals: tuple[str, ...] | None
    dry_run: bool | None
    patterns: dict[str, list[str]] = field(default_factory=dict, compare=False, repr=False)
    """The globs of each pattern key, as written."""
    indexed: Callable[[Action, Context], bool] | None = field(
        init=False, default=None, compare=False, repr=False
    )
    """``mismatch(...) is None`` for an action whose provider and verb this matcher
    accepts (the bundle's index only offers such rules), as one closure over the keys
    that are set; None when there are none (every such action matches)."""

    static: Callable[[Action], bool] | None = field(
        init=False, default=None, compare=False, repr=False
    )
    """The keys that read only the action's fields in :data:`STATIC_FIELDS` (few distinct
    values: the engine keeps their verdict per combination), as one closure; None when
    none of them is set."""
    dynamic: Callable[[Action, Context], bool] | None = field(
        init=False, default=None, compare=False, repr=False
    )
    """The other keys (resource names, risk tags, hosts, agents, signals); ``static``
    and ``dynamic`` both holding is ``indexed`` holding."""

    def __post_init__(self) -> None:
        static = self._static_checks()
        dynamic = self._dynamic_checks()
        object.__setattr__(self, "indexed", _all_of([*static, *dynamic]))
        object.__setattr__(self, "dynamic", _all_of(dynamic))
        combined = _all_of(static)
        object.__setattr__(
            self, "static", None if combined is None else (lambda a: combined(a, _NO_CONTEXT))
        )

    def _test(self, key: str, pattern: re.Pattern[str]) -> Callable[[str], bool]:
        return _matcher(pattern, self.patterns.get(key, []))

    def _static_checks(self) -> list[Callable[[Action, Context], bool]]:
        checks: list[Callable[[Action, Context], bool]] = []
        test = self._test
        if self.environments is not None:
            environments = self.environments
            checks.append(lambda a, c: a.environment in environments)
        if self.services is not None:
            services = test("services", self.services)
            checks.append(lambda a, c: services(a.service))
        if self.operations is not None:
            operations = test("operations", self.operations)
            checks.append(lambda a, c: operations(a.operation))
        if self.resource_types is not None:
            types = test("resource_types", self.resource_types)
            checks.append(lambda a, c: types(a.resource.type))
        if self.dry_run is not None:
            dry_run = self.dry_run
            checks.append(lambda a, c: a.dry_run is dry_run)
        return checks

    def _dynamic_checks(self) -> list[Callable[[Action, Context], bool]]:
        checks: list[Callable[[Action, Context], bool]] = []
        test = self._test
        if self.resource_names is not None:
            names = test("resource_names", self.resource_names)
            checks.append(lambda a, c: names(a.resource.name or a.resource.id))
        if self.risk_tags is not None:
            tags = self.risk_tags.match
            checks.append(lambda a, c: any(map(tags, a.risk_tags)))
        if self.hosts is not None:
            hosts = test("hosts", self.hosts)
            checks.append(lambda a, c: hosts(a.request.host.lower()))
        if self.agents is not None:
            agents = test("agents", self.agents)
            checks.append(lambda a, c: agents(c.session.agent))
        if self.signals is not None:  # any of them set (an empty list: none can be)
            signals = self.signals
            if len(signals) == 1:
                read_one = operator.attrgetter(signals[0])
                checks.append(lambda a, c: bool(read_one(c.signals)))
            elif signals:
                read_all = operator.attrgetter(*signals)
                checks.append(lambda a, c: any(read_all(c.signals)))
            else:
                checks.append(lambda a, c: False)
        return checks

    @classmethod
    def compile(cls, match: Match) -> Matcher:
        return cls(
            providers=None if match.providers is None else frozenset(match.providers),
            verbs=None if match.verbs is None else frozenset(match.verbs),
            environments=None if match.environments is None else frozenset(match.environments),
            services=_globs(match.services),
            operations=_globs(match.operations),
            resource_types=_globs(match.resource_types),
            resource_names=_globs(match.resource_names),
            risk_tags=_globs(match.risk_tags),
            hosts=_globs(match.hosts),
            agents=_globs(match.agents),
            signals=None if match.signals is None else tuple(match.signals),
            dry_run=match.dry_run,
            patterns={
                key: list(value)
                for key in ("services", "operations", "resource_types", "resource_names",
                            "hosts", "agents")
                if (value := getattr(match, key)) is not None
            },
        )  # fmt: skip

    def mismatch(self, action: Action, context: Context) -> str | None:
        """The first key that does not match, or None when the action matches."""
        if self.providers is not None and action.provider not in self.providers:
            return "providers"
        if self.verbs is not None and action.verb not in self.verbs:
            return "verbs"
        if self.environments is not None and action.environment not in self.environments:
            return "environments"
        if self.services is not None and not self.services.match(action.service):
            return "services"
        if self.operations is not None and not self.operations.match(action.operation):
            return "operations"
        if self.resource_types is not None and not self.resource_types.match(action.resource.type):
            return "resourceTypes"
        if self.resource_names is not None and not self.resource_names.match(
            action.resource.name or action.resource.id
        ):
            return "resourceNames"
        if self.risk_tags is not None and not any(
            self.risk_tags.match(tag) for tag in action.risk_tags
        ):
            return "riskTags"
        if self.hosts is not None and not self.hosts.match(action.request.host.lower()):
            return "hosts"
        if self.agents is not None and not self.agents.match(context.session.agent):
            return "agents"
        if self.signals is not None and not any(
            getattr(context.signals, name) for name in self.signals
        ):
            return "signals"
        if self.dry_run is not None and action.dry_run is not self.dry_run:
            return "dryRun"
        return None

    def names_unknown_verb(self) -> bool:
        return self.verbs is not None and Verb.UNKNOWN in self.verbs
