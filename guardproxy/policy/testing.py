"""Policy tests: ``*_test.yaml`` files of cases with expected decisions.

A test file sits in a bundle directory and runs against that whole bundle, because
a decision depends on every rule and on the bundle's default::

    apiVersion: guardproxy.dev/v1
    kind: PolicyTest
    metadata: {name: aws}
    fixtures:                      # deep-merged under every case
      action: {provider: aws, environment: prod}
      context: {now: "2026-11-25T12:00:00Z", session: {user: alice}}
    cases:
      - name: deleting a prod stack is held
        action: {service: cloudformation, operation: DeleteStack, verb: destroy}
        expect:
          decision: hold
          rules: [aws/hold-prod-destroy]       # the exact set of determining rules
          messageContains: needs approval
          approval: {groups: [sre-oncall], quorum: 1}
      - name: the same in every environment that is not prod
        matrix: {env: [dev, staging]}          # one case per value, ${env} substituted
        action: {verb: destroy, environment: "${env}"}
        expect: {decision: allow}
"""

from __future__ import annotations

import difflib
import itertools
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from guardproxy.action import Action
from guardproxy.context import Context
from guardproxy.policy.bundle import Bundle
from guardproxy.policy.decision import Decision
from guardproxy.policy.engine import RuleTrace, explain
from guardproxy.policy.loader import is_test_file, load_bundle, validation_problem
from guardproxy.policy.model import API_VERSION, Outcome
from guardproxy.policy.yamlsource import Document, Position, Problem, read_documents


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)


class ExpectedApproval(_Doc):
    groups: list[str] | None = None
    quorum: int | None = None
    required_groups: list[str] | None = None
    timeout_seconds: int | None = None
    grant: str | None = None
    safety_steps: list[str] | None = Field(
        None, description="Exact set of the safety steps offered (a required one as `name!`)."
    )


class Expectation(_Doc):
    decision: Outcome
    rules: list[str] | None = Field(None, description="Exact set of determining rules.")
    audit: list[str] | None = Field(None, description="Exact set of audit findings' rules.")
    errors: list[str] | None = Field(None, description="Exact set of rules that errored.")
    excepted: list[str] | None = None
    message_contains: str | None = None
    message_matches: str | None = None
    basis: Literal["rule", "default", "unclassified"] | None = None
    approval: ExpectedApproval | None = None


class Fixtures(_Doc):
    action: dict[str, Any] = Field(default_factory=dict)
    context: dict[str, Any] = Field(default_factory=dict)


class TestCase(_Doc):
    name: str = Field(min_length=1)
    action: dict[str, Any] = Field(default_factory=dict)
    context: dict[str, Any] = Field(default_factory=dict)
    matrix: dict[str, list[str]] = Field(default_factory=dict)
    expect: Expectation | None = None
    todo: bool = False


class TestMetadata(_Doc):
    name: str
    description: str = ""


class PolicyTest(_Doc):
    api_version: Literal["guardproxy.dev/v1"]
    kind: Literal["PolicyTest"]
    metadata: TestMetadata
    fixtures: Fixtures = Field(default_factory=Fixtures)
    cases: list[TestCase] = Field(min_length=1)


Status = Literal["pass", "fail", "error", "skip"]


@dataclass
class CaseResult:
    file: str
    suite: str
    name: str
    status: Status
    position: Position
    failures: list[str] = field(default_factory=list)
    decision: Decision | None = None
    traces: list[RuleTrace] = field(default_factory=list)


@dataclass
class TestReport:
    results: list[CaseResult] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    bundles: list[Bundle] = field(default_factory=list)

    def count(self, status: Status) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def ran(self) -> int:
        return sum(1 for r in self.results if r.status != "skip")

    @property
    def ok(self) -> bool:
        failed = self.count("fail") + self.count("error")
        return not self.problems and failed == 0 and self.ran > 0

    def broken_files(self) -> list[str]:
        """Files (tests, or the bundle's policies) with a problem: each did not load,
        wholly or in part, and counts as one error of the run."""
        return sorted({p.position.file for p in self.problems if p.severity == "error"})

    @property
    def errors(self) -> int:
        """Cases that errored plus files that did not load."""
        return self.count("error") + len(self.broken_files())

    def uncovered(self) -> list[str]:
        """Rules that no case saw fire (as determining rule, audit finding or exception)."""
        fired: set[str] = set()
        for result in self.results:
            decision = result.decision
            if decision is None:
                continue
            fired.update(decision.determining_rules, decision.excepted)
            fired.update(f.rule for f in decision.audit_findings)
            fired.update(e.rule for e in decision.errors if e.fired)
            fired.update(t.rule for t in result.traces if t.fired)
        rules = {r.id for b in self.bundles for r in b.rules}
        return sorted(rules - fired)


def discover(paths: Iterable[Path]) -> list[tuple[Path, list[Path]]]:
    """(bundle directory, its test files) for each path given."""
    groups: dict[Path, list[Path]] = {}
    for path in paths:
        if path.is_dir():
            tests = sorted(p for p in path.rglob("*.y*ml") if is_test_file(p))
            groups.setdefault(path, []).extend(tests)
        else:
            groups.setdefault(path.parent, []).append(path)
    return [(root, sorted(set(files))) for root, files in groups.items()]


def run_tests(paths: Iterable[Path], *, run: str | None = None, trace: bool = False) -> TestReport:
    """Run every case of every test file found under ``paths``.

    ``run`` is a regular expression on ``<suite>/<case name>``; ``trace`` keeps the
    explain trace of every case (failing cases always keep theirs).
    """
    report = TestReport()
    selector = re.compile(run) if run else None
    for root, files in discover(paths):
        loaded = load_bundle([root])
        report.problems.extend(p for p in loaded.problems if p.severity == "error")
        if loaded.bundle is None:
            continue
        report.bundles.append(loaded.bundle)
        for test_file in files:
            _run_file(loaded.bundle, test_file, selector, trace, report)
    return report


def read_suites(path: Path) -> tuple[list[tuple[PolicyTest, Document]], list[Problem]]:
    """The PolicyTest documents of a test file, and what is wrong with the others."""
    documents, problems = read_documents(path)
    if not documents and not problems:
        problems.append(
            Problem(
                Position(str(path), 1, 1),
                "the test file holds no PolicyTest (it is empty or only comments)",
                "add cases, or delete the file",
            )
        )
    suites: list[tuple[PolicyTest, Document]] = []
    for doc in documents:
        if not isinstance(doc.data, dict) or doc.data.get("kind") != "PolicyTest":
            problems.append(
                Problem(
                    doc.start,
                    "a test file holds `kind: PolicyTest` documents",
                    f"apiVersion: {API_VERSION}\nkind: PolicyTest",
                )
            )
            continue
        try:
            suites.append((PolicyTest.model_validate(doc.data), doc))
        except pydantic.ValidationError as error:
            problems.extend(validation_problem(PolicyTest, doc, item) for item in error.errors())
    return suites, problems


def lint_tests(paths: Iterable[Path], bundle: Bundle | None) -> tuple[list[Problem], int]:
    """Problems in the test files under ``paths`` (and the number of files read),
    without running them: unknown keys, inputs that are no Action or Context, and
    expected rule ids the bundle does not have (when ``bundle`` is given)."""
    problems: list[Problem] = []
    count = 0
    rule_ids = [r.id for r in bundle.rules] if bundle is not None else None
    for _, files in discover(paths):
        for path in files:
            count += 1
            suites, found = read_suites(path)
            problems.extend(found)
            for suite, doc in suites:
                problems.extend(_lint_suite(suite, doc, rule_ids))
    return problems, count


def _lint_suite(suite: PolicyTest, doc: Document, rule_ids: list[str] | None) -> list[Problem]:
    problems: list[Problem] = []
    for index, case in enumerate(suite.cases):
        base = ("cases", index)
        for _, values in _expand(case):
            inputs = _inputs(suite, case, values)
            if isinstance(inputs, list):
                problems.extend(
                    Problem(_input_position(doc, base, root, loc), f"case `{case.name}`: {text}")
                    for root, loc, text in inputs
                )
                break
        if case.expect is None or rule_ids is None:
            continue
        for key in ("rules", "audit", "errors", "excepted"):
            for j, rule in enumerate(getattr(case.expect, key) or []):
                if rule in rule_ids or "${" in rule:
                    continue
                close = difflib.get_close_matches(rule, rule_ids, n=1)
                problems.append(
                    Problem(
                        doc.position((*base, "expect", key, j)),
                        f"case `{case.name}` expects rule `{rule}`, which the bundle does not have",
                        f"did you mean `{close[0]}`?" if close else "rule ids are `set/rule`",
                    )
                )
    return problems


_InputError = tuple[str, tuple[str | int, ...], str]  # root, location, text


def _inputs(
    suite: PolicyTest, case: TestCase, values: dict[str, str]
) -> tuple[Action, Context] | list[_InputError]:
    """The case's action and context, or what is wrong with them."""
    models: list[BaseModel] = []
    for root, model in (("action", Action), ("context", Context)):
        merged = deep_merge(getattr(suite.fixtures, root), getattr(case, root))
        try:
            models.append(model.model_validate(_substitute(merged, values)))
        except pydantic.ValidationError as error:
            return [
                (root, tuple(e["loc"]), f"{root} `{'.'.join(map(str, e['loc']))}`: {e['msg']}")
                for e in error.errors()
            ]
    action, context = models
    assert isinstance(action, Action) and isinstance(context, Context)
    return action, context


def _input_position(
    doc: Document, case: tuple[str | int, ...], root: str, loc: tuple[str | int, ...]
) -> Position:
    """Where a bad input value was written: in the case, else in the fixtures."""
    for path in ((*case, root, *loc), ("fixtures", root, *loc)):
        if path in doc.positions:
            return doc.positions[path]
    return doc.position(case)


def _run_file(
    bundle: Bundle, path: Path, selector: re.Pattern[str] | None, trace: bool, report: TestReport
) -> None:
    suites, problems = read_suites(path)
    report.problems.extend(problems)
    for suite, doc in suites:
        for index, case in enumerate(suite.cases):
            position = doc.position(("cases", index))
            for name, values in _expand(case):
                full = f"{suite.metadata.name}/{name}"
                if selector and not selector.search(full):
                    continue
                report.results.append(
                    _run_case(bundle, suite, case, values, str(path), name, position, trace)
                )


def _expand(case: TestCase) -> list[tuple[str, dict[str, str]]]:
    if not case.matrix:
        return [(case.name, {})]
    keys = sorted(case.matrix)
    combos = itertools.product(*(case.matrix[k] for k in keys))
    expanded = []
    for combo in combos:
        values = dict(zip(keys, combo, strict=True))
        label = ", ".join(f"{k}={v}" for k, v in values.items())
        expanded.append((f"{case.name} [{label}]", values))
    return expanded


def _substitute(value: Any, values: dict[str, str]) -> Any:
    if isinstance(value, str):
        for key, replacement in values.items():
            value = value.replace("${" + key + "}", replacement)
        return value
    if isinstance(value, list):
        return [_substitute(v, values) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, values) for k, v in value.items()}
    return value


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _run_case(
    bundle: Bundle,
    suite: PolicyTest,
    case: TestCase,
    values: dict[str, str],
    file: str,
    name: str,
    position: Position,
    trace: bool,
) -> CaseResult:
    result = CaseResult(file, suite.metadata.name, name, "pass", position)
    if case.todo:
        result.status = "skip"
        return result
    if case.expect is None:
        result.status = "error"
        result.failures.append("the case has no `expect` (mark unfinished cases `todo: true`)")
        return result
    inputs = _inputs(suite, case, values)
    if isinstance(inputs, list):
        result.status = "error"
        result.failures.extend(f"input {text}" for _, _, text in inputs)
        return result
    action, context = inputs
    expectation = Expectation.model_validate(
        _substitute(case.expect.model_dump(by_alias=True, exclude_none=True), values)
    )
    decision, traces = explain(bundle, action, context)
    result.decision = decision
    result.failures = check(decision, expectation)
    if result.failures:
        result.status = "fail"
    if result.failures or trace:
        result.traces = traces
    else:
        result.traces = [t for t in traces if t.fired]
    return result


def check(decision: Decision, expect: Expectation) -> list[str]:
    """What differs between ``decision`` and ``expect``; empty when the case passes."""
    failures = []
    if decision.outcome is not expect.decision:
        failures.append(f"decision is {decision.outcome}, expected {expect.decision}")
    if expect.basis is not None and decision.basis != expect.basis:
        failures.append(f"basis is {decision.basis}, expected {expect.basis}")
    _same_set(failures, "determining rules", decision.determining_rules, expect.rules)
    _same_set(failures, "audit findings", [f.rule for f in decision.audit_findings], expect.audit)
    _same_set(failures, "rules with errors", [e.rule for e in decision.errors], expect.errors)
    _same_set(failures, "excepted rules", decision.excepted, expect.excepted)
    if expect.message_contains is not None and expect.message_contains not in decision.message:
        failures.append(
            f"message {decision.message!r} does not contain {expect.message_contains!r}"
        )
    if expect.message_matches is not None and not re.search(
        expect.message_matches, decision.message
    ):
        failures.append(f"message {decision.message!r} does not match /{expect.message_matches}/")
    if expect.approval is not None:
        failures.extend(_check_approval(decision, expect.approval))
    return failures


def _same_set(
    failures: list[str], what: str, actual: list[str], expected: list[str] | None
) -> None:
    if expected is not None and set(actual) != set(expected):
        failures.append(f"{what} are {sorted(set(actual))}, expected {sorted(set(expected))}")


def _check_approval(decision: Decision, expected: ExpectedApproval) -> list[str]:
    approval = decision.approval
    if approval is None:
        return ["no approval requirement, but one was expected"]
    failures = []
    for name in ("quorum", "timeout_seconds", "grant"):
        want = getattr(expected, name)
        got = getattr(approval, name)
        if want is not None and want != got:
            failures.append(f"approval {to_camel(name)} is {got}, expected {want}")
    for name in ("groups", "required_groups"):
        want = getattr(expected, name)
        got = getattr(approval, name)
        if want is not None and set(want) != set(got):
            failures.append(f"approval {to_camel(name)} are {sorted(got)}, expected {sorted(want)}")
    if expected.safety_steps is not None:
        offered = {step.name + ("!" if step.required else "") for step in approval.safety_steps}
        if offered != set(expected.safety_steps):
            failures.append(
                f"approval safetySteps are {sorted(offered)}, "
                f"expected {sorted(set(expected.safety_steps))}"
            )
    return failures


def junit_xml(report: TestReport) -> str:
    """JUnit XML; each file that did not load is a `load` test case in error, counted
    in the top-level `tests` and `errors` (CI must not read a broken file as a pass)."""
    broken = report.broken_files()
    suites = ET.Element(
        "testsuites",
        tests=str(len(report.results) + len(broken)),
        failures=str(report.count("fail")),
        errors=str(report.errors),
    )
    by_suite: dict[str, list[CaseResult]] = {}
    for result in report.results:
        by_suite.setdefault(result.suite, []).append(result)
    for name, results in by_suite.items():
        suite = ET.SubElement(
            suites,
            "testsuite",
            name=name,
            tests=str(len(results)),
            failures=str(sum(r.status == "fail" for r in results)),
            errors=str(sum(r.status == "error" for r in results)),
            skipped=str(sum(r.status == "skip" for r in results)),
        )
        for result in results:
            case = ET.SubElement(
                suite,
                "testcase",
                name=result.name,
                classname=name,
                file=result.file,
                line=str(result.position.line),
            )
            if result.status in ("fail", "error"):
                tag = "failure" if result.status == "fail" else "error"
                ET.SubElement(
                    case, tag, message=result.failures[0] if result.failures else ""
                ).text = "\n".join(result.failures)
            elif result.status == "skip":
                ET.SubElement(case, "skipped", message="todo")
    if broken:
        suite = ET.SubElement(
            suites, "testsuite", name="load", tests=str(len(broken)), errors=str(len(broken))
        )
        for file in broken:
            problems = [p for p in report.problems if p.position.file == file]
            case = ET.SubElement(suite, "testcase", name=file, classname="load", file=file)
            ET.SubElement(
                case, "error", message=f"{problems[0].position}: {problems[0].message}"
            ).text = "\n".join(str(p) for p in problems)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True)
