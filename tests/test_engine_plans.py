"""The engine's per-kind rule selection (``engine._plan``, kept in ``Bundle.plans``)
against ``explain``, which selects rules one by one with ``Matcher.mismatch`` (the
reference): the same decisions, whether the plan (and the hold's approval requirement,
kept in ``Bundle.approvals``) is new, kept, or was evicted; and message placeholders
read from the models against the input dumped whole."""

from __future__ import annotations

import importlib.util
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from guardproxy.action import Action, Environment, Provider, RequestSummary, Resource, Verb
from guardproxy.context import Context
from guardproxy.policy import Bundle, engine, evaluate, explain, load_bundle

ROOT = Path(__file__).resolve().parent.parent


def _bench() -> ModuleType:
    path = ROOT / "bench" / "policy_bench.py"
    spec = importlib.util.spec_from_file_location("policy_bench", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("policy_bench", module)
    spec.loader.exec_module(module)
    return module


BENCH = _bench()


def _bundles() -> list[Bundle]:
    bundles = []
    with tempfile.TemporaryDirectory() as tmp:
        BENCH.write_synthetic_bundle(Path(tmp), BENCH.DEFAULT_SEED)
        synthetic = load_bundle([Path(tmp)]).bundle
    shipped = load_bundle([ROOT / "policies"]).bundle
    for bundle in (synthetic, shipped):
        assert bundle is not None
        bundles.append(bundle)
    return bundles


def _workload() -> list[tuple[Action, Context]]:
    """The benchmark's actions, some again under another resource name (same kind, so a
    kept plan, with the name-dependent keys checked anew) or with two readings."""
    workload: list[tuple[Action, Context]] = BENCH.make_workload(1500, BENCH.DEFAULT_SEED + 1)
    renamed = [
        (
            action.model_copy(
                update={"resource": Resource(type=action.resource.type, name="other-" + str(i))}
            ),
            context,
        )
        for i, (action, context) in enumerate(workload[:500])
    ]
    with_readings = [
        (
            action.model_copy(
                update={"readings": [workload[i + 1][0], workload[i + 2][0].model_copy()]}
            ),
            context,
        )
        for i, (action, context) in enumerate(workload[:300])
    ]
    return workload + renamed + with_readings


@pytest.mark.parametrize("plans_size", [4096, 3])
def test_decisions_with_plans_equal_explained_decisions(
    plans_size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine, "_PLANS_SIZE", plans_size)
    monkeypatch.setattr(engine, "_APPROVALS_SIZE", plans_size)
    for bundle in _bundles():
        bundle.plans.clear()
        bundle.approvals.clear()
        for action, context in _workload():
            first = evaluate(bundle, action, context)
            again = evaluate(bundle, action, context)  # the plan kept (or just evicted)
            explained, _ = explain(bundle, action, context)
            assert first.model_dump_json() == explained.model_dump_json()
            assert again.model_dump_json() == explained.model_dump_json()
            assert first == explained and first.model_fields_set == explained.model_fields_set
            for name in type(first).model_fields:  # built unvalidated, as validation would
                ours, reference = getattr(first, name), getattr(explained, name)
                assert type(ours) is type(reference), name
        assert len(bundle.plans) <= plans_size
        assert len(bundle.approvals) <= plans_size
        assert bundle.plans and bundle.approvals


def _paths(document: Any, prefix: tuple[str, ...]) -> list[tuple[str, ...]]:
    paths = [prefix]
    if isinstance(document, dict):
        for key, value in document.items():
            paths.extend(_paths(value, (*prefix, key)))
        paths.append((*prefix, "nosuch"))
    else:
        paths.append((*prefix, "0"))
    return paths


def test_message_lookups_read_the_models_as_their_json() -> None:
    """``lookup`` (message placeholders) walks the models and converts only the value it
    finds: the same JSON data as the path read from the whole input dumped."""
    odd = Action(
        provider=Provider.K8S, verb=Verb.DELETE, environment=Environment.PROD, dry_run=True,
        resource=Resource(type="apps:deployments", name="prod-db-1", key="Straße"),
        risk_tags=["force", "", "ä"], readings=[Action(verb=Verb.DESTROY)],
        request=RequestSummary(method="DELETE", port=443, header_names=["x"]),
    )  # fmt: skip
    bundle = _bundles()[1]
    cases = [*BENCH.make_workload(30, BENCH.DEFAULT_SEED)[:30], (odd, Context(now=BENCH.NOW))]
    for action, context in cases:
        document = {"action": action.model_dump(mode="json"), **context.model_dump(mode="json")}
        evaluation = engine._Evaluation(bundle, action, context, tracing=False)
        for path in [p for p in _paths(document, ()) if p] + [("nowhere",), ("action", "x")]:
            assert evaluation.lookup(path) == engine.lookup_path(document, path), path
