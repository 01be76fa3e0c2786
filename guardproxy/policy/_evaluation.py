"""One evaluation's input and rule runs, the part of :mod:`guardproxy.policy.engine` below the
decision: the action and context documents, capped to the bundle's limits and prepared
lazily (most decisions never touch CEL), the CEL environments and activations, and
:class:`RuleRunner`, which runs a rule's conditions, exceptions and message. The engine's
``_Evaluation`` adds ``decide`` on top. The traces ``explain`` returns (:class:`RuleTrace`)
live here too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pydantic_core
from celpy import celtypes

from guardproxy.action import Action
from guardproxy.context import Context
from guardproxy.policy import cel
from guardproxy.policy.bundle import Bundle, CompiledException, CompiledRule, PolicySetScope
from guardproxy.policy.compiler import ROOT_SLOTS, Compiled, from_cel, to_cel
from guardproxy.policy.decision import RuleError
from guardproxy.policy.model import (
    FailurePolicy,
    Limits,
    Mode,
    Outcome,
)

MESSAGE_LIMIT = 300
CONTEXT_ROOTS = ("session", "history", "resource", "signals")
"""The context's parts CEL reads as roots of their own, besides `action` and `now`."""
_NOW_SLOT = ROOT_SLOTS["now"]
_NO_DOCUMENTS = (None,) * len(("action", *CONTEXT_ROOTS))
UNKNOWN = object()
_JSON_SCALARS = frozenset({str, int, float, bool, type(None)})
"""Types ``to_jsonable_python`` returns as they are (exactly these: not enums or other
subclasses, which it turns into their value)."""


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


NO_ERRORS: list[RuleError] = []
"""The errors of a rule that had none (shared: never modified)."""


class RuleRunner:
    """One evaluation's input and rule runs; ``engine._Evaluation`` decides with them."""

    def __init__(
        self, bundle: Bundle, action: Action, context: Context, *, tracing: bool,
        hashed: bool = True,
    ) -> None:  # fmt: skip
        """``hashed=False``: the decision of one reading, whose input hash (left empty)
        the whole request's replaces (``engine.strictest``)."""
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
        self._override: Any = UNKNOWN

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
            self._capped_action, cut_action = cap(self.action_document(), limits)
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
        (``decide`` selects through ``engine._plan`` instead)."""
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
        if self._override is UNKNOWN:
            self._override = mode_override(self.bundle, self.action)
        return rule.mode if self._override is None else self._override

    def run_rule(self, rule: CompiledRule, mode: Mode) -> tuple[bool, list[RuleError]]:
        """Whether ``rule`` fires, and the errors its expressions made."""
        if not rule.match_conditions and rule.condition is None and not self.tracing:
            return True, NO_ERRORS
        trace = RuleTrace(rule.id, rule.decision, mode, True) if self.tracing else None
        errors: list[RuleError] = NO_ERRORS
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
                values[".".join(path)] = lookup_path(plain, path)
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
            # a model's own field table (``model_fields`` goes through a descriptor, and
            # an isinstance check through the models' ABC metaclass)
            fields = getattr(type(value), "__pydantic_fields__", None)
            if fields is not None and isinstance(fields, dict):
                if name not in fields:
                    return None
                value = getattr(value, name)
            elif isinstance(value, dict) and name in value:
                value = value[name]
            else:
                return None
        if type(value) in _JSON_SCALARS:
            return value
        return pydantic_core.to_jsonable_python(value)


def mode_override(bundle: Bundle, action: Action) -> Mode | None:
    """The mode the first override that applies to the action sets, if any."""
    for override in bundle.config.mode_overrides:
        if override.environments is not None and action.environment not in override.environments:
            continue
        if override.providers is not None and action.provider not in override.providers:
            continue
        return override.mode
    return None


def _action_fits(action: Action, limits: Limits) -> bool:
    """Whether ``cap`` would leave the action's JSON as it is, when its text shows it
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
        documents[root], part_cut = cap(part.model_dump(mode="json"), limits)
        cut = cut or part_cut
    if len(_CONTEXT_CACHE) >= _CONTEXT_CACHE_SIZE:
        _CONTEXT_CACHE.clear()
    _CONTEXT_CACHE[key] = (parts, documents, cut)
    return documents, cut


def cap(value: Any, limits: Limits) -> tuple[Any, bool]:
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
            capped, item_cut = cap(item, limits)
            items.append(capped)
            cut = cut or item_cut
        return items, cut
    if isinstance(value, dict):
        result = {}
        cut = False
        for key, item in value.items():
            result[key], item_cut = cap(item, limits)
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


def lookup_path(document: dict[str, Any], path: tuple[str, ...]) -> Any:
    current: Any = document
    for name in path:
        if not isinstance(current, dict) or name not in current:
            return None
        current = current[name]
    return current
