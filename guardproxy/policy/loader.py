"""Load policy files into a :class:`Bundle`, reporting every problem with file:line:column.

A bundle is a directory: one ``BundleConfig`` plus any number of ``PolicySet`` and
``PolicyException`` documents in ``*.yaml`` files below it (``*_test.yaml`` files are
tests, not policy). Loading is all or nothing: if anything is wrong, no bundle is
returned, so a broken file never half-loads.

Here: reading the documents of a bundle, validating and compiling them. Finding a
bundle's files is in :mod:`guardproxy.policy._bundle_files`, turning pydantic's errors
into problems in :mod:`guardproxy.policy._validation_problems`; their names are
importable from here.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pydantic
from pydantic import BaseModel

from guardproxy.policy import cel
from guardproxy.policy._bundle_files import (
    TEST_SUFFIXES,
    is_shipped_bundle,
    is_test_file,
    looks_like_bundle,
    policy_files,
    shipped_bundle,
)
from guardproxy.policy._validation_problems import validation_problem
from guardproxy.policy.bundle import (
    Bundle,
    CompiledException,
    CompiledRule,
    PolicySetScope,
    Variable,
)
from guardproxy.policy.matching import Matcher
from guardproxy.policy.model import (
    API_VERSION,
    KINDS,
    BundleConfig,
    FailurePolicy,
    Match,
    Outcome,
    PolicyException,
    PolicySet,
    Rule,
)
from guardproxy.policy.template import Template, compile_template
from guardproxy.policy.typecheck import BOOL, STRING, CelType
from guardproxy.policy.yamlsource import Document, Path_, Position, Problem, read_documents

__all__ = [
    "EXCEPTION_HORIZON",
    "MESSAGE_LIMIT",
    "TEST_SUFFIXES",
    "LoadResult",
    "is_shipped_bundle",
    "is_test_file",
    "load_bundle",
    "looks_like_bundle",
    "policy_files",
    "shipped_bundle",
    "validation_problem",
]

MESSAGE_LIMIT = 300
EXCEPTION_HORIZON = timedelta(days=90)
_MODELS: dict[str, type[BaseModel]] = {
    "PolicySet": PolicySet,
    "PolicyException": PolicyException,
    "BundleConfig": BundleConfig,
}


@dataclass
class LoadResult:
    bundle: Bundle | None
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]


def load_bundle(paths: Iterable[Path], *, now: datetime | None = None) -> LoadResult:
    """Load a bundle from directories and/or files.

    A directory needs exactly one BundleConfig; files given on their own are linted
    without one (their bundle is then not usable for evaluation).
    ``now`` is only used for lint warnings about exception expiry, never in decisions.
    """
    paths = list(paths)
    files: list[tuple[Path, str]] = []
    for path in paths:
        if path.is_dir():
            files.extend((f, f.relative_to(path).as_posix()) for f in policy_files(path))
        else:
            files.append((path, path.name))
    loader = _Loader(now or datetime.now(UTC))
    for path, relative in sorted(files, key=lambda item: item[1]):
        loader.read(path, relative)
    return loader.finish(
        require_config=any(p.is_dir() for p in paths),
        where=str(paths[0]) if paths else ".",
    )


class _Loader:
    def __init__(self, now: datetime) -> None:
        self.now = now
        self.problems: list[Problem] = []
        self.sets: list[tuple[PolicySet, Document]] = []
        self.exceptions: list[tuple[PolicyException, Document]] = []
        self.configs: list[tuple[BundleConfig, Document]] = []
        self.digest = hashlib.sha256()
        self.file_names: list[str] = []

    # -- reading

    def read(self, path: Path, relative: str) -> None:
        """Read one file; the digest covers its path in the bundle and its bytes."""
        display = str(path)
        try:
            raw = path.read_bytes()
        except OSError as error:
            self.error(Position(display, 1, 1), f"cannot read the file: {error.strerror}")
            return
        self.file_names.append(relative)
        self.digest.update(relative.encode() + b"\0" + raw + b"\0")
        documents, problems = read_documents(path, display)
        self.problems.extend(problems)
        if not documents and not problems:
            self.error(
                Position(display, 1, 1),
                "the file holds no policy document (it is empty or only comments)",
                "a policy file that lost its content would silently drop its rules: restore "
                "it, or delete the file to remove its rules on purpose",
            )
        for document in documents:
            self.document(document)

    def document(self, doc: Document) -> None:
        data = doc.data
        if not isinstance(data, dict):
            self.error(doc.start, "a policy document must be a mapping with apiVersion and kind")
            return
        kind = data.get("kind")
        if not isinstance(kind, str) or kind not in _MODELS:
            self.error(
                doc.position(("kind",)),
                f"unknown kind {kind!r}" if kind else "the document has no `kind`",
                f"use one of {', '.join(KINDS)} (tests go in *_test.yaml files)",
            )
            return
        if data.get("apiVersion") != API_VERSION:
            self.error(
                doc.position(("apiVersion",)),
                f"apiVersion must be {API_VERSION}, not {data.get('apiVersion')!r}",
                f"write apiVersion: {API_VERSION}",
            )
            return
        model = _MODELS[kind]
        try:
            parsed = model.model_validate(data)
        except pydantic.ValidationError as error:
            for item in error.errors():
                self.problems.append(validation_problem(model, doc, item))
            if model is PolicySet:
                self.salvage_rules(doc)
            return
        if isinstance(parsed, PolicySet):
            self.sets.append((parsed, doc))
        elif isinstance(parsed, PolicyException):
            self.exceptions.append((parsed, doc))
        elif isinstance(parsed, BundleConfig):
            self.configs.append((parsed, doc))

    def salvage_rules(self, doc: Document) -> None:
        """Still check the CEL of the valid rules of an invalid set: report all at once."""
        spec = doc.data.get("spec")
        name = (
            doc.data.get("metadata", {}).get("name", "?")
            if isinstance(doc.data.get("metadata"), dict)
            else "?"
        )
        if not isinstance(spec, dict) or not isinstance(spec.get("rules"), list):
            return
        params: dict[str, Any] = spec["params"] if isinstance(spec.get("params"), dict) else {}
        variables = [
            v["name"]
            for v in (spec["variables"] if isinstance(spec.get("variables"), list) else [])
            if isinstance(v, dict) and isinstance(v.get("name"), str)
        ]
        for i, raw in enumerate(spec["rules"]):
            try:
                rule = Rule.model_validate(raw)
            except pydantic.ValidationError:
                continue
            rule_id = f"{name}/{rule.id}"
            base: Path_ = ("spec", "rules", i)
            sources = [
                ((*base, "matchConditions", j, "expression"), c.expression, BOOL)
                for j, c in enumerate(rule.match_conditions)
            ]
            if rule.condition is not None:
                sources.append(((*base, "condition"), rule.condition, BOOL))
            if rule.message_expression is not None:
                sources.append(((*base, "messageExpression"), rule.message_expression, STRING))
            for path, source, expect in sources:
                self.expression(doc, path, source, rule_id, params, variables, expect)

    # -- problems

    def error(self, where: Position, message: str, hint: str = "", rule: str = "") -> None:
        self.problems.append(Problem(where, message, hint, rule))

    def warn(self, where: Position, message: str, hint: str = "", rule: str = "") -> None:
        self.problems.append(Problem(where, message, hint, rule, severity="warning"))

    def expression(
        self,
        doc: Document,
        path: Path_,
        source: str,
        rule: str,
        params: Iterable[str] | Mapping[str, Any] = (),
        variables: Iterable[str] | Mapping[str, CelType] = (),
        expect: CelType | None = None,
    ) -> cel.Expression | None:
        compiled, issues = cel.compile_expression(source, params, variables, expect=expect)
        for issue in issues:
            self.error(
                doc.expression_position(path, issue.line, issue.column),
                issue.message,
                issue.hint,
                rule,
            )
        if compiled is not None and compiled.compiled is None and not cel.interpreting():
            self.problems.append(
                Problem(
                    doc.expression_position(path, 1, 1),
                    f"this expression runs on cel-python's interpreter: {compiled.fallback}",
                    "it decides the same, only slower; write it without that to compile it",
                    rule,
                    severity="notice",
                )
            )
        return compiled

    # -- compiling

    def finish(self, *, require_config: bool, where: str) -> LoadResult:
        rules: list[CompiledRule] = []
        set_names: dict[str, Position] = {}
        for policy_set, doc in self.sets:
            name = policy_set.metadata.name
            here = doc.position(("metadata", "name"))
            if name in set_names:
                self.error(
                    here,
                    f"PolicySet `{name}` is also defined at {set_names[name]}",
                    "rule ids are `set/rule`, so set names must be unique in a bundle",
                )
                continue
            set_names[name] = here
            rules.extend(self.policy_set(policy_set, doc))
        by_id = {r.id: r for r in rules}
        exceptions = [c for e, doc in self.exceptions if (c := self.exception(e, doc, by_id))]
        config = self.config(require_config, where)
        if self.errors() or config is None:
            return LoadResult(None, self.problems)
        bundle = Bundle.build(
            config, rules, exceptions, "sha256:" + self.digest.hexdigest(), self.file_names
        )
        return LoadResult(bundle, self.problems)

    def errors(self) -> bool:
        return any(p.severity == "error" for p in self.problems)

    def config(self, required: bool, where: str) -> Any:
        if len(self.configs) > 1:
            first = self.configs[0][1].start
            for _, doc in self.configs[1:]:
                self.error(
                    doc.start,
                    f"a second BundleConfig; the first is at {first}",
                    "a bundle has exactly one BundleConfig",
                )
            return None
        if not self.configs:
            if required:
                self.error(
                    Position(where, 1, 1),
                    "no BundleConfig found: the bundle has no defaultDecision",
                    "add a file with `kind: BundleConfig` and `spec: {defaultDecision: deny}`",
                )
            return None
        config, doc = self.configs[0]
        spec = config.spec
        needs_approval = spec.default_decision is Outcome.HOLD or spec.unclassified == "hold"
        if needs_approval and spec.default_approval is None:
            self.error(
                doc.position(("spec",)),
                "a default of `hold` needs `defaultApproval`: nobody could approve it",
                "add spec.defaultApproval: {groups: [sre-oncall]}",
            )
        return spec

    def policy_set(self, policy_set: PolicySet, doc: Document) -> list[CompiledRule]:
        spec = policy_set.spec
        set_name = policy_set.metadata.name
        params = spec.params
        variables: list[Variable] = []
        for i, var in enumerate(spec.variables):
            where = ("spec", "variables", i, "expression")
            if var.name in {v.name for v in variables}:
                self.error(
                    doc.position(("spec", "variables", i, "name")),
                    f"variable `{var.name}` is declared twice",
                )
            compiled = self.expression(
                doc,
                where,
                var.expression,
                f"{set_name}/variables.{var.name}",
                params,
                {v.name: v.expression.type for v in variables},
            )
            if compiled is not None:
                variables.append(Variable(var.name, compiled))
        scope = PolicySetScope(set_name, spec.params, cel.to_cel(spec.params), tuple(variables))
        declared = {v.name: v.expression.type for v in variables}
        seen: dict[str, int] = {}
        compiled_rules: list[CompiledRule] = []
        for i, rule in enumerate(spec.rules):
            base: Path_ = ("spec", "rules", i)
            rule_id = f"{set_name}/{rule.id}"
            if rule.id in seen:
                self.error(
                    doc.position((*base, "id")),
                    f"duplicate rule id `{rule.id}` (first in rule #{seen[rule.id] + 1})",
                    "rule ids must be unique within a PolicySet",
                    rule_id,
                )
                continue
            seen[rule.id] = i
            self.check_rule_shape(rule, doc, base, rule_id)
            self.check_match(rule.match, doc, (*base, "match"), rule_id)
            conditions = []
            for j, named in enumerate(rule.match_conditions):
                compiled = self.expression(
                    doc,
                    (*base, "matchConditions", j, "expression"),
                    named.expression,
                    rule_id,
                    params,
                    declared,
                    BOOL,
                )
                if compiled is not None:
                    self.check_constant(
                        compiled, doc, (*base, "matchConditions", j, "expression"), rule_id
                    )
                    conditions.append((named.name, compiled))
            condition = None
            if rule.condition is not None:
                condition = self.expression(
                    doc, (*base, "condition"), rule.condition, rule_id, params, declared, BOOL
                )
                if condition is not None:
                    self.check_constant(condition, doc, (*base, "condition"), rule_id)
            message_expression = None
            if rule.message_expression is not None:
                message_expression = self.expression(
                    doc,
                    (*base, "messageExpression"),
                    rule.message_expression,
                    rule_id,
                    params,
                    declared,
                    STRING,
                )
            compiled_rules.append(
                CompiledRule(
                    id=rule_id,
                    description=rule.description,
                    decision=rule.decision,
                    mode=rule.mode or spec.defaults.mode,
                    mode_locked=rule.mode_locked,
                    matcher=Matcher.compile(rule.match),
                    match_conditions=tuple(conditions),
                    condition=condition,
                    message=self.template(rule.message, doc, (*base, "message"), rule_id),
                    message_expression=message_expression,
                    approval=rule.approval,
                    failure_policy=rule.failure_policy,
                    exceptions_allowed=rule.exceptions == "allowed",
                    scope=scope,
                    source=doc.position(base),
                )
            )
        return compiled_rules

    def template(self, text: str | None, doc: Document, path: Path_, rule_id: str) -> Template:
        compiled, problems = compile_template((text or "").strip())
        for problem in problems:
            self.error(
                doc.position(path),
                problem,
                "placeholders are field paths such as {action.resource.name}",
                rule_id,
            )
        return compiled

    def check_rule_shape(self, rule: Any, doc: Document, base: Path_, rule_id: str) -> None:
        here = doc.position(base)
        if rule.decision is Outcome.HOLD and rule.approval is None:
            self.error(
                here,
                "decision `hold` needs an `approval` block: nobody could release it",
                "add approval: {groups: [sre-oncall], quorum: 1}",
                rule_id,
            )
        if rule.decision is not Outcome.HOLD and rule.approval is not None:
            self.warn(
                doc.position((*base, "approval")),
                f"`approval` is ignored: the rule decides `{rule.decision}`",
                "",
                rule_id,
            )
        if rule.decision is not Outcome.ALLOW and not (rule.message or "").strip():
            self.error(
                here,
                f"a `{rule.decision}` rule needs a `message` for the agent",
                "say what was stopped, why, and what to do instead; messageExpression "
                "falls back to it",
                rule_id,
            )
        if rule.message is not None:
            text = rule.message.strip()
            if "\n" in text or len(text) > MESSAGE_LIMIT:
                self.error(
                    doc.position((*base, "message")),
                    f"the message must be one line of at most {MESSAGE_LIMIT} characters",
                    "agents read it verbatim; keep it short and use `>-` to fold lines",
                    rule_id,
                )
        if rule.failure_policy is FailurePolicy.IGNORE and rule.decision is not Outcome.ALLOW:
            self.warn(
                doc.position((*base, "failurePolicy")),
                "failurePolicy Ignore: a CEL error will let the request through this rule",
                "keep Fail unless an erroring rule must not block; review this",
                rule_id,
            )
        if rule.approval is not None:
            missing = sorted(set(rule.approval.required_groups) - set(rule.approval.groups))
            if missing:
                self.error(
                    doc.position((*base, "approval", "requiredGroups")),
                    f"required groups {missing} are not among the approval groups",
                    "add them to approval.groups",
                    rule_id,
                )
            if (
                rule.approval.quorum > 1
                and len(rule.approval.required_groups) > rule.approval.quorum
            ):
                self.error(
                    doc.position((*base, "approval", "quorum")),
                    "more required groups than the quorum: the quorum can never suffice",
                    "raise the quorum",
                    rule_id,
                )

    def check_match(self, match: Match, doc: Document, base: Path_, rule_id: str) -> None:
        for name, info in Match.model_fields.items():
            value = getattr(match, name)
            if isinstance(value, list) and not value:
                key = info.alias or name
                self.error(
                    doc.position((*base, key)),
                    f"`match.{key}` is an empty list, so the rule can never match",
                    "remove the key to match any value, or list the values",
                    rule_id,
                )

    def check_constant(
        self, expression: cel.Expression, doc: Document, path: Path_, rule_id: str
    ) -> None:
        if not expression.constant:
            return
        value, error = cel.evaluate_bool(expression, {})
        if error is not None:
            self.error(doc.position(path), f"this expression always fails: {error}", "", rule_id)
        elif value is False:
            self.error(
                doc.position(path),
                "this expression is always false: the rule never fires",
                "remove the rule or fix the expression",
                rule_id,
            )

    def exception(
        self, exception: PolicyException, doc: Document, rules: dict[str, CompiledRule]
    ) -> CompiledException | None:
        spec = exception.spec
        name = exception.metadata.name
        ok = True
        for i, rule_id in enumerate(spec.rules):
            target = rules.get(rule_id)
            where = doc.position(("spec", "rules", i))
            if target is None:
                close = difflib.get_close_matches(rule_id, list(rules), n=1)
                self.error(
                    where,
                    f"exception `{name}` names unknown rule `{rule_id}`",
                    f"did you mean `{close[0]}`?" if close else "use the full id `set/rule`",
                )
                ok = False
            elif not target.exceptions_allowed:
                self.error(
                    where,
                    f"rule `{rule_id}` forbids exceptions",
                    "ask the rule's owner; it says `exceptions: forbidden`",
                )
                ok = False
        self.check_match(spec.match, doc, ("spec", "match"), f"exception/{name}")
        condition = None
        if spec.condition is not None:
            condition = self.expression(
                doc, ("spec", "condition"), spec.condition, f"exception/{name}", expect=BOOL
            )
            ok = ok and condition is not None
        where = doc.position(("spec", "expires"))
        if spec.expires <= self.now:
            self.warn(
                where,
                f"exception `{name}` expired on {spec.expires.isoformat()}",
                "remove it; it no longer applies",
            )
        elif spec.expires - self.now > EXCEPTION_HORIZON:
            self.warn(
                where,
                f"exception `{name}` lasts more than {EXCEPTION_HORIZON.days} days",
                "exceptions are temporary; fix the rule instead",
            )
        if not ok:
            return None
        return CompiledException(
            name,
            frozenset(spec.rules),
            Matcher.compile(spec.match),
            condition,
            spec.expires,
            spec.reason,
            doc.start,
        )
