"""Dispatch bypasses, end to end: each one reached the upstream on main.

* A SigV4 credential (presigned query or header) on a Kubernetes-shaped request made
  the whole request AWS, read as ``s3 DeleteObject`` and allowed, while the API
  server deletes the namespace.
* A configured Kubernetes API server (``--kube-host 127.0.0.1:PORT``) reached under
  another spelling of its host (``localhost``, ``127.1``, ``0x7f.1``...) was not
  recognised; without kubectl's marks (what ``kubectl proxy`` accepts) the request was
  unclassified and allowed by ``agent-traffic/allow-local-development``.
* The same without ``--kube-host``, a Docker volume delete and unsigned AWS calls to
  an emulator on loopback: requests that parse as destructive calls of a known
  protocol were "unknown" and allowed as local development.

A real guardproxy with the shipped policies, recording upstreams on loopback; each
destructive request must be held or denied and never arrive. Unit versions are in
tests/recognise/test_recognise_dispatch.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from e2e.guard_fixtures import Guard
from e2e.servers import EchoServer

from ._through import arrived, module_guard, through

pytestmark = pytest.mark.slow

NAMESPACE = "/api/v1/namespaces/prod"
PRESIGNED_S3 = "X-Amz-Credential=AKIDEXAMPLE%2F20261125%2Fus-east-1%2Fs3%2Faws4_request"
KUBECTL = (("Authorization", "Bearer token"), ("User-Agent", "kubectl/v1.32.4 (linux/amd64)"))
SIGNED_S3 = (
    "Authorization",
    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261125/us-east-1/s3/aws4_request, "
    "SignedHeaders=host, Signature=00",
)
# Spellings of 127.0.0.1 the proxy's resolver connects to 127.0.0.1 (the upstream
# listens there only): each has a control read that must arrive, so the test is not
# passing because the spelling reaches nothing.
SPELLINGS = ["localhost", "LOCALHOST", "127.1", "0x7f.1", "0177.0.0.1", "2130706433"]


@pytest.fixture(scope="module")
def kube() -> Iterator[EchoServer]:
    """The upstream configured as a Kubernetes API server (``--kube-host``)."""
    with EchoServer() as server:
        yield server


@pytest.fixture(scope="module")
def plain() -> Iterator[EchoServer]:
    """An upstream nothing is configured for (a local app, kubectl proxy, an emulator)."""
    with EchoServer() as server:
        yield server


@pytest.fixture(scope="module")
def guard(tmp_path_factory: pytest.TempPathFactory, kube: EchoServer) -> Iterator[Guard]:
    yield from module_guard(
        tmp_path_factory.mktemp("dispatch-guard"),
        hold_window_seconds=0.3,
        kubernetes_hosts=[f"127.0.0.1:{kube.port}"],
    )


def assert_decided(
    guard: Guard,
    upstream: EchoServer,
    case: str,
    request: tuple[str, str, tuple[tuple[str, str], ...], bytes],
    decisions: tuple[str, ...] = ("hold", "deny"),
) -> None:
    method, url, headers, body = request
    answer = through(guard, method, url, headers, body, case=case)
    assert answer.decision in decisions, (answer.status, answer.decision, answer.body[:300])
    assert not arrived(upstream, case)


@pytest.mark.parametrize(
    ("case", "path", "headers"),
    [
        ("presigned-query", f"{NAMESPACE}?{PRESIGNED_S3}", KUBECTL),
        ("signed-header", NAMESPACE, (SIGNED_S3, KUBECTL[1])),
    ],
)
def test_a_sigv4_credential_does_not_hide_a_kubernetes_delete(
    case: str, path: str, headers: tuple[tuple[str, str], ...], guard: Guard, plain: EchoServer
) -> None:
    assert_decided(guard, plain, case, ("DELETE", f"{plain.url}{path}", headers, b""))


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_the_configured_api_server_in_any_spelling(
    spelling: str, guard: Guard, kube: EchoServer
) -> None:
    """Held as the namespace deletion it is (main allowed ``localhost`` as local
    development and denied the others as unclassified, neither a Kubernetes decision)."""
    url = f"http://{spelling}:{kube.port}{NAMESPACE}"
    control = through(guard, "GET", url, case=f"read-{spelling}")
    assert control.status == 200 and arrived(kube, f"read-{spelling}"), control
    assert_decided(guard, kube, f"delete-{spelling}", ("DELETE", url, (), b""), ("hold",))


def test_the_configured_api_server_by_ipv4_mapped_address(guard: Guard, kube: EchoServer) -> None:
    url = f"http://[::ffff:127.0.0.1]:{kube.port}{NAMESPACE}"
    control = through(guard, "GET", url, case="read-mapped")
    if control.status != 200:
        pytest.skip("this machine cannot connect to an IPv4-mapped IPv6 address")
    assert arrived(kube, "read-mapped")
    assert_decided(guard, kube, "delete-mapped", ("DELETE", url, (), b""), ("hold",))


@pytest.mark.parametrize(
    ("case", "method", "path", "headers", "body"),
    [
        ("kubectl-proxy", "DELETE", NAMESPACE, (), b""),
        (
            "kubectl-proxy-deployment",
            "DELETE",
            "/apis/apps/v1/namespaces/prod/deployments",
            (),
            b"",
        ),
        ("docker-volume", "DELETE", "/volumes/prod-data", (), b""),
        (
            "unsigned-query-call",
            "POST",
            "/",
            (("Content-Type", "application/x-www-form-urlencoded"),),
            b"Action=DeleteStack&StackName=prod-calc",
        ),
        (
            "unsigned-json-call",
            "POST",
            "/",
            (
                ("Content-Type", "application/x-amz-json-1.0"),
                ("X-Amz-Target", "DynamoDB_20120810.DeleteTable"),
            ),
            b'{"TableName": "prod-t"}',
        ),
    ],
)
def test_an_unclaimed_destructive_call_on_loopback_is_not_local_development(
    case: str,
    method: str,
    path: str,
    headers: tuple[tuple[str, str], ...],
    body: bytes,
    guard: Guard,
    plain: EchoServer,
) -> None:
    url = f"http://localhost:{plain.port}{path}"
    assert_decided(guard, plain, case, (method, url, headers, body))


def test_the_local_app_is_still_reachable(guard: Guard, plain: EchoServer) -> None:
    """``allow-local-development`` still lets an ordinary app's writes through."""
    for method in ("POST", "DELETE"):
        answer = through(guard, method, f"{plain.url}/api/items/3", case=f"app-{method}")
        assert (answer.status, answer.decision) == (200, "")
        assert arrived(plain, f"app-{method}")
