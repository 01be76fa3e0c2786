"""Differential test: compiled CEL against cel-python's interpreter, the reference.

Every CEL expression of the shipped bundle and of the benchmark's 200-rule bundle, a
list of expressions written at the edges of cel-python's semantics, and expressions
generated from a grammar over the action/context schema are evaluated by both on
generated actions and contexts: the compiled closures (``Compiled.run`` on the engine's
environment, with nothing to fall back on) and celpy's interpreter (on the engine's
activation, from a bundle loaded with ``cel.interpreter_only()``). Results must be the
same value of the same celpy type; a failure must be a failure on both sides (error
texts may differ: the engine takes the interpreter's text when compiled code fails).
The engine-level test compares whole decisions (``Decision.model_dump_json()``, which
the audit record keeps) and explain traces of the two bundles on the benchmark
workload; the capping test holds the engine's lazy, cached capping equal to capping
the whole dumped input.

``GUARDPROXY_HYPOTHESIS_EXAMPLES`` sets the examples per test (CI runs a fixed slice of
100, a few seconds per test); each example evaluates its expression on one to four
inputs (1.8 on average). The nightly-sized run compares over 100k expression/input
cases in the two expression tests alone, besides 30k whole decisions of the 200-rule
bundle and the variable reads (roughly 50 minutes on one core):
``GUARDPROXY_HYPOTHESIS_EXAMPLES=30000 .venv/bin/pytest -q -p no:cacheprovider
--timeout 0 tests/test_cel_compiler.py``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import math
import os
import re
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any, cast

import pytest
from celpy.evaluation import CELEvalError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guardproxy.action import (
    Action,
    Actor,
    Confidence,
    Environment,
    Provider,
    RequestSummary,
    Resource,
    Scope,
    Verb,
)
from guardproxy.context import (
    Context,
    Counts,
    History,
    ProviderCounts,
    RecentAction,
    ResourceEvent,
    ResourceHistory,
    SessionInfo,
    Signals,
    VerbCounts,
)
from guardproxy.policy import Bundle, cel, compiler, engine, load_bundle
from guardproxy.policy.bundle import PolicySetScope, Variable
from guardproxy.policy.compiler import to_cel
from guardproxy.policy.model import Limits
from guardproxy.policy.typecheck import CelType

EXAMPLES = int(os.environ.get("GUARDPROXY_HYPOTHESIS_EXAMPLES", "100"))
# odd actions (ODD_FIELDS) make pydantic warn when it serialises them, as it should
pytestmark = pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning")
ROOT = Path(__file__).resolve().parent.parent
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=EXAMPLES <= 500,  # the CI slice is the same every run
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much],
)  # fmt: skip


def _bench() -> ModuleType:
    path = ROOT / "bench" / "policy_bench.py"
    spec = importlib.util.spec_from_file_location("policy_bench", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("policy_bench", module)
    spec.loader.exec_module(module)
    return module


BENCH = _bench()

# ---------------------------------------------------------------------------
# The scope expressions run in: params and variables of every type.

PARAMS: dict[str, Any] = {
    "names": ["prod-db-1", "kube-system", "acme/api"],
    "agents": ["claude-code"],
    "n": 3,
    "big": 9223372036854775807,
    "f": 1.5,
    "flag": True,
    "nothing": None,
    "nested": {"k": "v", "l": [1, 2], "m": {"deep": "x"}},
    "empty": [],
    "mixed": [1, "a", None, True, 2.5, [1], {"a": 1}],
    "pattern": "^prod-",
    "text": "Straße",
    "protected_names": ["prod-orders-db-1", "kube-system", "acme/api"],
    "trusted_agents": ["claude-code"],
}
VARIABLES = (
    ("is_prod", 'action.environment == "prod"'),
    ("tags", "action.risk_tags"),
    ("name", 'action.resource.name + "-x"'),
    ("broken", "dyn(action).nosuch"),
    ("count", "size(action.risk_tags) + history.m10.total"),
    ("mapped", "action.risk_tags.map(t, t + t)"),
    ("stamp", "now"),
    *((v["name"], v["expression"]) for v in BENCH.SET_VARIABLES if v["name"] != "is_prod"),
)


def _scope(*, interpreted: bool) -> PolicySetScope:
    declared: dict[str, CelType] = {}
    variables = []
    for name, source in VARIABLES:
        with cel.interpreter_only() if interpreted else contextlib.nullcontext():
            expression, issues = cel.compile_expression(source, PARAMS, declared)
        assert expression is not None, issues
        declared[name] = expression.type
        variables.append(Variable(name, expression))
    return PolicySetScope("s", PARAMS, cel.to_cel(PARAMS), tuple(variables))


SCOPE = _scope(interpreted=False)
REFERENCE_SCOPE = _scope(interpreted=True)
DECLARED = {v.name: v.expression.type for v in SCOPE.variables}


@functools.lru_cache(maxsize=8192)
def expressions(source: str, runtime_params: bool) -> tuple[cel.Expression, cel.Expression] | None:
    """The compiled and the interpreter-only expression for ``source`` (None when it does
    not pass the load-time checks). ``runtime_params``: params known only at run time,
    as in an exception's condition."""
    params: Any = list(PARAMS) if runtime_params else PARAMS
    compiled, _ = cel.compile_expression(source, params, DECLARED)
    with cel.interpreter_only():
        reference, _ = cel.compile_expression(source, params, DECLARED)
    if compiled is None or reference is None:
        return None
    return compiled, reference


@functools.lru_cache(maxsize=8192)
def unfolded(source: str, runtime_params: bool) -> cel.Expression | None:
    """``source`` compiled with its constant parts in closures too."""
    params: Any = list(PARAMS) if runtime_params else PARAMS
    with compiler.unfolded():
        expression, _ = cel.compile_expression(source, params, DECLARED)
    return expression


def _bundle(limits: Limits) -> Bundle:
    """What ``_Evaluation`` reads of a bundle when it only evaluates expressions."""
    return cast(Bundle, SimpleNamespace(config=SimpleNamespace(limits=limits)))


@dataclass
class Outcome:
    failed: bool
    value: Any = None
    truncated: bool = False

    def describe(self) -> str:
        return "error" if self.failed else f"{type(self.value).__name__} {self.value!r}"


def reference_outcome(
    expression: cel.Expression, action: Action, context: Context, limits: Limits
) -> Outcome:
    evaluation = engine._Evaluation(_bundle(limits), action, context, tracing=False)
    try:
        activation = evaluation.activation(expression, REFERENCE_SCOPE)
    except Exception:
        return Outcome(True)
    value, error = cel.evaluate(expression, activation)
    return Outcome(error is not None, value, evaluation._truncated)


def compiled_outcome(
    expression: cel.Expression, action: Action, context: Context, limits: Limits
) -> Outcome:
    compiled = expression.compiled
    assert compiled is not None, expression.fallback
    evaluation = engine._Evaluation(_bundle(limits), action, context, tracing=False)
    environment = evaluation.environment(expression, compiled, SCOPE)
    try:
        value = compiled.run(environment)
    except Exception:
        return Outcome(True, truncated=evaluation._truncated)
    return Outcome(False, to_cel(value), evaluation._truncated)


def same(left: Any, right: Any) -> bool:
    """Equal values of the same celpy type, all the way down."""
    if type(left) is not type(right):
        return False
    if isinstance(left, CELEvalError):
        return True
    if isinstance(left, list):
        return len(left) == len(right) and all(same(a, b) for a, b in zip(left, right, strict=True))
    if isinstance(left, dict):
        return len(left) == len(right) and all(
            same(ka, kb) and same(va, vb)
            for (ka, va), (kb, vb) in zip(left.items(), right.items(), strict=True)
        )
    if isinstance(left, float):
        if math.isnan(left):
            return math.isnan(right)
        return left == right and math.copysign(1, left) == math.copysign(1, right)
    if isinstance(left, type):
        return left is right
    return bool(left == right)


def check(
    source: str, action: Action, context: Context, limits: Limits, runtime_params: bool = False
) -> None:
    pair = expressions(source, runtime_params)
    if pair is None:
        return
    compiled, reference = pair
    want = reference_outcome(reference, action, context, limits)
    for variant in (compiled, unfolded(source, runtime_params)):
        if variant is None or variant.compiled is None:
            continue  # the interpreter runs it: nothing to compare
        got = compiled_outcome(variant, action, context, limits)
        assert got.failed == want.failed and (got.failed or same(want.value, got.value)), (
            f"{source!r}: interpreter {want.describe()}, compiled {got.describe()}"
            f"{'' if variant is compiled else ' (constants in closures)'}"
        )
        assert got.truncated == want.truncated, f"{source!r}: truncated differs"


def check_variables_for_the_interpreter(action: Action, context: Context, limits: Limits) -> None:
    """An expression left to the interpreter reads variables that compiled code computed
    (converted back to celpy values): they must be the values the interpreter computes."""
    for name, _ in VARIABLES:
        with cel.interpreter_only():
            reader, _ = cel.compile_expression(f"variables.{name}", PARAMS, DECLARED)
        assert reader is not None
        outcomes = []
        for scope in (SCOPE, REFERENCE_SCOPE):
            evaluation = engine._Evaluation(_bundle(limits), action, context, tracing=False)
            outcomes.append(cel.evaluate(reader, evaluation.activation(reader, scope)))
        (got, got_error), (want, want_error) = outcomes
        assert (got_error is None) == (want_error is None), name
        assert got_error is not None or same(want, got), f"variables.{name}: {want!r} {got!r}"


# ---------------------------------------------------------------------------
# Inputs.

WORDS = ["", "prod", "prod-db-1", "delete", "DELETE", "GET", "ticket:OPS-1", "break-glass",
         "a", "ä", "İ", "Straße", "日本", "a\nb", '"', "\\", "*", "force", "bulk",
         "skip-final-snapshot", "kube-system", "111111111111", "prod-*", "claude-code",
         "acme/api", "1", "-1", "1.5", "true", "2026-03-04T15:30:00Z", "1h", "proxy",
         " prod-db-1", "prod-db-1 ", "a b",
         "x" * 40]  # fmt: skip
texts = st.one_of(st.sampled_from(WORDS), st.text(max_size=12),
                  st.text(min_size=30, max_size=80))  # fmt: skip
ints = st.one_of(st.sampled_from([0, 1, 2, 7, 443, 4096, -1, 2**62, 2**63 - 1]),
                 st.integers(-(2**63), 2**63 - 1))  # fmt: skip
tag_lists = st.lists(texts, max_size=5)
instants = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-7))]),
)  # fmt: skip


@st.composite
def actions(draw: st.DrawFn, readings: bool = True) -> Action:
    return Action(
        provider=draw(st.sampled_from(list(Provider))),
        service=draw(texts),
        operation=draw(texts),
        verb=draw(st.sampled_from(list(Verb))),
        resource=Resource(type=draw(texts), id=draw(texts), name=draw(texts), key=draw(texts)),
        scope=Scope(account=draw(texts), namespace=draw(texts), region=draw(texts)),
        environment=draw(st.sampled_from(list(Environment))),
        risk_tags=draw(tag_lists),
        actor=Actor(tool=draw(texts), user_agent=draw(texts)),
        request=RequestSummary(
            method=draw(st.sampled_from(["GET", "POST", "DELETE", "PATCH", ""])),
            host=draw(texts),
            port=draw(ints),
            path=draw(texts),
            header_names=draw(tag_lists),
            body_bytes=draw(ints),
        ),
        confidence=draw(st.sampled_from(list(Confidence))),
        dry_run=draw(st.booleans()),
        truncated=draw(st.booleans()),
        readings=draw(st.lists(actions(readings=False), max_size=2)) if readings else [],
    )


ODD_FIELDS: list[dict[str, Any]] = [
    {"service": Verb.DELETE}, {"verb": "delete"}, {"environment": "prod"},
    {"risk_tags": ["force", Verb.READ]}, {"request": RequestSummary(port=True)},
    {"dry_run": 1}, {"resource": Resource(name=Provider.AWS)},
    {"scope": {"namespace": "kube-system"}}, {"readings": [Action(verb=Verb.DESTROY), "x"]},
]  # fmt: skip
"""Values a ``model_copy(update=...)`` can put where validation never would: compiled
code reads the model in place and must read them as the model's JSON has them."""


@st.composite
def odd_actions(draw: st.DrawFn) -> Action:
    action = draw(actions())
    update = draw(st.sampled_from(ODD_FIELDS))
    return action.model_copy(update=update)


@st.composite
def counts(draw: st.DrawFn) -> Counts:
    return Counts(
        total=draw(ints),
        destructive=draw(ints),
        verb=VerbCounts(read=draw(ints), delete=draw(ints)),
        provider=ProviderCounts.model_validate({"aws": draw(ints)}),
    )


@st.composite
def contexts(draw: st.DrawFn) -> Context:
    recent = [
        RecentAction(at=draw(instants), summary=draw(texts),
                     verb=draw(st.sampled_from(list(Verb))), outcome=draw(texts))
        for _ in range(draw(st.integers(0, 3)))
    ]  # fmt: skip
    default = st.just(None)
    return Context(
        now=draw(instants),
        session=SessionInfo(id=draw(texts), user=draw(texts), agent=draw(texts),
                            labels=draw(tag_lists), anonymous=draw(st.booleans())),
        history=draw(st.one_of(default, st.builds(History, m10=counts(), recent=st.just(recent))))
        or History(),
        resource=ResourceHistory(
            key=draw(texts), deleted=draw(st.booleans()),
            deleted_at=draw(st.one_of(st.none(), instants)),
            events=[ResourceEvent(at=draw(instants), operation=draw(texts))],
        ),
        signals=Signals(recreate=draw(st.booleans()), description=draw(texts)),
    )  # fmt: skip


limits = st.one_of(
    st.just(Limits()),
    st.builds(Limits, max_list_items=st.integers(1, 4), max_string_bytes=st.integers(16, 40)),
)
inputs = st.lists(
    st.tuples(st.one_of(actions(), actions(), actions(), odd_actions()), contexts(), limits),
    min_size=1, max_size=4,
)  # fmt: skip

# ---------------------------------------------------------------------------
# Expressions: the shipped bundle's, the benchmark's and hand-picked edge cases.


def shipped_expressions() -> list[str]:
    result = load_bundle([ROOT / "policies"])
    assert result.bundle is not None, result.problems
    return sorted(_sources(result.bundle))


def _sources(bundle: Bundle) -> set[str]:
    found = set()
    for rule in bundle.rules:
        found |= {e.source for _, e in rule.match_conditions}
        found |= {e.source for e in (rule.condition, rule.message_expression) if e is not None}
        found |= {v.expression.source for v in rule.scope.variables}
    found |= {e.condition.source for e in bundle.exceptions if e.condition is not None}
    return found


BENCH_EXPRESSIONS = sorted(
    {*BENCH.RESTRICTIVE_CEL, *BENCH.PERMISSIVE_CEL, BENCH.MESSAGE_EXPRESSION,
     *(c["expression"] for c in BENCH.MATCH_CONDITIONS),
     *(v["expression"] for v in BENCH.SET_VARIABLES),
     'action.request.method == "GET"', "action.truncated", "now.getHours() >= 18",
     '!session.labels.exists(l, l == "break-glass")'}
)  # fmt: skip
EDGES = [
    # errors as values, absorbed by && || ?: has() all() exists()
    "dyn(action).nosuch == 1 || true", "dyn(action).nosuch == 1 && false",
    "true || dyn(action).nosuch", "false && dyn(action).nosuch", "dyn(action).nosuch || false",
    "dyn(action).nosuch && true", "dyn(1) && true", "true && dyn(1)", "dyn(1) || false",
    "false || dyn(1)",
    "dyn(1) && dyn(2)", "dyn(1) ? 1 : 2", "dyn(action).nosuch ? 1 : 2", "dyn('') ? 1 : 2",
    "true ? dyn(action).nosuch : 2", "false ? 1 : 1 / 0", "has(dyn(action).nosuch)",
    "has(action.resource.name)", "has(dyn(action.resource.name).x)",
    "action.risk_tags.all(t, dyn(t).x == 1)", "action.risk_tags.exists(t, dyn(t).x == 1)",
    "[1, 2].all(x, x > 1)", "[0, 'a'].all(x, x > 0)", "['a', 0].exists(x, x > 0)",
    "[1].all(x, dyn(x))", "[0].exists(x, dyn(x))", "[].all(x, x)", "[].exists(x, dyn(x).y)",
    "action.dry_run && dyn(action.risk_tags.map(t, t))", "!action.dry_run || dyn([1].map(x, x))",
    "[0, 1].all(x, x == 0 ? false : dyn([x].map(y, y)))",
    "[1, 0].exists(x, x == 1 ? true : dyn([x].map(y, y)))",
    "(true ? dyn(1).exists(x, true) : false) || true",
    "(action.dry_run ? dyn(1).exists(x, true) : dyn(2).all(x, true)) || true",
    "[1, 2].all(x, x == 1 ? false : int(double(x) * 1e308 * 10.0) == 1)",
    "[1, 2].exists(x, x == 1 ? true : int(double(x) * 1e308 * 10.0) == 1)",
    "[1, 2].exists(y, y == 2 || [y].map(x, 1 / (x - 1)) == [])",
    "[1, 2].all(y, y == 1 && [y].map(x, 1 / (x - 1)) == [])",
    "[1.5 + 1.5, 0.0 + 0.0].filter(x, dyn(x))", "[1.5 + 1.5, 0.0 + 0.0].exists_one(x, dyn(x))",
    "(dyn(action).nosuch == [1].map(x, dyn(x).y)) || true",
    "(dyn(action).nosuch + [1].map(x, dyn(x).y)) == 1 || true",
    "size(dyn(action).nosuch, [1].map(x, dyn(x).y)) == 1 || true",
    "(dyn(1) ? [1].map(x, dyn(x).y) : 2) || true", "(dyn(0) ? 2 : [1].map(x, dyn(x).y)) || true",
    "(dyn(action).nosuch ? [1].map(x, dyn(x).y) : 2) || true",
    "(dyn(action.verb) ? 1 : [1].map(x, dyn(x).y)) || true",
    "dyn(action.request.port) in ['GET', 'POST']", "dyn(action.dry_run) in ['a']",
    "dyn(null) in ['a']", "dyn(action.resource)[dyn(['name'])] == 1 || true",
    "[dyn(action).nosuch, [1].map(x, dyn(x).y)] == [] || true",
    "(dyn([true]) + [false]).exists(x, x)", "(['a'] + ['b']).map(x, x + x)",
    "(['a'] + [action.verb]).exists(x, x.contains('a'))",
    "action.resource.name.exists(c, c.contains('p'))", "'abc'.exists(c, c.contains('b'))",
    "-(0.0)", "-(params.f - 1.5)", "action.resource.name.startsWith('prod-db')",
    "action.resource.name.matches('^prod-db-1$')", "action.resource.name.matches(' ')",
    # read in place: what a model_copy put there is read as the model's JSON has it
    "action.risk_tags.exists(t, t.contains('rea'))", "action.request.port + 1",
    "action.dry_run == true", "action.resource.name.contains('a')", "action.scope.namespace",
    "action.readings.size()", "action.service.contains('e')", "string(action.verb)",
    "type(action.dry_run) == bool", "type(action.request.port) == int",
    "action.readings.exists(r, r.verb == 'destroy')", "action.environment.contains('o')",
    # raised errors: map/filter/exists_one pass && and ||, stop at all/exists
    "false && [1].map(x, dyn(x).y) == [1]", "true || [1].filter(x, dyn(x).y) == [1]",
    "[1, 2].exists(y, [y].map(x, dyn(x).y) == [])", "[0, 1].exists_one(x, x / x == 1)",
    "[1, 2].exists_one(x, x > 1)", "[1, 2].map(x, x * 2)", "['a', ''].filter(x, dyn(x))",
    "[0, 1, 2].filter(x, dyn(x))", "action.risk_tags.map(t, size(t))",
    # macros over what is not a list
    "dyn(1).exists(x, true)", "false && dyn(1).exists(x, true)",
    "true ? dyn(1).all(x, true) : false",
    "'abc'.exists(c, c == 'b')", "'abc'.map(c, c + c)", "{'a': 1}.exists(k, k == 'a')",
    "dyn(action.resource).exists(k, k == 'name')", "dyn(null).all(x, true)",
    "action.readings.exists(r, r.verb == 'delete')", "session.labels.exists_one(l, true)",
    # types: no heterogeneous equality, plain Python values from celpy's operators
    "dyn(1) == 1.0", "dyn(1) == '1'", "dyn(true) == 1", "dyn(1) == true", "null == 1", "1 == null",
    "'a' == null", "null == 'a'", "null == null", "[1] == null", "{} == null",
    "dyn(1.0) < 2", "dyn(1) < 2.0", "dyn(1.5 + 2.5) == 4", "1.5 + 2.5 == 4.0",
    "dyn(2.0 * 2.0) == 4",
    "dyn(true) + true", "dyn(true) + true == 2", "'a' + 'b' == 'ab'", "('a' + 'b').contains('a')",
    "'ab'.contains('a')", "('a' + 'b').startsWith('a')", "size('a' + 'b')",
    "[1] + [2] == [1, 2]", "dyn([1] + [2]).contains(dyn(1))", "[1, 'a'] == [2, 1]",
    "[1, 'a'] == ['x', 'a']", "{'a': 1} == {'a': 1}", "{'a': 1} != {'a': 'x'}",
    "{'a': 1/0} == {'a': 1}", "{'a': 1/0}.a", "{'a': 1/0, 'b': 2}.b", "size({'a': 1/0})",
    "[[1], [2]] == [[1], [2]]", "1u == 1u", "dyn(1u) == 1", "dyn(1u) + 1", "2u - 3u", "-1u",
    "b'ab' == b'ab'", "dyn(b'ab').exists(x, x == 97)", "size(b'abc')", "b'a' + b'b'",
    "'abc'[1]", "'abc'[1] == 'b'", "[1, 2, 3][-1]", "[1, 2][dyn(true)]", "[1, 2][5]",
    "{'a': 1}['b']", "dyn({'a': 1})[1]", "'a' in 'abc'", "'ab' in 'abc'", "'' in 'abc'",
    "1 in ['a', 1]", "'x' in ['a', 1]", "'a' in ['a', 1]", "'x' in [1, 'x']",
    "'a' in {'a': 1}", "dyn(1) in {'a': 1}", "null in [null]", "[1] in [[1]]",
    # arithmetic, overflow and division
    "9223372036854775807 + 1", "-9223372036854775808 - 1", "9223372036854775807 * 2",
    "-(-9223372036854775807 - 1)", "7 / 2", "-7 / 2", "7 % -2", "-7 % 2", "1 / 0",
    "1 % 0", "1.0 / 0.0", "dyn(1.0) % 2.0", "dyn('ab') * 2", "dyn([1]) * 2", "-(1.5)", "-dyn('a')",
    "!dyn(1)",
    "params.big + 1", "params.big - params.big", "action.request.port * 2",
    "action.request.body_bytes + action.request.port", "history.m10.total + 1",
    # strings and the library
    "'Straße'.lowerAscii()", "upperAscii('straße')", "lowerAscii(dyn(1))", "'İ'.lowerAscii()",
    "glob('db-1', 'db-*')", "glob('db-1', '[')", "glob(dyn(1), 'a')", "'x'.glob('[!x]')",
    "globAny(['a', 1], 'a')", "globAny([1, 'a'], 'a')", "globAny(dyn('a'), 'a')",
    "join(['a', 'b'], ',')", "['a', 1].join(',')", "join([], '-')", "join(dyn('ab'), '')",
    "'abc'.matches('^a')", "'abc'.matches(dyn('('))", "'abc'.matches(params.pattern)",
    "action.resource.name.matches('^prod-')", "dyn(1).matches('a')", "'a'.matches(dyn(1))",
    "matches('abc', 'b')", "startsWith('abc', 'a')", "'abc'.startsWith(dyn(1))",
    "size(dyn(null))", "size(dyn(1))", "size(action)", "size(action.resource)", "size(params)",
    # conversions and time
    "int('12')", "int('x')", "int(1.0 / 0.0)", "int(2.5)", "int(-2.5)", "uint(-1)",
    "double(1)", "double('1e3')", "string(1)", "string(1.5)", "string(true)", "string(b'a')",
    "string(now)", "bool('true')", "bool('x')", "bool(1.0 / 0.0)", "bytes('a')", "dyn(1)",
    "type(1) == int", "type('a') == string", "type(action) == map", "type(null) == null_type",
    "timestamp('2026-03-04T15:30:00Z') < now", "now - duration('1h') < now",
    "duration('1h') + duration('30m')", "timestamp('bad')", "duration('x')",
    "now.getHours()", "now.getDayOfWeek() == 0", "now.getFullYear()", "now.getMilliseconds()",
    "now.getHours('America/New_York')", "now.getHours('+02:00')", "now.getDate('Nowhere/X')",
    "now.getHours() >= 18 || now.getDayOfWeek() == 0", "dyn('a').getHours()",
    "timestamp(action.resource.name) < now", "duration(action.resource.name)",
    "int(action.resource.name) > 0", "double(action.request.port) > 1.0",
    # params, variables, shadowing
    "action.resource.name in params.names", "params.nested.k == 'v'", "params.nested.m.deep",
    "params.mixed.exists(x, x == 1)", "'a' in params.mixed", "params.nothing == null",
    "dyn(params).missing", "size(params.empty) == 0", "params.f * 2.0", "params.text.lowerAscii()",
    "variables.is_prod || variables.broken", "variables.broken", "has(variables.broken)",
    "variables.tags.exists(t, t == 'force')", "variables.name.startsWith('prod')",
    "variables.count > 2", "variables.mapped", "variables.stamp == now",
    "action.risk_tags.exists(action, action == 'force')", "[1].exists(now, now == 1)",
    "[[1, 2]].exists(x, x.exists(x, x == 2))", "[1, 2].map(x, [x].map(y, x + y))",
    # reads of every root
    "session.labels.exists(l, l.startsWith('ticket:'))", "session.anonymous",
    "history.recent.exists(r, r.verb == 'delete')", "history.m1.verb.delete > 0",
    "resource.deleted && resource.deleted_at != null", "resource.events.size() > 0",
    "signals.recreate || signals.history_unavailable", "action.truncated",
    "action.readings.size()", "action.request.header_names.exists(h, h == 'x')",
    "action", "session", "dyn(history)", "resource.deleted_at", "now",
]  # fmt: skip
ALL_EXPRESSIONS = sorted({*shipped_expressions(), *BENCH_EXPRESSIONS, *EDGES})


def test_most_expressions_compile() -> None:
    """The benchmark's expressions all compile; edge cases may fall back, not many."""
    fallbacks = {}
    for source in ALL_EXPRESSIONS:
        pair = expressions(source, False)
        if pair is not None and pair[0].compiled is None:
            fallbacks[source] = pair[0].fallback
    assert not {s: f for s, f in fallbacks.items() if s in BENCH_EXPRESSIONS}
    assert len(fallbacks) <= 5, fallbacks
    assert not [s for s in BENCH_EXPRESSIONS if expressions(s, False) is None]


def fixed_inputs() -> list[tuple[Action, Context, Limits]]:
    """A few inputs for every known expression: the benchmark's, and edge ones."""
    workload = BENCH.make_workload(40, BENCH.DEFAULT_SEED)
    picked = [workload[i] for i in (0, 13, 33)]
    odd = Action(
        verb=Verb.DELETE, environment=Environment.PROD, dry_run=True,
        resource=Resource(name="prod-db-1", key="Straße"), risk_tags=["force", "", "ä"] * 3,
        request=RequestSummary(method="DELETE", port=2**63 - 1, header_names=["x"]),
        readings=[Action(verb=Verb.DESTROY)],
    )  # fmt: skip
    busy = Context(
        now=datetime(2026, 3, 8, 23, 59, 59, 999000, tzinfo=timezone(timedelta(hours=-7))),
        session=SessionInfo(agent="claude-code", labels=["ticket:OPS-1", "break-glass"]),
        history=History(m10=Counts(total=2**63 - 1, verb=VerbCounts(delete=3))),
    )  # fmt: skip
    return [
        *((a, c, Limits()) for a, c in picked),
        (odd, busy, Limits()),
        (odd, busy, Limits(max_list_items=2, max_string_bytes=16)),
        (Action(), Context(), Limits()),
        (odd.model_copy(update={"resource": Resource(name="prod-db-1 ")}), Context(), Limits()),
        *((odd.model_copy(update=update), busy, Limits()) for update in ODD_FIELDS[::2]),
    ]


FIXED_INPUTS = fixed_inputs()


def test_known_expressions_agree_on_fixed_inputs() -> None:
    for action, context, limit in FIXED_INPUTS:
        check_variables_for_the_interpreter(action, context, limit)
    for source in ALL_EXPRESSIONS:
        for action, context, limit in FIXED_INPUTS:
            check(source, action, context, limit)
            if "params" in source:
                check(source, action, context, limit, runtime_params=True)


@given(source=st.sampled_from(ALL_EXPRESSIONS), cases=inputs, runtime_params=st.booleans())
@SETTINGS
def test_known_expressions_agree(
    source: str, cases: list[tuple[Action, Context, Limits]], runtime_params: bool
) -> None:
    for action, context, limit in cases:
        check(source, action, context, limit, runtime_params)


# ---------------------------------------------------------------------------
# Generated expressions: typed, so most evaluate to a value; with ``dyn`` around a part
# now and then, so type errors and error absorption are exercised too.

Kind = str  # bool int double string strings ints map time any
Scope_ = tuple[tuple[str, Kind], ...]

PATHS: dict[Kind, list[str]] = {
    "string": ["action.verb", "action.provider", "action.operation", "action.resource.name",
               "action.resource.key", "action.scope.namespace", "action.environment",
               "action.actor.tool", "action.request.method", "action.confidence",
               "session.agent", "session.id", "resource.key", "signals.description",
               "params.text", "params.pattern", "variables.name", "resource.deleted_at"],
    "int": ["action.request.port", "action.request.body_bytes", "history.m10.total",
            "history.m10.verb.delete", "history.m1.provider.aws", "params.n", "params.big",
            "variables.count"],
    "double": ["params.f"],
    "bool": ["action.dry_run", "action.truncated", "session.anonymous", "resource.deleted",
             "signals.recreate", "params.flag", "variables.is_prod", "variables.protected",
             "variables.risky", "variables.broken"],
    "strings": ["action.risk_tags", "session.labels", "action.request.header_names",
                "params.names", "params.empty", "variables.tags", "variables.mapped"],
    "ints": ["params.nested.l"],
    "map": ["action", "session", "action.resource", "action.request", "params.nested",
            "history.m10", "resource", "params"],
    "time": ["now", "variables.stamp"],
    "any": ["params.mixed", "params.nothing", "action.readings", "history.recent",
            "resource.events", "params.nested.m"],
}  # fmt: skip
LITERALS: dict[Kind, list[str]] = {
    "string": ['"prod"', '"delete"', '""', '"a"', "'prod-db-1'", r'"a\nb"', r'"\u00e4"',
               '"Straße"', '"prod-*"', '"force"', '"ticket:"', '"claude-code"', '"GET"',
               '"1"', '"-12"', '"2026-03-04T15:30:00Z"', '"1h"', "'''ml'''", 'r"\\d"'],
    "int": ["0", "1", "-1", "2", "42", "9223372036854775807", "-9223372036854775808", "0x10",
            "443"],
    "double": ["0.0", "1.5", "-2.5", "1e308", "0.1", "-0.0"],
    "bool": ["true", "false"],
    "strings": ["[]", '["a", "b"]', '["force", "bulk"]', '["prod-db-1"]'],
    "ints": ["[1, 2, 3]", "[0]", "[-1, 9223372036854775807]"],
    "map": ["{}", '{"a": 1}', '{"name": "prod-db-1", "a": "x"}', '{"a": 1/0, "b": 2}'],
    "time": ['timestamp("2026-03-04T15:30:00Z")', 'timestamp("1999-12-31T23:59:59+01:00")'],
    "any": ["null", "1u", "18446744073709551615u", 'b"ab"', '[1, "a", null]',
            'duration("1h")', '{1: "x"}', "[[1], [2]]", "int", "string"],
}  # fmt: skip
KINDS = list(PATHS)
ELEMENT = {"strings": "string", "ints": "int", "map": "string", "string": "string"}
"""What a macro over a value of a kind binds its variable to."""
PATTERNS = ['"^prod-"', '"a+"', '"("', '"[0-9]{2}"', '"(?i)DELETE"', '""', '"\\\\d"']
TIME = ["getHours", "getDayOfWeek", "getFullYear", "getMonth", "getDate", "getMinutes",
        "getDayOfYear", "getSeconds", "getMilliseconds", "getDayOfMonth"]  # fmt: skip


FORMS: dict[Kind, list[tuple[str, tuple[Kind, ...]]]] = {
    # (template, kinds for $same): $kind is an expression of that kind, {a~b} one of a, b
    "bool": [
        ("($bool) {&&~||} ($bool)", ()), ("!($bool)", ()), ("($bool) ? ($bool) : ($bool)", ()),
        ("($same) {==~!=~<~<=~>~>=} ($same)", ("int", "string", "double", "bool", "time")),
        ("($same) {==~!=} ($same)", ("strings", "ints", "map", "any")),
        ("($string) in ($same)", ("strings", "map")), ("($int) in ($ints)", ()),
        ("($any) in ($any)", ()), ("($string).{startsWith~endsWith~contains}($string)", ()),
        ("{startsWith~endsWith~contains}($string, $string)", ()),
        ("($string).matches({PATTERN})", ()), ("matches($string, $string)", ()),
        ("glob($string, $string)", ()), ("($strings).globAny($string)", ()),
        ("has(($map).{name~a~verb~nosuch~k})", ()),
        ("has({action~session~action.resource~params.nested}.{name~nosuch})", ()),
        ("dyn($map).{a~name~nosuch} == $any", ()), ("$macro", ()), ("bool($string)", ()),
    ],
    "int": [
        ("($int) {+~-~*~/~%} ($int)", ()), ("-($int)", ()), ("size($same)", ("string", "strings",
        "map", "ints")), ("($same).size()", ("string", "strings")),
        ("int($same)", ("string", "double", "int", "time")), ("($time).{TIME}()", ()),
        ('now.{TIME}({"UTC"~"+02:00"~"x"})', ()), ("($bool) ? ($int) : ($int)", ()),
        ("($ints)[$int]", ()),
    ],
    "double": [
        ("($double) {+~-~*~/} ($double)", ()), ("double($same)", ("int", "string")),
        ("-($double)", ()),
    ],
    "string": [
        ("($string) + ($string)", ()), ("{lowerAscii~upperAscii}($string)", ()),
        ("($string).{lowerAscii~upperAscii}()", ()), ("join($strings, $string)", ()),
        ("($strings).join($string)", ()),
        ("string($same)", ("int", "double", "bool", "string", "time")),
        ("($bool) ? ($string) : ($string)", ()), ("($strings)[$int]", ()),
        ("($map)[$string]", ()), ("($map).{name~verb~a~k}", ()), ("($string)[$int]", ()),
    ],
    "strings": [("($strings) + ($strings)", ()), ("$macro", ()), ("$items", ())],
    "ints": [("$macro", ()), ("$items", ())],
    "map": [
        ("($bool) ? ($map) : ($map)", ()), ("dyn($map).{resource~nested~m10~m}", ()),
    ],
    "time": [
        ('($time) {+~-} duration({"1h"~"-30m"~"86400s"~"x"})', ()), ("timestamp($string)", ()),
    ],
    "any": [
        ("$same", tuple(PATHS)), ("dyn($same) {+~-~*~/~%} dyn($same)", tuple(PATHS)),
        ("($any)[$same]", ("int", "string", "any")), ("type($same)", tuple(PATHS)),
        ("{uint~bytes~duration}($string)", ()),
        ("($any).{all~exists~map~filter~exists_one}(x, dyn(x) == $any)", ()),
    ],
}  # fmt: skip
_TOKEN = re.compile(r"\$(\w+)|\{([^{}]*)\}")


def expr(kind: Kind, scope: Scope_, depth: int) -> st.SearchStrategy[str]:
    """A CEL expression that is of type ``kind`` when every part of it evaluates."""
    return _expr(kind, scope, depth)


@st.composite
def _expr(draw: st.DrawFn, kind: Kind, scope: Scope_, depth: int) -> str:
    def sub(k: Kind) -> str:
        return draw(expr(k, scope, depth - 1))

    names = [name for name, k in scope if kind in (k, "any")]
    if depth <= 0 or draw(st.integers(0, 9)) < 3:
        return draw(st.sampled_from([*PATHS[kind], *LITERALS[kind], *names]))
    if draw(st.integers(0, 9)) == 0:  # chaos: a part of another type
        return f"dyn({sub(draw(st.sampled_from(KINDS)))})"
    template, kinds = draw(st.sampled_from(FORMS[kind]))
    same = draw(st.sampled_from(kinds)) if kinds else kind

    def fill(match: re.Match[str]) -> str:
        token, options = match.group(1), match.group(2)
        if options is not None:
            named = {"PATTERN": PATTERNS, "TIME": TIME}.get(options)
            choice: str = draw(st.sampled_from(named or options.split("~")))
            return choice
        if token == "macro":
            return _macro(draw, kind, scope, depth)
        if token == "items":
            element = ELEMENT[kind]
            return f"[{', '.join(sub(element) for _ in range(draw(st.integers(0, 3))))}]"
        return sub(same if token == "same" else token)

    return str(_TOKEN.sub(fill, template))


def _macro(draw: st.DrawFn, result: Kind, scope: Scope_, depth: int) -> str:
    over = draw(st.sampled_from(["strings", "ints", "map", "string"]))
    variable = draw(st.sampled_from(["x", "y", "action", "now"]))
    inner = (*scope, (variable, ELEMENT[over]))
    source = draw(expr(over, scope, depth - 1))
    if result == "bool":
        name = draw(st.sampled_from(["all", "exists", "exists_one"]))
        body = draw(expr("bool", inner, depth - 1))
    elif result == "strings":
        name = draw(st.sampled_from(["map", "filter"]))
        body = draw(expr("string" if name == "map" else "bool", inner, depth - 1))
    else:
        name, body = "map", draw(expr("int", inner, depth - 1))
    return f"({source}).{name}({variable}, {body})"


@given(source=st.sampled_from(KINDS).flatmap(lambda k: expr(k, (), 4)), cases=inputs,
       runtime_params=st.booleans())  # fmt: skip
@SETTINGS
def test_generated_expressions_agree(
    source: str, cases: list[tuple[Action, Context, Limits]], runtime_params: bool
) -> None:
    for action, context, limit in cases:
        check(source, action, context, limit, runtime_params)


# ---------------------------------------------------------------------------
# Decisions of the benchmark's 200-rule bundle, compiled and interpreted.


@functools.cache
def bench_bundles() -> tuple[Bundle, Bundle]:
    with tempfile.TemporaryDirectory() as tmp:
        BENCH.write_synthetic_bundle(Path(tmp), BENCH.DEFAULT_SEED)
        compiled = load_bundle([Path(tmp)])
        with cel.interpreter_only():
            interpreted = load_bundle([Path(tmp)])
    assert compiled.bundle is not None and interpreted.bundle is not None
    return compiled.bundle, interpreted.bundle


def _decisions(
    bundle: Bundle, action: Action, context: Context
) -> tuple[str, list[tuple[Any, ...]]]:
    decision = engine.evaluate(bundle, action, context)
    explained, traces = engine.explain(bundle, action, context)
    assert explained.model_dump_json() == decision.model_dump_json()
    steps = [
        (t.rule, t.fired, t.error, t.reading, [(s.stage, s.result, s.error, s.values)
                                               for s in t.steps])
        for t in traces
    ]  # fmt: skip
    return decision.model_dump_json(), steps


def test_bench_workload_decisions_are_identical() -> None:
    compiled, interpreted = bench_bundles()
    assert all(
        e.compiled is not None
        for r in compiled.rules
        for e in (r.condition, r.message_expression, *(x for _, x in r.match_conditions))
        if e is not None
    )
    workload = BENCH.make_workload(max(300, EXAMPLES * 2), BENCH.DEFAULT_SEED)
    for action, context in workload:
        assert _decisions(compiled, action, context) == _decisions(interpreted, action, context)


def test_compiled_code_shares_nothing_between_threads() -> None:
    """The engine runs in worker threads: compiled code keeps no state between runs
    (each has its own environment, macro variables included). Each thread's input makes
    the expressions true and every other thread's false; threads switch as often as
    Python lets them."""
    sources = [
        "session.labels.exists(l, l == action.resource.name)",
        "action.risk_tags.all(t, t.startsWith(session.id)) && size(action.risk_tags) == 3",
        "[1, 2, 3].map(x, session.id + string(x)) == action.risk_tags",
        "action.risk_tags.filter(t, t.endsWith('2')).exists_one(t, t == session.id + '2')",
    ]
    pairs = [expressions(source, False) for source in sources]
    compiled = [pair[0] for pair in pairs if pair is not None]
    assert len(compiled) == len(sources)

    def inputs_of(n: int) -> tuple[Action, Context]:
        tags = [f"s{n}-{i}" for i in (1, 2, 3)]
        action = Action(resource=Resource(name=f"name-{n}"), risk_tags=tags)
        return action, Context(session=SessionInfo(id=f"s{n}-", labels=["x", f"name-{n}"]))

    def run_many(n: int) -> list[bool]:
        action, context = inputs_of(n)
        seen = []
        for _ in range(300):
            evaluation = engine._Evaluation(_bundle(Limits()), action, context, tracing=False)
            for expression in compiled:
                assert expression.compiled is not None
                environment = evaluation.environment(expression, expression.compiled, SCOPE)
                seen.append(expression.compiled.run(environment) is True)
        return seen

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(run_many, range(4)))
    finally:
        sys.setswitchinterval(interval)
    assert all(all(seen) for seen in results)


def test_compiled_decisions_are_the_same_from_many_threads() -> None:
    compiled, _ = bench_bundles()
    workload = BENCH.make_workload(240, BENCH.DEFAULT_SEED + 1)
    expected = [engine.evaluate(compiled, a, c).model_dump_json() for a, c in workload]
    starts = range(0, len(workload), len(workload) // 4)

    def decide_all(start: int) -> list[str]:
        rotated = workload[start:] + workload[:start]
        return [engine.evaluate(compiled, a, c).model_dump_json() for a, c in rotated * 2]

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        with ThreadPoolExecutor(len(starts)) as pool:
            results = list(pool.map(decide_all, starts))
    finally:
        sys.setswitchinterval(interval)
    for start, got in zip(starts, results, strict=True):
        assert got == (expected[start:] + expected[:start]) * 2


@given(cases=inputs)
@SETTINGS
def test_interpreted_expressions_read_compiled_variables(
    cases: list[tuple[Action, Context, Limits]],
) -> None:
    for action, context, limit in cases:
        check_variables_for_the_interpreter(action, context, limit)


@given(action=actions(), context=contexts())
@SETTINGS
def test_generated_decisions_are_identical(action: Action, context: Context) -> None:
    compiled, interpreted = bench_bundles()
    assert _decisions(compiled, action, context) == _decisions(interpreted, action, context)


# ---------------------------------------------------------------------------
# The engine's capping: lazy and cached, equal to capping the whole input.


@given(action=actions(), context=contexts(), limit=limits)
@SETTINGS
def test_capping_equals_capping_the_whole_input(
    action: Action, context: Context, limit: Limits
) -> None:
    document, whole = action.model_dump(mode="json"), context.model_dump(mode="json")
    expected = {"action": engine.cap(document, limit)[0]}
    cut = engine.cap(document, limit)[1]
    for root in engine.CONTEXT_ROOTS:
        expected[root], part_cut = engine.cap(whole[root], limit)
        cut = cut or part_cut
    if cut:
        expected["action"]["truncated"] = True
    expected["now"] = context.now.isoformat()
    for _ in range(2):  # the second time from the cache
        evaluation = engine._Evaluation(_bundle(limit), action, context, tracing=False)
        assert evaluation.capped() == expected
        assert evaluation._truncated == cut


def test_truncation_is_noted_only_when_a_document_is_read() -> None:
    """As with the interpreter: an expression reading only ``now`` caps nothing."""
    action = Action(risk_tags=["a"] * 100)
    for source, truncated in (("now.getHours() >= 0", False), ("size(action.risk_tags) > 0", True)):
        pair = expressions(source, False)
        assert pair is not None
        for expression, outcome in ((pair[0], compiled_outcome), (pair[1], reference_outcome)):
            assert outcome(expression, action, Context(), Limits()).truncated is truncated


# ---------------------------------------------------------------------------
# What falls back, and that the engine's fallback takes the interpreter's error text.


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("{'a': action.verb}.a == 'x'", "map literal"),
        ("action.risk_tags.map(t, t == 'x', t)", "3 arguments"),
        ("(" * 20 + "true" + ")" * 20, "nested too deeply"),
    ],
)
def test_unsupported_expressions_fall_back(source: str, reason: str) -> None:
    expression, issues = cel.compile_expression(source)
    assert expression is not None, issues
    assert expression.compiled is None
    assert reason in expression.fallback


def test_engine_records_the_interpreters_error_text(tmp_path: Path) -> None:
    compiled, interpreted = bench_bundles()
    del compiled, interpreted
    pair = expressions("dyn(action).nosuch == 1", False)
    assert pair is not None
    evaluation = engine._Evaluation(_bundle(Limits()), Action(), Context(), tracing=False)
    value, error = evaluation.run(pair[0], SCOPE)
    want = cel.evaluate(pair[1], evaluation.activation(pair[1], REFERENCE_SCOPE))
    assert value is None and error == want[1] and error is not None
    assert "no such member" in error
