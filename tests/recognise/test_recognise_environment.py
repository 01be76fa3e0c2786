"""Environment resolution: configured selectors first, then names, else unknown."""

from __future__ import annotations

import pytest

from guardproxy.action import Action, Environment, Provider, RequestSummary, Resource, Scope
from guardproxy.recognise.environment import environment_from_names, resolve_environment


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["prod-calc"], Environment.PROD),
        (["production"], Environment.PROD),
        (["api.prd.internal"], Environment.PROD),
        (["staging-db"], Environment.STAGING),
        (["orders_stg"], Environment.STAGING),
        (["my-test-env"], Environment.DEV),
        (["sandbox"], Environment.DEV),
        (["team/dev/app"], Environment.DEV),
        (["product-catalog"], Environment.UNKNOWN),  # whole tokens only
        (["reproduce"], Environment.UNKNOWN),
        (["prod-to-dev-copy"], Environment.PROD),  # disagreement: most dangerous
        (["dev-app", "prod"], Environment.PROD),
        ([], Environment.UNKNOWN),
    ],
)
def test_name_heuristic(names: list[str], expected: Environment) -> None:
    assert environment_from_names(names) is expected


def action(
    provider: Provider = Provider.AWS,
    name: str = "",
    host: str = "api.example.com",
    port: int = 443,
    **scope: str,
) -> Action:
    return Action(
        provider=provider,
        resource=Resource(name=name),
        scope=Scope(**scope),
        request=RequestSummary(host=host, port=port),
    )


def test_configuration_beats_names() -> None:
    config = {"aws:account:111122223333": "dev"}
    assert (
        resolve_environment(action(name="prod-db", account="111122223333"), config)
        is Environment.DEV
    )
    assert (
        resolve_environment(action(name="prod-db", account="999999999999"), config)
        is Environment.PROD
    )


def test_namespace_beats_cluster() -> None:
    config = {
        "k8s:cluster:10.0.0.1:6443": "prod",
        "k8s:namespace:sandbox": "dev",
        "k8s:namespace:10.0.0.1:6443/preview": "staging",
    }

    def env(namespace: str) -> Environment:
        found = action(Provider.K8S, cluster="10.0.0.1:6443", namespace=namespace)
        return resolve_environment(found, config)

    assert env("sandbox") is Environment.DEV
    assert env("preview") is Environment.STAGING
    assert env("payments") is Environment.PROD


def test_cluster_selector_without_port() -> None:
    config = {"k8s:cluster:prod-eks.example.com": "prod"}
    found = action(Provider.K8S, name="x", cluster="prod-eks.example.com:443")
    assert resolve_environment(found, config) is Environment.PROD


@pytest.mark.parametrize(
    ("selector", "scope"),
    [
        ("gcp:project:acme-web", {"project": "acme-web"}),
        ("azure:subscription:0000-1111", {"subscription": "0000-1111"}),
        ("git:repo:acme/api", {"repository": "acme/api"}),
    ],
)
def test_other_scopes(selector: str, scope: dict[str, str]) -> None:
    found = Action(provider=Provider.AWS, scope=Scope(**scope))
    assert resolve_environment(found, {selector: "staging"}) is Environment.STAGING


def test_most_specific_host_glob_wins() -> None:
    config = {
        "host:*.corp.example": "dev",
        "host:db.prod.corp.example": "prod",
        "host:*:8443": "staging",
    }
    assert resolve_environment(action(host="db.prod.corp.example"), config) is Environment.PROD
    assert resolve_environment(action(host="wiki.corp.example"), config) is Environment.DEV
    assert (
        resolve_environment(action(host="other.example", port=8443), config) is Environment.STAGING
    )


def test_invalid_configured_value_is_unknown() -> None:
    assert (
        resolve_environment(action(account="1"), {"aws:account:1": "live"}) is Environment.UNKNOWN
    )


def test_no_name_heuristic_for_git_refs() -> None:
    found = action(Provider.GIT, name="refs/heads/prod-hotfix", repository="acme/api")
    assert resolve_environment(found, {}) is Environment.UNKNOWN


def test_namespace_name_counts() -> None:
    assert resolve_environment(action(Provider.K8S, namespace="staging"), {}) is Environment.STAGING
