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
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pydantic_core
from celpy import celtypes
from pydantic import BaseModel

from guardproxy import __version__
from guardproxy.action import Action
from guardproxy.context import Context
from guardproxy.policy import cel
from guardproxy.policy.bundle import Bundle, CompiledException, CompiledRule, PolicySetScope
from guardproxy.policy.compiler import ROOT_SLOTS, Compiled, from_cel, to_cel
from guardproxy.policy.decision import (
    ApprovalRequirement,
    AuditFinding,
    Decision,
    RuleApproval,
    RuleError,
    StepOffer,
)
from guardproxy.policy.model import (
    Approval,
    FailurePolicy,
    Limits,
    Mode,
    Outcome,
    duration_seconds,
)

ENGINE_VERSION = f"guardproxy-{__version__}/{cel.ENGINE}"
MESSAGE_LIMIT = 300
CONTEXT_ROOTS = ("session", "history", "resource", "signals")
"""The context's parts CEL reads as roots of their own, besides `action` and `now`."""
_NOW_SLOT = ROOT_SLOTS["now"]
_NO_DOCUMENTS = (None,) * len(("action", *CONTEXT_ROOTS))
_UNKNOWN = object()
_OUTCOMES = tuple(Outcome)
_DECISION: Callable[[dict[str, Any]], Decision] = Decision.__pydantic_validator__.validate_python
"""``Decision(**fields)``, validated alike, without the keyword call's overhead."""
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
        audit_findings=_unique([f for d in decisions for f in d.audit_findings]),
        errors=_unique([e for d in decisions for e in d.errors]),
        excepted=list(dict.fromkeys(r for d in decisions for r in d.excepted)),
        truncated=any(d.truncated for d in decisions),
        bundle_digest=first.bundle_digest,
        engine_version=first.engine_version,
        input_hash=whole_input_hash,
    )


# ---------------------------------------------------------------------------
# Traces for explain.


@dataclass
class Step:
    stage: str
    expression: str
    result: Any
    error: str | None
    values: dict[str, Any]


@dataclass
class RuleTrace:
    rule: str
    decision: Outcome
    mode: Mode
    matched: bool
    mismatch: str | None = None
    steps: list[Step] = field(default_factory=list)
    fired: bool = False
    error: bool = False
    excepted_by: str | None = None
    skipped: str | None = None
    reading: int = 0
    """Which reading of the action (0: the action itself; see ``Action.readings``)."""


# ---------------------------------------------------------------------------
# One evaluation.


_NO_ERRORS: list[RuleError] = []
"""The errors of a rule that had none (shared: never modified)."""


class _Evaluation:
    def __init__(
        self, bundle: Bundle, action: Action, context: Context, *, tracing: bool,
        hashed: bool = True,
    ) -> None:  # fmt: skip
        """``hashed=False``: the decision of one reading, whose input hash (left empty)
        the whole request's replaces (:func:`strictest`)."""
        self.bundle = bundle
        self.action = action
        self.context = context
        self.tracing = tracing
        self.hashed = hashed
        self.traces: list[RuleTrace] = []
        self._action_document: dict[str, Any] | None = None
        self._capped_action: dict[str, Any] | None = None
        self._context_documents: dict[str, Any] | None = None
        self._converted: dict[tuple[str, frozenset[tuple[str, ...]]], Any] = {}
        self._truncated = False
        self._variables: dict[str, dict[str, Any]] = {}
        self._environments: dict[str, list[Any]] = {}
        self._now: celtypes.TimestampType | None = None
        self._override: Any = _UNKNOWN

    # -- the input, prepared lazily: most reads never touch CEL

    def action_document(self) -> dict[str, Any]:
        if self._action_document is None:
            self._action_document = self.action.model_dump(mode="json")
        return self._action_document

    def prepare_input(self) -> None:
        """Cap the input (once, when CEL first reads a document root) and note whether
        anything was cut: ``truncated`` on the decision and on what CEL reads.

        The action is only dumped here when its JSON text shows it may be cut; the
        context parts' capped JSON is kept per part instance (:func:`_capped_context`).
        """
        if self._context_documents is not None:
            return
        limits = self.bundle.config.limits
        context_documents, cut_context = _capped_context(self.context, limits)
        cut_action = False
        if not _action_fits(self.action, limits):
            self._capped_action, cut_action = _cap(self.action_document(), limits)
        self._truncated = cut_action or cut_context
        if self._truncated:
            action = (
                self._capped_action if self._capped_action is not None else (self.action_document())
            )
            self._capped_action = {**action, "truncated": True}
        self._context_documents = context_documents

    def capped_document(self, root: str) -> Any:
        """The capped JSON of one root (``action`` or a context part) that CEL reads."""
        if root == "action":
            if self._capped_action is None:
                self.prepare_input()
            return (
                self._capped_action if self._capped_action is not None else (self.action_document())
            )
        if self._context_documents is None:
            self.prepare_input()
        assert self._context_documents is not None
        return self._context_documents[root]

    def compiled_document(self, root: str) -> Any:
        """:meth:`capped_document` for compiled code: the action model itself when
        nothing was cut (compiled code reads a model as its JSON; no dump is made)."""
        if root == "action":
            self.prepare_input()
            return self.action if self._capped_action is None else self._capped_action
        return self.capped_document(root)

    def capped(self) -> dict[str, Any]:
        """What CEL may read: the action and context with lists and strings cut to the limits."""
        capped = {root: self.capped_document(root) for root in ("action", *CONTEXT_ROOTS)}
        capped["now"] = self.context.now.isoformat()
        return capped

    def now(self) -> celtypes.TimestampType:
        if self._now is None:
            self._now = celtypes.TimestampType(self.context.now)
        return self._now

    def root_value(self, root: str, paths: frozenset[tuple[str, ...]]) -> Any:
        """The CEL value of ``root`` holding only the fields an expression reads.

        Converting a whole action to CEL values costs more than most expressions;
        the paths an expression reads are known from load-time analysis.
        """
        wanted = frozenset(p for p in paths if p[0] == root)
        key = (root, wanted)
        cached = self._converted.get(key)
        if cached is not None:
            return cached
        if root == "now":
            value: Any = self.now()
        else:
            document = self.capped_document(root)
            value = cel.to_cel(document if (root,) in wanted else _project(document, wanted))
        self._converted[key] = value
        return value

    def activation(self, expression: cel.Expression, scope: PolicySetScope) -> dict[str, Any]:
        """The interpreter's input: CEL values of what ``expression`` reads."""
        result: dict[str, Any] = {}
        for root in expression.roots:
            if root == "params":
                result["params"] = scope.params_cel
            elif root == "variables":
                result["variables"] = self.variables(scope, expression.variables)
            else:
                result[root] = self.root_value(root, expression.paths)
        return result

    def environment(
        self, expression: cel.Expression, compiled: Compiled, scope: PolicySetScope
    ) -> list[Any]:
        """A compiled expression's input: the capped documents themselves, no conversion.

        One list per policy set and decision, shared by its expressions, filled with the
        roots each one reads as it runs (as the interpreter's activation is: the input
        is capped when a document root is first read). Compiled code never writes to it
        (macro variables live in a copy, see ``Compiled.run``).
        """
        environment = self._environments.get(scope.name)
        if environment is None:
            environment = [*_NO_DOCUMENTS, None, scope.params_value,
                           self._variables.setdefault(scope.name, {})]  # fmt: skip
            self._environments[scope.name] = environment
        for slot, root in compiled.documents:
            if environment[slot] is None:
                environment[slot] = self.compiled_document(root)
        if compiled.reads_now and environment[_NOW_SLOT] is None:
            environment[_NOW_SLOT] = self.now()
        if expression.variables:
            self.computed_variables(scope, expression.variables)
        return environment

    def run(self, expression: cel.Expression, scope: PolicySetScope) -> tuple[Any, str | None]:
        """Evaluate ``expression``: its value (as compiled code holds values) or an error.

        The compiled closures run when there are some; when they fail, the interpreter
        runs too, so the error recorded is the reference's (and its verdict stands).
        """
        compiled = expression.compiled
        if compiled is not None:
            try:
                return compiled.run(self.environment(expression, compiled, scope)), None
            except Exception:  # the interpreter, below, says what went wrong
                pass
        return self.interpret(expression, scope)

    def interpret(
        self, expression: cel.Expression, scope: PolicySetScope
    ) -> tuple[Any, str | None]:
        """``expression`` on cel-python's interpreter, its value as compiled code holds it."""
        value, error = cel.evaluate(expression, self.activation(expression, scope))
        if error is not None:
            return None, error
        return from_cel(value), None

    def variables(self, scope: PolicySetScope, names: frozenset[str]) -> celtypes.MapType:
        """The set's variables ``names`` as the interpreter reads them."""
        values = self.computed_variables(scope, names)
        return celtypes.MapType(
            {celtypes.StringType(k): to_cel(v) for k, v in values.items() if k in names}
        )

    def computed_variables(self, scope: PolicySetScope, names: frozenset[str]) -> dict[str, Any]:
        """Set variables, evaluated once per decision and only when read (values as
        compiled code holds them, a failed one as a ``CELEvalError``): ``names`` and the
        variables they use, in the order they are declared."""
        values = self._variables.setdefault(scope.name, {})
        needed = scope.needed(names)
        for variable in scope.variables:
            if variable.name in values or variable.name not in needed:
                continue
            value, error = self.run(variable.expression, scope)
            values[variable.name] = (
                cel.CELEvalError(f"variable {variable.name}: {error}") if error else value
            )
        return values

    # -- rules

    def candidates(self) -> list[CompiledRule]:
        """The rules whose ``match`` the action meets, each other rule's mismatch traced
        (``decide`` selects through :func:`_plan` instead)."""
        bucket = self.bundle.index[(self.action.provider, self.action.verb)]
        action, context = self.action, self.context
        selected = []
        for rule in bucket:
            mismatch = rule.matcher.mismatch(action, context)
            if mismatch is None:
                selected.append(rule)
            elif mismatch not in ("providers", "verbs"):
                self.traces.append(
                    RuleTrace(rule.id, rule.decision, self.mode(rule), False, mismatch)
                )
        return selected

    def mode(self, rule: CompiledRule) -> Mode:
        if rule.mode_locked:
            return rule.mode
        if self._override is _UNKNOWN:
            self._override = _mode_override(self.bundle, self.action)
        return rule.mode if self._override is None else self._override

    def run_rule(self, rule: CompiledRule, mode: Mode) -> tuple[bool, list[RuleError]]:
        """Whether ``rule`` fires, and the errors its expressions made."""
        if not rule.match_conditions and rule.condition is None and not self.tracing:
            return True, _NO_ERRORS
        trace = RuleTrace(rule.id, rule.decision, mode, True) if self.tracing else None
        errors: list[RuleError] = _NO_ERRORS
        failed: list[tuple[str, str]] = []
        skipped_by_false = False
        for name, expression in rule.match_conditions:
            value, error = self.condition(expression, rule.scope, f"matchCondition:{name}", trace)
            if value is False:
                skipped_by_false = True
                break
            if error is not None:
                failed.append((f"matchCondition:{name}", error))
        fired = False
        if not skipped_by_false and not failed:
            if rule.condition is None:
                fired = True
            else:
                value, error = self.condition(rule.condition, rule.scope, "condition", trace)
                if error is not None:
                    failed.append(("condition", error))
                fired = value is True
        if failed and not skipped_by_false:
            fires_on_error = rule.restrictive and rule.failure_policy is FailurePolicy.FAIL
            fired = fires_on_error
            errors = [
                RuleError(rule=rule.id, stage=s, error=e, fired=fires_on_error) for s, e in failed
            ]
        if trace is not None:
            trace.fired = fired
            trace.error = bool(errors)
            self.traces.append(trace)
        return fired, errors

    def condition(
        self,
        expression: cel.Expression,
        scope: PolicySetScope,
        stage: str,
        trace: RuleTrace | None,
    ) -> tuple[bool | None, str | None]:
        compiled = expression.compiled
        if compiled is not None and trace is None:  # the common case, in one step
            try:
                value = compiled.run(self.environment(expression, compiled, scope))
            except Exception:  # the interpreter says what went wrong
                return cel.bool_result(*self.interpret(expression, scope))
            if value is True or value is False:
                return value, None
            return cel.bool_result(value, None)
        value, error = cel.bool_result(*self.run(expression, scope))
        if trace is not None:
            trace.steps.append(
                Step(stage, expression.source, value, error, self.values_read(expression, scope))
            )
        return value, error

    def values_read(self, expression: cel.Expression, scope: PolicySetScope) -> dict[str, Any]:
        plain = self.capped()
        values: dict[str, Any] = {}
        for path in sorted(expression.paths):
            if path[0] == "params":
                values[".".join(path)] = (
                    scope.params.get(path[1]) if len(path) > 1 else scope.params
                )
            elif path[0] == "variables":
                found = self._variables.get(scope.name, {}).get(path[1])
                values[".".join(path)] = (
                    f"error: {found.args[0]}"
                    if isinstance(found, cel.CELEvalError)
                    else cel.to_plain(to_cel(found))
                )
            else:
                values[".".join(path)] = _lookup(plain, path)
        return values

    def excepted_by(self, rule: CompiledRule) -> CompiledException | None:
        if not rule.exceptions_allowed or rule.id not in self.bundle.excepted_rules:
            return None
        for exception in self.bundle.exceptions:
            if rule.id not in exception.rules or exception.expires <= self.context.now:
                continue
            if exception.matcher.mismatch(self.action, self.context) is not None:
                continue
            if exception.condition is not None:
                value, _ = cel.bool_result(*self.run(exception.condition, rule.scope))
                if value is not True:  # an erroring exception excepts nothing
                    continue
            return exception
        return None

    def message(self, rule: CompiledRule) -> str:
        if rule.message_expression is None and not rule.message.paths:
            return rule.message.text
        if rule.message_expression is not None:
            text, _ = cel.string_result(*self.run(rule.message_expression, rule.scope))
            if text and text.strip() and "\n" not in text.strip() and len(text) <= MESSAGE_LIMIT:
                return text.strip()
        return rule.message.render(self.lookup)

    def lookup(self, path: tuple[str, ...]) -> Any:
        """A field of the (uncapped) input as JSON data, for message placeholders.

        Fields are read from the models, and only the value found is made JSON data:
        dumping the whole action, or the whole context (with its recent actions), to
        render one name or count costs more than the decision.
        """
        root = path[0]
        value: Any
        if root == "action":
            value, path = self.action, path[1:]
        elif root == "now" or root in CONTEXT_ROOTS:
            value = self.context
        else:
            return None
        for name in path:
            if isinstance(value, BaseModel) and name in type(value).model_fields:
                value = getattr(value, name)
            elif isinstance(value, dict) and name in value:
                value = value[name]
            else:
                return None
        return pydantic_core.to_jsonable_python(value)

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
                self.run_rule(rule, Mode.AUDIT) if conditional else (True, _NO_ERRORS)
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
        return _DECISION({
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
        requirement: ApprovalRequirement | None = cache.get(key, _UNKNOWN)
        if requirement is not _UNKNOWN:
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
    override = _mode_override(bundle, action)
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


def _mode_override(bundle: Bundle, action: Action) -> Mode | None:
    """The mode the first override that applies to the action sets, if any."""
    for override in bundle.config.mode_overrides:
        if override.environments is not None and action.environment not in override.environments:
            continue
        if override.providers is not None and action.provider not in override.providers:
            continue
        return override.mode
    return None


def combine_approvals(approvals: list[tuple[str, Approval]]) -> ApprovalRequirement:
    """Every requirement must be met; the shortest timeout and narrowest grant apply."""
    return merge_requirements([_requirement(rule, approval) for rule, approval in approvals])


def _requirement(rule: str, approval: Approval) -> ApprovalRequirement:
    """One hold rule's approval block as a requirement of its own."""
    return ApprovalRequirement(
        all_of=[
            RuleApproval(
                rule=rule,
                groups=approval.groups,
                quorum=approval.quorum,
                required_groups=approval.required_groups,
            )
        ],
        groups=sorted(set(approval.groups)),
        quorum=approval.quorum,
        required_groups=sorted(set(approval.required_groups)),
        prevent_self_approval=approval.prevent_self_approval,
        timeout_seconds=duration_seconds(approval.timeout),
        on_timeout=approval.on_timeout,
        grant=approval.grant,
        page=[approval.page] if approval.page else [],
        safety_steps=[
            StepOffer(name=s.name, required=s.required, include_secrets=s.include_secrets)
            for s in approval.safety_steps
        ],
    )


def _unique[M: BaseModel](models: list[M]) -> list[M]:
    """``models`` without repeats, in order (frozen models holding lists do not hash)."""
    seen: dict[str, M] = {}
    for model in models:
        seen.setdefault(model.model_dump_json(), model)
    return list(seen.values())


def merge_requirements(requirements: list[ApprovalRequirement]) -> ApprovalRequirement:
    """Requirements that must all be met at once (several hold rules, or the holds of
    several readings): every rule requirement of each, the shortest timeout, the
    narrowest grant, every page."""
    if len(requirements) == 1:
        return requirements[0]
    grants = [r.grant for r in requirements]
    grant = (
        "once"
        if "once" in grants
        else min(grants, key=lambda g: duration_seconds(g.partition(":")[2]))
    )
    return ApprovalRequirement(
        all_of=_unique([a for r in requirements for a in r.all_of]),
        groups=sorted({g for r in requirements for g in r.groups}),
        quorum=max(r.quorum for r in requirements),
        required_groups=sorted({g for r in requirements for g in r.required_groups}),
        prevent_self_approval=any(r.prevent_self_approval for r in requirements),
        timeout_seconds=min(r.timeout_seconds for r in requirements),
        on_timeout="escalate" if any(r.on_timeout == "escalate" for r in requirements) else "deny",
        grant=grant,
        page=sorted({p for r in requirements for p in r.page}),
        safety_steps=merge_steps([s for r in requirements for s in r.safety_steps]),
    )


def merge_steps(offers: list[StepOffer]) -> list[StepOffer]:
    """One offer per step: required if any rule requires it, Secrets exported if any
    rule opts in."""
    merged: dict[str, StepOffer] = {}
    for offer in offers:
        seen = merged.get(offer.name)
        merged[offer.name] = (
            offer
            if seen is None
            else StepOffer(
                name=offer.name,
                required=seen.required or offer.required,
                include_secrets=seen.include_secrets or offer.include_secrets,
            )
        )
    return [merged[name] for name in sorted(merged)]


def _action_fits(action: Action, limits: Limits) -> bool:
    """Whether ``_cap`` would leave the action's JSON as it is, when its text shows it
    (else the caller caps the document): no string can be longer than the whole text,
    and no list can have more items than the text has commas plus one."""
    text = action.canonical_json()
    size = len(text) if text.isascii() else len(text.encode())
    return size <= limits.max_string_bytes and text.count(",") < limits.max_list_items


_CONTEXT_CACHE: dict[tuple[int, ...], tuple[tuple[Any, ...], dict[str, Any], bool]] = {}
_CONTEXT_CACHE_SIZE = 256


def _capped_context(context: Context, limits: Limits) -> tuple[dict[str, Any], bool]:
    """The context parts' JSON, capped, and whether anything was cut.

    The parts are frozen and the proxy reuses them from one request to the next (the
    session, the empty history of a request no rule reads history for), so the result
    is kept per combination of part instances. An entry holds the parts themselves:
    while it lives no other object can have their ``id``. The documents are shared
    between decisions and threads and never modified.
    """
    parts = (context.session, context.history, context.resource, context.signals)
    key = (id(parts[0]), id(parts[1]), id(parts[2]), id(parts[3]),
           limits.max_list_items, limits.max_string_bytes)  # fmt: skip
    hit = _CONTEXT_CACHE.get(key)
    if hit is not None:
        return hit[1], hit[2]
    documents: dict[str, Any] = {}
    cut = False
    for root, part in zip(CONTEXT_ROOTS, parts, strict=True):
        documents[root], part_cut = _cap(part.model_dump(mode="json"), limits)
        cut = cut or part_cut
    if len(_CONTEXT_CACHE) >= _CONTEXT_CACHE_SIZE:
        _CONTEXT_CACHE.clear()
    _CONTEXT_CACHE[key] = (parts, documents, cut)
    return documents, cut


def _cap(value: Any, limits: Limits) -> tuple[Any, bool]:
    """Cut lists and strings to ``limits``; return the capped value and whether it was cut."""
    if isinstance(value, str):
        raw = value.encode()
        if len(raw) <= limits.max_string_bytes:
            return value, False
        return raw[: limits.max_string_bytes].decode(errors="ignore"), True
    if isinstance(value, list):
        cut = len(value) > limits.max_list_items
        items = []
        for item in value[: limits.max_list_items]:
            capped, item_cut = _cap(item, limits)
            items.append(capped)
            cut = cut or item_cut
        return items, cut
    if isinstance(value, dict):
        result = {}
        cut = False
        for key, item in value.items():
            result[key], item_cut = _cap(item, limits)
            cut = cut or item_cut
        return result, cut
    return value, False


def _project(document: dict[str, Any], paths: frozenset[tuple[str, ...]]) -> dict[str, Any]:
    """A copy of ``document`` with only the fields at ``paths`` (root first)."""
    projected: dict[str, Any] = {}
    for path in paths:
        source: Any = document
        target = projected
        for depth, name in enumerate(path[1:], start=1):
            if not isinstance(source, dict) or name not in source:
                break
            source = source[name]
            if depth == len(path) - 1 or not isinstance(source, dict):
                target[name] = source
                break
            target = target.setdefault(name, {})
    return projected


def _lookup(document: dict[str, Any], path: tuple[str, ...]) -> Any:
    current: Any = document
    for name in path:
        if not isinstance(current, dict) or name not in current:
            return None
        current = current[name]
    return current
