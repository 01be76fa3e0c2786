"""Environment resolution: configured selectors first, then names, else unknown."""

from __future__ import annotations

import pytest
from recognise_support import http

from guardproxy.action import (
    Action,
    Environment,
    Provider,
    RequestSummary,
    Resource,
    Scope,
    Verb,
)
from guardproxy.recognise import RecogniseSettings, recognise
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


# ------------------------------------------------------------------ GitHub, git, Docker


def github(repository: str = "", owner: str = "", name: str = "", rtype: str = "") -> Action:
    return Action(
        provider=Provider.GITHUB,
        resource=Resource(type=rtype, name=name),
        scope=Scope(repository=repository, project=owner or repository.partition("/")[0]),
        request=RequestSummary(host="api.github.com", port=443),
    )


@pytest.mark.parametrize(
    ("found", "expected"),
    [
        (github("acme/prod-web"), Environment.PROD),
        (github("acme/web-staging"), Environment.STAGING),
        (github("acme/sandbox"), Environment.DEV),
        (github("acme/web"), Environment.UNKNOWN),
        (github(owner="acme-prod"), Environment.PROD),  # an organisation route
        # refs say nothing about the environment; the repository does
        (github("acme/web", name="refs/heads/test-fix", rtype="github:ref"), Environment.UNKNOWN),
        (github("acme/prod-web", name="refs/heads/dev", rtype="github:ref"), Environment.PROD),
    ],
)
def test_github_names(found: Action, expected: Environment) -> None:
    assert resolve_environment(found, {}) is expected


def test_github_selectors_repository_before_owner() -> None:
    config = {
        "github:acme": "prod",
        "github:acme/playground": "dev",
        "git:repo:acme/docs": "staging",
    }
    assert resolve_environment(github("acme/playground"), config) is Environment.DEV
    assert resolve_environment(github("acme/web"), config) is Environment.PROD
    assert resolve_environment(github(owner="acme"), config) is Environment.PROD
    assert resolve_environment(github("acme/docs"), {"git:repo:acme/docs": "staging"}) is (
        Environment.STAGING
    )
    # a selector beats the name heuristic
    assert resolve_environment(github("acme/prod-sandbox"), {"github:acme": "dev"}) is (
        Environment.DEV
    )
    # GitHub's owner is no GCP project
    assert resolve_environment(github(owner="acme"), {"gcp:project:acme": "dev"}) is (
        Environment.UNKNOWN
    )


def git(repository: str, host: str = "git.corp", port: int = 443, name: str = "") -> Action:
    return Action(
        provider=Provider.GIT,
        resource=Resource(type="git:ref", name=name),
        scope=Scope(repository=repository),
        request=RequestSummary(host=host, port=port),
    )


def test_git_selectors_by_host_and_path() -> None:
    config = {
        "git:git.corp": "staging",
        "git:git.corp/platform": "prod",
        "git:git.corp/platform/sandbox": "dev",
        "git:127.0.0.1:8080/acme/api": "prod",
    }
    assert resolve_environment(git("platform/sandbox"), config) is Environment.DEV
    assert resolve_environment(git("platform/infra"), config) is Environment.PROD
    assert resolve_environment(git("group/sub/app"), config) is Environment.STAGING
    assert resolve_environment(git("acme/api", "127.0.0.1", 8080), config) is Environment.PROD
    assert resolve_environment(git("acme/api", "127.0.0.1", 9090), config) is Environment.UNKNOWN
    assert resolve_environment(git("acme/api", "other.host"), config) is Environment.UNKNOWN
    # names: the repository, never the ref
    assert resolve_environment(git("acme/prod-web", "h", name="refs/heads/x"), {}) is (
        Environment.PROD
    )
    assert resolve_environment(git("acme/web", "h", name="refs/heads/prod"), {}) is (
        Environment.UNKNOWN
    )


def docker(
    rtype: str, name: str, host: str = "10.1.2.3", port: int = 2376, verb: Verb = Verb.DELETE
) -> Action:
    return Action(
        provider=Provider.DOCKER,
        verb=verb,
        resource=Resource(type=rtype, name=name),
        request=RequestSummary(host=host, port=port),
    )


def test_docker_names_and_selectors() -> None:
    assert resolve_environment(docker("docker:volume", "prod-data"), {}) is Environment.PROD
    assert resolve_environment(docker("docker:container", "api-staging"), {}) is (
        Environment.STAGING
    )
    # an image tag names a build, not where the daemon runs
    assert resolve_environment(docker("docker:image", "app:test"), {}) is Environment.UNKNOWN
    # nor does the name an agent gives what it creates
    created = docker("docker:container", "test-runner", verb=Verb.CREATE)
    assert resolve_environment(created, {}) is Environment.UNKNOWN
    config = {"docker:10.1.2.3": "prod", "docker:127.0.0.1:2375": "dev"}
    assert resolve_environment(docker("docker:volume", "test-cache"), config) is Environment.PROD
    found = docker("docker:volume", "prod-data", "127.0.0.1", 2375)
    assert resolve_environment(found, config) is Environment.DEV


@pytest.mark.parametrize(
    ("method", "host", "port", "path", "environments", "expected"),
    [
        ("DELETE", "api.github.com", 443, "/repos/acme/prod-web", {}, Environment.PROD),
        ("DELETE", "api.github.com", 443, "/repos/acme/web", {}, Environment.UNKNOWN),
        ("DELETE", "api.github.com", 443, "/repos/acme/web", {"github:acme": "dev"},
         Environment.DEV),
        ("DELETE", "api.github.com", 443, "/orgs/acme/hooks/7", {"github:acme": "prod"},
         Environment.PROD),
        ("GET", "git.corp", 443, "/acme/prod-web.git/info/refs?service=git-receive-pack", {},
         Environment.PROD),
        ("GET", "git.corp", 443, "/acme/web.git/info/refs?service=git-upload-pack",
         {"git:git.corp/acme": "staging"}, Environment.STAGING),
        ("DELETE", "10.1.2.3", 2376, "/v1.47/volumes/prod-data", {}, Environment.PROD),
        ("DELETE", "10.1.2.3", 2376, "/v1.47/volumes/scratch", {"docker:10.1.2.3": "prod"},
         Environment.PROD),
    ],
)  # fmt: skip
def test_recognised_requests_carry_the_environment(
    method: str,
    host: str,
    port: int,
    path: str,
    environments: dict[str, str],
    expected: Environment,
) -> None:
    request = http(method, path, host=host, port=port)
    action = recognise(request, RecogniseSettings(environments=environments))
    assert action.provider in (Provider.GITHUB, Provider.GIT, Provider.DOCKER)
    assert action.environment is expected
