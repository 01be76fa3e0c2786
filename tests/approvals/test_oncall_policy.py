"""On-call groups and paging in policies: ``oncall:<schedule>`` groups and ``page`` are
checked when the bundle loads (with the position of the mistake), and the decision of a
hold carries what it pages, combined across rules and readings."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest
from policy_helpers import line_of, load, one_problem, policy_set_yaml, yaml_text

from guardproxy.action import Action, Provider, Resource, Verb
from guardproxy.context import Context, SessionInfo
from guardproxy.policy import evaluate
from guardproxy.policy.decision import ApprovalRequirement, RuleApproval
from guardproxy.policy.engine import merge_requirements

NOW = datetime(2025, 3, 1, 12, tzinfo=UTC)


def hold_rule(approval: str, rule_id: str = "r", resource: str = "x") -> str:
    body = (
        "decision: hold\nmessage: needs on-call\n"
        f"match: {{providers: [k8s], verbs: [delete], resourceNames: [{resource}]}}\n"
        f"approval: {approval}"
    )
    return f"- id: {rule_id}\n" + textwrap.indent(yaml_text(body), "  ")


def test_on_call_groups_and_a_page_load(tmp_path: Path) -> None:
    text = policy_set_yaml(
        hold_rule(
            "{groups: [oncall:platform-primary, senior], requiredGroups: "
            "[oncall:platform-primary], page: oncall:platform-primary}"
        )
    )
    result = load(tmp_path, {"set.yaml": text})
    assert result.bundle is not None, [str(p) for p in result.problems]
    (rule,) = result.bundle.rules
    assert rule.approval is not None and rule.approval.page == "oncall:platform-primary"


@pytest.mark.parametrize(
    ("approval", "fragment", "needle"),
    [
        (
            "{groups: [oncall:Platform_Primary]}",
            "'oncall:Platform_Primary' is not an on-call group",
            "approval:",
        ),
        (
            "{groups: [senior], requiredGroups: [oncall:-x]}",
            "'oncall:-x' is not an on-call",
            "approval:",
        ),
        ("{groups: [senior], page: senior}", "must name an on-call schedule", "approval:"),
        (
            "{groups: [senior, oncall:platform-secondary], page: oncall:platform-primary}",
            "page oncall:platform-primary is not among the approval groups",
            "approval:",
        ),
    ],
)
def test_a_bad_on_call_group_or_page_is_an_error_at_the_approval(
    tmp_path: Path, approval: str, fragment: str, needle: str
) -> None:
    text = policy_set_yaml(hold_rule(approval))
    result = load(tmp_path, {"set.yaml": text})
    problem = one_problem(result, fragment)
    assert problem.position.line == line_of(text, needle)
    assert result.bundle is None


def test_the_pages_of_several_hold_rules_are_combined(tmp_path: Path) -> None:
    text = policy_set_yaml(
        hold_rule("{groups: [oncall:platform-primary], page: oncall:platform-primary}", "a")
        + "\n"
        + hold_rule("{groups: [oncall:dba, senior], page: oncall:dba}", "b")
        + "\n"
        + hold_rule("{groups: [senior]}", "c")
    )
    result = load(tmp_path, {"set.yaml": text})
    assert result.bundle is not None, [str(p) for p in result.problems]
    action = Action(
        provider=Provider.K8S, service="core", operation="delete", verb=Verb.DELETE,
        resource=Resource(type="configmaps", name="x"),
    )  # fmt: skip
    decision = evaluate(
        result.bundle, action, Context(now=NOW, session=SessionInfo(id="s", name="s"))
    )
    assert decision.approval is not None
    assert decision.approval.page == ["oncall:dba", "oncall:platform-primary"]
    assert [r.rule for r in decision.approval.all_of] == ["s/a", "s/b", "s/c"]


def test_readings_page_every_schedule_any_of_them_pages() -> None:
    def requirement(page: list[str]) -> ApprovalRequirement:
        return ApprovalRequirement(
            all_of=[RuleApproval(rule="r", groups=["senior"], quorum=1)],
            groups=["senior"], quorum=1, timeout_seconds=60, page=page,
        )  # fmt: skip

    merged = merge_requirements([requirement(["oncall:b"]), requirement(["oncall:a", "oncall:b"])])
    assert merged.page == ["oncall:a", "oncall:b"]
