"""Shared helpers for the policy tests: small bundles written from YAML strings.

A plain module rather than ``conftest.py``: ``tests/store`` has its own conftest,
and two top-level ``conftest`` modules cannot both be imported (or type-checked).
Tests import it as ``from policy_helpers import ...``; pytest puts ``tests/`` on
``sys.path``. Every bundle is a directory in ``tmp_path``; YAML text is dedented.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from guardproxy.action import Action
from guardproxy.context import Context
from guardproxy.policy import Bundle, Decision, LoadResult, evaluate, load_bundle
from guardproxy.policy.yamlsource import Problem

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
"""Fixed decision time; exceptions in the tests expire relative to it."""

CONFIG_FILE = "bundle.yaml"


def yaml_text(text: str) -> str:
    """Dedent ``text``, drop its leading newlines and end it with exactly one newline."""
    return textwrap.dedent(text).strip("\n") + "\n"


def config_yaml(default: str = "allow", spec: str = "") -> str:
    """A BundleConfig document; ``spec`` holds more spec keys (YAML at spec level)."""
    extra = textwrap.indent(yaml_text(spec), "  ") if spec else ""
    return (
        "apiVersion: guardproxy.dev/v1\n"
        "kind: BundleConfig\n"
        "metadata: {name: test}\n"
        "spec:\n"
        f"  defaultDecision: {default}\n"
        f"{extra}"
    )


def policy_set_yaml(rules: str, *, name: str = "s", spec: str = "") -> str:
    """A PolicySet document: ``rules`` is the YAML list of rules, ``spec`` more keys."""
    extra = textwrap.indent(yaml_text(spec), "  ") if spec else ""
    return (
        "apiVersion: guardproxy.dev/v1\n"
        "kind: PolicySet\n"
        f"metadata: {{name: {name}}}\n"
        "spec:\n"
        f"{extra}"
        "  rules:\n"
        f"{textwrap.indent(yaml_text(rules), '    ')}"
    )


def exception_yaml(spec: str, *, name: str = "exc") -> str:
    """A PolicyException document; ``spec`` is the YAML of its spec."""
    return (
        "apiVersion: guardproxy.dev/v1\n"
        "kind: PolicyException\n"
        f"metadata: {{name: {name}}}\n"
        "spec:\n"
        f"{textwrap.indent(yaml_text(spec), '  ')}"
    )


def write_files(root: Path, files: Mapping[str, str | bytes]) -> Path:
    """Write ``files`` (relative name -> text or bytes) below ``root``; return ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content, encoding="utf-8")
    return root


def load(
    root: Path,
    files: Mapping[str, str | bytes],
    *,
    config: str | None = None,
    with_config: bool = True,
) -> LoadResult:
    """Write ``files`` (plus a default BundleConfig) into ``root`` and load the directory."""
    everything: dict[str, str | bytes] = {}
    if with_config:
        everything[CONFIG_FILE] = config if config is not None else config_yaml()
    everything.update(files)
    return load_bundle([write_files(root, everything)], now=NOW)


def make_bundle(
    root: Path,
    *documents: str,
    config: str | None = None,
) -> Bundle:
    """Load ``documents`` (one file each) and fail the test if anything is wrong."""
    files = {f"doc{i}.yaml": text for i, text in enumerate(documents)}
    result = load(root, files, config=config)
    assert result.bundle is not None, "\n".join(str(p) for p in result.problems)
    assert not result.errors, "\n".join(str(p) for p in result.errors)
    return result.bundle


def rules_bundle(root: Path, rules: str, *, default: str = "allow", spec: str = "") -> Bundle:
    """A bundle of one PolicySet ``s`` with ``rules`` and a config deciding ``default``."""
    return make_bundle(root, policy_set_yaml(rules, spec=spec), config=config_yaml(default))


def action(**fields: Any) -> Action:
    """A classified AWS delete of ``db-1`` in prod, with ``fields`` overriding."""
    base: dict[str, Any] = {
        "provider": "aws",
        "service": "rds",
        "operation": "DeleteDBInstance",
        "verb": "delete",
        "environment": "prod",
        "resource": {"type": "aws:rds:db", "name": "db-1"},
        "confidence": "exact",
    }
    base.update(fields)
    return Action.model_validate(base)


def context(**fields: Any) -> Context:
    base: dict[str, Any] = {"now": NOW}
    base.update(fields)
    return Context.model_validate(base)


def decide(bundle: Bundle, act: Action | None = None, ctx: Context | None = None) -> Decision:
    return evaluate(bundle, act or action(), ctx or context())


def line_of(text: str, needle: str) -> int:
    """1-based line of the first occurrence of ``needle`` in ``text``."""
    index = text.index(needle)
    return text.count("\n", 0, index) + 1


def column_of(text: str, needle: str) -> int:
    """1-based column of the first occurrence of ``needle`` in ``text``."""
    index = text.index(needle)
    return index - (text.rfind("\n", 0, index) + 1) + 1


def problems_with(result: LoadResult, fragment: str) -> list[Problem]:
    """Problems whose message contains ``fragment``."""
    return [p for p in result.problems if fragment in p.message]


def one_problem(result: LoadResult, fragment: str) -> Problem:
    """The single problem whose message contains ``fragment``."""
    found = problems_with(result, fragment)
    assert len(found) == 1, f"{fragment!r} in:\n" + "\n".join(str(p) for p in result.problems)
    return found[0]


# A k8s deny rule the end-to-end tests add beside the shipped bundle.
DENY_RULE = """\
apiVersion: guardproxy.dev/v1
kind: PolicySet
metadata: {name: test-extra}
spec:
  rules:
    - id: deny-forbidden-configmap
      decision: deny
      match: {providers: [k8s], resourceNames: [forbidden]}
      message: The configmap {action.resource.name} may not be touched.
"""
