"""Fixtures that run real upstream servers on loopback for end-to-end tests.

Every server fixture yields a started server and stops it at teardown (shutdown,
connections closed, socket closed).  Servers are per test so state changes (a deleted
namespace, a pushed branch) never leak between tests; moto is the exception because its
state is process-global anyway: one server per session, wiped before each test.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from ._http import UpstreamServer
from .guard_fixtures import StartGuard, guard_starter
from .pki import PkiFiles, ThrowawayPki
from .servers import (
    EchoServer,
    GitHttpServer,
    KubeApiServer,
    MotoServer,
    aws_env,
    git_env,
    kubectl_env,
    write_kubeconfig,
)


def _assert_no_handler_errors(server: UpstreamServer) -> None:
    # A fake server crashing would look like a proxy bug; make it fail loudly instead.
    assert not server.handler_errors, f"{type(server).__name__} crashed: {server.handler_errors}"


def require_binary(name: str) -> str:
    """Path of client binary ``name``; skip the test (with the reason) if it is absent."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (command -v {name} found nothing)")
    return path


# ---------------------------------------------------------------------------- clients


@pytest.fixture
def kubectl_bin() -> str:
    return require_binary("kubectl")


@pytest.fixture
def git_bin() -> str:
    return require_binary("git")


@pytest.fixture
def aws_bin() -> str:
    return require_binary("aws")


@pytest.fixture
def kubectl_environ(tmp_path: Path) -> dict[str, str]:
    """Env for kubectl with a private HOME and discovery cache (fresh per test)."""
    return kubectl_env(tmp_path / "kubectl-home")


@pytest.fixture
def git_environ(tmp_path: Path) -> dict[str, str]:
    """Env for git without system/global config or prompts."""
    return git_env(tmp_path / "git-home")


@pytest.fixture
def aws_environ(tmp_path: Path) -> dict[str, str]:
    """Env for boto3/aws CLI: testing keys, us-east-1, empty config files, no IMDS."""
    return aws_env(tmp_path / "aws-home")


# -------------------------------------------------------------------------------- PKI


@pytest.fixture(scope="session")
def pki() -> ThrowawayPki:
    return ThrowawayPki.create()


@pytest.fixture(scope="session")
def pki_files(pki: ThrowawayPki, tmp_path_factory: pytest.TempPathFactory) -> PkiFiles:
    return pki.write(tmp_path_factory.mktemp("pki"))


# ---------------------------------------------------------------------------- servers


@pytest.fixture
def kube_api(pki: ThrowawayPki) -> Iterator[KubeApiServer]:
    with KubeApiServer(pki) as server:
        yield server
        _assert_no_handler_errors(server)


@pytest.fixture
def kubeconfig_path(kube_api: KubeApiServer, pki: ThrowawayPki, tmp_path: Path) -> Path:
    """A kubeconfig pointing straight at ``kube_api`` (no proxy) as kube-admin."""
    return write_kubeconfig(
        tmp_path / "kubeconfig",
        kube_api.url,
        ca_pem=pki.ca.cert_pem,
        client_cert_pem=pki.client.cert_pem,
        client_key_pem=pki.client.key_pem,
    )


@pytest.fixture
def git_server(git_bin: str, tmp_path: Path) -> Iterator[GitHttpServer]:
    """Needs git itself (repository setup and ``git http-backend``), hence ``git_bin``."""
    with GitHttpServer(tmp_path / "git-server") as server:
        yield server
        _assert_no_handler_errors(server)


@pytest.fixture(scope="session")
def _moto_session() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.fixture
def moto_server(_moto_session: MotoServer) -> MotoServer:
    """The session's moto server, with all AWS state and the request log wiped."""
    _moto_session.reset()
    return _moto_session


@pytest.fixture
def echo_server() -> Iterator[EchoServer]:
    with EchoServer() as server:
        yield server
        _assert_no_handler_errors(server)


@pytest.fixture
def tls_echo_server(pki: ThrowawayPki) -> Iterator[EchoServer]:
    """Echo over TLS with the PKI's server cert; a client cert is optional, reported as CN."""
    with EchoServer(pki, client_ca_pem=pki.client_ca.cert_pem) as server:
        yield server
        _assert_no_handler_errors(server)


# ---------------------------------------------------------------- guardproxy under test


@pytest.fixture
def start_guard(tmp_path: Path) -> Iterator[StartGuard]:
    """``start_guard(**ProxyConfig fields)`` starts a guardproxy (shipped policies, hold
    window 2 s unless given, data directory under ``tmp_path``); teardown stops it."""
    yield from guard_starter(tmp_path)
