"""Host spellings against environment selectors, end to end: a spelled host must not
escape a prod selector.

A site says ``host:*=dev`` (everything is a sandbox) except its production cluster and
daemons, which it names by address: ``k8s:cluster:127.0.0.1:PORT=prod``,
``docker:127.0.0.1:PORT=prod``, ``host:127.0.0.1:PORT=prod``. On main the selectors
compared the host as written, so the same servers reached as ``localhost``, ``127.1``,
``0x7f.1``... matched only ``host:*`` and were dev: a namespace or volume delete went
through. Now every selector matches every spelling of its host (guardproxy/hosts.py),
and the deletes are held whatever the spelling.

A real guardproxy with the shipped policies, recording upstreams on loopback. Each
spelling also sends a read that must arrive, so a case does not pass because the
spelling reaches nothing. Unit versions: tests/recognise/test_recognise_environment.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from e2e.guard_fixtures import Guard
from e2e.servers import EchoServer

from ._through import arrived, module_guard, through

pytestmark = pytest.mark.slow

KUBECTL = (("Authorization", "Bearer token"), ("User-Agent", "kubectl/v1.32.4 (linux/amd64)"))
DOCKER = (("User-Agent", "Docker-Client/27.3.1 (linux)"),)
# Spellings of 127.0.0.1 the proxy's resolver connects to 127.0.0.1 (the upstreams
# listen there only); 127.0.0.1 itself is the control that matched on main too.
SPELLINGS = ["127.0.0.1", "localhost", "LOCALHOST", "127.1", "0x7f.1", "0177.0.0.1", "2130706433"]


@pytest.fixture(scope="module")
def kube() -> Iterator[EchoServer]:
    with EchoServer() as server:
        yield server


@pytest.fixture(scope="module")
def daemon() -> Iterator[EchoServer]:
    with EchoServer() as server:
        yield server


@pytest.fixture(scope="module")
def host() -> Iterator[EchoServer]:
    """A daemon named by a ``host:`` selector rather than a ``docker:`` one."""
    with EchoServer() as server:
        yield server


@pytest.fixture(scope="module")
def guard(
    tmp_path_factory: pytest.TempPathFactory,
    kube: EchoServer,
    daemon: EchoServer,
    host: EchoServer,
) -> Iterator[Guard]:
    yield from module_guard(
        tmp_path_factory.mktemp("hosts-guard"),
        hold_window_seconds=0.3,
        kubernetes_hosts=[f"127.0.0.1:{kube.port}"],
        environments={
            "host:*": "dev",
            f"k8s:cluster:127.0.0.1:{kube.port}": "prod",
            f"docker:127.0.0.1:{daemon.port}": "prod",
            f"host:127.0.0.1:{host.port}": "prod",
        },
    )


def _held(
    guard: Guard,
    upstream: EchoServer,
    case: str,
    method: str,
    url: str,
    headers: tuple[tuple[str, str], ...],
) -> None:
    answer = through(guard, method, url, headers, case=case)
    assert answer.decision in ("hold", "deny"), (answer.status, answer.decision, answer.body[:300])
    assert not arrived(upstream, case)


def _reaches(
    guard: Guard, upstream: EchoServer, case: str, url: str, headers: tuple[tuple[str, str], ...]
) -> None:
    answer = through(guard, "GET", url, headers, case=case)
    assert answer.decision == "", (answer.status, answer.decision, answer.body[:300])
    assert arrived(upstream, case)


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_a_cluster_selector_holds_every_spelling(
    guard: Guard, kube: EchoServer, spelling: str
) -> None:
    base = f"http://{spelling}:{kube.port}/api/v1/namespaces"
    _reaches(guard, kube, f"k8s-read-{spelling}", base, KUBECTL)
    _held(guard, kube, f"k8s-delete-{spelling}", "DELETE", f"{base}/prod", KUBECTL)


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_a_daemon_selector_holds_every_spelling(
    guard: Guard, daemon: EchoServer, spelling: str
) -> None:
    base = f"http://{spelling}:{daemon.port}/v1.47/volumes"
    _reaches(guard, daemon, f"docker-read-{spelling}", base, DOCKER)
    _held(guard, daemon, f"docker-delete-{spelling}", "DELETE", f"{base}/data", DOCKER)


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_a_host_selector_holds_every_spelling(
    guard: Guard, host: EchoServer, spelling: str
) -> None:
    base = f"http://{spelling}:{host.port}/v1.47/volumes"
    _reaches(guard, host, f"host-read-{spelling}", base, DOCKER)
    _held(guard, host, f"host-delete-{spelling}", "DELETE", f"{base}/data", DOCKER)
