"""The policy author's CLI: lint, test, eval, explain, schema."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from textwrap import dedent

import pytest

from guardproxy.cli.main import main
from guardproxy.policy.schema import SCHEMA_DIR, render, schemas

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "policies"

BUNDLE = """\
apiVersion: guardproxy.dev/v1
kind: BundleConfig
metadata: {name: b}
spec: {defaultDecision: allow}
"""

RULES = """\
apiVersion: guardproxy.dev/v1
kind: PolicySet
metadata: {name: base}
spec:
  rules:
    - id: hold-prod-destroy
      decision: hold
      match: {verbs: [destroy]}
      condition: >-
        action.environment == "prod"
      message: Destroying prod needs approval.
      approval: {groups: [sre-oncall]}
"""

TESTS = """\
apiVersion: guardproxy.dev/v1
kind: PolicyTest
metadata: {name: base}
fixtures:
  action: {provider: aws, verb: destroy, confidence: exact}
cases:
  - name: prod destroy is held
    action: {environment: prod, resource: {name: db-1}}
    expect: {decision: hold, rules: [base/hold-prod-destroy]}
  - name: dev destroy is allowed
    action: {environment: dev}
    expect: {decision: allow}
"""


def write_bundle(tmp_path: Path, **files: str) -> Path:
    root = tmp_path / "bundle"
    root.mkdir()
    for name, text in {"bundle.yaml": BUNDLE, "rules.yaml": RULES, **files}.items():
        (root / name.replace("__", ".")).write_text(dedent(text))
    return root


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# -- lint


def test_lint_shipped_policies_is_clean(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "policy", "lint", str(SHIPPED))
    assert code == 0, out
    assert "ok:" in out
    assert "\x1b[" not in out  # plain when not on a terminal


def test_lint_reports_file_line_and_hint_for_a_field_typo(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = RULES.replace('action.environment == "prod"', 'action.enviroment == "prod"')
    root = write_bundle(tmp_path, rules__yaml=broken)
    code, out, _ = run(capsys, "policy", "lint", str(root))
    assert code == 1
    assert f"{root / 'rules.yaml'}:10:9: error [base/hold-prod-destroy]" in out
    assert "`action` has no field `enviroment`" in out
    assert "did you mean `environment`?" in out
    assert "Traceback" not in out


def test_lint_reports_a_bad_cel_expression_with_its_position(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = RULES.replace('action.environment == "prod"', 'action.environment == "prod" &&')
    root = write_bundle(tmp_path, rules__yaml=broken)
    code, out, _ = run(capsys, "policy", "lint", str(root))
    assert code == 1
    assert f"{root / 'rules.yaml'}:10:" in out
    assert "syntax error" in out


def test_lint_json_lists_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_bundle(tmp_path, rules__yaml=RULES.replace("decision: hold", "decision: hodl"))
    code, out, _ = run(capsys, "policy", "lint", "--json", str(root))
    assert code == 1
    report = json.loads(out)
    assert report["ok"] is False
    (problem,) = report["problems"]
    assert problem["line"] == 7
    assert problem["rule"] == "base/hold-prod-destroy"
    assert "'allow', 'hold' or 'deny'" in problem["message"]


def test_lint_strict_fails_on_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    warned = RULES + "      failurePolicy: Ignore\n"
    root = write_bundle(tmp_path, rules__yaml=warned)
    assert run(capsys, "policy", "lint", str(root))[0] == 0
    code, out, _ = run(capsys, "policy", "lint", "--strict", str(root))
    assert code == 1
    assert "failurePolicy Ignore" in out


def test_lint_missing_path_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "policy", "lint", str(tmp_path / "nope"))
    assert code == 2
    assert "no such file or directory" in err


# -- test


def test_shipped_policy_tests_pass_and_cover_every_rule(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "policy", "test", "--coverage", "--json", str(SHIPPED))
    report = json.loads(out)
    assert code == 0, [c for c in report["cases"] if c["status"] != "pass"]
    assert report["passed"] > 50
    assert report["uncovered"] == []
    # and what the bundle holds of every destructive operation the recognisers know
    (figures,) = report["destructive"].values()
    for environment in ("prod", "unknown"):
        whole = figures[environment]["all"]
        assert whole["total"] > 5000 and whole["allowed"] == [], environment
        assert whole["held_or_denied"] >= 0.99
        assert set(figures[environment]) >= {"aws", "k8s", "github", "gcp", "sql", "all"}


def test_test_passes_and_writes_junit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_bundle(tmp_path, rules_test__yaml=TESTS)
    junit = tmp_path / "junit.xml"
    code, out, _ = run(capsys, "policy", "test", "--junit", str(junit), str(root))
    assert code == 0, out
    assert "2 passed, 0 failed" in out
    suites = ET.parse(junit).getroot()
    assert suites.get("tests") == "2"
    assert suites.get("failures") == "0"


def test_a_failing_case_exits_non_zero_and_explains_itself(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = TESTS.replace("expect: {decision: allow}", "expect: {decision: deny}")
    root = write_bundle(tmp_path, rules_test__yaml=wrong)
    junit = tmp_path / "junit.xml"
    code, out, _ = run(capsys, "policy", "test", "--junit", str(junit), str(root))
    assert code == 1
    assert "FAIL  base/dev destroy is allowed" in out
    assert "decision is allow, expected deny" in out
    # the trace shows why the rule did not fire, with the value it read
    assert 'action.environment == "prod" -> false' in out
    assert '[action.environment="dev"]' in out
    assert ET.parse(junit).getroot().get("failures") == "1"


def test_no_test_ran_is_a_failure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_bundle(tmp_path)
    code, out, _ = run(capsys, "policy", "test", str(root))
    assert code == 1
    assert "no test ran" in out


def test_run_selects_cases_and_empty_selection_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_bundle(tmp_path, rules_test__yaml=TESTS)
    code, out, _ = run(capsys, "policy", "test", "-v", "--run", "prod destroy", str(root))
    assert code == 0
    assert "1 passed" in out
    assert "dev destroy" not in out
    code, _, _ = run(capsys, "policy", "test", "--run", "nothing-matches", str(root))
    assert code == 1


def test_coverage_lists_rules_no_case_fired(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    only_dev = TESTS.split("  - name: prod destroy is held", maxsplit=1)[0] + dedent("""\
          - name: dev destroy is allowed
            action: {environment: dev}
            expect: {decision: allow}
        """)
    root = write_bundle(tmp_path, rules_test__yaml=only_dev)
    code, out, _ = run(capsys, "policy", "test", "--coverage", str(root))
    assert code == 0
    assert "coverage: 0/1 rules" in out
    assert "not exercised: base/hold-prod-destroy" in out
    # the destructive figures: this bundle holds prod destroys only
    assert "destructive coverage of bundle sha256:" in out
    prod, unknown = out.split("environment prod:")[1].split("environment unknown:")
    assert "let through: aws:" in prod and "let through: aws:" in unknown
    held = {line.split()[0]: line.split() for line in prod.splitlines() if line.strip()}
    assert held["aws"][2] != "0" and held["aws"][5] != "0"  # some held, some let through
    assert all(line.split()[2] == "0" for line in unknown.splitlines() if "%" in line)


def test_a_broken_test_file_is_reported_with_its_position(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = TESTS.replace("expect: {decision: allow}", "expect: {decison: allow}")
    root = write_bundle(tmp_path, rules_test__yaml=broken)
    code, out, _ = run(capsys, "policy", "test", str(root))
    assert code == 1
    assert "rules_test.yaml:12:" in out


def test_a_test_file_typo_gets_a_did_you_mean_at_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = TESTS.replace("expect: {decision: allow}", "expct: {decision: allow}")
    root = write_bundle(tmp_path, rules_test__yaml=broken)
    for command in ("test", "lint"):
        code, out, _ = run(capsys, "policy", command, str(root))
        assert code == 1, command
        assert "rules_test.yaml:12:5: error: unknown field `expct`" in out, out
        assert "did you mean `expect`?" in out
        assert "Extra inputs are not permitted" not in out


def test_lint_checks_test_files_without_running_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = TESTS.replace("rules: [base/hold-prod-destroy]", "rules: [base/hold-prod-destory]")
    wrong = wrong.replace("{environment: dev}", "{environment: devv}")
    root = write_bundle(tmp_path, rules_test__yaml=wrong)
    code, out, _ = run(capsys, "policy", "lint", str(root))
    assert code == 1
    assert (
        "rules_test.yaml:9:38: error: case `prod destroy is held` expects rule "
        "`base/hold-prod-destory`, which the bundle does not have" in out
    ), out
    assert "did you mean `base/hold-prod-destroy`?" in out
    assert (
        "rules_test.yaml:11:14: error: case `dev destroy is allowed`: action `environment`" in out
    )
    assert "2 error(s)" in out
    # one test file given on its own is linted as a test file, not as policy
    code, out, _ = run(capsys, "policy", "lint", str(root / "rules_test.yaml"))
    assert code == 1 and "unknown kind" not in out and "action `environment`" in out
    (tmp_path / "ok").mkdir()
    code, out, _ = run(
        capsys, "policy", "lint", str(write_bundle(tmp_path / "ok", rules_test__yaml=TESTS))
    )
    assert code == 0 and "1 test file(s)" in out


def test_a_test_file_that_does_not_load_is_counted_as_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = TESTS.replace("expect: {decision: allow}", "expct: {decision: allow}")
    root = write_bundle(tmp_path, rules_test__yaml=TESTS, other_test__yaml=broken)
    junit = tmp_path / "junit.xml"
    code, out, _ = run(capsys, "policy", "test", "--junit", str(junit), str(root))
    assert code == 1
    assert "2 passed, 0 failed, 1 errors (1 file(s) did not load), 0 skipped" in out
    suites = ET.parse(junit).getroot()
    assert (suites.get("tests"), suites.get("errors")) == ("3", "1")
    [load] = [s for s in suites if s.get("name") == "load"]
    [case] = load
    assert case.get("name") == str(root / "other_test.yaml")
    assert "unknown field `expct`" in (case.find("error").text or "")  # type: ignore[union-attr]
    code, out, _ = run(capsys, "policy", "test", "--json", str(root))
    report = json.loads(out)
    assert (report["errors"], report["notLoaded"]) == (1, [str(root / "other_test.yaml")])


def test_an_empty_test_file_does_not_pass_silently(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_bundle(tmp_path, rules_test__yaml=TESTS, empty_test__yaml="# nothing yet\n")
    code, out, _ = run(capsys, "policy", "test", str(root))
    assert code == 1
    assert "empty_test.yaml:1:1: error: the test file holds no PolicyTest" in out


def test_a_broken_bundle_fails_the_tests(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_bundle(
        tmp_path, rules__yaml=RULES.replace("approval:", "aproval:"), rules_test__yaml=TESTS
    )
    code, out, _ = run(capsys, "policy", "test", str(root))
    assert code == 1
    assert "unknown field `aproval`" in out


# -- eval and explain


def _action_file(tmp_path: Path, **fields: object) -> Path:
    action = {"provider": "aws", "verb": "destroy", "environment": "prod", "confidence": "exact"}
    path = tmp_path / "action.json"
    path.write_text(json.dumps({**action, **fields}))
    return path


def test_eval_prints_a_replayable_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_bundle(tmp_path)
    action = _action_file(tmp_path)
    context = tmp_path / "context.json"
    context.write_text(json.dumps({"now": "2026-11-25T12:00:00Z", "session": {"user": "bob"}}))
    argv = ["policy", "eval", "--policies", str(root), "--action", str(action)]
    code, out, _ = run(capsys, *argv, "--context", str(context))
    assert code == 0
    record = json.loads(out)
    assert record["decision"]["outcome"] == "hold"
    assert record["decision"]["determining_rules"] == ["base/hold-prod-destroy"]
    assert record["input"]["context"]["session"]["user"] == "bob"
    # the printed input, fed back, gives the same decision (same input hash)
    replay = tmp_path / "replay.json"
    replay.write_text(json.dumps(record["input"]))
    code, out, _ = run(capsys, "policy", "eval", "--policies", str(root), "--action", str(replay))
    assert json.loads(out)["decision"] == record["decision"]


def test_explain_shows_the_values_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_bundle(tmp_path)
    action = _action_file(tmp_path, environment="staging")
    argv = ["policy", "explain", "--policies", str(root), "--action", str(action)]
    code, out, _ = run(capsys, *argv)
    assert code == 0
    assert "decision: ALLOW by (default)" in out
    assert "base/hold-prod-destroy (hold, enforce): did not fire" in out
    assert '[action.environment="staging"]' in out
    code, out, _ = run(capsys, *argv, "--json")
    (trace,) = json.loads(out)["rules"]
    assert trace["steps"][0]["values"] == {"action.environment": "staging"}


def test_explain_unknown_rule_and_bad_json_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_bundle(tmp_path)
    action = _action_file(tmp_path)
    code, _, err = run(
        capsys, "policy", "explain", "--policies", str(root), "--action", str(action),
        "--rule", "base/nope",
    )  # fmt: skip
    assert code == 2
    assert "no rule `base/nope`" in err
    action.write_text('{"provider": "aws",\n "verb": }')
    code, _, err = run(capsys, "policy", "eval", "--policies", str(root), "--action", str(action))
    assert code == 2
    assert f"{action}:2:" in err


def test_eval_refuses_a_broken_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_bundle(tmp_path, rules__yaml=RULES.replace("message:", "mesage:"))
    action = _action_file(tmp_path)
    code, _, err = run(capsys, "policy", "eval", "--policies", str(root), "--action", str(action))
    assert code == 2
    assert "unknown field `mesage`" in err


# -- schemas


def test_shipped_schemas_are_current() -> None:
    for name, schema in schemas().items():
        shipped = (SCHEMA_DIR / name).read_text()
        assert shipped == render(schema), (
            f"regenerate with: guardproxy policy schema --write {SCHEMA_DIR}"
        )


def test_schema_command_prints_the_policy_file_schema(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "policy", "schema")
    assert code == 0
    schema = json.loads(out)
    kinds = {d["properties"]["kind"]["const"] for d in schema["$defs"].values()
             if "kind" in d.get("properties", {})}  # fmt: skip
    assert kinds == {"PolicySet", "PolicyException", "BundleConfig", "PolicyTest"}
