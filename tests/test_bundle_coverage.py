"""The shipped bundle holds every delete, destroy and permission change the recognisers
know, in a production and in an unknown environment, unless its allowlist says why not.

Every entry of the destructive catalogue (``guardproxy/recognise/catalogue.py``: all
of botocore's destructive operations, every Kubernetes resource's delete and
deletecollection, GitHub REST routes and GraphQL mutations, GCP discovery methods,
ARM, TFC, Docker and SQL) is decided with ``policies/``; at least 99 % per provider
and overall must be held or denied, allowlisted ones counted but not failures. A
failure lists the operations let through.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import pytest
import yaml
from policy_helpers import rules_bundle

from guardproxy.action import Action, Environment, Provider, Resource, Verb
from guardproxy.audit.coverage import Coverage, ProviderCoverage, allowlist_of, measure
from guardproxy.policy import Bundle, load_bundle
from guardproxy.recognise.catalogue import (
    DESTRUCTIVE_VERBS,
    PROVIDERS,
    Destructive,
    catalogue,
    graphql_mutations,
    operation_key,
)

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "policies"
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
TARGET = 0.99
ENVIRONMENTS = (Environment.PROD, Environment.UNKNOWN)

# Floors that catch a catalogue which silently lost a provider's operations (a
# recogniser change that stops classing them, a list emptied by mistake).
MINIMUM_ENTRIES = {
    Provider.AWS: 3000,
    Provider.K8S: 120,
    Provider.GITHUB: 250,
    Provider.GCP: 2000,
    Provider.AZURE: 90,
    Provider.TFC: 25,
    Provider.DOCKER: 15,
    Provider.SQL: 100,
}


@pytest.fixture(scope="module")
def shipped() -> Bundle:
    result = load_bundle([SHIPPED], now=NOW)
    assert result.bundle is not None, result.problems
    return result.bundle


@pytest.fixture(scope="module", params=ENVIRONMENTS, ids=str)
def entries(request: pytest.FixtureRequest) -> tuple[Environment, list[Destructive]]:
    environment: Environment = request.param
    return environment, catalogue(environment)


@pytest.fixture(scope="module")
def measured(shipped: Bundle, entries: tuple[Environment, list[Destructive]]) -> Coverage:
    environment, found = entries
    return measure(shipped, found, environment, NOW)


def _offenders(part: ProviderCoverage) -> str:
    lines = [
        f"  {e.label}: {e.action.verb} {e.action.summary()} (key {e.key})" for e in part.allowed
    ]
    return "\n".join(lines[:60]) + ("\n  ..." if len(lines) > 60 else "")


def test_the_catalogue_covers_every_provider(
    entries: tuple[Environment, list[Destructive]],
) -> None:
    environment, found = entries
    counts = {p: sum(1 for e in found if e.provider is p) for p in PROVIDERS}
    short = {p: n for p, n in counts.items() if n < MINIMUM_ENTRIES[p]}
    assert not short, f"catalogue too small in {environment}: {short}"
    labels = [e.label for e in found]
    assert len(labels) == len(set(labels)), "catalogue labels repeat"


def test_every_entry_is_in_the_environment_asked_for(
    entries: tuple[Environment, list[Destructive]],
) -> None:
    environment, found = entries
    wrong = [
        f"{e.label}: {r.environment}"
        for e in found
        for r in e.action.all_readings()
        if r.environment is not environment
    ]
    assert not wrong, "\n".join(wrong[:20])


def test_request_built_entries_are_recognised_as_destructive(
    entries: tuple[Environment, list[Destructive]],
) -> None:
    """Every entry's request is read as a delete, destroy or permission change (or is
    unreadable, which the bundle denies): a destructive request the recogniser reads
    as a create or an update would pass every verb-based rule."""
    _environment, found = entries
    misread = [
        f"{e.label}: recognised as {e.action.verb} {e.action.operation}"
        for e in found
        if not any(r.verb in DESTRUCTIVE_VERBS | {Verb.UNKNOWN} for r in e.action.all_readings())
    ]
    assert not misread, "\n".join(misread)


@pytest.mark.parametrize("provider", PROVIDERS, ids=str)
def test_each_provider_is_held_or_denied(measured: Coverage, provider: Provider) -> None:
    part = next(p for p in measured.providers if p.provider is provider)
    assert part.covered_share >= TARGET, (
        f"{measured.environment}: {provider} {part.covered}/{part.total} held, denied or "
        f"allowlisted ({part.covered_share:.1%}); let through:\n{_offenders(part)}"
    )


def test_overall_coverage(measured: Coverage) -> None:
    whole = measured.overall
    assert whole.covered_share >= TARGET, f"{whole.covered}/{whole.total}\n{_offenders(whole)}"
    # the allowlist is a short list of exceptions, not a way around the promise
    assert whole.allowlisted <= 0.005 * whole.total


# ------------------------------------------------------------------ the allowlist


@cache
def _catalogued() -> dict[str, Destructive]:
    return {e.key: e for e in catalogue(Environment.PROD)}


def test_every_allowlist_entry_has_a_reason_and_names_a_known_delete(shipped: Bundle) -> None:
    allowlist = allowlist_of(shipped)
    assert 0 < len(allowlist) <= 20
    known = _catalogued()
    for key, reason in allowlist.items():
        assert reason.strip() and "\n" not in reason.strip() and len(reason) <= 300, key
        assert key in known, f"{key} is no operation the catalogue knows"
        verbs = {r.verb for r in known[key].action.all_readings()}
        assert verbs == {Verb.DELETE}, f"{key} is {verbs}: only plain deletes may be allowlisted"


def test_every_allowlist_entry_passes_and_is_tested(shipped: Bundle) -> None:
    """Each entry lets its operation through in prod (the CEL key matches the catalogue's)
    and a case of policies/*_test.yaml expects exactly that."""
    allowlist = allowlist_of(shipped)
    known = _catalogued()
    listed = [known[k] for k in allowlist if k in known]
    result = measure(shipped, listed, Environment.PROD, NOW)
    assert result.overall.allowlisted == len(allowlist), _offenders(result.overall)
    tested = _allowed_in_test_cases()
    untested = sorted(set(allowlist) - tested)
    assert not untested, f"allowlist entries without a test case expecting allow: {untested}"


def _allowed_in_test_cases() -> set[str]:
    """Operation keys of prod/unknown delete cases in policies/*_test.yaml that expect
    allow (matrix values substituted)."""
    keys: set[str] = set()
    for path in SHIPPED.glob("*_test.yaml"):
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        fixture = (document.get("fixtures") or {}).get("action") or {}
        for case in document.get("cases") or []:
            if (case.get("expect") or {}).get("decision") != "allow" or "action" not in case:
                continue
            for values in _matrix(case.get("matrix") or {}):
                raw = yaml.safe_dump({**fixture, **case["action"]})
                for name, value in values.items():
                    raw = raw.replace("${" + name + "}", value)
                action = Action.model_validate(yaml.safe_load(raw))
                if action.verb is Verb.DELETE and action.environment in ENVIRONMENTS:
                    keys.add(operation_key(action))
    return keys


def _matrix(matrix: dict[str, list[str]]) -> list[dict[str, str]]:
    combos: list[dict[str, str]] = [{}]
    for name, values in matrix.items():
        combos = [{**c, name: str(v)} for c in combos for v in values]
    return combos


def test_the_shipped_graphql_mutation_list_is_the_tested_one() -> None:
    tested = ROOT / "tests" / "recognise" / "data" / "github_graphql_mutations.txt"
    names = [s for s in (line.strip() for line in tested.read_text("utf-8").splitlines()) if s]
    assert list(graphql_mutations()) == [s for s in names if not s.startswith("#")]


# ------------------------------------------------------------------ the arithmetic


def test_measure_counts_held_denied_allowlisted_and_allowed(tmp_path: Path) -> None:
    bundle = rules_bundle(
        tmp_path,
        """
        - id: deny-destroy
          decision: deny
          message: stop
          match: {verbs: [destroy]}
        - id: hold-permission
          decision: hold
          message: wait
          approval: {groups: [g]}
          match: {verbs: [permission]}
        """,
        spec='params: {lowRiskDeletes: {"aws:sqs:DeleteMessage": consuming a message}}',
    )

    def entry(provider: Provider, operation: str, verb: Verb) -> Destructive:
        action = Action(
            provider=provider,
            service="sqs",
            operation=operation,
            verb=verb,
            resource=Resource(type="aws:sqs:queue", name="q"),
            environment=Environment.PROD,
        )
        return Destructive(provider, operation, action)

    found = measure(
        bundle,
        [
            entry(Provider.AWS, "DeleteQueue", Verb.DESTROY),
            entry(Provider.AWS, "AddPermission", Verb.PERMISSION),
            entry(Provider.AWS, "DeleteMessage", Verb.DELETE),
            entry(Provider.AWS, "DeleteMessageBatch", Verb.DELETE),
            entry(Provider.GCP, "Other", Verb.DELETE),
        ],
        Environment.PROD,
        NOW,
    )
    aws = next(p for p in found.providers if p.provider is Provider.AWS)
    assert (aws.total, aws.denied, aws.held, aws.allowlisted) == (4, 1, 1, 1)
    assert [e.label for e in aws.allowed] == ["DeleteMessageBatch"]
    assert aws.covered_share == 0.75
    assert aws.held_or_denied_share == 0.5
    whole = found.overall
    assert (whole.total, whole.covered, len(whole.allowed)) == (5, 3, 2)
