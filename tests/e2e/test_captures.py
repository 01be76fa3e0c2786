"""Requests captured from real clients on this machine are recognised correctly.

Each client talks to a local recording fake of its API (nothing leaves the machine);
every request the fake received is turned into the proxy's :class:`HttpRequest` and
fed to ``recognise()``.

* the docker CLI against a fake Docker Engine on 127.0.0.1 (no daemon needed);
* gcloud with its Compute endpoint overridden to a fake, a static access token and a
  throwaway ``CLOUDSDK_CONFIG``; its captures are re-addressed to
  ``compute.googleapis.com`` (where gcloud sends them without the override: same
  ``/compute/v1/`` path) before recognition.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from guardproxy.action import Action, Provider, Verb
from guardproxy.recognise import RecogniseSettings, recognise
from guardproxy.recognise.request import HttpRequest

from ._http import LOOPBACK, BaseHandler, RecordedRequest, UpstreamServer
from .conftest import require_binary

pytestmark = pytest.mark.slow

CONTAINER_ID = "c0ffee" + "0" * 58
ENGINE_API = "1.47"


def to_http_request(
    recorded: RecordedRequest, port: int, real_host: str | None = None
) -> HttpRequest:
    """The proxy's view of a request the fake received.

    With ``real_host`` the request is re-addressed to ``https://real_host`` (the host the
    client talks to without the endpoint override that sent it to the fake); path,
    body and every header but Host stay byte-for-byte what the client sent.
    """
    headers = tuple(
        (k.lower(), real_host if real_host and k.lower() == "host" else v)
        for k, v in recorded.headers
    )
    host_header = real_host or recorded.header("host") or f"{LOOPBACK}:{port}"
    target = recorded.target
    if target.startswith(("http://", "https://")):
        parts = urlsplit(target)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
    return HttpRequest(
        method=recorded.method,
        scheme="https" if real_host else "http",
        host=real_host or LOOPBACK,
        port=443 if real_host else port,
        path=target,
        headers=headers,
        body=recorded.body,
        host_header=host_header,
    )


def recognised(
    server: UpstreamServer, since: int = 0, real_host: str | None = None
) -> list[tuple[RecordedRequest, Action]]:
    settings = RecogniseSettings()
    return [
        (r, recognise(to_http_request(r, server.port, real_host), settings))
        for r in server.requests[since:]
    ]


# --------------------------------------------------------------------------- docker


class _EngineHandler(BaseHandler):
    """Just enough of the Docker Engine API for ps / create / run -d / rm / volume prune."""

    server_version = "Docker/28.2.2 (linux)"

    def _answer(self) -> None:
        body = self.read_body()
        entry = self.record(body)
        path = entry.path
        version = {"Api-Version": ENGINE_API, "Docker-Experimental": "false", "Ostype": "linux"}
        if path.endswith("/_ping"):
            self.send_bytes(200, b"OK", "text/plain; charset=utf-8", version)
        elif path.endswith("/version"):
            self.send_json(
                200,
                {
                    "Version": "28.2.2",
                    "ApiVersion": ENGINE_API,
                    "MinAPIVersion": "1.24",
                    "Os": "linux",
                    "Arch": "amd64",
                },
            )
        elif path.endswith("/containers/json"):
            self.send_json(200, [])
        elif path.endswith("/containers/create"):
            self.send_json(201, {"Id": CONTAINER_ID, "Warnings": []})
        elif path.endswith("/volumes/prune"):
            self.send_json(200, {"VolumesDeleted": ["old"], "SpaceReclaimed": 0})
        elif path.endswith("/json") and "/containers/" in path:
            self.send_json(
                200,
                {
                    "Id": CONTAINER_ID,
                    "Name": "/x",
                    "State": {"Running": True, "Status": "running"},
                    "Config": {"Tty": False, "OpenStdin": False},
                    "HostConfig": {"AutoRemove": False},
                },
            )
        elif self.command == "DELETE" or path.endswith(("/start", "/stop", "/kill")):
            self.send_bytes(204, b"", "text/plain", version)
        elif path.endswith("/wait"):
            self.send_json(200, {"StatusCode": 0})
        else:
            self.send_json(404, {"message": f"fake engine: no route for {path}"})

    do_GET = do_HEAD = do_POST = do_DELETE = do_PUT = _answer  # noqa: N815


class FakeEngine(UpstreamServer):
    def __init__(self) -> None:
        super().__init__(_EngineHandler)


@pytest.fixture
def fake_engine() -> Iterator[FakeEngine]:
    with FakeEngine() as engine:
        yield engine
    assert not engine.handler_errors, engine.handler_errors


def _docker(docker_bin: str, engine: FakeEngine, home: Path, *args: str) -> None:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "DOCKER_CONFIG": str(home / ".docker"),
        "DOCKER_HOST": f"tcp://{LOOPBACK}:{engine.port}",
        "DOCKER_CLI_HINTS": "false",
        "DOCKER_CLI_EXPERIMENTAL": "disabled",
    }
    proc = subprocess.run(
        [docker_bin, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, f"docker {' '.join(args)}: {proc.stderr}"


def _engine_calls(engine: FakeEngine, since: int) -> list[tuple[str, str, Verb, tuple[str, ...]]]:
    """(path, operation, verb, risk tags) of the non-handshake requests since ``since``."""
    out = []
    for request, action in recognised(engine, since):
        if request.path.endswith(("/_ping", "/version")):
            continue
        assert action.provider is Provider.DOCKER, (request.method, request.target, action)
        out.append((request.path, action.operation, action.verb, tuple(action.risk_tags)))
    return out


def test_docker_cli_requests_are_recognised(fake_engine: FakeEngine, tmp_path: Path) -> None:
    docker_bin = require_binary("docker")

    def run(*args: str) -> list[tuple[str, str, Verb, tuple[str, ...]]]:
        since = len(fake_engine.requests)
        _docker(docker_bin, fake_engine, tmp_path, *args)
        return _engine_calls(fake_engine, since)

    ps = run("ps")
    assert [(op, verb) for _, op, verb, _ in ps] == [("containers.list", Verb.READ)]

    created = run("create", "--privileged", "--name", "x", "alpine", "sh")
    assert created[0][1:] == ("containers.create", Verb.CREATE, ("privileged",)), created

    mounted = run("create", "-v", "/:/host", "--pid", "host", "alpine", "sh")
    assert mounted[0][1] == "containers.create", mounted
    assert set(mounted[0][3]) == {"privileged", "host-mount", "host-namespace"}, mounted

    started = run("run", "-d", "--privileged", "alpine", "sleep", "1")
    operations = [op for _, op, _, _ in started]
    assert operations[0] == "containers.create" and "containers.start" in operations, started
    assert started[0][3] == ("privileged",)

    removed = run("rm", "-f", "x")
    assert [(op, verb, tags) for _, op, verb, tags in removed] == [
        ("containers.delete", Verb.DELETE, ("force",))
    ], removed

    removed_volumes = run("rm", "-f", "-v", "x")
    assert removed_volumes[0][1:] == (
        "containers.delete",
        Verb.DELETE,
        ("force", "delete-volumes"),
    ), removed_volumes

    pruned = run("volume", "prune", "-f")
    assert [(op, verb, tags) for _, op, verb, tags in pruned] == [
        ("volumes.prune", Verb.DESTROY, ("bulk",))
    ], pruned

    # the version handshake itself is recognised as a Docker read
    handshake = [a for r, a in recognised(fake_engine) if r.path.endswith("/_ping")]
    assert handshake and all(
        a.provider is Provider.DOCKER and a.verb is Verb.READ for a in handshake
    )


# --------------------------------------------------------------------------- gcloud


COMPUTE_HOST = "compute.googleapis.com"  # gcloud's default Compute endpoint host


class _ComputeHandler(BaseHandler):
    """A fake Compute Engine v1: lists nothing, answers a DONE operation to mutations."""

    def _answer(self) -> None:
        entry = self.record(self.read_body())
        path = entry.path
        if self.command == "GET" and path.endswith("/instances"):
            self.send_json(200, {"kind": "compute#instanceList", "items": []})
        elif self.command == "GET" and "/aggregated/" in path:
            self.send_json(200, {"kind": "compute#instanceAggregatedList", "items": {}})
        elif "/operations/" in path or self.command in ("DELETE", "POST"):
            self.send_json(
                200,
                {
                    "kind": "compute#operation",
                    "id": "1",
                    "name": "operation-1",
                    "zone": "https://www.googleapis.com/compute/v1/projects/p/zones/z",
                    "operationType": "delete",
                    "targetLink": "https://www.googleapis.com/compute/v1/projects/p/zones/z/"
                    "instances/x",
                    "status": "DONE",
                    "progress": 100,
                    "selfLink": "https://www.googleapis.com/compute/v1/projects/p/zones/z/"
                    "operations/operation-1",
                },
            )
        else:
            self.send_json(404, {"error": {"code": 404, "message": f"no route for {path}"}})

    do_GET = do_POST = do_DELETE = do_PATCH = do_PUT = _answer  # noqa: N815


class FakeCompute(UpstreamServer):
    def __init__(self) -> None:
        super().__init__(_ComputeHandler)


@pytest.fixture
def fake_compute() -> Iterator[FakeCompute]:
    with FakeCompute() as compute:
        yield compute
    assert not compute.handler_errors, compute.handler_errors


def _gcloud(gcloud_bin: str, compute: FakeCompute, home: Path, *args: str) -> str:
    token = home / "token"
    token.write_text("ya29.fake-token-for-tests")
    config = home / "gcloud"
    config.mkdir(exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "CLOUDSDK_CONFIG": str(config),
        "CLOUDSDK_AUTH_ACCESS_TOKEN_FILE": str(token),
        "CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE": f"{compute.url}/compute/v1/",
        "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "true",
        "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "true",
        "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
        "CLOUDSDK_CORE_CHECK_GCE_METADATA": "false",
        "NO_GCE_CHECK": "True",
    }
    proc = subprocess.run(
        [gcloud_bin, *args, "--project", "p", "--format", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"gcloud {' '.join(args)}: {proc.stderr}"
    return proc.stdout


def test_gcloud_compute_requests_are_recognised(fake_compute: FakeCompute, tmp_path: Path) -> None:
    gcloud_bin = require_binary("gcloud")

    since = len(fake_compute.requests)
    listed = json.loads(_gcloud(gcloud_bin, fake_compute, tmp_path, "compute", "instances",
                                "list", "--zones", "z") or "[]")  # fmt: skip
    assert listed == []
    calls = recognised(fake_compute, since, COMPUTE_HOST)
    assert calls, "gcloud sent nothing to the fake Compute endpoint"
    for request, action in calls:
        assert action.provider is Provider.GCP, (request.method, request.target, action)
        assert action.operation in ("compute.instances.list", "compute.instances.aggregatedList")
        assert action.verb is Verb.READ

    since = len(fake_compute.requests)
    _gcloud(gcloud_bin, fake_compute, tmp_path, "compute", "instances", "delete", "x",
            "--zone", "z", "--quiet")  # fmt: skip
    calls = recognised(fake_compute, since, COMPUTE_HOST)
    deletes = [(r, a) for r, a in calls if r.method == "DELETE"]
    assert len(deletes) == 1, [(r.method, r.target) for r, _ in calls]
    request, action = deletes[0]
    assert action.provider is Provider.GCP
    assert action.operation == "compute.instances.delete", action
    assert action.verb in (Verb.DELETE, Verb.DESTROY)
    assert action.resource.name in ("x", "projects/p/zones/z/instances/x"), action.resource
