"""Loading and linting: every problem has a position, a message and a hint; a bundle
with any error never loads; no input makes the loader raise."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from policy_helpers import (
    CONFIG_FILE,
    column_of,
    config_yaml,
    exception_yaml,
    line_of,
    load,
    one_problem,
    policy_set_yaml,
    problems_with,
    write_files,
    yaml_text,
)

from guardproxy.policy import LoadResult, load_bundle

SET = "set.yaml"


def one_rule(body: str, *, rule_id: str = "r", spec: str = "") -> str:
    """A PolicySet `s` with one rule: ``body`` is the rule's YAML after its id."""
    rule = f"- id: {rule_id}\n" + textwrap.indent(yaml_text(body), "  ")
    return policy_set_yaml(rule, spec=spec)


def lint(tmp_path: Path, text: str, *, config: str | None = None) -> LoadResult:
    return load(tmp_path, {SET: text}, config=config)


def set_file(tmp_path: Path) -> str:
    return str(tmp_path / SET)


def assert_at(tmp_path: Path, result: LoadResult, fragment: str, text: str, needle: str) -> None:
    """The problem about ``fragment`` points at ``needle`` in the set file."""
    problem = one_problem(result, fragment)
    assert problem.position.file == set_file(tmp_path)
    assert problem.position.line == line_of(text, needle)
    assert result.bundle is None


# ---------------------------------------------------------------------------
# CEL checks, with positions inside the expression

TYPO_STYLES = {
    "plain": 'condition: action.resoruce.name == "x"',
    "quoted": 'condition: \'action.verb == "delete" && action.resoruce.name == "x"\'',
    "double-quoted": 'condition: "action.verb == 1 && action.resoruce.name == 2"',
    "plain-multiline": 'condition: action.verb == "delete" &&\n  action.resoruce.name == "x"',
    "folded": 'condition: >-\n  action.verb == "delete" &&\n  action.resoruce.name == "x"',
    "folded-indented": (
        'condition: >-\n  action.verb == "delete" &&\n    action.resoruce.name == "x"'
    ),
    "folded-blank-lines": (
        'condition: >-\n  action.verb == "delete"\n\n\n  && action.resoruce.name == "x"'
    ),
    "literal": 'condition: |\n  action.verb == "delete" &&\n    action.resoruce.name == "x"',
    "literal-blank-line": (
        'condition: |\n  action.verb == "delete" &&\n\n  action.resoruce.name == "x"'
    ),
    "match-condition": (
        "matchConditions:\n  - name: typo\n    expression: >-\n"
        '      action.verb == "delete" &&\n      action.resoruce.name == "x"'
    ),
}


@pytest.mark.parametrize("style", list(TYPO_STYLES))
def test_field_typo_is_reported_at_its_file_line_and_column(tmp_path: Path, style: str) -> None:
    text = one_rule(f"decision: deny\nmessage: stop\n{TYPO_STYLES[style]}")
    result = lint(tmp_path, text)
    problem = one_problem(result, "no field `resoruce`")
    assert problem.hint == "did you mean `resource`?"
    assert problem.rule == "s/r"
    assert problem.severity == "error"
    line, column = line_of(text, "action.resoruce"), column_of(text, "action.resoruce")
    assert (problem.position.file, problem.position.line, problem.position.column) == (
        set_file(tmp_path),
        line,
        column,
    )
    assert str(problem.position) == f"{set_file(tmp_path)}:{line}:{column}"
    assert result.bundle is None


def test_typo_inside_has_is_reported(tmp_path: Path) -> None:
    # cel-python would silently read has() of a missing field as false.
    text = one_rule("decision: deny\nmessage: stop\ncondition: has(action.resoruce.name)")
    assert_at(tmp_path, lint(tmp_path, text), "no field `resoruce`", text, "has(")


@pytest.mark.parametrize(
    ("condition", "fragment", "hint"),
    [
        ('acton.verb == "delete"', "unknown identifier `acton`", "expressions can read"),
        ('lowerAsci(action.service) == "rds"', "unknown function `lowerAsci`", "`lowerAscii`"),
        ('action.service.globz("r*")', "unknown method `globz`", "`glob`"),
        ('action.resource.name.matches("(")', "invalid regular expression", "RE2"),
        ('matches(action.resource.name, "[a-")', "invalid regular expression", "RE2"),
        ('action.verb == "delet"', '"delet" can never match', "did you mean `delete`?"),
        ('"delet" != action.verb', '"delet" can never match', "did you mean `delete`?"),
        ('action.environment in ["prod", "production"]', '"production" can never', ""),
        ("params.nope", "unknown parameter `nope`", "spec.params"),
        ("variables.nope", "unknown variable `nope`", "spec.variables"),
        ("session.agnt == 'x'", "`session` has no field `agnt`", "did you mean `agent`?"),
        ("action.dry_run.value", "`action.dry_run` is a bool", ""),
    ],
)
def test_cel_checks(tmp_path: Path, condition: str, fragment: str, hint: str) -> None:
    text = one_rule(f"decision: deny\nmessage: stop\ncondition: >-\n  {condition}")
    result = lint(tmp_path, text)
    problem = one_problem(result, fragment)
    assert hint in problem.hint
    assert problem.rule == "s/r"
    assert problem.position.line == line_of(text, condition)
    assert result.bundle is None


def test_known_params_and_earlier_variables_are_accepted(tmp_path: Path) -> None:
    spec = """
    params: {names: [a]}
    variables:
      - name: first
        expression: action.resource.name in params.names
      - name: second
        expression: variables.first && action.verb == "delete"
    """
    text = one_rule("decision: deny\nmessage: stop\ncondition: variables.second", spec=spec)
    result = lint(tmp_path, text)
    assert result.errors == []
    assert result.bundle is not None


def test_a_variable_may_not_use_a_later_one(tmp_path: Path) -> None:
    spec = """
    variables:
      - name: first
        expression: variables.second
      - name: second
        expression: action.dry_run
    """
    text = one_rule("decision: deny\nmessage: stop\ncondition: variables.second", spec=spec)
    result = lint(tmp_path, text)
    problem = one_problem(result, "unknown variable `second`")
    assert problem.rule == "s/variables.first"
    assert problem.position.line == line_of(text, "variables.second")


def test_an_expression_left_to_the_interpreter_is_a_notice_at_its_line(tmp_path: Path) -> None:
    text = one_rule(
        """
        decision: deny
        message: Not here.
        matchConditions:
          - {name: plain, expression: 'action.verb == "delete"'}
        condition: '{"verb": action.verb}.verb == "delete"'
        """
    )
    result = lint(tmp_path, text)
    assert result.bundle is not None and not result.errors and not result.warnings
    (notice,) = [p for p in result.problems if p.severity == "notice"]
    assert notice.position.file == set_file(tmp_path)
    assert notice.position.line == line_of(text, "condition:")
    assert "interpreter" in notice.message and "map literal" in notice.message
    (rule,) = result.bundle.rules
    assert rule.condition is not None and rule.condition.compiled is None
    assert all(e.compiled is not None for _, e in rule.match_conditions)


def test_cel_syntax_error_is_reported_on_its_line(tmp_path: Path) -> None:
    text = one_rule(
        "decision: deny\nmessage: stop\ncondition: |\n"
        '  action.verb == "delete" &&\n  action.environment == == "prod"'
    )
    result = lint(tmp_path, text)
    problem = one_problem(result, "syntax error")
    assert problem.position.line == line_of(text, "== ==")
    assert problem.hint
    assert result.bundle is None


def test_cel_that_ends_too_early_says_so(tmp_path: Path) -> None:
    text = one_rule(
        'decision: deny\nmessage: stop\ncondition: >-\n  action.verb == "delete" &&\n  (true'
    )
    problem = one_problem(lint(tmp_path, text), "syntax error")
    assert "ends too early" in problem.message
    assert problem.position.line == line_of(text, "(true")


def test_message_expression_and_exception_conditions_are_checked(tmp_path: Path) -> None:
    text = one_rule(
        "decision: deny\nmessage: stop\nmessageExpression: action.resource.nam",
    )
    result = lint(tmp_path, text)
    assert one_problem(result, "no field `nam`").hint == "did you mean `name`?"

    exception = exception_yaml(
        "rules: [s/r]\ncondition: action.enviroment == 'prod'\n"
        "expires: 2026-06-10T00:00:00Z\nreason: because"
    )
    files = {SET: one_rule("decision: deny\nmessage: stop"), "exc.yaml": exception}
    result = load(tmp_path / "exc", files)
    problem = one_problem(result, "no field `enviroment`")
    assert problem.position.file == str(tmp_path / "exc" / "exc.yaml")
    assert problem.position.line == line_of(exception, "action.")
    assert result.bundle is None


# ---------------------------------------------------------------------------
# The document schema


def test_unknown_key_is_reported_with_a_did_you_mean(tmp_path: Path) -> None:
    text = one_rule('decision: deny\nmessage: stop\ncondtion: action.verb == "delete"')
    result = lint(tmp_path, text)
    problem = one_problem(result, "unknown field `condtion`")
    assert problem.hint == "did you mean `condition`?"
    assert problem.rule == "s/r"
    assert problem.position.line == line_of(text, "condtion")
    assert problem.position.column == column_of(text, "condtion")
    assert result.bundle is None


def test_unknown_key_in_a_nested_block(tmp_path: Path) -> None:
    text = one_rule("decision: hold\nmessage: stop\napproval: {groups: [sre], qourum: 2}")
    problem = one_problem(lint(tmp_path, text), "unknown field `qourum`")
    assert problem.hint == "did you mean `quorum`?"


def test_missing_decision(tmp_path: Path) -> None:
    text = one_rule("message: stop")
    result = lint(tmp_path, text)
    problem = one_problem(result, "missing required field `decision`")
    assert problem.rule == "s/r"
    assert problem.position.line == line_of(text, "id: r")
    assert result.bundle is None


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("decision: maybe\nmessage: stop", "decision: maybe"),
        ("decision: deny\nmessage: stop\nmatch: {verbs: [remove]}", "remove"),
        ("decision: deny\nmessage: stop\nfailurePolicy: Sometimes", "failurePolicy"),
        ("decision: hold\nmessage: stop\napproval: {groups: [a], timeout: soon}", "timeout"),
        ("decision: hold\nmessage: stop\napproval: {groups: [a], grant: forever}", "grant"),
    ],
)
def test_invalid_values_are_reported_where_they_are(tmp_path: Path, body: str, needle: str) -> None:
    text = one_rule(body)
    result = lint(tmp_path, text)
    assert result.bundle is None
    assert len(result.errors) == 1
    problem = result.errors[0]
    assert problem.rule == "s/r"
    assert problem.position.line == line_of(text, needle)


def test_wrong_api_version_and_unknown_kind(tmp_path: Path) -> None:
    text = one_rule("decision: deny\nmessage: stop")
    result = load(
        tmp_path,
        {
            "old.yaml": text.replace("guardproxy.dev/v1", "guardproxy.dev/v1alpha1"),
            "kind.yaml": text.replace("kind: PolicySet", "kind: PolicySett"),
        },
    )
    assert one_problem(result, "apiVersion must be").position.line == 1
    assert one_problem(result, "unknown kind 'PolicySett'").position.line == 2
    assert result.bundle is None


# ---------------------------------------------------------------------------
# YAML traps


def test_cel_starting_with_bang_is_a_yaml_tag(tmp_path: Path) -> None:
    text = one_rule("decision: deny\nmessage: stop\ncondition: !has(action.resource.name)")
    result = lint(tmp_path, text)
    problem = one_problem(result, "read by YAML as a tag")
    assert "`>-`" in problem.hint
    assert problem.position.line == line_of(text, "!has")
    assert result.bundle is None


@pytest.mark.parametrize(
    ("body", "word", "boolean"),
    [
        ("decision: deny\nmessage: stop\nmatch: {riskTags: [force, on]}", "on", "true"),
        ("decision: deny\nmessage: no", "no", "false"),
        ("decision: deny\nmessage: stop\nlabels: {owner: yes}", "yes", "true"),
        ("decision: deny\nmessage: stop\nmatch: {operations: [Off]}", "Off", "false"),
    ],
)
def test_yaml_1_1_booleans_in_place_of_text(
    tmp_path: Path, body: str, word: str, boolean: str
) -> None:
    text = one_rule(body)
    result = lint(tmp_path, text)
    problem = one_problem(result, f"`{word}` is read by YAML 1.1 as the boolean {boolean}")
    assert f'"{word}"' in problem.hint
    assert result.bundle is None


def test_yaml_1_1_boolean_as_a_key(tmp_path: Path) -> None:
    text = one_rule("decision: deny\nmessage: stop\nlabels: {on: call}")
    result = lint(tmp_path, text)
    problem = one_problem(result, "key 'on' is read by YAML as bool")
    assert problem.hint == 'quote it: "on"'
    assert result.bundle is None


def test_real_booleans_are_not_flagged(tmp_path: Path) -> None:
    text = one_rule("decision: deny\nmessage: stop\nmodeLocked: true\nmatch: {dryRun: false}")
    result = lint(tmp_path, text)
    assert result.problems == []
    assert result.bundle is not None


def test_duplicate_keys(tmp_path: Path) -> None:
    text = one_rule("decision: allow\nmessage: stop\ndecision: deny")
    result = lint(tmp_path, text)
    problem = one_problem(result, "duplicate key `decision`")
    assert problem.position.line == line_of(text, "decision: deny")
    assert result.bundle is None


def test_yaml_syntax_error_has_a_position_and_a_hint(tmp_path: Path) -> None:
    text = one_rule('decision: deny\nmessage: stop\ncondition: "prod" in action.risk_tags')
    result = lint(tmp_path, text)
    problem = one_problem(result, "YAML syntax")
    assert problem.position.line == line_of(text, '"prod"')
    assert "`>-`" in problem.hint
    assert result.bundle is None


# ---------------------------------------------------------------------------
# Rule shape


def test_duplicate_rule_ids(tmp_path: Path) -> None:
    rules = "- id: r\n  decision: allow\n- id: r\n  decision: deny\n  message: stop\n"
    text = policy_set_yaml(rules)
    result = lint(tmp_path, text)
    problem = one_problem(result, "duplicate rule id `r`")
    assert problem.position.line == line_of(text, "id: r\n      decision: deny")
    assert result.bundle is None


def test_duplicate_policy_set_names(tmp_path: Path) -> None:
    text = one_rule("decision: allow")
    result = load(tmp_path, {"a.yaml": text, "b.yaml": text})
    problem = one_problem(result, "PolicySet `s` is also defined at")
    assert problem.position.file == str(tmp_path / "b.yaml")
    assert str(tmp_path / "a.yaml") in problem.message
    assert result.bundle is None


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("decision: hold\nmessage: stop", "needs an `approval` block"),
        ("decision: deny", "a `deny` rule needs a `message`"),
        ("decision: hold\napproval: {groups: [a]}", "a `hold` rule needs a `message`"),
        ("decision: deny\nmessage: '   '", "a `deny` rule needs a `message`"),
        ("decision: deny\nmessage: |\n  line one\n  line two", "one line of at most 300"),
        (f"decision: deny\nmessage: {'m' * 301}", "one line of at most 300"),
        ("decision: deny\nmessage: stop\nmatch: {verbs: []}", "`match.verbs` is an empty list"),
        ("decision: deny\nmessage: stop\nmatch: {hosts: []}", "`match.hosts` is an empty list"),
        ("decision: deny\nmessage: stop\ncondition: 1 == 2", "always false"),
        ("decision: deny\nmessage: stop\ncondition: 1 / 0 == 1", "always fails"),
        (
            "decision: deny\nmessage: stop\nmatchConditions:\n"
            "  - name: never\n    expression: 'false'",
            "always false",
        ),
        (
            "decision: hold\nmessage: stop\napproval: {groups: [sre], requiredGroups: [dba]}",
            "required groups ['dba'] are not among the approval groups",
        ),
    ],
)
def test_rule_shape_errors(tmp_path: Path, body: str, fragment: str) -> None:
    result = lint(tmp_path, one_rule(body))
    problem = one_problem(result, fragment)
    assert problem.severity == "error"
    assert problem.rule == "s/r"
    assert result.bundle is None


def test_a_message_of_exactly_300_characters_is_fine(tmp_path: Path) -> None:
    result = lint(tmp_path, one_rule(f"decision: deny\nmessage: {'m' * 300}"))
    assert result.errors == []
    assert result.bundle is not None


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("decision: deny\nmessage: stop\nfailurePolicy: Ignore", "failurePolicy Ignore"),
        ("decision: deny\nmessage: stop\napproval: {groups: [a]}", "`approval` is ignored"),
    ],
)
def test_warnings_do_not_block_loading(tmp_path: Path, body: str, fragment: str) -> None:
    result = lint(tmp_path, one_rule(body))
    assert one_problem(result, fragment).severity == "warning"
    assert result.errors == []
    assert result.bundle is not None


# ---------------------------------------------------------------------------
# Exceptions


def exception_files(
    spec: str, *, rule_body: str = "decision: deny\nmessage: stop"
) -> dict[str, str]:
    return {SET: one_rule(rule_body), "exc.yaml": exception_yaml(spec)}


def test_exception_naming_an_unknown_rule(tmp_path: Path) -> None:
    spec = "rules: [s/rr]\nexpires: 2026-06-10T00:00:00Z\nreason: migration"
    result = load(tmp_path, exception_files(spec))
    problem = one_problem(result, "names unknown rule `s/rr`")
    assert problem.hint == "did you mean `s/r`?"
    assert problem.position.file == str(tmp_path / "exc.yaml")
    assert problem.position.line == line_of(exception_yaml(spec), "rules:")
    assert result.bundle is None


def test_exception_for_a_rule_that_forbids_them(tmp_path: Path) -> None:
    spec = "rules: [s/r]\nexpires: 2026-06-10T00:00:00Z\nreason: migration"
    files = exception_files(spec, rule_body="decision: deny\nmessage: stop\nexceptions: forbidden")
    result = load(tmp_path, files)
    assert one_problem(result, "rule `s/r` forbids exceptions").severity == "error"
    assert result.bundle is None


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("rules: [s/r]\nreason: migration", "missing required field `expires`"),
        ("rules: [s/r]\nexpires: 2026-06-10T00:00:00\nreason: x", "needs a time zone"),
        ("rules: [s/r]\nexpires: 2026-06-10T00:00:00Z", "missing required field `reason`"),
        ("rules: []\nexpires: 2026-06-10T00:00:00Z\nreason: x", "rules"),
        (
            "rules: [s/r]\nmatch: {verbs: []}\nexpires: 2026-06-10T00:00:00Z\nreason: x",
            "`match.verbs` is an empty list",
        ),
    ],
)
def test_exception_shape_errors(tmp_path: Path, spec: str, fragment: str) -> None:
    result = load(tmp_path, exception_files(spec))
    assert problems_with(result, fragment)
    assert result.bundle is None


@pytest.mark.parametrize(
    ("expires", "fragment"),
    [("2026-05-01T00:00:00Z", "expired on"), ("2027-01-01T00:00:00Z", "more than 90 days")],
)
def test_exception_expiry_warnings(tmp_path: Path, expires: str, fragment: str) -> None:
    spec = f"rules: [s/r]\nexpires: {expires}\nreason: migration"
    result = load(tmp_path, exception_files(spec))
    assert one_problem(result, fragment).severity == "warning"
    assert result.bundle is not None


# ---------------------------------------------------------------------------
# The bundle as a whole


def test_a_directory_without_bundle_config_is_an_error(tmp_path: Path) -> None:
    result = load(tmp_path, {SET: one_rule("decision: allow")}, with_config=False)
    problem = one_problem(result, "no BundleConfig found")
    assert "defaultDecision" in problem.hint
    assert result.bundle is None


def test_two_bundle_configs_are_an_error(tmp_path: Path) -> None:
    files = {SET: one_rule("decision: allow"), "other.yaml": config_yaml("deny")}
    result = load(tmp_path, files)
    problem = one_problem(result, "a second BundleConfig")
    assert str(tmp_path / CONFIG_FILE) in problem.message
    assert problem.position.file == str(tmp_path / "other.yaml")
    assert result.bundle is None


@pytest.mark.parametrize(
    ("default", "spec"),
    [("hold", ""), ("deny", "unclassified: hold\n")],
)
def test_a_hold_default_needs_a_default_approval(tmp_path: Path, default: str, spec: str) -> None:
    result = lint(tmp_path, one_rule("decision: allow"), config=config_yaml(default, spec))
    assert one_problem(result, "needs `defaultApproval`").severity == "error"
    assert result.bundle is None
    approved = config_yaml(default, spec + "defaultApproval: {groups: [sre]}")
    assert lint(tmp_path / "ok", one_rule("decision: allow"), config=approved).bundle is not None


def test_unclassified_cannot_be_allow(tmp_path: Path) -> None:
    result = lint(
        tmp_path, one_rule("decision: allow"), config=config_yaml("deny", "unclassified: allow")
    )
    assert problems_with(result, "unclassified")
    assert result.bundle is None


def test_test_files_are_not_policy(tmp_path: Path) -> None:
    files = {SET: one_rule("decision: allow"), "set_test.yaml": "kind: PolicyTest\nnot: policy\n"}
    result = load(tmp_path, files)
    assert result.problems == []
    assert result.bundle is not None


def test_a_broken_file_never_half_loads(tmp_path: Path) -> None:
    good = one_rule("decision: deny\nmessage: stop")
    assert load(tmp_path / "good", {SET: good}).bundle is not None
    bad = one_rule("decision: deny\nmessage: stop\ncondition: action.nope", rule_id="other")
    bad = bad.replace("name: s}", "name: t}")
    result = load(tmp_path / "mixed", {SET: good, "bad.yaml": bad})
    assert result.errors
    assert result.bundle is None


def test_one_broken_rule_breaks_its_whole_bundle(tmp_path: Path) -> None:
    rules = (
        "- id: good\n  decision: deny\n  message: stop\n"
        "- id: bad\n  decision: deny\n  message: stop\n  condition: action.nope\n"
    )
    result = lint(tmp_path, policy_set_yaml(rules))
    assert len(result.errors) == 1
    assert result.bundle is None


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    rules = (
        "- id: a\n  decision: deny\n  message: stop\n  condition: action.nope\n"
        "- id: b\n  decision: hold\n  message: stop\n"
        "- id: c\n  decisoin: deny\n"
    )
    result = lint(tmp_path, policy_set_yaml(rules))
    assert problems_with(result, "`action` has no field `nope`")
    assert problems_with(result, "unknown field `decisoin`")
    assert len(result.errors) >= 2


def test_a_valid_bundle_loads_with_its_rules_and_files(tmp_path: Path) -> None:
    files = {
        "policies/one.yaml": one_rule("decision: deny\nmessage: stop"),
        "policies/two.yml": one_rule("decision: allow", rule_id="x").replace(
            "name: s}", "name: t}"
        ),
    }
    result = load(tmp_path, files)
    assert result.problems == []
    assert result.bundle is not None
    assert [r.id for r in result.bundle.rules] == ["s/r", "t/x"]
    assert sorted(result.bundle.files) == [CONFIG_FILE, "policies/one.yaml", "policies/two.yml"]
    assert result.bundle.digest.startswith("sha256:")


# ---------------------------------------------------------------------------
# Garbage never raises

GARBAGE: dict[str, str | bytes] = {
    "binary": b"\xff\xfe\x00\x01garbage\x80",
    "nul": "a: \x00\n",
    "list": "- a\n- b\n",
    "scalar": "hello\n",
    "number": "42\n",
    "explicit-null": "~\n",
    "tabs": "a:\n\tb: 1\n",
    "unclosed": "a: [1, 2\n",
    "bad-timestamp": "apiVersion: guardproxy.dev/v1\nkind: PolicyException\nexpires: 2026-13-45\n",
    "bad-int-tag": "a: !!int abc\n",
    "python-tag": "a: !!python/object:os.system x\n",
    "merge-key": "base: &b {x: 1}\nother:\n  <<: *b\n",
    "recursive-alias": "a: &x [*x]\n",
    "recursive-map-alias": "a: &x {b: *x}\n",
    "deep-lists": "- " * 3000 + "x\n",
    "deep-maps": "a: " + "{b: " * 3000 + "1" + "}" * 3000 + "\n",
    "complex-key": "? [a, b]\n: c\n",
    "kind-list": "apiVersion: guardproxy.dev/v1\nkind: [PolicySet]\n",
    "kind-map": "apiVersion: guardproxy.dev/v1\nkind: {a: 1}\n",
    "spec-scalar": "apiVersion: guardproxy.dev/v1\nkind: PolicySet\nmetadata: x\nspec: 5\n",
    "rules-scalar": (
        "apiVersion: guardproxy.dev/v1\nkind: PolicySet\nmetadata: {name: s}\nspec: {rules: 5}\n"
    ),
    "rule-list": (
        "apiVersion: guardproxy.dev/v1\nkind: PolicySet\nmetadata: {name: s}\n"
        "spec: {rules: [[1], null, 3, {id: [x]}]}\n"
    ),
    "deep-cel": (
        "apiVersion: guardproxy.dev/v1\nkind: PolicySet\nmetadata: {name: s}\nspec:\n"
        "  rules:\n    - id: r\n      decision: deny\n      message: m\n      condition: >-\n"
        "        " + "(" * 1000 + "true" + ")" * 1000 + "\n"
    ),
    "variables-scalar": (
        "apiVersion: guardproxy.dev/v1\nkind: PolicySet\nmetadata: {name: s}\n"
        "spec: {variables: 5, rules: [{id: r, decision: allow}]}\n"
    ),
    "config-garbage": "apiVersion: guardproxy.dev/v1\nkind: BundleConfig\nspec: [1]\n",
}


@pytest.mark.parametrize("name", list(GARBAGE))
def test_garbage_gives_problems_not_tracebacks(tmp_path: Path, name: str) -> None:
    result = load(tmp_path, {"garbage.yaml": GARBAGE[name]})
    assert result.errors, name
    assert result.bundle is None
    for problem in result.errors:
        assert problem.position.file == str(tmp_path / "garbage.yaml")
        assert problem.position.line >= 1
        assert problem.message


@pytest.mark.parametrize(
    ("name", "fragment", "line"),
    [
        ("recursive-alias", "this YAML alias refers to a value that contains it", 1),
        ("merge-key", "YAML merge keys (`<<`) are not supported", 3),
        ("bad-timestamp", "YAML cannot read '2026-13-45'", 3),
        ("bad-int-tag", "YAML cannot read 'abc'", 1),
        ("deep-maps", "nested too deeply", 1),
        ("kind-list", "unknown kind ['PolicySet']", 2),
        ("deep-cel", "the expression is nested too deeply", 10),
    ],
)
def test_garbage_is_explained(tmp_path: Path, name: str, fragment: str, line: int) -> None:
    result = load(tmp_path, {"garbage.yaml": GARBAGE[name]})
    assert one_problem(result, fragment).position.line == line


@pytest.mark.parametrize(
    "text",
    ["", "\n\n", "# only a comment\n", "---\n", "---\n...\n"],
    ids=["empty", "newlines", "comment", "separator", "separator-end"],
)
def test_an_empty_or_comment_only_file_is_an_error(tmp_path: Path, text: str) -> None:
    """A policy file that lost its content (truncated, emptied by a bad merge) would
    silently drop its rules; the bundle is refused instead, pointing at the file."""
    result = load(tmp_path, {"empty.yaml": text})
    problem = one_problem(result, "holds no policy document")
    assert problem.position.file == str(tmp_path / "empty.yaml")
    assert problem.position.line == 1
    assert "delete the file" in problem.hint
    assert result.bundle is None


def test_a_trailing_document_separator_is_fine(tmp_path: Path) -> None:
    text = one_rule("decision: allow") + "---\n"
    result = lint(tmp_path, text)
    assert result.problems == []
    assert result.bundle is not None


def test_files_given_one_by_one_are_linted_without_a_config(tmp_path: Path) -> None:
    root = write_files(tmp_path, {SET: one_rule("decision: deny")})
    result = load_bundle([root / SET])
    problem = one_problem(result, "needs a `message`")
    assert problem.position.file == str(root / SET)
    assert not problems_with(result, "BundleConfig")
    clean = write_files(tmp_path / "clean", {SET: one_rule("decision: allow")})
    assert load_bundle([clean / SET]).problems == []
