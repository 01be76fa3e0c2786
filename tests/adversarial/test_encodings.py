"""Compressed and undecodable request bodies, end to end through the real proxy.

A destructive parameter can hide in a body the guard does not decode: a scale to
zero in a brotli PATCH, a DeleteStack in the second gzip member of a query-protocol
body, a DROP TABLE in zstd. The real proxy with the shipped policies sits in front of
the logging echo upstream (each request is recognised by its shape: a SigV4
signature, a GitHub Enterprise path, a Kubernetes path with a bearer token...);
every request here would destroy something, so each must be decided (held or denied)
and never reach the upstream. A body the guard can read must be read (its decision
names the real operation); one it cannot read is unknown and denied.
"""

from __future__ import annotations

import gzip
import http.client
import json
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import brotli
import httpx
import pytest
from backports import zstd
from e2e.guard_fixtures import Guard, StoredDecision, guard_starter
from e2e.servers import EchoServer

pytestmark = pytest.mark.slow

SIGV4 = (
    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261125/us-east-1/cloudformation/aws4_request, "
    "SignedHeaders=content-type;host;x-amz-date, Signature=0123456789abcdef"
)
SCALE_PATH = "/apis/apps/v1/namespaces/prod/deployments/web/scale"
SCALE_TO_ZERO = json.dumps({"spec": {"replicas": 0}}).encode()


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


ENCODERS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "br": brotli.compress,
    "zstd": zstd.compress,
    "deflate": raw_deflate,
    "gzip, br": lambda b: brotli.compress(gzip.compress(b)),
    "deflate, zstd": lambda b: zstd.compress(zlib.compress(b)),
}


@dataclass(frozen=True)
class Destructive:
    """A request that destroys something, and the operation the guard must read."""

    name: str
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    operation: str


REQUESTS = [
    Destructive(
        "aws",
        "POST",
        "/",
        {
            "Authorization": SIGV4,
            "X-Amz-Date": "20261125T000000Z",
            "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
        },
        b"Action=DeleteStack&StackName=prod-api&Version=2010-05-15",
        "DeleteStack",
    ),
    Destructive(
        "sql",
        "POST",
        "/sql",
        {
            "Content-Type": "application/json",
            "Neon-Connection-String": "postgresql://app:secret@ep-1.neon.tech/db",
        },
        json.dumps({"query": "DROP TABLE customers", "params": []}).encode(),
        "DROP TABLE",
    ),
    Destructive(
        "github",
        "PATCH",
        "/api/v3/repos/acme/api/git/refs/heads/main",
        {"Content-Type": "application/json", "Authorization": "token ghp_test"},
        json.dumps({"sha": "a" * 40, "force": True}).encode(),
        "git/update-ref",
    ),
    Destructive(
        "tfc",
        "POST",
        "/api/v2/runs",
        {"Content-Type": "application/vnd.api+json"},
        json.dumps(
            {
                "data": {
                    "type": "runs",
                    "attributes": {"is-destroy": True},
                    "relationships": {"workspace": {"data": {"type": "workspaces", "id": "ws-1"}}},
                }
            }
        ).encode(),
        "runs.create",
    ),
    Destructive(
        "docker",
        "POST",
        "/v1.47/containers/create",
        {"Content-Type": "application/json"},
        json.dumps({"Image": "alpine", "HostConfig": {"Privileged": True}}).encode(),
        "containers.create",
    ),
]


@pytest.fixture(scope="module")
def guard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guard]:
    """One guard for the module (each test has its own echo upstream and session); no
    Kubernetes host is configured: the scale requests are Kubernetes by their shape."""
    starter = guard_starter(tmp_path_factory.mktemp("encodings"))
    start = next(starter)
    try:
        yield start(hold_window_seconds=0.5)
    finally:
        next(starter, None)  # runs the starter's teardown: every guard it started stops


@pytest.fixture
def seen(guard: Guard) -> int:
    """How many decisions the guard had recorded before the test."""
    return len(guard.decisions())


def send(
    guard: Guard, echo: EchoServer, method: str, path: str, headers: dict[str, str], body: bytes
) -> httpx.Response:
    with httpx.Client(proxy=guard.session().proxy_url, timeout=30) as client:
        return client.request(method, f"{echo.url}{path}", content=body, headers=headers)


def decided(guard: Guard, seen: int, timeout: float = 10.0) -> StoredDecision:
    """The one decision recorded after the first ``seen``, once it is there."""
    deadline = time.monotonic() + timeout
    while True:
        found = guard.decisions()[seen:]
        if found or time.monotonic() > deadline:
            assert len(found) == 1, f"expected one new decision, found {found}"
            return found[0]
        time.sleep(0.1)


def assert_not_forwarded(echo: EchoServer, method: str, path: str) -> None:
    assert echo.log.matching(method, path) == [], f"{method} {path} reached the upstream"


@pytest.mark.parametrize("encoding", list(ENCODERS))
@pytest.mark.parametrize("request_", REQUESTS, ids=[r.name for r in REQUESTS])
def test_an_encoded_destructive_body_is_read_and_decided(
    guard: Guard, seen: int, echo_server: EchoServer, request_: Destructive, encoding: str
) -> None:
    body = ENCODERS[encoding](request_.body)
    headers = {**request_.headers, "Content-Encoding": encoding}
    response = send(guard, echo_server, request_.method, request_.path, headers, body)

    assert response.status_code == 403, response.text
    assert_not_forwarded(echo_server, request_.method, request_.path)
    decision = decided(guard, seen)
    assert decision.outcome in ("hold", "deny")
    assert decision.operation == request_.operation


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [
        ("compress", lambda b: b"\x1f\x9d\x90" + b),  # no decoder for LZW
        ("gzip", lambda b: gzip.compress(b)[:-6]),  # ends early
        ("br", lambda b: brotli.compress(b) + b"trailing"),
        ("zstd", lambda b: zstd.compress(b[:10]) + zstd.compress(b[10:])),  # two frames
        ("gzip, gzip", gzip.compress),  # one layer short
    ],
)
@pytest.mark.parametrize("request_", REQUESTS, ids=[r.name for r in REQUESTS])
def test_an_undecodable_destructive_body_is_denied(
    guard: Guard,
    seen: int,
    echo_server: EchoServer,
    request_: Destructive,
    encoding: str,
    encode: Callable[[bytes], bytes],
) -> None:
    headers = {**request_.headers, "Content-Encoding": encoding}
    response = send(
        guard, echo_server, request_.method, request_.path, headers, encode(request_.body)
    )

    assert response.status_code == 403, response.text
    assert_not_forwarded(echo_server, request_.method, request_.path)
    decision = decided(guard, seen)
    assert decision.outcome == "deny"


def test_a_query_body_in_two_gzip_members_is_denied(
    guard: Guard, seen: int, echo_server: EchoServer
) -> None:
    """zlib (and git's http-backend) stop after the first gzip member; Python's gzip
    module, Go and Java's GZIPInputStream read them all. Read first-member-only, this
    body is a DescribeStacks; read whole, it also says DeleteStack."""
    body = gzip.compress(b"Action=DescribeStacks&Version=2010-05-15")
    body += gzip.compress(b"&Action=DeleteStack&StackName=prod-api")
    headers = {**REQUESTS[0].headers, "Content-Encoding": "gzip"}
    response = send(guard, echo_server, "POST", "/", headers, body)

    assert response.status_code == 403, response.text
    assert_not_forwarded(echo_server, "POST", "/")
    assert decided(guard, seen).outcome == "deny"


@pytest.mark.parametrize("encoding", ["br", "zstd", "deflate", "gzip, br"])
def test_a_compressed_scale_to_zero_is_held(
    guard: Guard, seen: int, echo_server: EchoServer, encoding: str
) -> None:
    """Kubernetes: the replicas are in the body; read compressed as bodiless, a scale to
    zero is an ordinary update."""
    headers = {
        "Content-Type": "application/merge-patch+json",
        "Content-Encoding": encoding,
        "Authorization": "Bearer test-token",
    }
    body = ENCODERS[encoding](SCALE_TO_ZERO)
    response = send(guard, echo_server, "PATCH", SCALE_PATH, headers, body)

    assert response.status_code == 403, response.text
    assert_not_forwarded(echo_server, "PATCH", SCALE_PATH)
    decision = decided(guard, seen)
    assert decision.outcome == "hold"
    assert "scale-to-zero" in decision.risk_tags


def test_a_gzip_transfer_coding_is_decoded(
    guard: Guard, seen: int, echo_server: EchoServer
) -> None:
    """mitmproxy accepts `Transfer-Encoding: gzip, chunked` and removes only the chunked
    framing; the gzip transfer coding is left for the upstream to remove."""
    connection = http.client.HTTPConnection("127.0.0.1", guard.proxy_port, timeout=30)
    try:
        connection.request(
            "PATCH",
            f"{echo_server.url}{SCALE_PATH}",
            body=iter([gzip.compress(SCALE_TO_ZERO)]),
            headers={
                "Content-Type": "application/merge-patch+json",
                "Transfer-Encoding": "gzip, chunked",
                "Authorization": "Bearer test-token",
            },
            encode_chunked=True,
        )
        status = connection.getresponse().status
    finally:
        connection.close()

    assert status == 403
    assert_not_forwarded(echo_server, "PATCH", SCALE_PATH)
    assert "scale-to-zero" in decided(guard, seen).risk_tags


def test_an_undecodable_kubernetes_patch_is_denied(guard: Guard, echo_server: EchoServer) -> None:
    headers = {
        "Content-Type": "application/merge-patch+json",
        "Content-Encoding": "compress",
        "Authorization": "Bearer test-token",
    }
    response = send(
        guard, echo_server, "PATCH", SCALE_PATH, headers, b"\x1f\x9d\x90" + SCALE_TO_ZERO
    )
    assert response.status_code == 403, response.text
    assert_not_forwarded(echo_server, "PATCH", SCALE_PATH)
