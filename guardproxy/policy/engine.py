"""The evaluator: (action, context, bundle) -> Decision, with no I/O and no clock.

Semantics (order of rules never matters):

* a rule *fires* when its structured ``match``, every ``matchCondition`` and its
  ``condition`` hold; a false matchCondition skips the rule even if another errored;
* among enforce-mode rules that fire, deny > hold > allow; if none fires the bundle's
  ``defaultDecision`` applies, or ``unclassified`` (deny or hold) for an action no
  recogniser could classify; allow rules apply to unclassified actions only when
  their ``match.verbs`` names ``unknown`` explicitly;
* fail closed: a CEL error in a deny or hold rule makes it fire (flagged), an error
  in an allow rule grants nothing; a non-bool result is an error;
* audit-mode rules are evaluated and reported, never change the outcome;
* a firing enforce rule named by an active, matching PolicyException is excepted;
* several firing holds combine their approval requirements.

Here: the entry points (:func:`evaluate`, :func:`explain`, :func:`strictest`,
:func:`input_hash`), the decision (``_Evaluation.decide``) and the rules planned per kind
of action (``_plan``). One evaluation's input and rule runs are in
:mod:`guardproxy.policy._evaluation`, the merging of approval requirements in
:mod:`guardproxy.policy._requirements`; their public names are importable from here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from guardproxy import __version__
from guardproxy.action import Action
from guardproxy.context import Context, built
from guardproxy.policy import cel
from guardproxy.policy._evaluation import (
    CONTEXT_ROOTS,
    MESSAGE_LIMIT,
    NO_ERRORS,
    UNKNOWN,
    RuleRunner,
    RuleTrace,
    Step,
    cap,
    lookup_path,
    mode_override,
)
from guardproxy.policy._requirements import (
    combine_approvals,
    merge_requirements,
    merge_steps,
    unique_models,
)
from guardproxy.policy.bundle import Bundle, CompiledRule
from guardproxy.policy.decision import (
    ApprovalRequirement,
    AuditFinding,
    Decision,
    RuleError,
)
from guardproxy.policy.model import (
    Mode,
    Outcome,
)

# cap and lookup_path: the tests compare against them here
__all__ = [
    "CONTEXT_ROOTS",
    "ENGINE_VERSION",
    "MESSAGE_LIMIT",
    "RuleTrace",
    "Step",
    "cap",
    "combine_approvals",
    "evaluate",
    "explain",
    "input_hash",
    "lookup_path",
    "merge_requirements",
    "merge_steps",
    "strictest",
]

ENGINE_VERSION = f"guardproxy-{__version__}/{cel.ENGINE}"
_OUTCOMES = tuple(Outcome)
_BY_SEVERITY = tuple(sorted(_OUTCOMES, key=lambda o: o.severity, reverse=True))


def input_hash(action: Action, context: Context) -> str:
    """sha256 of the whole decision input, serialised as the models define it.

    ``canonical_json`` is ``model_dump_json`` reusing the JSON of context parts
    that did not change since the last request (the recent actions, the session).
    """
    canonical = action.canonical_json() + "\n" + context.canonical_json()
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def evaluate(bundle: Bundle, action: Action, context: Context) -> Decision:
    """Decide on ``action``; pure: the same inputs always give the same Decision.

    An action with readings (an ambiguous request, or one that performs several
    operations) is decided reading by reading and the strictest outcome applies.
    """
    if not action.readings:
        return _Evaluation(bundle, action, context, tracing=False).decide()
    decisions = [
        _Evaluation(bundle, reading, context, tracing=False, hashed=False).decide()
        for reading in action.all_readings()
    ]
    return strictest(decisions, input_hash(action, context))


def explain(bundle: Bundle, action: Action, context: Context) -> tuple[Decision, list[RuleTrace]]:
    """Decide and also return, per candidate rule, what was evaluated and the values read
    (for an action with readings, every reading's rules, marked with the reading)."""
    decisions: list[Decision] = []
    traces: list[RuleTrace] = []
    for index, reading in enumerate(action.all_readings()):
        evaluation = _Evaluation(bundle, reading, context, tracing=True)
        decisions.append(evaluation.decide())
        for trace in evaluation.traces:
            trace.reading = index
        traces.extend(evaluation.traces)
    if len(decisions) == 1:
        return decisions[0], traces
    return strictest(decisions, input_hash(action, context)), traces


def strictest(decisions: list[Decision], whole_input_hash: str) -> Decision:
    """One decision for a request with several readings: the most restrictive outcome
    (deny > hold > allow) of any reading. Holds of several readings combine their
    approval requirements (every one must be met), as several hold rules do; the
    rules, findings, errors and exceptions of every reading are kept.
    """
    worst = max(d.outcome.severity for d in decisions)
    deciding = [d for d in decisions if d.outcome.severity == worst]
    first = deciding[0]
    approvals = [d.approval for d in deciding if d.approval is not None]
    messages = dict.fromkeys(d.message for d in deciding if d.message)
    return Decision(
        outcome=first.outcome,
        basis=first.basis,
        determining_rules=list(dict.fromkeys(r for d in deciding for r in d.determining_rules)),
        message=" ".join(messages),
        approval=merge_requirements(approvals) if approvals else None,
        audit_findings=unique_models([f for d in decisions for f in d.audit_findings]),
        errors=unique_models([e for d in decisions for e in d.errors]),
        excepted=list(dict.fromkeys(r for d in decisions for r in d.excepted)),
        truncated=any(d.truncated for d in decisions),
        bundle_digest=first.bundle_digest,
        engine_version=first.engine_version,
        input_hash=whole_input_hash,
    )


# ---------------------------------------------------------------------------
# Traces for explain.


# ---------------------------------------------------------------------------
# One evaluation.


class _Evaluation(RuleRunner):
    """One evaluation: the input and rule runs of :class:`RuleRunner`, and the decision."""

    # -- the decision

    def decide(self) -> Decision:
        if self.tracing:
            return self.decide_traced()
        action, context = self.action, self.context
        plan = _plan(self.bundle, action)
        errors: list[RuleError] = []
        excepted: list[str] = []
        determining: list[CompiledRule] = []
        outcome = Outcome.ALLOW
        for severity, group in zip(_BY_SEVERITY, plan.enforce, strict=True):
            for rule, dynamic, conditional in group:
                if dynamic is not None and not dynamic(action, context):
                    continue
                if conditional:
                    rule_fired, rule_errors = self.run_rule(rule, Mode.ENFORCE)
                    if rule_errors:
                        errors.extend(rule_errors)
                    if not rule_fired:
                        continue
                if rule.id in self.bundle.excepted_rules:
                    exception = self.excepted_by(rule)
                    if exception is not None:
                        excepted.append(rule.id)
                        continue
                determining.append(rule)
            if determining:
                outcome = severity
                break

        findings: list[AuditFinding] = []
        for rule, dynamic, conditional in plan.audit:
            if dynamic is not None and not dynamic(action, context):
                continue
            rule_fired, rule_errors = (
                self.run_rule(rule, Mode.AUDIT) if conditional else (True, NO_ERRORS)
            )
            if rule_errors:
                errors.extend(rule_errors)
            if rule_fired:
                findings.append(
                    AuditFinding(rule=rule.id, would=rule.decision, message=self.message(rule))
                )

        basis: Any = "rule"
        if not determining:
            if not action.classified:
                outcome, basis = Outcome(self.bundle.config.unclassified), "unclassified"
            else:
                outcome, basis = self.bundle.config.default_decision, "default"
        return built(Decision, {
            "outcome": outcome,
            "basis": basis,
            "determining_rules": [r.id for r in determining],
            "message": self._decision_message(outcome, basis, determining),
            "approval": self._approval(outcome, determining),
            "audit_findings": findings,
            "errors": errors,
            "excepted": excepted,
            "truncated": self._truncated,
            "bundle_digest": self.bundle.digest,
            "engine_version": ENGINE_VERSION,
            "input_hash": input_hash(action, self.context) if self.hashed else "",
        })  # fmt: skip

    def decide_traced(self) -> Decision:
        """:meth:`decide` for ``explain``: every candidate rule's trace, the rules a
        more restrictive one made moot and those skipped for an unclassified action
        included."""
        classified = self.action.classified
        enforce: dict[Outcome, list[CompiledRule]] = {
            Outcome.DENY: [], Outcome.HOLD: [], Outcome.ALLOW: []
        }  # fmt: skip
        audit: list[CompiledRule] = []
        for rule in self.candidates():
            if (
                not classified
                and rule.decision is Outcome.ALLOW
                and not rule.matcher.names_unknown_verb()
            ):
                self._skip(
                    rule,
                    "allow rules apply to unclassified actions only if they name verb `unknown`",
                )
                continue
            (enforce[rule.decision] if self.mode(rule) is Mode.ENFORCE else audit).append(rule)

        errors: list[RuleError] = []
        excepted: list[str] = []
        fired: dict[Outcome, list[CompiledRule]] = {
            Outcome.DENY: [], Outcome.HOLD: [], Outcome.ALLOW: []
        }  # fmt: skip
        decided = False  # a more restrictive outcome (visited first) already fired
        for outcome in _BY_SEVERITY:
            if decided:
                if self.tracing:
                    for rule in enforce[outcome]:
                        self._skip(rule, "a more restrictive rule already decided")
                continue
            for rule in enforce[outcome]:
                rule_fired, rule_errors = self.run_rule(rule, Mode.ENFORCE)
                errors.extend(rule_errors)
                if not rule_fired:
                    continue
                exception = self.excepted_by(rule)
                if exception is not None:
                    excepted.append(rule.id)
                    self._mark_excepted(rule, exception.name)
                    continue
                fired[outcome].append(rule)
            decided = bool(fired[outcome])

        findings: list[AuditFinding] = []
        for rule in audit:
            rule_fired, rule_errors = self.run_rule(rule, Mode.AUDIT)
            errors.extend(rule_errors)
            if rule_fired:
                findings.append(
                    AuditFinding(rule=rule.id, would=rule.decision, message=self.message(rule))
                )

        outcome, basis, determining = self._outcome(fired, classified)
        return Decision(
            outcome=outcome,
            basis=basis,
            determining_rules=[r.id for r in determining],
            message=self._decision_message(outcome, basis, determining),
            approval=self._approval(outcome, determining),
            audit_findings=findings,
            errors=errors,
            excepted=excepted,
            truncated=self._truncated,
            bundle_digest=self.bundle.digest,
            engine_version=ENGINE_VERSION,
            input_hash=input_hash(self.action, self.context),
        )

    def _outcome(
        self, fired: dict[Outcome, list[CompiledRule]], classified: bool
    ) -> tuple[Outcome, Any, list[CompiledRule]]:
        for outcome in (Outcome.DENY, Outcome.HOLD, Outcome.ALLOW):
            if fired[outcome]:
                return outcome, "rule", fired[outcome]
        if not classified:
            return Outcome(self.bundle.config.unclassified), "unclassified", []
        return self.bundle.config.default_decision, "default", []

    def _decision_message(
        self, outcome: Outcome, basis: str, determining: list[CompiledRule]
    ) -> str:
        if len(determining) == 1:
            return self.message(determining[0])
        if determining:
            messages = dict.fromkeys(m for r in determining if (m := self.message(r)))
            return " ".join(messages)
        summary = self.action.summary() or "this request"
        if basis == "unclassified":
            return (
                f"guardproxy could not recognise {summary}, so it is not allowed by default. "
                "Use a supported API or ask a human to allow it."
            )
        if outcome is Outcome.ALLOW:
            return ""
        return f"No guardproxy rule allows {summary}; the policy default is {outcome}."

    def _approval(
        self, outcome: Outcome, determining: list[CompiledRule]
    ) -> ApprovalRequirement | None:
        """The hold's requirement: a function of the determining rules alone, kept per
        bundle (requirements are frozen and shared by the decisions that hold them)."""
        if outcome is not Outcome.HOLD:
            return None
        key = tuple(r.id for r in determining)
        cache = self.bundle.approvals
        requirement: ApprovalRequirement | None = cache.get(key, UNKNOWN)
        if requirement is not UNKNOWN:
            return requirement
        approvals = [(r.id, r.approval) for r in determining if r.approval is not None]
        if not approvals and self.bundle.config.default_approval is not None:
            approvals = [("", self.bundle.config.default_approval)]
        requirement = combine_approvals(approvals) if approvals else None
        if len(cache) >= _APPROVALS_SIZE:
            cache.clear()
        cache[key] = requirement
        return requirement

    def _skip(self, rule: CompiledRule, reason: str) -> None:
        if self.tracing:
            self.traces.append(
                RuleTrace(rule.id, rule.decision, self.mode(rule), True, skipped=reason)
            )

    def _mark_excepted(self, rule: CompiledRule, exception: str) -> None:
        for trace in reversed(self.traces):
            if trace.rule == rule.id:
                trace.excepted_by = exception
                return


_Candidate = tuple[CompiledRule, Callable[[Action, Context], bool] | None, bool]
"""A rule that may apply, the check of its ``match`` keys still to make (see
``Matcher.dynamic``; None when the action's kind already settles them), and whether
it has CEL conditions to run (else it fires when it matches)."""


@dataclass(frozen=True, slots=True)
class _Plan:
    """The rules an action of one kind may meet, as ``decide`` visits them: the
    enforce-mode rules per outcome (deny, hold, allow) and the audit-mode rules, each
    in the bundle's order. Allow rules that an unclassified action cannot meet are
    left out, and each rule sits under the mode it has for that kind of action."""

    enforce: tuple[tuple[_Candidate, ...], ...]
    audit: tuple[_Candidate, ...]


_PLANS_SIZE = 4096
"""Kinds of action whose plan a bundle keeps (all are dropped when more arrive)."""
_APPROVALS_SIZE = 1024
"""Sets of determining hold rules whose requirement a bundle keeps (likewise)."""


def _plan(bundle: Bundle, action: Action) -> _Plan:
    """The plan for ``action``'s kind: the fields that ``Matcher.static`` reads and
    those that decide a rule's mode and whether it can apply to the action at all
    (provider, verb, environment). Kept per bundle (``Bundle.plans``): the same
    operations recur, while names, tags, hosts and the session vary and are checked
    per action. The cache is shared by threads; a plan is immutable and two threads
    building the same one build equal plans."""
    key = (action.provider, action.verb, action.environment, action.service,
           action.operation, action.resource.type, action.dry_run)  # fmt: skip
    plan: _Plan | None = bundle.plans.get(key)
    if plan is not None:
        return plan
    override = mode_override(bundle, action)
    classified = action.classified
    enforce: dict[Outcome, list[_Candidate]] = {outcome: [] for outcome in _OUTCOMES}
    audit: list[_Candidate] = []
    for rule in bundle.index[(action.provider, action.verb)]:
        matcher = rule.matcher
        if matcher.static is not None and not matcher.static(action):
            continue
        if not classified and rule.decision is Outcome.ALLOW and not matcher.names_unknown_verb():
            continue
        mode = rule.mode if rule.mode_locked or override is None else override
        conditional = bool(rule.match_conditions) or rule.condition is not None
        candidate = (rule, matcher.dynamic, conditional)
        (enforce[rule.decision] if mode is Mode.ENFORCE else audit).append(candidate)
    plan = _Plan(tuple(tuple(enforce[outcome]) for outcome in _BY_SEVERITY), tuple(audit))
    if len(bundle.plans) >= _PLANS_SIZE:
        bundle.plans.clear()
    bundle.plans[key] = plan
    return plan
