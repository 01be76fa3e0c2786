"""The evaluator: precedence, defaults, audit, exceptions, fail-closed CEL, approvals,
variables, input caps, determinism and explain."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn

import pytest
from policy_helpers import (
    NOW,
    action,
    config_yaml,
    context,
    decide,
    exception_yaml,
    make_bundle,
    policy_set_yaml,
    rules_bundle,
    write_files,
)

from guardproxy.action import Action
from guardproxy.policy import (
    AuditFinding,
    Bundle,
    Outcome,
    RuleError,
    evaluate,
    explain,
    input_hash,
    load_bundle,
)
from guardproxy.policy import cel as cel_module
from guardproxy.policy import engine as engine_module

ERRORS = "int(action.resource.name) > 0"  # "db-1" is not a number: a runtime error


def rule(
    rule_id: str,
    decision: str,
    *,
    condition: str | None = None,
    extra: str = "",
) -> str:
    """One rule as a YAML list item (messages and approvals filled in as needed)."""
    lines = [f"- id: {rule_id}", f"  decision: {decision}"]
    if decision != "allow":
        lines.append(f"  message: {rule_id} says {decision}")
    if decision == "hold" and "approval" not in extra:
        lines.append("  approval: {groups: [sre]}")
    if condition is not None:
        lines.append(f"  condition: >-\n    {condition}")
    lines.extend(f"  {line}" for line in extra.strip("\n").splitlines() if line)
    return "\n".join(lines) + "\n"


def never(rule_id: str = "never") -> str:
    """A deny rule that matches nothing the tests send (a set needs one rule)."""
    return rule(rule_id, "deny", extra="match: {providers: [azure]}")


# ---------------------------------------------------------------------------
# Precedence


@pytest.mark.parametrize(
    ("ids", "order"),
    [
        (("a-deny", "b-hold", "c-allow"), (0, 1, 2)),
        (("a-deny", "b-hold", "c-allow"), (2, 1, 0)),
        (("z-deny", "y-hold", "x-allow"), (2, 1, 0)),
        (("z-deny", "y-hold", "x-allow"), (1, 2, 0)),
    ],
)
def test_deny_beats_hold_and_allow_in_any_order(
    tmp_path: Path, ids: tuple[str, str, str], order: tuple[int, int, int]
) -> None:
    rules = [rule(ids[0], "deny"), rule(ids[1], "hold"), rule(ids[2], "allow")]
    bundle = rules_bundle(tmp_path, "".join(rules[i] for i in order))
    decision = decide(bundle)
    assert decision.outcome is Outcome.DENY
    assert decision.basis == "rule"
    assert decision.determining_rules == [f"s/{ids[0]}"]
    assert decision.message == f"{ids[0]} says deny"
    assert decision.approval is None  # a firing deny offers no approval path


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
@pytest.mark.parametrize("ids", [("a-hold", "b-allow"), ("z-hold", "a-allow")])
def test_hold_beats_allow_in_any_order(
    tmp_path: Path, ids: tuple[str, str], order: tuple[int, int]
) -> None:
    rules = [rule(ids[0], "hold"), rule(ids[1], "allow")]
    bundle = rules_bundle(tmp_path, "".join(rules[i] for i in order), default="deny")
    decision = decide(bundle)
    assert decision.outcome is Outcome.HOLD
    assert decision.determining_rules == [f"s/{ids[0]}"]
    assert decision.approval is not None


def test_precedence_holds_across_policy_sets_and_files(tmp_path: Path) -> None:
    bundle = make_bundle(
        tmp_path,
        policy_set_yaml(rule("allow-all", "allow"), name="a"),
        policy_set_yaml(rule("hold-prod", "hold"), name="b"),
        policy_set_yaml(rule("deny-db", "deny"), name="c"),
        policy_set_yaml(rule("allow-db", "allow"), name="d"),
    )
    decision = decide(bundle)
    assert (decision.outcome, decision.determining_rules) == (Outcome.DENY, ["c/deny-db"])


def test_an_allow_rule_carves_out_of_a_deny_default(tmp_path: Path) -> None:
    bundle = rules_bundle(tmp_path, rule("reads", "allow"), default="deny")
    decision = decide(bundle)
    assert (decision.outcome, decision.basis) == (Outcome.ALLOW, "rule")
    assert decision.determining_rules == ["s/reads"]


def test_determining_rules_are_all_firing_rules_at_the_winning_level(tmp_path: Path) -> None:
    rules = (
        rule("deny-two", "deny")
        + rule("deny-quiet", "deny", condition='action.environment == "dev"')
        + rule("deny-one", "deny", condition='action.environment == "prod"')
        + rule("hold", "hold")
        + rule("allow", "allow")
    )
    decision = decide(rules_bundle(tmp_path, rules))
    assert decision.outcome is Outcome.DENY
    assert sorted(decision.determining_rules) == ["s/deny-one", "s/deny-two"]
    assert "deny-one says deny" in decision.message
    assert "deny-two says deny" in decision.message
    assert "deny-quiet" not in decision.message


# ---------------------------------------------------------------------------
# Defaults and unclassified actions


@pytest.mark.parametrize("default", ["allow", "hold", "deny"])
def test_default_decision_applies_when_nothing_fires(tmp_path: Path, default: str) -> None:
    spec = "defaultApproval: {groups: [oncall], timeout: 5m}" if default == "hold" else ""
    bundle = make_bundle(tmp_path, policy_set_yaml(never()), config=config_yaml(default, spec))
    decision = decide(bundle)
    assert decision.outcome == Outcome(default)
    assert decision.basis == "default"
    assert decision.determining_rules == []
    if default == "hold":
        assert decision.approval is not None
        assert decision.approval.groups == ["oncall"]
        assert decision.approval.timeout_seconds == 300
        assert [r.rule for r in decision.approval.all_of] == [""]
    else:
        assert decision.approval is None


def unknown_action(**fields: Any) -> Action:
    return action(verb="unknown", service="", operation="", confidence="unknown", **fields)


def test_unknown_verb_is_never_allowed_by_a_default_allow(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path, policy_set_yaml(never()), config=config_yaml("allow"))
    assert decide(bundle).outcome is Outcome.ALLOW  # the same bundle allows a classified one
    decision = decide(bundle, unknown_action())
    assert (decision.outcome, decision.basis) == (Outcome.DENY, "unclassified")
    assert decision.approval is None


def test_unclassified_hold_uses_the_default_approval(tmp_path: Path) -> None:
    config = config_yaml("allow", "unclassified: hold\ndefaultApproval: {groups: [triage]}")
    bundle = make_bundle(tmp_path, policy_set_yaml(never()), config=config)
    decision = decide(bundle, unknown_action())
    assert (decision.outcome, decision.basis) == (Outcome.HOLD, "unclassified")
    assert decision.approval is not None
    assert decision.approval.groups == ["triage"]


def test_an_allow_rule_without_verb_unknown_does_not_allow_unclassified(tmp_path: Path) -> None:
    allow_aws = rule("allow-aws", "allow", extra="match: {providers: [aws]}")
    bundle = rules_bundle(tmp_path, allow_aws, default="deny")
    assert decide(bundle).determining_rules == ["s/allow-aws"]  # it does allow classified ones
    decision = decide(bundle, unknown_action())
    assert (decision.outcome, decision.basis) == (Outcome.DENY, "unclassified")
    assert decision.determining_rules == []


@pytest.mark.parametrize("verbs", ["[unknown]", "[delete, unknown]"])
def test_an_allow_rule_naming_verb_unknown_allows_unclassified(tmp_path: Path, verbs: str) -> None:
    allow = rule("allow-unknown", "allow", extra=f"match: {{verbs: {verbs}}}")
    bundle = rules_bundle(tmp_path, allow, default="deny")
    decision = decide(bundle, unknown_action())
    assert (decision.outcome, decision.basis) == (Outcome.ALLOW, "rule")
    assert decision.determining_rules == ["s/allow-unknown"]


def test_deny_rules_still_apply_to_unclassified_actions(tmp_path: Path) -> None:
    config = config_yaml("allow", "unclassified: hold\ndefaultApproval: {groups: [triage]}")
    bundle = make_bundle(tmp_path, policy_set_yaml(rule("no-prod", "deny")), config=config)
    decision = decide(bundle, unknown_action())
    assert (decision.outcome, decision.basis) == (Outcome.DENY, "rule")


# ---------------------------------------------------------------------------
# Audit mode


def test_audit_rule_is_reported_but_does_not_change_the_outcome(tmp_path: Path) -> None:
    rules = rule("shadow", "deny", extra="mode: audit") + rule(
        "shadow-allow", "allow", extra="mode: audit"
    )
    config = config_yaml("hold", "defaultApproval: {groups: [oncall]}")
    bundle = make_bundle(tmp_path, policy_set_yaml(rules), config=config)
    decision = decide(bundle)
    assert (decision.outcome, decision.basis) == (Outcome.HOLD, "default")
    assert decision.determining_rules == []
    assert decision.audit_findings == [
        AuditFinding(rule="s/shadow", would=Outcome.DENY, message="shadow says deny"),
        AuditFinding(rule="s/shadow-allow", would=Outcome.ALLOW, message=""),
    ]


def test_audit_rule_that_does_not_fire_is_not_reported(tmp_path: Path) -> None:
    shadow = rule("shadow", "deny", condition='action.environment == "dev"', extra="mode: audit")
    decision = decide(rules_bundle(tmp_path, shadow))
    assert decision.audit_findings == []


def test_set_level_audit_default_and_a_rule_that_opts_back_in(tmp_path: Path) -> None:
    rules = rule("shadow", "deny") + rule("enforced", "hold", extra="mode: enforce")
    bundle = rules_bundle(tmp_path, rules, spec="defaults: {mode: audit}")
    decision = decide(bundle)
    assert decision.outcome is Outcome.HOLD
    assert decision.determining_rules == ["s/enforced"]
    assert [(f.rule, f.would) for f in decision.audit_findings] == [("s/shadow", Outcome.DENY)]


def override_bundle(root: Path, override: str, rules: str) -> Bundle:
    config = config_yaml("allow", f"modeOverrides:\n  - {override}")
    return make_bundle(root, policy_set_yaml(rules), config=config)


def test_mode_override_by_environment(tmp_path: Path) -> None:
    bundle = override_bundle(tmp_path, "{environments: [dev], mode: audit}", rule("d", "deny"))
    dev = decide(bundle, action(environment="dev"))
    assert dev.outcome is Outcome.ALLOW
    assert [f.rule for f in dev.audit_findings] == ["s/d"]
    prod = decide(bundle, action(environment="prod"))
    assert prod.outcome is Outcome.DENY
    assert prod.audit_findings == []


def test_mode_override_by_provider(tmp_path: Path) -> None:
    bundle = override_bundle(tmp_path, "{providers: [gcp], mode: audit}", rule("d", "deny"))
    assert decide(bundle, action(provider="gcp")).outcome is Outcome.ALLOW
    assert decide(bundle, action(provider="aws")).outcome is Outcome.DENY


def test_mode_locked_rule_resists_overrides(tmp_path: Path) -> None:
    rules = rule("locked", "deny", extra="modeLocked: true") + rule("loose", "hold")
    bundle = override_bundle(tmp_path, "{environments: [dev], mode: audit}", rules)
    decision = decide(bundle, action(environment="dev"))
    assert decision.outcome is Outcome.DENY
    assert decision.determining_rules == ["s/locked"]
    assert [f.rule for f in decision.audit_findings] == ["s/loose"]


# ---------------------------------------------------------------------------
# Exceptions

EXPIRES = NOW + timedelta(days=10)


def excepted_bundle(root: Path, exception_spec: str, *, extra_rules: str = "") -> Bundle:
    rules = rule("deny-db", "deny") + extra_rules
    return make_bundle(root, policy_set_yaml(rules), exception_yaml(exception_spec))


def exception_spec(
    *,
    rules: str = "[s/deny-db]",
    match: str = '{resourceNames: ["db-*"]}',
    condition: str = 'action.environment == "prod"',
) -> str:
    return (
        f"rules: {rules}\n"
        f"match: {match}\n"
        f"condition: >-\n  {condition}\n"
        f"expires: {EXPIRES.isoformat()}\n"
        "reason: database migration CHG-1\n"
    )


def test_active_matching_exception_suppresses_the_rule(tmp_path: Path) -> None:
    decision = decide(excepted_bundle(tmp_path, exception_spec()))
    assert (decision.outcome, decision.basis) == (Outcome.ALLOW, "default")
    assert decision.excepted == ["s/deny-db"]
    assert decision.determining_rules == []


def test_exception_only_suppresses_the_rules_it_names(tmp_path: Path) -> None:
    bundle = excepted_bundle(tmp_path, exception_spec(), extra_rules=rule("deny-too", "deny"))
    decision = decide(bundle)
    assert decision.outcome is Outcome.DENY
    assert decision.determining_rules == ["s/deny-too"]
    assert decision.excepted == ["s/deny-db"]


@pytest.mark.parametrize(
    ("now", "excepted"),
    [
        (EXPIRES - timedelta(seconds=1), True),
        (EXPIRES, False),
        (EXPIRES + timedelta(days=1), False),
    ],
)
def test_exception_expiry(tmp_path: Path, now: Any, excepted: bool) -> None:
    decision = decide(excepted_bundle(tmp_path, exception_spec()), ctx=context(now=now))
    assert decision.outcome is (Outcome.ALLOW if excepted else Outcome.DENY)
    assert decision.excepted == (["s/deny-db"] if excepted else [])


@pytest.mark.parametrize(
    "act",
    [
        action(resource={"name": "cache-1"}),  # the match does not apply
        action(environment="staging"),  # the condition is false
    ],
)
def test_exception_that_does_not_match_excepts_nothing(tmp_path: Path, act: Action) -> None:
    decision = decide(excepted_bundle(tmp_path, exception_spec()), act)
    assert decision.outcome is Outcome.DENY
    assert decision.excepted == []


def test_exception_with_an_erroring_condition_excepts_nothing(tmp_path: Path) -> None:
    bundle = excepted_bundle(tmp_path, exception_spec(condition=ERRORS))
    decision = decide(bundle)
    assert decision.outcome is Outcome.DENY
    assert decision.excepted == []


def test_exception_suppressing_a_hold_lets_the_default_apply(tmp_path: Path) -> None:
    bundle = make_bundle(
        tmp_path,
        policy_set_yaml(rule("hold-db", "hold")),
        exception_yaml(exception_spec(rules="[s/hold-db]")),
        config=config_yaml("deny"),
    )
    decision = decide(bundle)
    assert (decision.outcome, decision.basis) == (Outcome.DENY, "default")
    assert decision.excepted == ["s/hold-db"]


# ---------------------------------------------------------------------------
# Failing closed


@pytest.mark.parametrize("decision_kind", ["deny", "hold"])
def test_cel_error_in_a_restrictive_rule_makes_it_fire(tmp_path: Path, decision_kind: str) -> None:
    bundle = rules_bundle(tmp_path, rule("r", decision_kind, condition=ERRORS))
    decision = decide(bundle)
    assert decision.outcome == Outcome(decision_kind)
    assert decision.determining_rules == ["s/r"]
    assert len(decision.errors) == 1
    error = decision.errors[0]
    assert (error.rule, error.stage, error.fired) == ("s/r", "condition", True)
    assert error.error


def test_cel_error_in_an_allow_rule_grants_nothing(tmp_path: Path) -> None:
    bundle = rules_bundle(tmp_path, rule("r", "allow", condition=ERRORS), default="deny")
    decision = decide(bundle)
    assert (decision.outcome, decision.basis) == (Outcome.DENY, "default")
    assert [(e.rule, e.fired) for e in decision.errors] == [("s/r", False)]


@pytest.mark.parametrize("kind", ["deny", "allow"])
def test_non_bool_condition_is_an_error_not_truthiness(tmp_path: Path, kind: str) -> None:
    default = "deny" if kind == "allow" else "allow"
    bundle = rules_bundle(
        tmp_path, rule("r", kind, condition="dyn(action.resource.name)"), default=default
    )
    decision = decide(bundle)
    assert decision.outcome is Outcome.DENY
    assert decision.basis == ("rule" if kind == "deny" else "default")
    assert len(decision.errors) == 1
    assert "bool" in decision.errors[0].error
    assert decision.errors[0].fired is (kind == "deny")


def test_failure_policy_ignore_does_not_fire_but_records_the_error(tmp_path: Path) -> None:
    bundle = rules_bundle(
        tmp_path, rule("r", "deny", condition=ERRORS, extra="failurePolicy: Ignore")
    )
    decision = decide(bundle)
    assert (decision.outcome, decision.basis) == (Outcome.ALLOW, "default")
    assert [(e.rule, e.stage, e.fired) for e in decision.errors] == [("s/r", "condition", False)]


@pytest.mark.parametrize("erroring_first", [True, False])
def test_false_match_condition_skips_the_rule_even_if_another_errors(
    tmp_path: Path, erroring_first: bool
) -> None:
    conditions = [
        f"- name: broken\n  expression: {ERRORS}",
        '- name: only-dev\n  expression: action.environment == "dev"',
    ]
    if not erroring_first:
        conditions.reverse()
    extra = "matchConditions:\n" + "\n".join(
        "  " + line for c in conditions for line in c.splitlines()
    )
    bundle = rules_bundle(tmp_path, rule("r", "deny", extra=extra))
    decision = decide(bundle)
    assert (decision.outcome, decision.basis) == (Outcome.ALLOW, "default")
    assert decision.determining_rules == []


def test_erroring_match_condition_fires_a_deny_rule(tmp_path: Path) -> None:
    extra = (
        "matchConditions:\n"
        f"  - name: broken\n    expression: {ERRORS}\n"
        '  - name: prod\n    expression: action.environment == "prod"'
    )
    bundle = rules_bundle(tmp_path, rule("r", "deny", condition="true || true", extra=extra))
    decision = decide(bundle)
    assert decision.outcome is Outcome.DENY
    assert [(e.stage, e.fired) for e in decision.errors] == [("matchCondition:broken", True)]


def test_custom_function_type_error_fires_a_deny_rule(tmp_path: Path) -> None:
    # glob() on a list instead of a string raises TypeError inside the library (dyn: the
    # load-time type check cannot see it)
    bundle = rules_bundle(tmp_path, rule("r", "deny", condition='glob(dyn(action.risk_tags), "x")'))
    decision = decide(bundle, action(risk_tags=["force"]))
    assert decision.outcome is Outcome.DENY
    assert [(e.rule, e.fired) for e in decision.errors] == [("s/r", True)]


def _raiser(error: BaseException) -> Callable[..., NoReturn]:
    def raise_it(*_: Any) -> NoReturn:
        raise error

    return raise_it


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (RuntimeError("boom"), "internal: RuntimeError"),
        (KeyError("k"), "internal: KeyError"),
        (RecursionError(), "nested too deeply"),
    ],
)
def test_unexpected_exceptions_inside_evaluation_are_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException, text: str
) -> None:
    # the interpreter calls LIBRARY, compiled expressions PLAIN_LIBRARY: a bug in either
    monkeypatch.setitem(cel_module.LIBRARY, "glob", _raiser(error))
    monkeypatch.setitem(cel_module.PLAIN_LIBRARY, "glob", _raiser(error))
    deny = rule("d", "deny", condition='glob(action.resource.name, "db-*")')
    decision = decide(rules_bundle(tmp_path / "deny", deny))  # must not raise
    assert (decision.outcome, decision.determining_rules) == (Outcome.DENY, ["s/d"])
    assert [(e.rule, e.fired) for e in decision.errors] == [("s/d", True)]
    assert text in decision.errors[0].error

    allow = rule("a", "allow", condition='action.resource.name.glob("db-*")')
    decision = decide(rules_bundle(tmp_path / "allow", allow, default="deny"))
    assert (decision.outcome, decision.basis) == (Outcome.DENY, "default")
    assert [(e.rule, e.fired) for e in decision.errors] == [("s/a", False)]
    assert text in decision.errors[0].error


def test_deeply_nested_expression_fails_closed_at_runtime(tmp_path: Path) -> None:
    depth = 120  # parses and passes the lint, but is too deep for the interpreter
    nested = "(" * depth + 'action.environment == "prod"' + ")" * depth
    bundle = rules_bundle(tmp_path, rule("deep", "deny", condition=nested))
    decision = decide(bundle)
    assert decision.outcome is Outcome.DENY
    assert [(e.rule, e.fired) for e in decision.errors] == [("s/deep", True)]
    assert "nested too deeply" in decision.errors[0].error


# ---------------------------------------------------------------------------
# Messages

LONG = "n" * 301


@pytest.mark.parametrize(
    ("expression", "act", "expected"),
    [
        ('"Refusing " + action.resource.name', action(), "Refusing db-1"),
        ('"Refusing " + string(int(action.resource.name))', action(), "static"),  # error
        ("action.service", action(service=""), "static"),  # empty
        ('"   "', action(), "static"),  # blank
        ('"line one\\nline two"', action(), "static"),  # multi-line
        ("action.resource.name", action(resource={"name": LONG}), "static"),  # > 300
        ("action.resource.name", action(resource={"name": LONG[:300]}), LONG[:300]),
        ("dyn(size(action.risk_tags))", action(), "static"),  # not a string
    ],
)
def test_message_expression_and_its_fallback(
    tmp_path: Path, expression: str, act: Action, expected: str
) -> None:
    rules = (
        f"- id: r\n  decision: deny\n  message: static\n  messageExpression: >-\n    {expression}\n"
    )
    decision = decide(rules_bundle(tmp_path, rules), act)
    assert decision.outcome is Outcome.DENY
    assert decision.message == expected


def test_audit_finding_uses_the_message_expression(tmp_path: Path) -> None:
    rules = (
        "- id: r\n  decision: deny\n  mode: audit\n  message: static\n"
        "  messageExpression: '\"would stop \" + action.resource.name'\n"
    )
    decision = decide(rules_bundle(tmp_path, rules))
    assert [f.message for f in decision.audit_findings] == ["would stop db-1"]


# ---------------------------------------------------------------------------
# Combining holds


def holds_bundle(root: Path, first: str, second: str) -> Bundle:
    rules = rule("hold-a", "hold", extra=f"approval: {first}") + rule(
        "hold-b", "hold", extra=f"approval: {second}"
    )
    return rules_bundle(root, rules)


def test_several_holds_combine_their_approvals(tmp_path: Path) -> None:
    bundle = holds_bundle(
        tmp_path,
        "{groups: [sre, dba], requiredGroups: [sre], quorum: 1, timeout: 2h, "
        "grant: 'session:30m', preventSelfApproval: false}",
        "{groups: [dba, sec], requiredGroups: [sec], quorum: 2, timeout: 30m, grant: once, "
        "onTimeout: escalate}",
    )
    decision = decide(bundle)
    assert decision.outcome is Outcome.HOLD
    assert sorted(decision.determining_rules) == ["s/hold-a", "s/hold-b"]
    approval = decision.approval
    assert approval is not None
    assert approval.groups == ["dba", "sec", "sre"]
    assert approval.required_groups == ["sec", "sre"]
    assert approval.quorum == 2
    assert approval.timeout_seconds == 1800  # 30m, not the lexically smaller "2h"
    assert approval.grant == "once"
    assert approval.on_timeout == "escalate"
    assert approval.prevent_self_approval is True
    assert sorted(r.rule for r in approval.all_of) == ["s/hold-a", "s/hold-b"]
    assert "hold-a says hold" in decision.message
    assert "hold-b says hold" in decision.message


def test_combined_session_grants_keep_the_shortest_ttl(tmp_path: Path) -> None:
    bundle = holds_bundle(
        tmp_path,
        "{groups: [sre], grant: 'session:2h'}",
        "{groups: [sre], grant: 'session:30m'}",
    )
    approval = decide(bundle).approval
    assert approval is not None
    assert approval.grant == "session:30m"
    assert approval.groups == ["sre"]
    assert approval.quorum == 1


def test_a_hold_that_does_not_fire_adds_no_requirement(tmp_path: Path) -> None:
    rules = rule("hold-a", "hold", extra="approval: {groups: [sre]}") + rule(
        "hold-b",
        "hold",
        condition='action.environment == "dev"',
        extra="approval: {groups: [sec], quorum: 3}",
    )
    approval = decide(rules_bundle(tmp_path, rules)).approval
    assert approval is not None
    assert (approval.groups, approval.quorum) == (["sre"], 1)
    assert [r.rule for r in approval.all_of] == ["s/hold-a"]


# ---------------------------------------------------------------------------
# Variables and params

VARIABLES = """\
variables:
  - name: base
    expression: action.resource.name + "-x"
  - name: full
    expression: variables.base + "-y"
  - name: broken
    expression: int(action.resource.name) > 0
"""


def test_variables_may_use_earlier_variables(tmp_path: Path) -> None:
    rules = rule("r", "deny", condition='variables.full == "db-1-x-y"')
    bundle = rules_bundle(tmp_path, rules, spec=VARIABLES)
    assert decide(bundle).determining_rules == ["s/r"]
    assert decide(bundle, action(resource={"name": "db-2"})).outcome is Outcome.ALLOW


@pytest.mark.parametrize(
    ("kind", "default", "outcome", "fired"),
    [("deny", "allow", Outcome.DENY, True), ("allow", "deny", Outcome.DENY, False)],
)
def test_erroring_variable_is_an_error_in_the_rule_that_reads_it(
    tmp_path: Path, kind: str, default: str, outcome: Outcome, fired: bool
) -> None:
    rules = rule("r", kind, condition="variables.broken") + rule(
        "other", "deny", condition='variables.base == "nothing"'
    )
    bundle = rules_bundle(tmp_path, rules, default=default, spec=VARIABLES)
    decision = decide(bundle)
    assert decision.outcome is outcome
    assert decision.basis == ("rule" if fired else "default")
    assert [(e.rule, e.fired) for e in decision.errors] == [("s/r", fired)]
    assert "broken" in decision.errors[0].error


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "interpreted"])
def test_variables_are_lazy_and_evaluated_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compiled: bool
) -> None:
    rules = rule("one", "deny", condition='variables.full == "db-1-x-y"') + rule(
        "two", "hold", condition='variables.full.startsWith("db")'
    )
    with contextlib.nullcontext() if compiled else cel_module.interpreter_only():
        bundle = rules_bundle(tmp_path, rules, spec=VARIABLES)
    sources = {v.name: v.expression.source for r in bundle.rules for v in r.scope.variables}
    assert all((v.expression.compiled is not None) is compiled
               for r in bundle.rules for v in r.scope.variables)  # fmt: skip
    evaluated: list[str] = []
    real = engine_module._Evaluation.run

    def counting(
        self: engine_module._Evaluation, expression: cel_module.Expression, scope: Any
    ) -> tuple[Any, str | None]:
        evaluated.append(expression.source)
        return real(self, expression, scope)

    monkeypatch.setattr(engine_module._Evaluation, "run", counting)
    decision = decide(bundle)
    assert decision.outcome is Outcome.DENY
    variable_runs = [s for s in evaluated if s in sources.values()]
    assert variable_runs == [sources["base"], sources["full"]]  # never `broken`, each once


def test_params_are_readable_from_cel(tmp_path: Path) -> None:
    spec = "params:\n  protected: [db-1, ledger]\n"
    rules = rule("r", "deny", condition="action.resource.name in params.protected")
    bundle = rules_bundle(tmp_path, rules, spec=spec)
    assert decide(bundle).outcome is Outcome.DENY
    assert decide(bundle, action(resource={"name": "db-9"})).outcome is Outcome.ALLOW


# ---------------------------------------------------------------------------
# Input caps

LIMITS = "limits: {maxListItems: 2, maxStringBytes: 16}"


def capped_bundle(root: Path, rules: str, limits: str = LIMITS) -> Bundle:
    return make_bundle(root, policy_set_yaml(rules), config=config_yaml("allow", limits))


def test_long_lists_are_cut_before_cel_sees_them(tmp_path: Path) -> None:
    rules = rule("many-tags", "deny", condition="size(action.risk_tags) > 2")
    tags = action(risk_tags=["a", "b", "c"])
    uncapped = decide(capped_bundle(tmp_path / "wide", rules, limits=""), tags)
    assert uncapped.outcome is Outcome.DENY  # the rule does fire on the full list
    assert uncapped.truncated is False
    decision = decide(capped_bundle(tmp_path / "capped", rules), tags)
    assert decision.outcome is Outcome.ALLOW
    assert decision.truncated is True


def test_long_strings_are_cut_before_cel_sees_them(tmp_path: Path) -> None:
    rules = rule("long-name", "deny", condition="size(action.resource.name) > 16")
    decision = decide(capped_bundle(tmp_path, rules), action(resource={"name": "n" * 40}))
    assert decision.outcome is Outcome.ALLOW
    assert decision.truncated is True


@pytest.mark.parametrize(
    ("act", "fires"),
    [
        (action(risk_tags=["a", "b", "c"]), True),  # cut by the engine
        (action(truncated=True), True),  # cut by the recogniser
        (action(risk_tags=["a", "b"]), False),
    ],
)
def test_action_truncated_is_visible_to_cel(tmp_path: Path, act: Action, fires: bool) -> None:
    bundle = capped_bundle(tmp_path, rule("cut", "deny", condition="action.truncated"))
    decision = decide(bundle, act)
    assert decision.outcome is (Outcome.DENY if fires else Outcome.ALLOW)


# ---------------------------------------------------------------------------
# Determinism

RICH_RULES = (
    rule("err", "deny", condition=ERRORS, extra="failurePolicy: Ignore")
    + rule("hold", "hold", extra="approval: {groups: [sre, dba], quorum: 2}")
    + rule("shadow", "deny", extra="mode: audit")
    + rule("allow", "allow")
)


def test_same_inputs_give_identical_decisions(tmp_path: Path) -> None:
    first = rules_bundle(tmp_path / "one", RICH_RULES)
    second = rules_bundle(tmp_path / "two", RICH_RULES)
    act, ctx = action(risk_tags=["force"]), context()
    decision = evaluate(first, act, ctx)
    assert decision.errors and decision.audit_findings and decision.approval
    assert evaluate(first, act, ctx).model_dump() == decision.model_dump()
    assert evaluate(second, act, ctx).model_dump() == decision.model_dump()
    assert decision.input_hash == input_hash(act, ctx)
    models_json = act.model_dump_json() + "\n" + ctx.model_dump_json()
    assert decision.input_hash == "sha256:" + hashlib.sha256(models_json.encode()).hexdigest()


def test_an_actions_cached_json_is_its_json_and_copies_do_not_share_it() -> None:
    act = action(risk_tags=["force"])
    assert act.canonical_json() == act.model_dump_json()
    assert act.canonical_json() is act.canonical_json()  # computed once
    renamed = act.model_copy(update={"operation": "delete"})
    assert renamed.canonical_json() == renamed.model_dump_json() != act.canonical_json()
    assert act.model_copy().canonical_json() == act.model_dump_json()


def test_input_hash_changes_with_the_time(tmp_path: Path) -> None:
    bundle = rules_bundle(tmp_path, RICH_RULES)
    base = decide(bundle).input_hash
    later = decide(bundle, ctx=context(now=NOW + timedelta(microseconds=1))).input_hash
    assert later != base
    other_user = decide(bundle, ctx=context(session={"user": "bob"})).input_hash
    assert other_user != base


@pytest.mark.parametrize(
    "change",
    [
        {"provider": "gcp"},
        {"service": "ec2"},
        {"operation": "DeleteDBCluster"},
        {"verb": "destroy"},
        {"resource": {"type": "aws:rds:db", "name": "db-2"}},
        {"resource": {"type": "aws:rds:db", "name": "db-1", "id": "i-1"}},
        {"scope": {"account": "123456789012"}},
        {"environment": "dev"},
        {"risk_tags": ["force"]},
        {"actor": {"tool": "terraform"}},
        {"request": {"path": "/x"}},
        {"confidence": "heuristic"},
        {"dry_run": True},
        {"truncated": True},
    ],
    ids=lambda change: next(iter(change)),
)
def test_input_hash_changes_with_every_action_field(tmp_path: Path, change: dict[str, Any]) -> None:
    bundle = rules_bundle(tmp_path, RICH_RULES)
    base = decide(bundle)
    changed = decide(bundle, action(**change))
    assert changed.input_hash != base.input_hash
    assert changed.input_hash == input_hash(action(**change), context())


def bundle_files() -> dict[str, str]:
    return {
        "bundle.yaml": config_yaml(),
        "policies/set.yaml": policy_set_yaml(rule("r", "deny")),
    }


def test_bundle_digest_changes_when_a_policy_file_changes(tmp_path: Path) -> None:
    root = write_files(tmp_path / "b", bundle_files())
    first = load_bundle([root]).bundle
    again = load_bundle([root]).bundle
    edited = policy_set_yaml(rule("r", "deny")).replace("r says deny", "r says no")
    (root / "policies" / "set.yaml").write_text(edited)
    changed = load_bundle([root]).bundle
    assert first is not None and again is not None and changed is not None
    assert first.digest == again.digest
    assert changed.digest != first.digest
    assert decide(changed).bundle_digest == changed.digest


def test_bundle_digest_changes_when_a_file_is_added_or_renamed(tmp_path: Path) -> None:
    root = write_files(tmp_path / "b", bundle_files())
    first = load_bundle([root]).bundle
    (root / "policies" / "set.yaml").rename(root / "policies" / "renamed.yaml")
    renamed = load_bundle([root]).bundle
    assert first is not None and renamed is not None
    assert renamed.digest != first.digest


def test_bundle_digest_ignores_how_the_path_is_spelled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_files(tmp_path / "b", bundle_files())
    (tmp_path / "x").mkdir()
    (tmp_path / "link").symlink_to(root, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    spellings = [root, tmp_path / "x" / ".." / "b", Path("b"), Path("./b/"), Path("link")]
    digests = set()
    for spelling in spellings:
        result = load_bundle([spelling])
        assert result.bundle is not None, result.problems
        digests.add(result.bundle.digest)
    assert len(digests) == 1


# ---------------------------------------------------------------------------
# Explain


def test_explain_reports_the_values_each_expression_read(tmp_path: Path) -> None:
    rules = (
        rule(
            "r",
            "deny",
            condition='action.resource.name == "x" && action.environment == "prod"',
            extra='matchConditions:\n  - name: not-dry\n    expression: "!action.dry_run"',
        )
        + rule("uses-vars", "deny", condition="variables.full in params.names")
        + rule("elsewhere", "deny", extra='match: {resourceNames: ["other-*"]}')
    )
    spec = VARIABLES + "params:\n  names: [x-x-y]\n"
    bundle = rules_bundle(tmp_path, rules, spec=spec)
    act = action(resource={"name": "x"})
    decision, traces = explain(bundle, act, context())
    assert decision == evaluate(bundle, act, context())
    by_rule = {t.rule: t for t in traces}

    trace = by_rule["s/r"]
    assert trace.fired and trace.matched
    assert [s.stage for s in trace.steps] == ["matchCondition:not-dry", "condition"]
    assert trace.steps[0].values == {"action.dry_run": False}
    condition = trace.steps[1]
    assert condition.result is True
    assert condition.values == {"action.resource.name": "x", "action.environment": "prod"}

    held = by_rule["s/uses-vars"]
    assert held.steps[0].values == {"variables.full": "x-x-y", "params.names": ["x-x-y"]}

    assert by_rule["s/elsewhere"].matched is False
    assert by_rule["s/elsewhere"].mismatch == "resourceNames"


def test_explain_marks_errors_and_exceptions(tmp_path: Path) -> None:
    bundle = make_bundle(
        tmp_path,
        policy_set_yaml(rule("deny-db", "deny") + rule("err", "deny", condition=ERRORS)),
        exception_yaml(exception_spec()),
    )
    decision, traces = explain(bundle, action(), context())
    by_rule = {t.rule: t for t in traces}
    assert by_rule["s/deny-db"].excepted_by == "exc"
    assert by_rule["s/err"].error is True
    assert by_rule["s/err"].steps[0].error
    assert decision.errors == [
        RuleError(
            rule="s/err", stage="condition", error=by_rule["s/err"].steps[0].error, fired=True
        )
    ]


def test_evaluate_never_raises_on_odd_inputs(tmp_path: Path) -> None:
    rules = (
        rule("a", "deny", condition='action.resource.name.matches("^db-[0-9]+$")')
        + rule("b", "hold", condition='globAny(action.risk_tags, "for*")')
        + rule("c", "allow", condition='lowerAscii(action.operation).startsWith("get")')
        + rule("d", "deny", condition='session.labels.exists(l, l == "ci")')
    )
    bundle = rules_bundle(tmp_path, rules, default="deny")
    odd = [
        action(resource={"name": "\x00" * 5000}),
        action(risk_tags=["é" * 700] * 300, operation="ÉÉ"),
        unknown_action(),
        Action(),
    ]
    for act in odd:
        for ctx in (context(), context(session={"labels": ["ci"] * 1000})):
            decision = evaluate(bundle, act, ctx)
            assert decision.outcome in set(Outcome)
