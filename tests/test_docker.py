"""docker/: the properties that keep an agent container behind the guard.

There is no Docker engine here, so the files are checked as data: the agent sits on an
internal network only, its one way out is guardproxy's proxy port, the control API
and the CA key are out of its reach, images and dependencies are pinned, the image runs
as a non-root user with a health check, and the commands use real `serve` flags.
``hadolint`` and ``dclint`` (schema and lint) run when they are installed.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from guardproxy.cli.main import build_parser
from guardproxy.cli.serve import build_config

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
VERSION_TAG = re.compile(r":\d+(\.\d+)+[\w.-]*(@sha256:[0-9a-f]{64})?$")
CA_VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "AWS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    return loaded


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) pairs, continuation lines joined, comments dropped."""
    text = (DOCKER / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = "\n".join(lines).replace("\\\n", " ")
    out: list[tuple[str, str]] = []
    for line in joined.splitlines():
        if line.strip():
            instruction, _, arguments = line.strip().partition(" ")
            out.append((instruction.upper(), arguments.strip()))
    return out


def option(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def subnet(compose: dict[str, Any], network: str) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(compose["networks"][network]["ipam"]["config"][0]["subnet"])


def networks_of(service: dict[str, Any]) -> set[str]:
    networks = service.get("networks", [])
    return set(networks if isinstance(networks, list) else networks.keys())


def test_the_agent_is_on_an_internal_network_only(compose: dict[str, Any]) -> None:
    agent = compose["services"]["agent"]
    assert networks_of(agent) == {"agents"}
    assert compose["networks"]["agents"]["internal"] is True
    assert compose["networks"]["backend"]["internal"] is True
    assert "network_mode" not in agent
    assert not agent.get("ports") and not agent.get("extra_hosts")
    # nobody else but guardproxy shares the agents network
    on_agents = {n for n, s in compose["services"].items() if "agents" in networks_of(s)}
    assert on_agents == {"agent", "guardproxy"}
    assert networks_of(compose["services"]["postgres"]) == {"backend"}
    assert networks_of(compose["services"]["guardproxy"]) == {"agents", "backend", "egress"}
    assert compose["networks"]["egress"].get("internal") is not True


def test_the_agents_only_way_out_is_the_proxy_and_it_trusts_the_ca(
    compose: dict[str, Any],
) -> None:
    guard = compose["services"]["guardproxy"]
    agent = compose["services"]["agent"]
    listen = option(guard["command"], "--listen")
    host, _, port = listen.rpartition(":")
    assert ipaddress.IPv4Address(host) in subnet(compose, "agents")
    assert guard["networks"]["agents"]["ipv4_address"] == host
    environment = agent["environment"]
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        assert environment[name] == f"http://{host}:{port}"
    assert environment["NO_PROXY"] == "" and environment["no_proxy"] == ""
    for name in CA_VARIABLES:
        assert environment[name]
    script = agent["command"][-1]
    assert "/usr/local/share/ca-certificates/" in script and "update-ca-certificates" in script
    assert "setpriv --reuid=1000" in script  # the agent itself does not run as root
    assert agent["cap_drop"] == ["ALL"]
    assert not {"NET_ADMIN", "NET_RAW", "SYS_ADMIN"} & set(agent.get("cap_add", []))
    assert "no-new-privileges:true" in agent["security_opt"]


def test_the_control_api_and_the_ca_key_are_out_of_the_agents_reach(
    compose: dict[str, Any],
) -> None:
    guard = compose["services"]["guardproxy"]
    agent = compose["services"]["agent"]
    for flag in ("--control", "--metrics-listen"):
        host = option(guard["command"], flag).rpartition(":")[0]
        address = ipaddress.IPv4Address(host)  # a definite address, not 0.0.0.0
        assert address in subnet(compose, "egress")
        assert address not in subnet(compose, "agents")
    for published in guard["ports"]:
        assert str(published).startswith("127.0.0.1:")  # the host's loopback only
    assert [str(p).split(":")[1] for p in guard["ports"]] == ["8081", "9090"]
    # the agent mounts the CA certificate (read-only), never the data volume with the key
    assert agent["volumes"] == ["guardproxy-ca-public:/guardproxy-ca:ro"]
    assert "guardproxy-data:/var/lib/guardproxy/data" in guard["volumes"]
    assert guard["environment"]["GUARDPROXY_STORE"].startswith("postgresql://")
    assert "${GUARDPROXY_DB_PASSWORD:?" in guard["environment"]["GUARDPROXY_STORE"]


def test_images_are_pinned(compose: dict[str, Any], dockerfile: list[tuple[str, str]]) -> None:
    for name, service in compose["services"].items():
        if "build" in service:
            continue
        image = service["image"]
        assert VERSION_TAG.search(image), f"{name}: {image} is not pinned to a version"
        assert ":latest" not in image
    [base] = [args for instruction, args in dockerfile if instruction == "FROM"]
    assert VERSION_TAG.search(base) and DIGEST.search(base), base
    assert compose["services"]["agent"]["image"] == base


def test_the_image_runs_guardproxy_serve_as_a_non_root_user_with_a_health_check(
    dockerfile: list[tuple[str, str]],
) -> None:
    users = [args for instruction, args in dockerfile if instruction == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    [healthcheck] = [args for instruction, args in dockerfile if instruction == "HEALTHCHECK"]
    assert "GUARDPROXY_HEALTH_URL" in healthcheck
    environment = " ".join(args for instruction, args in dockerfile if instruction == "ENV")
    assert "GUARDPROXY_HEALTH_URL=http://127.0.0.1:9090/healthz" in environment
    copies = [args for instruction, args in dockerfile if instruction == "COPY"]
    for source in ("pyproject.toml", "guardproxy", "policies", "docker/requirements.lock"):
        assert any(source in shlex.split(c) for c in copies), source
    runs = " ".join(args for instruction, args in dockerfile if instruction == "RUN")
    assert "pip install --no-deps --requirement requirements.lock" in runs
    assert "pip check" in runs
    assert any(i == "VOLUME" and "/var/lib/guardproxy/data" in a for i, a in dockerfile)


@pytest.mark.parametrize("where", ["Dockerfile", "compose.yaml"])
def test_the_serve_commands_use_real_flags(
    where: str, compose: dict[str, Any], dockerfile: list[tuple[str, str]], tmp_path: Path
) -> None:
    if where == "Dockerfile":
        [cmd] = [args for instruction, args in dockerfile if instruction == "CMD"]
        command: list[str] = yaml.safe_load(cmd)
    else:
        command = [str(part) for part in compose["services"]["guardproxy"]["command"]]
    args = build_parser(command).parse_args([*command, "--data-dir", str(tmp_path)])
    config = build_config(args)  # validates addresses, and the explicit remote opt-in
    assert config.allow_remote_listen
    assert config.metrics_listen is not None


def test_the_lock_pins_every_runtime_dependency_within_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins: dict[str, str] = {}
    for line in (DOCKER / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version
    for dependency in project["dependencies"]:
        requirement = Requirement(dependency)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is missing from docker/requirements.lock"
        assert requirement.specifier.contains(pins[name]), (name, pins[name])


@pytest.mark.parametrize(
    ("tool", "args"),
    [
        ("hadolint", ["docker/Dockerfile"]),
        ("dclint", ["docker/compose.yaml"]),
    ],
)
def test_linters_when_installed(tool: str, args: list[str]) -> None:
    binary = shutil.which(tool)
    if binary is None:
        pytest.skip(f"{tool} is not installed (see docker/README.md)")
    result = subprocess.run(
        [binary, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": "/usr/bin:/bin:/usr/local/bin", "GUARDPROXY_DB_PASSWORD": "lint"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert " error " not in result.stdout, result.stdout
