"""Dispatch, the generic fallback, the common fields, and failing closed."""

from __future__ import annotations

import pytest
from recognise_support import http

from guardproxy.action import Confidence, Provider, Verb
from guardproxy.recognise import RecogniseSettings, dispatch, recognise
from guardproxy.recognise import aws as aws_module
from guardproxy.recognise.aws_index import AwsIndex
from guardproxy.recognise.common import USER_AGENT_LIMIT, tool_from_user_agent

SIGV4 = (
    "AWS4-HMAC-SHA256 Credential=AKID/20261125/eu-west-1/s3/aws4_request, "
    "SignedHeaders=host, Signature=0"
)
BEARER = {"Authorization": "Bearer token"}


@pytest.mark.parametrize(
    ("method", "path", "host", "port", "headers", "settings", "provider"),
    [
        (
            "GET",
            "/healthz",
            "10.0.0.1",
            6443,
            {},
            RecogniseSettings(kubernetes_hosts=("10.0.0.1:6443",)),
            Provider.K8S,
        ),
        (
            "GET",
            "/api/v1/pods",
            "k8s.corp",
            443,
            {},
            RecogniseSettings(kubernetes_hosts=("K8S.corp",)),
            Provider.K8S,
        ),
        (
            "GET",
            "/api/v1/pods",
            "k8s.corp",
            443,
            {},
            RecogniseSettings(kubernetes_hosts=("k8s.corp:6443",)),
            Provider.UNKNOWN,
        ),
        (
            "GET",
            "/api/v1/pods",
            "k8s.corp",
            443,
            {"User-Agent": "kubectl/v1.32.4 (linux/amd64)"},
            RecogniseSettings(),
            Provider.K8S,
        ),
        (
            "DELETE",
            "/api/v1/namespaces/x",
            "k8s.corp",
            443,
            {"Kubectl-Command": "kubectl delete"},
            RecogniseSettings(),
            Provider.K8S,
        ),
        ("GET", "/api/v1/namespaces", "k8s.corp", 443, BEARER, RecogniseSettings(), Provider.K8S),
        (
            "GET",
            "/apis/apps/v1/deployments",
            "k8s.corp",
            443,
            BEARER,
            RecogniseSettings(),
            Provider.K8S,
        ),
        (
            "GET",
            "/apis/example.com/v1beta1/widgets",
            "k8s.corp",
            443,
            BEARER,
            RecogniseSettings(),
            Provider.K8S,
        ),
        (
            "GET",
            "/api/v1/users",
            "api.example.com",
            443,
            BEARER,
            RecogniseSettings(),
            Provider.UNKNOWN,
        ),
        (
            "GET",
            "/api/v4/projects",
            "gitlab.example.com",
            443,
            BEARER,
            RecogniseSettings(),
            Provider.UNKNOWN,
        ),
        (
            "GET",
            "/apis/payments/v2/charges",
            "api.example.com",
            443,
            BEARER,
            RecogniseSettings(),
            Provider.UNKNOWN,
        ),
        ("GET", "/api/v1/pods", "k8s.corp", 443, {}, RecogniseSettings(), Provider.UNKNOWN),
        (
            "GET",
            "/version",
            "k8s.corp",
            443,
            {"User-Agent": "kubectl/v1.32.4"},
            RecogniseSettings(),
            Provider.K8S,
        ),
        (
            "GET",
            "/version",
            "abc.gr7.us-east-1.eks.amazonaws.com",
            443,
            {},
            RecogniseSettings(),
            Provider.K8S,
        ),
        (
            "GET",
            "/version",
            "prod-dns-1a2b.hcp.westeurope.azmk8s.io",
            443,
            {},
            RecogniseSettings(),
            Provider.K8S,
        ),
        (
            "POST",
            "/clusters",
            "eks.us-east-1.amazonaws.com",
            443,
            {},
            RecogniseSettings(),
            Provider.AWS,
        ),
        (
            "GET",
            "/api/v1/namespaces",
            "abc123.gr7.us-east-1.eks.amazonaws.com",
            443,
            BEARER,
            RecogniseSettings(),
            Provider.K8S,
        ),
        (
            "GET",
            "/bucket/key",
            "127.0.0.1",
            4566,
            {"Authorization": SIGV4},
            RecogniseSettings(),
            Provider.AWS,
        ),
        (
            "GET",
            "/key?X-Amz-Credential=AKID%2F20261125%2Fus-east-1%2Fs3%2Faws4_request",
            "b.example",
            443,
            {},
            RecogniseSettings(),
            Provider.AWS,
        ),
        ("POST", "/", "sts.amazonaws.com", 443, {}, RecogniseSettings(), Provider.AWS),
        ("GET", "/", "billing.us-east-1.api.aws", 443, {}, RecogniseSettings(), Provider.AWS),
        (
            "POST",
            "/acme/api.git/git-receive-pack",
            "github.com",
            443,
            {},
            RecogniseSettings(),
            Provider.GIT,
        ),
        (
            "GET",
            "/acme/api.git/info/refs?service=git-upload-pack",
            "github.com",
            443,
            {},
            RecogniseSettings(),
            Provider.GIT,
        ),
        (
            "GET",
            "/acme/api.git/info/refs",
            "github.com",
            443,
            {},
            RecogniseSettings(),
            Provider.UNKNOWN,
        ),
        (
            "POST",
            "/v1/messages",
            "api.anthropic.com",
            443,
            {},
            RecogniseSettings(),
            Provider.UNKNOWN,
        ),
    ],
)
def test_dispatch(
    method: str,
    path: str,
    host: str,
    port: int,
    headers: dict[str, str],
    settings: RecogniseSettings,
    provider: Provider,
) -> None:
    assert dispatch(http(method, path, host=host, port=port, headers=headers), settings) is provider


@pytest.mark.parametrize(
    ("method", "verb", "confidence"),
    [
        ("GET", Verb.READ, Confidence.HEURISTIC),
        ("HEAD", Verb.READ, Confidence.HEURISTIC),
        ("OPTIONS", Verb.READ, Confidence.HEURISTIC),
        ("POST", Verb.UNKNOWN, Confidence.UNKNOWN),
        ("DELETE", Verb.UNKNOWN, Confidence.UNKNOWN),
    ],
)
def test_generic_requests(method: str, verb: Verb, confidence: Confidence) -> None:
    action = recognise(
        http(method, "/v1/things?token=secret", host="internal-api.example.com", port=443),
        RecogniseSettings(),
    )
    assert (action.provider, action.verb, action.confidence, action.operation) == (
        Provider.UNKNOWN,
        verb,
        confidence,
        "",
    )
    assert action.request.path == "/v1/things"


def test_request_summary_keeps_no_values() -> None:
    request = http(
        "PUT",
        "/x?secret=1",
        host="API.Example.com",
        port=8443,
        headers={"Authorization": "Bearer t", "X-Custom": "v", "user-agent": "curl/8.5.0"},
        body=b"12345",
    )
    summary = recognise(request, RecogniseSettings()).request
    assert summary.model_dump() == {
        "method": "PUT",
        "host": "api.example.com",
        "port": 8443,
        "path": "/x",
        "header_names": ["authorization", "user-agent", "x-custom"],
        "body_bytes": 5,
    }


@pytest.mark.parametrize(
    ("user_agent", "tool"),
    [
        (
            "aws-cli/2.15.0 Python/3.11.6 Linux/6.1 exe/x86_64.ubuntu.22 prompt/off command/s3.rm",
            "aws-cli",
        ),
        ("Boto3/1.44.8 md/Botocore#1.44.8 ua/2.1 os/linux", "boto3"),
        ("Botocore/1.44.8 ua/2.1 os/linux", "botocore"),
        (
            "APN/1.0 HashiCorp/1.0 Terraform/1.11.4 (+https://www.terraform.io) "
            "aws-sdk-go-v2/1.36.3",
            "terraform",
        ),
        ("aws-sdk-go-v2/1.36.3 os/linux lang/go#1.24", "aws-sdk-go-v2"),
        ("aws-sdk-go/1.55.5 (go1.22; linux; amd64)", "aws-sdk-go"),
        ("kubectl/v1.32.4 (linux/amd64) kubernetes/4cb5f07", "kubectl"),
        ("git/2.39.5", "git"),
        ("curl/8.5.0", "curl"),
        ("python-requests/2.32.3", "python-requests"),
        ("Mozilla/5.0", ""),
    ],
)
def test_tool_from_user_agent(user_agent: str, tool: str) -> None:
    assert tool_from_user_agent(user_agent) == tool


def test_user_agent_is_truncated() -> None:
    request = http(
        "GET", "/", host="example.com", port=443, headers={"User-Agent": "curl/8 " + "x" * 1000}
    )
    actor = recognise(request, RecogniseSettings()).actor
    assert len(actor.user_agent) == USER_AGENT_LIMIT
    assert actor.tool == "curl"


def test_recogniser_exception_fails_closed(
    monkeypatch: pytest.MonkeyPatch, aws_index: AwsIndex
) -> None:
    def explode(*_args: object) -> None:
        raise RuntimeError("recogniser bug")

    monkeypatch.setattr("guardproxy.recognise.recognise_aws", explode)
    request = http(
        "DELETE",
        "/prod-bucket?secret=x",
        host="127.0.0.1",
        port=4566,
        headers={"Authorization": SIGV4, "User-Agent": "aws-cli/2.15.0"},
    )
    action = recognise(request, RecogniseSettings(), aws_index=aws_index)
    assert (action.provider, action.verb, action.confidence) == (
        Provider.AWS,
        Verb.UNKNOWN,
        Confidence.UNKNOWN,
    )
    assert action.actor.tool == "aws-cli"
    assert (action.request.method, action.request.path, action.request.port) == (
        "DELETE",
        "/prod-bucket",
        4566,
    )
    assert not action.classified


def test_deep_failure_inside_a_recogniser_fails_closed(
    monkeypatch: pytest.MonkeyPatch, aws_index: AwsIndex
) -> None:
    def explode(*_args: object) -> None:
        raise RecursionError("deep")

    monkeypatch.setattr(aws_module, "risk_tags", explode)
    request = http(
        "DELETE", "/prod-bucket", host="127.0.0.1", port=4566, headers={"Authorization": SIGV4}
    )
    action = recognise(request, RecogniseSettings(), aws_index=aws_index)
    assert (action.provider, action.verb) == (Provider.AWS, Verb.UNKNOWN)


def test_environment_failure_fails_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*_args: object) -> None:
        raise ValueError("bad config")

    monkeypatch.setattr("guardproxy.recognise.resolve_environment", explode)
    action = recognise(http("GET", "/", host="example.com", port=443), RecogniseSettings())
    assert (action.verb, action.confidence) == (Verb.UNKNOWN, Confidence.UNKNOWN)
