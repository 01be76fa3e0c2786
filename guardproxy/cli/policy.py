"""``guardproxy policy ...``: lint, test, eval, explain and schema for policy authors."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import pydantic
import structlog

from guardproxy.action import Action
from guardproxy.audit import coverage as destructive
from guardproxy.cli.bundles import default_policies
from guardproxy.cli.errors import UsageError
from guardproxy.cli.style import Style
from guardproxy.context import Context
from guardproxy.control.client import ControlClient, ControlError
from guardproxy.policy import load_bundle
from guardproxy.policy.bundle import Bundle
from guardproxy.policy.decision import Decision
from guardproxy.policy.engine import RuleTrace, explain
from guardproxy.policy.loader import LoadResult, is_test_file, shipped_bundle
from guardproxy.policy.schema import render, schemas, write_schemas
from guardproxy.policy.testing import CaseResult, TestReport, junit_xml, lint_tests, run_tests
from guardproxy.policy.yamlsource import Problem

log = structlog.get_logger(__name__)


def add_commands(subparsers: Any) -> None:
    policy = subparsers.add_parser("policy", help="lint, test, evaluate and explain policies")
    commands = policy.add_subparsers(dest="policy_command", required=True, metavar="COMMAND")

    lint = commands.add_parser("lint", help="check policy files; exit 1 on any error")
    lint.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    lint.add_argument("--json", action="store_true", help="problems as JSON")
    lint.add_argument("--strict", action="store_true", help="warnings fail too")
    lint.set_defaults(handler=cmd_lint)

    test = commands.add_parser("test", help="run *_test.yaml cases against their bundle")
    test.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    test.add_argument("--run", metavar="REGEX", help="only cases whose suite/name matches")
    test.add_argument("--explain", action="store_true", help="show every case's trace")
    test.add_argument(
        "--coverage",
        action="store_true",
        help="list rules no case fired, and what the bundle holds of every destructive operation",
    )
    test.add_argument("--json", action="store_true", help="results as JSON")
    test.add_argument("--junit", type=Path, metavar="FILE", help="also write JUnit XML")
    test.add_argument("-v", "--verbose", action="store_true", help="list passing cases too")
    test.set_defaults(handler=cmd_test)

    for name, handler, text in (
        ("eval", cmd_eval, "decide on one action; prints the input and the decision as JSON"),
        ("explain", cmd_explain, "decide on one action and show which rules matched and why"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument(
            "--policies",
            type=Path,
            metavar="DIR",
            help="bundle directory (default: $GUARDPROXY_POLICIES, else ./policies if it is "
            "one, else the shipped bundle)",
        )
        command.add_argument(
            "--action",
            type=Path,
            required=True,
            metavar="FILE.json",
            help="an Action, or a recorded input {action, context}",
        )
        command.add_argument(
            "--context",
            type=Path,
            metavar="FILE.json",
            help="a Context (default: now, anonymous session)",
        )
        command.add_argument("--json", action="store_true", help="machine-readable output")
        if name == "explain":
            command.add_argument("--rule", metavar="ID", help="only this rule's trace")
        command.set_defaults(handler=handler)

    schema = commands.add_parser("schema", help="print a JSON Schema (policy files, actions...)")
    schema.add_argument(
        "name",
        nargs="?",
        default="policy",
        choices=[n.removesuffix(".schema.json") for n in schemas()],
    )
    schema.add_argument(
        "--write",
        type=Path,
        metavar="DIR",
        help="write every schema into DIR instead (guardproxy/schemas is the shipped copy)",
    )
    schema.set_defaults(handler=cmd_schema)

    init = commands.add_parser(
        "init", help="copy the shipped bundle (policies and their tests) into DIR to edit"
    )
    init.add_argument("directory", type=Path, metavar="DIR")
    init.add_argument(
        "--force", action="store_true", help="copy into a directory that is not empty, "
        "replacing files of the same names",
    )  # fmt: skip
    init.set_defaults(handler=cmd_init)

    reload = commands.add_parser(
        "reload", help="make a running guardproxy load and lint its bundle again"
    )
    reload.add_argument("--control", metavar="URL", help="control API URL (default: found)")
    reload.add_argument("--token", help="control API token (default: data directory)")
    reload.add_argument("--data-dir", type=Path, metavar="DIR")
    reload.add_argument("--json", action="store_true", help="the server's report as JSON")
    reload.set_defaults(handler=cmd_reload)


# ---------------------------------------------------------------------------


def print_problems(problems: list[Problem], style: Style, file: TextIO | None = None) -> None:
    for problem in problems:
        colour = "red" if problem.severity == "error" else "yellow"
        rule = f" [{problem.rule}]" if problem.rule else ""
        print(
            f"{style(str(problem.position), 'bold')}: {style(problem.severity, colour)}"
            f"{rule}: {problem.message}",
            file=file,
        )
        if problem.hint:
            print(f"    {style('hint:', 'dim')} {problem.hint}", file=file)


def _problem_json(problem: Problem) -> dict[str, Any]:
    return {
        "file": problem.position.file,
        "line": problem.position.line,
        "column": problem.position.column,
        "severity": problem.severity,
        "rule": problem.rule,
        "message": problem.message,
        "hint": problem.hint,
    }


def cmd_lint(args: argparse.Namespace) -> int:
    """Policy files and the test files beside them (``*_test.yaml``, not run)."""
    for path in args.paths:
        if not path.exists():
            raise UsageError(f"{path}: no such file or directory")
    policy_paths = [p for p in args.paths if p.is_dir() or not is_test_file(p)]
    test_paths = [p for p in args.paths if p.is_dir() or is_test_file(p)]
    result = load_bundle(policy_paths) if policy_paths else LoadResult(None)
    test_problems, test_files = lint_tests(test_paths, result.bundle)
    problems = [*result.problems, *test_problems]
    errors = [p for p in problems if p.severity == "error"]
    warnings = [p for p in problems if p.severity == "warning"]
    failed = bool(errors) or (args.strict and bool(warnings))
    if args.json:
        print(
            json.dumps(
                {"ok": not failed, "problems": [_problem_json(p) for p in problems]},
                indent=2,
            )
        )
        return 1 if failed else 0
    style = Style()
    print_problems(problems, style)
    tests = f"; {test_files} test file(s)" if test_files else ""
    if result.bundle is not None and not errors:
        bundle = result.bundle
        print(
            f"{style('ok', 'green')}: {len(bundle.rules)} rules, {len(bundle.exceptions)} "
            f"exceptions in {len(bundle.files)} files{tests}; bundle {bundle.digest[:19]}"
        )
    elif not errors:
        print(f"{style('ok', 'green')}: no errors (files linted without a BundleConfig){tests}")
    summary = f"{len(errors)} error(s), {len(warnings)} warning(s)"
    if problems:
        print(style(summary, "red" if failed else "yellow"))
    return 1 if failed else 0


# ---------------------------------------------------------------------------


def cmd_test(args: argparse.Namespace) -> int:
    for path in args.paths:
        if not path.exists():
            raise UsageError(f"{path}: no such file or directory")
    report = run_tests(args.paths, run=args.run, trace=args.explain)
    if args.junit:
        args.junit.write_text(junit_xml(report), encoding="utf-8")
    if args.json:
        print(json.dumps(_report_json(report, args.coverage), indent=2))
    else:
        _print_report(report, args, Style())
    return 0 if report.ok else 1


def _print_report(report: TestReport, args: argparse.Namespace, style: Style) -> None:
    print_problems(report.problems, style)
    labels = {
        "pass": style("PASS", "green"),
        "fail": style("FAIL", "red", "bold"),
        "error": style("ERROR", "red", "bold"),
        "skip": style("SKIP", "yellow"),
    }
    for result in report.results:
        show = result.status != "pass" or args.verbose or args.explain
        if not show:
            continue
        print(
            f"{labels[result.status]}  {result.suite}/{result.name}  "
            f"{style(str(result.position), 'dim')}"
        )
        for failure in result.failures:
            print(f"      - {failure}")
        if result.status == "fail" or args.explain:
            _print_traces(result, style)
    if args.coverage:
        uncovered = report.uncovered()
        total = sum(len(b.rules) for b in report.bundles)
        print(f"coverage: {total - len(uncovered)}/{total} rules fired in some case")
        for rule in uncovered:
            print(f"  {style('not exercised', 'yellow')}: {rule}")
        for bundle in report.bundles:
            print(f"destructive coverage of bundle {bundle.digest[:19]} (held or denied / total):")
            for line in destructive.table(
                destructive.measure_everywhere(bundle, datetime.now(UTC))
            ):
                print(line)
    broken = report.broken_files()
    not_loaded = f" ({len(broken)} file(s) did not load)" if broken else ""
    counts = (
        f"{report.count('pass')} passed, {report.count('fail')} failed, "
        f"{report.errors} errors{not_loaded}, {report.count('skip')} skipped"
    )
    if report.ran == 0 and not report.problems:
        print(style("no test ran: add *_test.yaml files next to the policies", "red"))
    colour = "green" if report.ok else "red"
    print(style(counts, colour, "bold"))


def _print_traces(result: CaseResult, style: Style) -> None:
    if result.decision is not None:
        decision = result.decision
        rules = ", ".join(decision.determining_rules) or decision.basis
        print(f"      decision: {style.outcome(decision.outcome)} by {rules}")
    for trace in result.traces:
        print("      " + _trace_line(trace, style))
        for step in trace.steps:
            print("          " + _step_line(step, style))


def _trace_line(trace: RuleTrace, style: Style) -> str:
    head = f"{trace.rule} ({trace.decision}, {trace.mode})"
    if not trace.matched:
        return f"{style(head, 'dim')}: match.{trace.mismatch} does not match"
    if trace.skipped:
        return f"{style(head, 'dim')}: not evaluated, {trace.skipped}"
    if trace.excepted_by:
        return f"{head}: fired, excepted by {trace.excepted_by}"
    state = style("FIRED", "bold") if trace.fired else "did not fire"
    if trace.error:
        state += style(" (error)", "red")
    return f"{head}: {state}"


def _step_line(step: Any, style: Style) -> str:
    result = style(f"error: {step.error}", "red") if step.error else str(step.result).lower()
    values = ", ".join(f"{k}={json.dumps(v)}" for k, v in step.values.items())
    return f"{step.stage}: {step.expression} -> {result}" + (f"   [{values}]" if values else "")


def _report_json(report: TestReport, coverage: bool) -> dict[str, Any]:
    data: dict[str, Any] = {
        "ok": report.ok,
        "passed": report.count("pass"),
        "failed": report.count("fail"),
        "errors": report.errors,
        "notLoaded": report.broken_files(),
        "skipped": report.count("skip"),
        "problems": [_problem_json(p) for p in report.problems],
        "cases": [
            {
                "suite": r.suite,
                "name": r.name,
                "status": r.status,
                "file": r.file,
                "line": r.position.line,
                "failures": r.failures,
                "decision": r.decision.model_dump(mode="json") if r.decision else None,
            }
            for r in report.results
        ],
    }
    if coverage:
        data["uncovered"] = report.uncovered()
        data["destructive"] = {
            b.digest: destructive.as_json(destructive.measure_everywhere(b, datetime.now(UTC)))
            for b in report.bundles
        }
    return data


# ---------------------------------------------------------------------------


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise UsageError(f"{path}: {error.strerror}") from None
    except json.JSONDecodeError as error:
        raise UsageError(
            f"{path}:{error.lineno}:{error.colno}: invalid JSON: {error.msg}"
        ) from None


def _load_input(args: argparse.Namespace) -> tuple[Action, Context]:
    raw = _read_json(args.action)
    context_raw: Any = None
    if isinstance(raw, dict) and "action" in raw:
        context_raw = raw.get("context")
        raw = raw["action"]
    if args.context is not None:
        context_raw = _read_json(args.context)
    try:
        action = Action.model_validate(raw)
    except pydantic.ValidationError as error:
        raise UsageError(f"{args.action}: not an Action: {_first_error(error)}") from None
    if context_raw is None:
        return action, Context(now=datetime.now(UTC))
    try:
        return action, Context.model_validate(context_raw)
    except pydantic.ValidationError as error:
        raise UsageError(f"context: {_first_error(error)}") from None


def _first_error(error: pydantic.ValidationError) -> str:
    item = error.errors()[0]
    return f"`{'.'.join(map(str, item['loc']))}`: {item['msg']}"


def _load(given: Path | None) -> Bundle:
    policies = given if given is not None else default_policies()
    if not policies.is_dir():
        raise UsageError(f"{policies}: not a bundle directory")
    result = load_bundle([policies])
    if result.bundle is None:
        print_problems(result.errors, Style(sys.stderr), file=sys.stderr)
        raise UsageError(f"{policies}: the bundle has errors (run `guardproxy policy lint`)")
    log.debug(
        "bundle.loaded", path=str(policies), digest=result.bundle.digest,
        rules=len(result.bundle.rules),
    )  # fmt: skip
    return result.bundle


def cmd_eval(args: argparse.Namespace) -> int:
    bundle = _load(args.policies)
    action, context = _load_input(args)
    decision, _ = explain(bundle, action, context)
    record = {
        "input": {
            "action": action.model_dump(mode="json"),
            "context": context.model_dump(mode="json"),
        },
        "decision": decision.model_dump(mode="json"),
    }
    print(json.dumps(record, indent=2))
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    bundle = _load(args.policies)
    action, context = _load_input(args)
    decision, traces = explain(bundle, action, context)
    if args.rule:
        if bundle.rule(args.rule) is None:
            raise UsageError(f"no rule `{args.rule}` in the bundle (ids are `set/rule`)")
        traces = [t for t in traces if t.rule == args.rule]
    if args.json:
        print(
            json.dumps(
                {
                    "decision": decision.model_dump(mode="json"),
                    "rules": [_trace_json(t) for t in traces],
                },
                indent=2,
                default=str,
            )
        )
        return 0
    style = Style()
    print(
        f"action:   {action.summary()}  "
        f"({action.verb}, {action.environment}, confidence {action.confidence})"
    )
    _print_decision(decision, style)
    print("rules:")
    if not traces:
        print("  (no rule matched this provider and verb)")
    for trace in traces:
        print("  " + _trace_line(trace, style))
        for step in trace.steps:
            print("      " + _step_line(step, style))
    return 0


def _print_decision(decision: Decision, style: Style) -> None:
    rules = ", ".join(decision.determining_rules) or f"({decision.basis})"
    print(f"decision: {style.outcome(decision.outcome)} by {rules}")
    if decision.message:
        print(f"message:  {decision.message}")
    if decision.approval is not None:
        a = decision.approval
        need = f"{a.quorum} of {', '.join(a.groups)}"
        if a.required_groups:
            need += f", including {', '.join(a.required_groups)}"
        print(f"approval: {need}; timeout {a.timeout_seconds}s; grant {a.grant}")
    for finding in decision.audit_findings:
        print(f"audit:    {finding.rule} would {finding.would}")
    for error in decision.errors:
        effect = "fired (fail closed)" if error.fired else "did not fire"
        print(style(f"error:    {error.rule} {error.stage}: {error.error} -> {effect}", "red"))
    for rule in decision.excepted:
        print(f"excepted: {rule}")


def _trace_json(trace: RuleTrace) -> dict[str, Any]:
    return {
        "rule": trace.rule,
        "decision": trace.decision,
        "mode": trace.mode,
        "matched": trace.matched,
        "mismatch": trace.mismatch,
        "fired": trace.fired,
        "error": trace.error,
        "exceptedBy": trace.excepted_by,
        "skipped": trace.skipped,
        "steps": [
            {
                "stage": s.stage,
                "expression": s.expression,
                "result": s.result,
                "error": s.error,
                "values": s.values,
            }
            for s in trace.steps
        ],
    }


def cmd_init(args: argparse.Namespace) -> int:
    """Copy the shipped bundle into a directory a team owns, to edit and test."""
    target: Path = args.directory
    if target.exists() and not target.is_dir():
        raise UsageError(f"{target} exists and is not a directory; name a new directory")
    if target.is_dir() and any(target.iterdir()) and not args.force:
        raise UsageError(
            f"{target} is not empty; name a new directory, or add --force to copy into it "
            "(files of the same names are replaced)"
        )
    source = shipped_bundle()
    files = sorted(p for p in source.iterdir() if p.is_file() and p.suffix in (".yaml", ".yml"))
    if not files:
        raise UsageError(f"the shipped bundle at {source} has no files; reinstall guardproxy")
    target.mkdir(parents=True, exist_ok=True)
    for file in files:
        shutil.copyfile(file, target / file.name)  # contents only: an install may be read-only
    print(
        f"copied the shipped bundle ({len(files)} files) to {target}. Edit it, check it with "
        f"`guardproxy policy lint {target} && guardproxy policy test {target}`, and use it "
        f"with `guardproxy serve --policies {target}` (or GUARDPROXY_POLICIES={target})."
    )
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    if args.write is not None:
        for path in write_schemas(args.write):
            print(path)
        return 0
    print(render(schemas()[f"{args.name}.schema.json"]), end="")
    return 0


def cmd_reload(args: argparse.Namespace) -> int:
    """Exit 0 when the bundle was loaded or is unchanged, 1 when it was refused."""
    try:
        client = ControlClient.locate(url=args.control, token=args.token, data_dir=args.data_dir)
        report = client.call("POST", "/v1/policies/reload")
    except ControlError as error:
        if not (isinstance(error.body, dict) and "result" in error.body):
            print(f"guardproxy: {error}", file=sys.stderr)
            return 1
        report = error.body
    if args.json:
        print(json.dumps(report, indent=2))
        return 0 if report["ok"] else 1
    style = Style()
    for line in report["errors"]:
        print(line, file=sys.stderr)
    for line in report["warnings"]:
        print(line, file=sys.stderr)
    digest = str(report["bundle"])[:19]
    if report["result"] == "refused":
        print(
            f"{style('refused', 'red')}: the bundle has {len(report['errors'])} error(s); "
            f"bundle {digest} stays in force. Fix them (guardproxy policy lint) and reload.",
            file=sys.stderr,
        )
        return 1
    if report["result"] == "unchanged":
        print(f"{style('ok', 'green')}: unchanged, bundle {digest} ({report['rules']} rules)")
        return 0
    added, removed = report.get("added", []), report.get("removed", [])
    was = report.get("previous_rules")
    counts = f"{report['rules']} rules" + (f", was {was}" if was is not None else "")
    print(f"{style('ok', 'green')}: loaded bundle {digest} ({counts}), "
          f"replacing {str(report['previous'])[:19]}")  # fmt: skip
    print(f"  added {len(added)} rule(s)" + (": " + ", ".join(added) if added else ""))
    line = f"  removed {len(removed)} rule(s)" + (": " + ", ".join(removed) if removed else "")
    print(style(line, "yellow") if removed else line)
    return 0
