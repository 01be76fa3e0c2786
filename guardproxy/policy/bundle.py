"""A loaded, checked, compiled policy bundle: what the evaluator runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from guardproxy.action import Provider, Verb
from guardproxy.policy.cel import Expression
from guardproxy.policy.compiler import from_cel_deep
from guardproxy.policy.matching import Matcher
from guardproxy.policy.model import (
    Approval,
    BundleSpec,
    FailurePolicy,
    Mode,
    Outcome,
)
from guardproxy.policy.template import Template
from guardproxy.policy.yamlsource import Position


@dataclass(frozen=True)
class Variable:
    name: str
    expression: Expression


@dataclass(frozen=True)
class PolicySetScope:
    """What the rules of one PolicySet share: params and variables."""

    name: str
    params: dict[str, Any]
    params_cel: Any
    variables: tuple[Variable, ...]
    params_value: Any = field(init=False, compare=False, repr=False)
    """``params_cel`` as compiled expressions read it."""
    uses: dict[str, frozenset[str]] = field(init=False, compare=False, repr=False)
    """Each variable and the variables it reads, directly or through others."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "params_value", from_cel_deep(self.params_cel))
        uses: dict[str, frozenset[str]] = {}
        for variable in self.variables:  # a variable reads only those declared before it
            read = variable.expression.variables
            uses[variable.name] = frozenset({variable.name}).union(
                *(uses.get(name, frozenset({name})) for name in read)
            )
        object.__setattr__(self, "uses", uses)

    def needed(self, names: frozenset[str]) -> frozenset[str]:
        """The variables to evaluate for an expression reading ``names``."""
        if len(names) == 1:
            (name,) = names
            return self.uses.get(name, names)
        return frozenset(names).union(*(self.uses.get(name, frozenset()) for name in names))


@dataclass(frozen=True)
class CompiledRule:
    id: str  # "<set>/<rule>"
    description: str
    decision: Outcome
    mode: Mode
    mode_locked: bool
    matcher: Matcher
    match_conditions: tuple[tuple[str, Expression], ...]
    condition: Expression | None
    message: Template
    message_expression: Expression | None
    approval: Approval | None
    failure_policy: FailurePolicy
    exceptions_allowed: bool
    scope: PolicySetScope
    source: Position

    @property
    def restrictive(self) -> bool:
        return self.decision is not Outcome.ALLOW


@dataclass(frozen=True)
class CompiledException:
    name: str
    rules: frozenset[str]
    matcher: Matcher
    condition: Expression | None
    expires: datetime
    reason: str
    source: Position


@dataclass(frozen=True)
class Bundle:
    config: BundleSpec
    rules: tuple[CompiledRule, ...]
    exceptions: tuple[CompiledException, ...]
    digest: str
    files: tuple[str, ...]
    index: dict[tuple[Provider, Verb], tuple[CompiledRule, ...]] = field(repr=False)
    history_verbs: frozenset[Verb] = frozenset(Verb)
    excepted_rules: frozenset[str] = field(init=False, repr=False, compare=False)
    """The rules some exception names (the others need no look at the exceptions)."""
    plans: dict[Any, Any] = field(init=False, repr=False, compare=False, default_factory=dict)
    """The engine's rule selection per kind of action (``engine._plan``), filled as
    actions arrive; bounded by the engine."""
    approvals: dict[Any, Any] = field(init=False, repr=False, compare=False, default_factory=dict)
    """The engine's approval requirement per set of determining hold rules
    (``engine._Evaluation._approval``), filled as holds arrive; bounded by the engine."""

    def __post_init__(self) -> None:
        named = frozenset(rule for e in self.exceptions for rule in e.rules)
        object.__setattr__(self, "excepted_rules", named)

    @classmethod
    def build(
        cls,
        config: BundleSpec,
        rules: list[CompiledRule],
        exceptions: list[CompiledException],
        digest: str,
        files: list[str],
    ) -> Bundle:
        ordered = tuple(sorted(rules, key=lambda r: r.id))
        index = {
            (provider, verb): tuple(
                r
                for r in ordered
                if (r.matcher.providers is None or provider in r.matcher.providers)
                and (r.matcher.verbs is None or verb in r.matcher.verbs)
            )
            for provider in Provider
            for verb in Verb
        }
        excepted_by_history = any(
            e.condition is not None and e.condition.roots & HISTORY_ROOTS for e in exceptions
        )
        history_verbs = frozenset(
            verb
            for verb in Verb
            if excepted_by_history
            or any(_reads_history(r) for p in Provider for r in index[(p, verb)])
        )
        return cls(config, ordered, tuple(exceptions), digest, tuple(files), index, history_verbs)

    def reads_history(self, verb: Verb) -> bool:
        """Whether any rule that can see ``verb`` reads the session's history.

        When none does, the proxy can skip computing it: the decision cannot depend on it.
        """
        return verb in self.history_verbs

    def rule(self, rule_id: str) -> CompiledRule | None:
        return next((r for r in self.rules if r.id == rule_id), None)


HISTORY_ROOTS = frozenset({"history", "resource", "signals"})


def _reads_history(rule: CompiledRule) -> bool:
    if rule.matcher.signals is not None:
        return True
    expressions = [e for _, e in rule.match_conditions]
    expressions += [e for e in (rule.condition, rule.message_expression) if e is not None]
    expressions += [v.expression for v in rule.scope.variables]
    if any(e.roots & HISTORY_ROOTS for e in expressions):
        return True
    return any(path[0] in HISTORY_ROOTS for path in rule.message.paths)
