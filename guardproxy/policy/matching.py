"""The structured ``match`` block, compiled to plain predicates (no CEL)."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

from guardproxy.action import Action, Environment, Provider, Verb
from guardproxy.context import Context
from guardproxy.policy.model import Match


def _globs(patterns: list[str] | None) -> re.Pattern[str] | None:
    if patterns is None:
        return None
    if not patterns:
        return re.compile(r"(?!)")  # an explicit empty list matches nothing (lint reports it)
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))


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
        )

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
