"""Docker Engine API requests as the docker CLI sends them over TCP."""

from __future__ import annotations

import json

import pytest
from recognise_support import http

from guardproxy.action import Confidence, Environment, Provider, Verb
from guardproxy.recognise import RecogniseSettings, recognise
from guardproxy.recognise.docker import DockerError, looks_like_docker, recognise_docker
from guardproxy.recognise.request import HttpRequest

CLI = {"user-agent": "Docker-Client/28.2.2 (linux)"}


def engine(
    method: str,
    path: str,
    body: object = None,
    headers: dict[str, str] | None = None,
    port: int = 2376,
) -> HttpRequest:
    data = b"" if body is None else json.dumps(body).encode()
    extra = {"content-type": "application/json"} if data else {}
    return http(
        method,
        path,
        host="docker.prod.corp",
        port=port,
        headers={**CLI, **extra, **(headers or {})},
        body=data,
    )


def create(host_config: dict[str, object]) -> dict[str, object]:
    return {"Image": "alpine", "Cmd": ["sh"], "HostConfig": host_config}


CASES: list[tuple[str, str, object, str, Verb, str, str, list[str]]] = [
    # method, path, body -> operation, verb, resource type, name, tags
    (
        "POST",
        "/v1.50/containers/create?name=web",
        create({}),
        "containers.create",
        Verb.CREATE,
        "docker:container",
        "web",
        [],
    ),
    (
        "POST",
        "/v1.50/containers/create",
        create({"Privileged": True}),
        "containers.create",
        Verb.CREATE,
        "docker:container",
        "",
        ["privileged"],
    ),
    (
        "POST",
        "/v1.50/containers/create",
        create({"CapAdd": ["sys_admin"]}),
        "containers.create",
        Verb.CREATE,
        "docker:container",
        "",
        ["privileged"],
    ),
    (
        "POST",
        "/v1.50/containers/create",
        create({"Binds": ["/srv/data:/data:ro", "named:/x"]}),
        "containers.create",
        Verb.CREATE,
        "docker:container",
        "",
        ["host-mount"],
    ),
    (
        "POST",
        "/v1.50/containers/create",
        create(
            {
                "Mounts": [
                    {
                        "Type": "bind",
                        "Source": "/var/run/docker.sock",
                        "Target": "/var/run/docker.sock",
                    }
                ]
            }
        ),
        "containers.create",
        Verb.CREATE,
        "docker:container",
        "",
        ["privileged", "host-mount"],
    ),
    (
        "POST",
        "/v1.50/containers/create",
        create(
            {
                "Mounts": [{"Type": "volume", "Source": "pgdata", "Target": "/data"}],
                "PidMode": "host",
            }
        ),
        "containers.create",
        Verb.CREATE,
        "docker:container",
        "",
        ["host-namespace"],
    ),
    (
        "DELETE",
        "/v1.50/containers/prod-db?force=1&v=1",
        None,
        "containers.delete",
        Verb.DELETE,
        "docker:container",
        "prod-db",
        ["force", "delete-volumes"],
    ),
    (
        "DELETE",
        "/containers/web",
        None,
        "containers.delete",
        Verb.DELETE,
        "docker:container",
        "web",
        [],
    ),
    (
        "POST",
        "/v1.50/containers/web/kill?signal=KILL",
        None,
        "containers.kill",
        Verb.UPDATE,
        "docker:container",
        "web",
        [],
    ),
    (
        "POST",
        "/v1.50/containers/web/stop",
        None,
        "containers.stop",
        Verb.UPDATE,
        "docker:container",
        "web",
        [],
    ),
    (
        "POST",
        "/v1.50/containers/web/exec",
        {"Cmd": ["sh"], "AttachStdin": True},
        "exec.create",
        Verb.EXECUTE,
        "docker:exec",
        "web",
        [],
    ),
    (
        "POST",
        "/v1.50/exec/0123abcd/start",
        {"Detach": False, "Tty": True},
        "exec.start",
        Verb.EXECUTE,
        "docker:exec",
        "0123abcd",
        [],
    ),
    (
        "DELETE",
        "/v1.50/images/registry.corp/team/app:1.2?force=1",
        None,
        "images.delete",
        Verb.DELETE,
        "docker:image",
        "registry.corp/team/app:1.2",
        ["force"],
    ),
    (
        "POST",
        "/v1.50/images/registry.corp/team/app:1.2/push",
        None,
        "images.push",
        Verb.UPDATE,
        "docker:image",
        "registry.corp/team/app:1.2",
        [],
    ),
    (
        "DELETE",
        "/v1.50/volumes/pgdata",
        None,
        "volumes.delete",
        Verb.DESTROY,
        "docker:volume",
        "pgdata",
        [],
    ),
    (
        "POST",
        "/v1.50/volumes/prune?filters=%7B%22all%22%3A%7B%22true%22%3Atrue%7D%7D",
        None,
        "volumes.prune",
        Verb.DESTROY,
        "docker:volume",
        "",
        ["bulk"],
    ),
    (
        "POST",
        "/v1.50/containers/prune",
        None,
        "containers.prune",
        Verb.DELETE,
        "docker:container",
        "",
        ["bulk"],
    ),
    (
        "POST",
        "/v1.50/images/prune",
        None,
        "images.prune",
        Verb.DELETE,
        "docker:image",
        "",
        ["bulk"],
    ),
    (
        "POST",
        "/v1.50/build/prune?all=1",
        None,
        "build.prune",
        Verb.DELETE,
        "docker:build",
        "",
        ["bulk"],
    ),
    (
        "POST",
        "/v1.50/networks/prune",
        None,
        "networks.prune",
        Verb.DELETE,
        "docker:network",
        "",
        ["bulk"],
    ),
    (
        "DELETE",
        "/v1.50/networks/backend",
        None,
        "networks.delete",
        Verb.DELETE,
        "docker:network",
        "backend",
        [],
    ),
    ("HEAD", "/_ping", None, "system.ping", Verb.READ, "docker:system", "", []),
    ("GET", "/v1.50/version", None, "system.version", Verb.READ, "docker:system", "", []),
    (
        "GET",
        "/v1.50/containers/json?all=1",
        None,
        "containers.list",
        Verb.READ,
        "docker:container",
        "",
        [],
    ),
    (
        "GET",
        "/v1.50/containers/web/json",
        None,
        "containers.inspect",
        Verb.READ,
        "docker:container",
        "web",
        [],
    ),
    (
        "GET",
        "/v1.50/containers/web/logs?stdout=1",
        None,
        "containers.logs",
        Verb.READ,
        "docker:container",
        "web",
        [],
    ),
    (
        # installing a plugin grants it the host privileges it asks for
        "POST",
        "/v1.50/plugins/pull?remote=vieux/sshfs",
        [{"Name": "network", "Value": ["host"]}],
        "plugins.pull",
        Verb.PERMISSION,
        "docker:plugin",
        "",
        [],
    ),
    (
        "POST",
        "/v1.50/images/create?fromImage=alpine&tag=3",
        None,
        "images.create",
        Verb.CREATE,
        "docker:image",
        "",
        [],
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "operation", "verb", "rtype", "name", "tags"), CASES
)
def test_docker(
    method: str,
    path: str,
    body: object,
    operation: str,
    verb: Verb,
    rtype: str,
    name: str,
    tags: list[str],
) -> None:
    request = engine(method, path, body)
    assert looks_like_docker(request)
    action = recognise_docker(request)
    assert action.provider is Provider.DOCKER
    assert (action.operation, action.verb) == (operation, verb)
    assert (action.resource.type, action.resource.name) == (rtype, name)
    assert action.risk_tags == tags
    assert action.confidence is Confidence.EXACT
    assert action.actor.tool == "docker"


def test_resource_key_names_the_daemon() -> None:
    action = recognise_docker(engine("DELETE", "/v1.50/volumes/pgdata"))
    assert action.resource.key == "docker:docker.prod.corp:2376:docker:volume/pgdata"


@pytest.mark.parametrize(
    ("path", "port", "headers", "expected"),
    [
        ("/v1.47/containers/json", 8080, {}, True),  # versioned Engine path: any port
        ("/containers/json", 2375, {}, True),  # unversioned on the daemon's port
        ("/containers/json", 443, {}, False),  # unversioned elsewhere is too generic
        ("/v1.47/whatever", 443, {}, False),
        ("/containers/json", 443, CLI, True),  # the docker CLI talks only to daemons
    ],
)
def test_predicate(path: str, port: int, headers: dict[str, str], expected: bool) -> None:
    request = http("GET", path, host="h", port=port, headers=headers)
    assert looks_like_docker(request) is expected


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'{"HostConfig": "privileged"}'])
def test_garbage_create_raises(body: bytes) -> None:
    request = http(
        "POST",
        "/v1.50/containers/create",
        host="h",
        port=2376,
        body=body,
        headers={"content-type": "application/json"},
    )
    with pytest.raises(DockerError):
        recognise_docker(request)


def test_unlisted_write_is_heuristic() -> None:
    action = recognise_docker(engine("POST", "/v1.50/services/abc/update", {}))
    assert (action.operation, action.verb, action.confidence) == (
        "services.update",
        Verb.UPDATE,
        Confidence.HEURISTIC,
    )


def test_environment_from_the_daemon_and_the_names_it_holds() -> None:
    settings = RecogniseSettings()
    # the daemon's own host name (engine() talks to docker.prod.corp)
    assert recognise(engine("DELETE", "/v1.47/volumes/scratch"), settings).environment is (
        Environment.PROD
    )
    other = http("DELETE", "/v1.47/volumes/prod-data", host="10.1.2.3", port=2376, headers=CLI)
    assert recognise(other, settings).environment is Environment.PROD
    # a privileged container named by the agent itself says nothing about the daemon
    body = json.dumps(create({"Privileged": True})).encode()
    created = http(
        "POST", "/v1.47/containers/create?name=test-runner", host="10.1.2.3", port=2376,
        headers={**CLI, "content-type": "application/json"}, body=body,
    )  # fmt: skip
    action = recognise(created, settings)
    assert (action.operation, action.environment) == ("containers.create", Environment.UNKNOWN)
    configured = RecogniseSettings(environments={"docker:10.1.2.3:2376": "dev"})
    assert recognise(other, configured).environment is Environment.DEV
