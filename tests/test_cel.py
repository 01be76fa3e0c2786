"""The CEL layer: the function library, the static checks and evaluation that never raises."""

from __future__ import annotations

from typing import Any

import pytest
from celpy import celtypes
from celpy.evaluation import CELEvalError

from guardproxy.policy import cel


def run(source: str, **roots: Any) -> tuple[Any, str | None]:
    """Compile ``source`` (which must pass the checks) and evaluate it on JSON ``roots``."""
    expression, issues = cel.compile_expression(source, params=["p"], variables=["v"])
    assert expression is not None, issues
    activation = {name: cel.to_cel(value) for name, value in roots.items()}
    return cel.evaluate(expression, activation)


def run_bool(source: str, **roots: Any) -> bool:
    value, error = run(source, **roots)
    assert error is None, error
    assert isinstance(value, celtypes.BoolType)
    return bool(value)


def issues_of(source: str, params: list[str] | None = None) -> list[cel.Issue]:
    expression, issues = cel.compile_expression(source, params or [], ["v"])
    assert (expression is None) == bool(issues)
    return issues


# ---------------------------------------------------------------------------
# Library functions


@pytest.mark.parametrize(
    ("value", "pattern", "expected"),
    [
        ("db-1", "db-*", True),
        ("db-1", "DB-*", False),  # case-sensitive
        ("prod-db-1", "db-*", False),  # whole string, not a search
        ("db-1x", "db-?", False),
        ("db-1", "db-?", True),
        ("db-b", "db-[abc]", True),
        ("db-d", "db-[abc]", False),
        ("db-d", "db-[!abc]", True),
        ("a/b/c", "a*c", True),
        ("a.b", "a?b", True),
        ("axb", "a.b", False),  # regex metacharacters are literal
        ("", "*", True),
        ("", "?", False),
    ],
)
def test_glob(value: str, pattern: str, expected: bool) -> None:
    assert cel.glob_matches(value, pattern) is expected
    roots = {"action": {"resource": {"name": value}}}
    assert run_bool(f'glob(action.resource.name, "{pattern}")', **roots) is expected
    assert run_bool(f'action.resource.name.glob("{pattern}")', **roots) is expected


@pytest.mark.parametrize(
    ("tags", "pattern", "expected"),
    [
        (["force", "bulk"], "bul*", True),
        (["force", "bulk"], "b", False),
        ([], "*", False),
        (["skip-final-snapshot"], "skip-*", True),
    ],
)
def test_glob_any(tags: list[str], pattern: str, expected: bool) -> None:
    roots = {"action": {"risk_tags": tags}}
    assert run_bool(f'globAny(action.risk_tags, "{pattern}")', **roots) is expected
    assert run_bool(f'action.risk_tags.globAny("{pattern}")', **roots) is expected


WRONG_LIBRARY_CALLS = [
    'glob(action.risk_tags, "x")',  # a list where a string belongs
    "glob(action.resource.name, 1)",
    'globAny(action.resource.name, "x")',  # a string where a list belongs
    "lowerAscii(action.risk_tags)",
    "upperAscii(1)",
    'action.risk_tags.join(1) == ""',
]


@pytest.mark.parametrize("source", WRONG_LIBRARY_CALLS)
def test_library_calls_with_wrong_types_are_refused_at_load(source: str) -> None:
    issues = issues_of(source)
    assert any("needs a" in issue.message for issue in issues), issues


@pytest.mark.parametrize(
    "source",
    [
        'glob(dyn(action.risk_tags), "x")',
        "glob(action.resource.name, dyn(1))",
        'globAny(dyn(action.resource.name), "x")',
        "globAny([1, 2], '1')",  # a list, of the wrong elements: not known at load time
        "lowerAscii(dyn(action.risk_tags))",
        "upperAscii(dyn(1))",
    ],
)
def test_library_functions_reject_wrong_types_as_errors(source: str) -> None:
    """At run time too, where load-time inference cannot know the types (dyn)."""
    value, error = run(source, action={"resource": {"name": "x"}, "risk_tags": ["a"]})
    assert value is None
    assert error


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('lowerAscii("AbC-1")', "abc-1"),
        ('upperAscii("AbC-1")', "ABC-1"),
        ("action.operation.lowerAscii()", "deletestack"),
        ("action.operation.upperAscii()", "DELETESTACK"),
    ],
)
def test_case_functions(source: str, expected: str) -> None:
    value, error = run(source, action={"operation": "DeleteStack"})
    assert error is None
    assert value == expected
    assert isinstance(value, celtypes.StringType)


# ---------------------------------------------------------------------------
# compile_expression: what it accepts, what it records, what it reports


def test_a_good_expression_records_what_it_reads() -> None:
    expression, issues = cel.compile_expression(
        'action.resource.name in params.p && variables.v && session.agent == "x" && '
        "now > timestamp('2020-01-01T00:00:00Z') && action.risk_tags.exists(t, t == 'a')",
        params=["p"],
        variables=["v"],
    )
    assert issues == []
    assert expression is not None
    assert expression.roots == {"action", "params", "variables", "session", "now"}
    assert expression.variables == {"v"}
    assert {
        ("action", "resource", "name"),
        ("params", "p"),
        ("variables", "v"),
        ("session", "agent"),
        ("action", "risk_tags"),
        ("now",),
    } <= expression.paths
    assert ("t",) not in expression.paths  # the macro's own variable is not an input
    assert expression.constant is False


def test_constant_expressions() -> None:
    expression, _ = cel.compile_expression("1 + 1 == 2")
    assert expression is not None
    assert expression.constant is True
    assert cel.evaluate_bool(expression, {}) == (True, None)


@pytest.mark.parametrize(
    ("source", "fragment", "hint"),
    [
        ("action.resoruce.name", "`action` has no field `resoruce`", "did you mean `resource`?"),
        ("has(action.resource.nmae)", "`action.resource` has no field `nmae`", "`name`"),
        ("acton", "unknown identifier `acton`", "action"),
        ("request.path", "unknown identifier `request`", "action"),
        ("lowerAsci(action.verb)", "unknown function `lowerAsci`", "`lowerAscii`"),
        ("action.verb.startswith('d')", "unknown method `startswith`", "`startsWith`"),
        ('action.verb.matches("a(")', "invalid regular expression", "RE2"),
        ('action.verb.matches("(?=x)")', "invalid regular expression", "look-around"),
        ('action.verb == "delet"', '"delet" can never match', "did you mean `delete`?"),
        ('action.provider in ["aws", "kubernetes"]', '"kubernetes" can never match', ""),
        ('action.confidence != "exactly"', '"exactly" can never match', "`exact`"),
        ("params.q", "unknown parameter `q`", "spec.params"),
        ("variables.w", "unknown variable `w`", ""),
        ("variables", "`variables` must be followed by a variable name", ""),
        ("action.scope.namespace.x", "`action.scope.namespace` is a string", ""),
        ("action.risk_tags.all(1, true)", "`all` needs a variable name", ""),
        ("action.verb ==", "syntax error", "CEL syntax"),
        ("(true", "ends too early", "CEL syntax"),
        pytest.param("(" * 1000 + "true" + ")" * 1000, "nested too deeply", "", id="deep"),
    ],
)
def test_compile_issues(source: str, fragment: str, hint: str) -> None:
    issues = issues_of(source, params=["p"])
    assert any(fragment in issue.message for issue in issues), issues
    assert any(hint in issue.hint for issue in issues if fragment in issue.message)


def test_issue_positions_are_inside_the_expression() -> None:
    [issue] = issues_of('action.verb == "delete" &&\n  action.resoruce.name == "x"')
    assert (issue.line, issue.column) == (2, 3)
    [syntax] = issues_of('action.verb == "delete" &&\n  action.environment == == "prod"')
    assert syntax.line == 2


@pytest.mark.parametrize(
    "source",
    [
        'has(action.resource.name) && action.resource.name.startsWith("db")',
        "action.request.header_names.exists(h, h == 'authorization')",
        "size(session.labels) > 0 && session.anonymous",
        "action.dry_run || action.truncated",
        "int(action.request.port) > 0",
        "now.getHours() < 18",
        'action.verb in ["delete", "destroy"]',
        "action.environment == 'prod'",
        "params.p.exists(x, x == action.resource.name)",
    ],
)
def test_valid_expressions_have_no_issues(source: str) -> None:
    assert issues_of(source, params=["p"]) == []


# ---------------------------------------------------------------------------
# Evaluation never raises


class _Raising:
    def __init__(self, error: BaseException) -> None:
        self.error = error

    def evaluate(self, activation: Any) -> Any:
        raise self.error


class _Returning:
    def __init__(self, value: Any) -> None:
        self.value = value

    def evaluate(self, activation: Any) -> Any:
        return self.value


def fake(program: Any) -> cel.Expression:
    return cel.Expression("fake", program, frozenset(), frozenset(), frozenset())


@pytest.mark.parametrize(
    ("error", "fragment"),
    [
        (CELEvalError("no such member"), "no such member"),
        (RecursionError(), "nested too deeply"),
        (TypeError("bad"), "internal: TypeError"),
        (ZeroDivisionError(), "internal: ZeroDivisionError"),
        (AttributeError("x"), "internal: AttributeError"),
        (KeyError("x"), "internal: KeyError"),
        (MemoryError(), "internal: MemoryError"),
    ],
)
def test_evaluate_bool_catches_everything(error: BaseException, fragment: str) -> None:
    value, text = cel.evaluate_bool(fake(_Raising(error)), {})
    assert value is None
    assert text is not None
    assert fragment in text


def test_long_error_texts_are_cut() -> None:
    # celpy puts the whole activation into some messages: they must not flood the log.
    _, text = cel.evaluate_bool(fake(_Raising(CELEvalError("x" * 5000))), {})
    assert text is not None
    assert len(text) <= cel.ERROR_TEXT_LIMIT


@pytest.mark.parametrize(
    "result",
    [celtypes.StringType("true"), celtypes.IntType(1), None, celtypes.ListType([]), "x"],
)
def test_evaluate_bool_rejects_non_bool_results(result: Any) -> None:
    value, error = cel.evaluate_bool(fake(_Returning(result)), {})
    assert value is None
    assert error is not None
    assert "not bool" in error


@pytest.mark.parametrize("result", [celtypes.BoolType(False), False, celtypes.BoolType(True)])
def test_evaluate_bool_accepts_bools(result: Any) -> None:
    assert cel.evaluate_bool(fake(_Returning(result)), {}) == (bool(result), None)


def test_evaluate_string() -> None:
    assert cel.evaluate_string(fake(_Returning(celtypes.StringType("hi"))), {}) == ("hi", None)
    value, error = cel.evaluate_string(fake(_Returning(celtypes.IntType(1))), {})
    assert value is None
    assert error is not None
    assert "not string" in error
    value, error = cel.evaluate_string(fake(_Raising(RuntimeError())), {})
    assert (value, error) == (None, "internal: RuntimeError")


@pytest.mark.parametrize(
    "source",
    [
        "action.service == 'rds'",  # declared in the schema, missing from this input
        'dyn(1) == "1"',  # dyn: what load-time inference cannot see
        "dyn(size(action.risk_tags)) > 1.5",
        "9223372036854775807 + 1 > 0",
        "1 / 0 == 1",
        "action.operation.matches(action.resource.name)",  # not a literal: found at runtime
        "action.risk_tags[5] == 'a'",
    ],
)
def test_runtime_errors_are_returned_not_raised(source: str) -> None:
    value, error = run(
        source, action={"risk_tags": ["a"], "resource": {"name": "["}, "operation": "x"}
    )
    assert value is None
    assert error


def test_errors_absorbed_by_logical_operators() -> None:
    # CEL's commutative && and ||: an error on one side does not matter if the other decides.
    assert run_bool("1 / 0 == 1 || true") is True
    assert run_bool("false && 1 / 0 == 1") is False


def test_to_plain_converts_cel_values() -> None:
    value = cel.to_cel({"a": [1, "x", True, 1.5, None], "b": {"c": "d"}})
    assert cel.to_plain(value) == {"a": [1, "x", True, 1.5, None], "b": {"c": "d"}}
