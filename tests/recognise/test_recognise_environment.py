"""Environment resolution: configured selectors first, then names, else unknown."""

from __future__ import annotations

import fnmatch
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
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
from guardproxy.hosts import HostPattern
from guardproxy.recognise import RecogniseSettings, recognise
from guardproxy.recognise.environment import resolve_environment
from guardproxy.recognise.naming import environment_from_names

EXAMPLES = int(os.environ.get("GUARDPROXY_HYPOTHESIS_EXAMPLES", "200"))


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
    ("provider", "selector", "scope"),
    [
        (Provider.GCP, "gcp:project:acme-web", {"project": "acme-web"}),
        (Provider.SQL, "gcp:project:acme-web", {"project": "acme-web"}),  # BigQuery's
        (Provider.TFC, "gcp:project:acme", {"project": "acme"}),  # the organisation
        (Provider.AZURE, "azure:subscription:0000-1111", {"subscription": "0000-1111"}),
        (Provider.GIT, "git:repo:acme/api", {"repository": "acme/api"}),
        (Provider.GITHUB, "git:repo:acme/api", {"repository": "acme/api"}),
    ],
)
def test_other_scopes(provider: Provider, selector: str, scope: dict[str, str]) -> None:
    """Each provider's selectors name its own scope (its module declares them)."""
    found = Action(provider=provider, scope=Scope(**scope))
    assert resolve_environment(found, {selector: "staging"}) is Environment.STAGING


def test_a_selector_names_its_provider_s_scope_only() -> None:
    """``gcp:project:`` names Google Cloud projects: GitHub's owner (its scope's project)
    is not one."""
    found = Action(provider=Provider.GITHUB, scope=Scope(project="acme-web"))
    assert resolve_environment(found, {"gcp:project:acme-web": "dev"}) is Environment.UNKNOWN


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


# ------------------------------------------------------------------ every spelling of a host

LOOPBACK = ["127.0.0.1", "localhost", "LOCALHOST.", "127.1", "0x7f.1", "0177.0.0.1",
            "2130706433", "::1", "::ffff:127.0.0.1", "api.localhost"]  # fmt: skip
TEN = ["10.0.0.5", "10.5", "0x0a.0.0.5", "012.0.0.5", "167772165", "::ffff:10.0.0.5", "10.0.0.5."]


def kube(host: str, namespace: str = "web") -> Action:
    """A namespaced delete on the API server at ``host:6443``, as the proxy sees it."""
    request = http("DELETE", f"/api/v1/namespaces/{namespace}/pods/p", host=host, port=6443)
    return recognise(request, RecogniseSettings(kubernetes_hosts=(f"{host}:6443",)))


@pytest.mark.parametrize("spelling", LOOPBACK)
def test_a_cluster_selector_names_every_spelling_of_its_host(spelling: str) -> None:
    """On main the cluster key was the host as written: ``localhost:6443`` escaped a
    ``k8s:cluster:127.0.0.1:6443`` selector (to ``host:*``'s dev)."""
    found = kube(spelling)
    assert found.scope.cluster == "localhost:6443"
    for cluster in ("127.0.0.1:6443", "localhost:6443", "[::1]:6443", "LOCALHOST.:6443"):
        config = {"host:*": "dev", f"k8s:cluster:{cluster}": "prod"}
        assert resolve_environment(found, config) is Environment.PROD, cluster
        scoped = {"host:*": "dev", f"k8s:namespace:{cluster}/web": "prod"}
        assert resolve_environment(found, scoped) is Environment.PROD, cluster


@pytest.mark.parametrize("spelling", TEN)
def test_a_host_selector_names_every_spelling_of_its_host(spelling: str) -> None:
    found = action(Provider.UNKNOWN, host=spelling.lower(), port=5432)
    for selector in ("host:10.0.0.5", "host:10.0.0.5:5432", "host:0x0a.0.0.5", "host:10.0.0.*"):
        config = {"host:*": "dev", selector: "prod"}
        assert resolve_environment(found, config) is Environment.PROD, selector
    assert resolve_environment(found, {"host:*": "dev", "host:10.0.0.6": "prod"}) is (
        Environment.DEV
    )


@pytest.mark.parametrize("spelling", TEN)
def test_git_and_docker_selectors_name_every_spelling(spelling: str) -> None:
    config = {"host:*": "dev", "git:10.0.0.5/acme": "prod", "docker:10.0.0.5:2376": "prod"}
    assert resolve_environment(git("acme/api", spelling.lower()), config) is Environment.PROD
    found = docker("docker:volume", "scratch", spelling.lower(), 2376)
    assert resolve_environment(found, config) is Environment.PROD


@pytest.mark.parametrize(
    ("host", "selector"),
    [
        ("db.prod.corp", "host:DB.PROD.CORP."),
        ("db.prod.corp.", "host:db.prod.corp"),
        ("api.github.com.", "host:*.github.com"),
        ("xn--bcher-kva.example", "host:bücher.example"),
        ("bücher.example", "host:XN--BCHER-KVA.example"),
        ("git.corp.", "git:GIT.corp/acme"),
    ],
)
def test_case_trailing_dots_and_idna(host: str, selector: str) -> None:
    config = {"host:*": "dev", selector: "prod"}
    assert resolve_environment(git("acme/api", host), config) is Environment.PROD


def test_spellings_of_one_host_take_the_stricter_answer() -> None:
    """Two keys naming one host in two spellings are one selector: the stricter value."""
    config = {"k8s:cluster:127.0.0.1:6443": "dev", "k8s:cluster:localhost:6443": "prod"}
    assert resolve_environment(kube("127.0.0.1"), config) is Environment.PROD
    assert resolve_environment(kube("::1"), dict(reversed(config.items()))) is Environment.PROD
    globs = {"host:localhost": "dev", "host:127.0.0.1": "staging"}
    assert resolve_environment(action(Provider.UNKNOWN, host="127.1"), globs) is Environment.STAGING


def test_a_spelling_never_makes_the_answer_weaker() -> None:
    """What matched as written still counts: ``127.*`` names 127.0.0.1 as prod even where
    a more specific ``localhost`` (the same host, canonically) says dev."""
    config = {"host:127.*": "prod", "host:localhost": "dev"}
    assert resolve_environment(action(Provider.UNKNOWN, host="127.0.0.1"), config) is (
        Environment.PROD
    )
    assert resolve_environment(action(Provider.UNKNOWN, host="127.1"), config) is Environment.PROD
    docker_config = {"docker:127.0.0.1": "prod", "docker:localhost:2375": "dev"}
    found = docker("docker:volume", "scratch", "127.0.0.1", 2375)
    assert resolve_environment(found, docker_config) is Environment.PROD


def test_other_hosts_stay_other_hosts() -> None:
    config = {"host:*": "dev", "host:db.prod.corp": "prod", "docker:10.0.0.5": "prod"}
    for host in ("db.prod.corp.evil", "evil-db.prod.corp", "10.0.0.50", "10.0.5.0"):
        assert resolve_environment(action(Provider.UNKNOWN, host=host), config) is (
            Environment.DEV
        ), host
    assert resolve_environment(docker("docker:volume", "x", "10.0.0.6"), config) is (
        Environment.DEV
    )


_PATTERNS = ["*", "db.corp", "*.corp", "db.corp:5432", "*:5432", "db.corp?*", "*5432", "db*",
             "db.corp:54*", "127.0.0.1", "localhost", "10.0.0.5", "10.0.0.*", "DB.Corp.",
             "*.localhost", "[::1]:5432"]  # fmt: skip
_HOSTS = ["db.corp", "DB.CORP.", "api.corp", "db.corp.evil", "127.0.0.1", "127.1", "localhost",
          "api.localhost", "10.0.0.5", "0x0a.0.0.5", "::1", "::ffff:10.0.0.5",
          "2001:db8::5432"]  # fmt: skip
_STRICT = {Environment.PROD: 4, Environment.UNKNOWN: 3, Environment.STAGING: 2, Environment.DEV: 1}


def _as_written(host: str, port: int, config: dict[str, str]) -> Environment | None:
    """main's reading: globs on the host as written (and host:port), most specific first."""
    best: tuple[int, Environment] | None = None
    for selector, value in config.items():
        pattern = selector.removeprefix("host:").lower()
        if any(fnmatch.fnmatchcase(t, pattern) for t in (host, f"{host}:{port}")):
            literal = len(pattern) - sum(pattern.count(c) for c in "*?[]")
            if best is None or literal > best[0]:
                best = (literal, Environment(value))
    return best[1] if best else None


def _canonically(host: str, port: int, config: dict[str, str]) -> Environment | None:
    best: tuple[int, Environment] | None = None
    for selector, value in config.items():
        pattern = HostPattern.of(selector.removeprefix("host:"))
        if pattern.matches(host, port) and (best is None or pattern.specificity > best[0]):
            best = (pattern.specificity, Environment(value))
    return best[1] if best else None


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(_PATTERNS).map(lambda p: f"host:{p}"),
        st.sampled_from(["prod", "staging", "dev"]),
        max_size=5,
    ),
    st.sampled_from(_HOSTS),
    st.sampled_from([5432, 443]),
)
def test_host_selectors_are_never_weaker_than_either_reading(
    config: dict[str, str], host: str, port: int
) -> None:
    """Whatever the configuration, the answer is at least as guarded as main's (the host
    as written) and as the canonical reading alone, and is one of the configured values."""
    found = resolve_environment(action(Provider.UNKNOWN, host=host.lower(), port=port), config)
    for reading in (_as_written(host.lower(), port, config), _canonically(host, port, config)):
        if reading is not None:
            assert _STRICT[found] >= _STRICT[reading], (reading, found)
    if config and found is not Environment.UNKNOWN:
        assert found.value in config.values()
