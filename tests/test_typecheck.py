"""Load-time type inference for policy CEL: a definite type mismatch is a lint error with
its position and a hint; what cannot be known (dyn) is never reported."""

from __future__ import annotations

from pathlib import Path

import pytest
from celpy import celtypes
from policy_helpers import load, one_problem, policy_set_yaml

from guardproxy.policy import cel, typecheck
from guardproxy.policy.typecheck import BOOL, STRING, CelType


def issues(source: str, expect: CelType | None = BOOL, **variables: CelType) -> list[str]:
    expression, found = cel.compile_expression(
        source, {"owners": ["a"], "limit": 5, "team": {"name": "x"}}, variables, expect=expect
    )
    assert (expression is None) == bool(found)
    return [f"{issue.message} | {issue.hint}" for issue in found]


def type_of(source: str, **variables: CelType) -> str:
    expression, found = cel.compile_expression(source, {"owners": ["a"]}, variables)
    assert expression is not None, found
    return str(expression.type)


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("action.verb", "the condition is `string`, not bool (`action.verb`)"),
        ("action.risk_tags", "the condition is `list(string)`, not bool"),
        ("history.session.total", "the condition is `int`, not bool"),
        ("action.resource", "the condition is `map(string, dyn)`, not bool"),
        ('"text"', "the condition is `string`, not bool"),
        ("params.owners", "the condition is `list(string)`, not bool (`params.owners`)"),
        ("action.dry_run ? 'a' : 'b'", "the condition is `string`, not bool"),
        ("action.risk_tags.map(t, t == 'a')", "the condition is `list(bool)`, not bool"),
        ("action.verb.lowerAscii()", "the condition is `string`, not bool"),
        ("null", "always null"),
        ("action.verb && true", "each side of `&&` must be bool: `action.verb` is `string`"),
        ("action.dry_run || 1", "each side of `||` must be bool"),
        ("!action.verb", "the operand of `!` must be bool"),
        ("action.risk_tags.exists(t, t)", "the predicate of `exists` must be bool"),
        ("action.risk_tags.all(t, size(t))", "the predicate of `all` must be bool"),
        ("size(action.risk_tags.filter(t, 1)) > 0", "the predicate of `filter` must be bool"),
        ("history.session.total > '5'", "`>` between `int` and `string` has no overload"),
        ("history.session.total > 5.0", "`>` between `int` and `double` has no overload"),
        ("action.request.port == '443'", "`==` between `int` and `string` is an error"),
        ("1 == 1.0", "`==` between `int` and `double`"),
        ("action.risk_tags < action.risk_tags", "`<` cannot order"),
        ("1 in action.risk_tags", "`in` looks for `int` in `list(string)`"),
        ("'a' in history.session.total", "`in` needs a list or a map on its right"),
        ("action.verb + 1 == 'x'", "`+` has no overload for `string` and `int`"),
        ("-action.verb == 'x'", "`-` needs an int or a double"),
        ("2.0 % 1.0 == 0.0", "`%` has no overload for `double` and `double`"),
        ("action.risk_tags['a'] == 'x'", "a list index must be an int"),
        ("history.session.total[0] == 1", "cannot be indexed"),
        ("size(history.session.total) > 0", "`size` needs a bytes, list, map or string"),
        ("action.verb.startsWith(1)", "`startsWith` needs a string as argument 2"),
        ("history.session.total.startsWith('a')", "`startsWith` needs a string as its receiver"),
        ("glob(action.risk_tags, 'x*')", "`glob` needs a string as its receiver"),
        ("globAny(action.verb, 'x*')", "`globAny` needs a list as its receiver"),
        ("action.verb.join(',') == ''", "`join` needs a list as its receiver"),
        ("upperAscii(1) == 'A'", "`upperAscii` needs a string"),
        ("action.verb.getHours() > 1", "`getHours` needs a timestamp"),
        ("history.session.total.exists(x, true)", "`exists` needs a list or a map"),
        ("history.recent.exists(r, r.verbb == 'delete')", "`r` has no field `verbb`"),
        ("action.readings.exists(r, r.enviroment == 'prod')", "`r` has no field `enviroment`"),
        ("params.team.nmae == 'x'", "`params.team` has no field `nmae`"),
        ("params.limit.x == 1", "`params.limit` is `int` and has no field `x`"),
        ("now > '2026-01-01'", "`>` between `timestamp` and `string`"),
        ("variables.who", "the condition is `string`, not bool (`variables.who`)"),
    ],
)
def test_type_errors_are_reported(source: str, fragment: str) -> None:
    found = issues(source, who=STRING)
    assert any(fragment in text for text in found), found


@pytest.mark.parametrize(
    ("source", "hint"),
    [
        ("action.verb", 'action.verb == "value"'),
        ("action.risk_tags", '"v" in action.risk_tags'),
        ("history.session.total", "history.session.total > 0"),
        ("action.resource", "has(action.resource.field)"),
        ("history.recent.exists(r, r.verbb == 'delete')", "did you mean `verb`?"),
        ("history.session.total > 5.0", "double(x) or int(x)"),
    ],
)
def test_type_errors_come_with_a_hint(source: str, hint: str) -> None:
    assert any(hint in text.partition(" | ")[2] for text in issues(source)), issues(source)


@pytest.mark.parametrize(
    "source",
    [
        'action.verb == "delete"',
        "action.verb == null",  # comparing with null is not an error in cel-python
        "has(action.resource.name) && action.resource.name.startsWith('db')",
        "size(action.risk_tags) > 0 && 'force' in action.risk_tags",
        "action.risk_tags.exists(t, t.startsWith('skip-'))",
        "action.readings.exists(r, r.verb == 'delete' && r.resource.name.glob('prod-*'))",
        "history.recent.exists(r, r.verb == 'delete' && r.at > '2026-01-01')",
        "history.session.destructive + 1 > params.limit",
        "now.getHours() < 18 && now > timestamp('2026-01-01T00:00:00Z')",
        "now - timestamp('2026-01-01T00:00:00Z') > duration('1h')",
        "int(action.request.port) > 0 && string(action.request.port) == '443'",
        "dyn(action.request.port) == '443'",  # dyn: not known at load time
        "action.resource.name in params.owners",
        "params.owners.exists(o, o == action.resource.name)",
        "action.risk_tags.map(t, t.upperAscii()).exists(t, t == 'FORCE')",
        "action.risk_tags.join(',').contains('force')",
        "globAny(action.risk_tags, 'skip-*') || glob(action.resource.name, 'db-*')",
        "'prod' in action.resource.name",  # cel-python: a substring test
        "action.dry_run ? true : action.verb == 'read'",
        "{'a': 1}['a'] == 1 && [1, 2][0] == 1",
        "action.request.header_names.exists(h, h == 'authorization')",
        "variables.flag && variables.anything == 'x'",
        "type(action.request.port) == int",
        "(((action.verb == 'delete')))",
    ],
)
def test_well_typed_and_unknown_types_pass(source: str) -> None:
    assert issues(source, flag=BOOL, anything=typecheck.DYN) == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("action.verb", "string"),
        ("action.risk_tags.map(t, size(t))", "list(int)"),
        ("action.risk_tags.filter(t, t != '')", "list(string)"),
        ("history.session.destructive * 2", "int"),
        ("now - now", "duration"),
        ("[1, 'a']", "list(dyn)"),
        ("{'a': 1}", "map(string, int)"),
        ("action.readings[0].verb", "string"),
        ("action.readings[0].readings", "list(map(string, dyn))"),
        ("params.owners[0]", "string"),
        ("dyn(1)", "dyn"),
        ("1u + 2u", "uint"),
        ("b'x' + b'y'", "bytes"),
    ],
)
def test_inferred_types(source: str, expected: str) -> None:
    assert type_of(source) == expected


def test_a_list_of_mappings_with_different_keys_has_no_fixed_fields() -> None:
    params = {"owners": [{"name": "a"}, {"name": "b", "team": "x"}], "same": [{"k": 1}]}
    expression, found = cel.compile_expression(
        "params.owners.exists(o, has(o.team) && o.team == 'x') && params.same.exists(s, s.k > 0)",
        params,
        expect=BOOL,
    )
    assert found == [] and expression is not None
    _, found = cel.compile_expression("params.same.exists(s, s.kk > 0)", params, expect=BOOL)
    assert [issue.message for issue in found] == ["`s` has no field `kk`"]


def test_a_message_expression_must_be_a_string() -> None:
    assert issues("size(action.risk_tags)", expect=STRING) == [
        "the expression is `int`, not string | convert it with string(...)"
    ]
    assert issues('"Refusing " + action.resource.name', expect=STRING) == []


def test_positions_are_inside_the_expression() -> None:
    expression, found = cel.compile_expression(
        'action.verb == "delete" &&\n  history.session.total > "5"', expect=BOOL
    )
    assert expression is None
    [issue] = found
    assert (issue.line, issue.column) == (2, 3)


def test_every_library_function_has_a_signature() -> None:
    assert set(cel.LIBRARY) <= set(typecheck.SIGNATURES)


def test_deep_nesting_does_not_exhaust_the_stack_in_the_typer() -> None:
    source = "(" * 120 + 'action.environment == "prod"' + ")" * 120
    expression, found = cel.compile_expression(source, expect=BOOL)
    assert found == [] and expression is not None
    assert expression.type == BOOL


def test_what_the_typer_reports_fails_at_run_time() -> None:
    """A reported mismatch is no false alarm: cel-python fails on it (dyn hides it)."""
    for source in ("history.session.total > '5'", "action.request.port == '443'", "1 == 1.0"):
        hidden = source.replace("history.session.total", "dyn(history.session.total)")
        hidden = hidden.replace("action.request.port", "dyn(action.request.port)")
        hidden = hidden.replace("1 == 1.0", "dyn(1) == 1.0")
        expression, found = cel.compile_expression(hidden, expect=BOOL)
        assert expression is not None, found
        activation = {
            "history": cel.to_cel({"session": {"total": 7}}),
            "action": cel.to_cel({"request": {"port": 443}}),
        }
        value, error = cel.evaluate(expression, activation)
        assert error is not None and not isinstance(value, celtypes.BoolType), source


# -- through the loader: file, line and column


def test_a_non_bool_condition_is_a_lint_error_at_its_line(tmp_path: Path) -> None:
    text = policy_set_yaml(
        "- id: r\n  decision: deny\n  message: stop\n  condition: >-\n    action.resource.name\n"
    )
    result = load(tmp_path, {"set.yaml": text})
    problem = one_problem(result, "the condition is `string`, not bool")
    assert problem.position.file == str(tmp_path / "set.yaml")
    assert problem.position.line == text.splitlines().index("        action.resource.name") + 1
    assert problem.position.column == 9
    assert problem.rule == "s/r"
    assert "action.resource.name ==" in problem.hint
    assert result.bundle is None


def test_variables_carry_their_types_to_later_expressions(tmp_path: Path) -> None:
    text = policy_set_yaml(
        "- id: r\n  decision: deny\n  message: stop\n  condition: variables.name\n",
        spec="variables:\n  - name: name\n    expression: action.resource.name.lowerAscii()\n",
    )
    result = load(tmp_path, {"set.yaml": text})
    one_problem(result, "the condition is `string`, not bool (`variables.name`)")


def test_match_conditions_message_expressions_and_exceptions_are_typed(tmp_path: Path) -> None:
    rules = (
        "- id: r\n  decision: deny\n  message: stop\n"
        "  matchConditions:\n    - {name: m, expression: action.verb}\n"
        "  messageExpression: size(action.risk_tags)\n"
    )
    result = load(tmp_path, {"set.yaml": policy_set_yaml(rules)})
    one_problem(result, "the condition is `string`, not bool (`action.verb`)")
    one_problem(result, "the expression is `int`, not string")
