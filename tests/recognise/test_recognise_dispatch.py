"""Dispatch, the generic fallback, the common fields, and failing closed."""

from __future__ import annotations

import pytest
from recognise_support import http

from guardproxy import recognise as recognise_module
from guardproxy.action import Confidence, Provider, Verb
from guardproxy.recognise import RecogniseSettings, dispatch, dispatch_reason, recognise
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


# ------------------------------------------------------------------ several claimants

KUBE = RecogniseSettings(kubernetes_hosts=("127.0.0.1:6443",))
PRESIGNED = "X-Amz-Credential=AKIDEXAMPLE%2F20261125%2Fus-east-1%2Fs3%2Faws4_request"
KUBECTL = {"Authorization": "Bearer token", "User-Agent": "kubectl/v1.32.4 (linux/amd64)"}


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "localhost",
        "LOCALHOST.",
        "127.1",
        "0x7f.1",
        "2130706433",
        "0177.0.0.1",
        "::1",
        "[::1]",
        "::ffff:127.0.0.1",
        "[::ffff:127.0.0.1]",
        "0.0.0.0",
        "api.localhost",
    ],
)
def test_a_configured_kubernetes_host_in_any_spelling(host: str) -> None:
    request = http("DELETE", "/api/v1/namespaces/prod", host=host, port=6443)
    assert dispatch(request, KUBE) is Provider.K8S
    action = recognise(request, KUBE)
    assert (action.provider, action.operation, action.verb) == (
        Provider.K8S,
        "delete",
        Verb.DESTROY,
    )
    assert dispatch(http("GET", "/", host=host, port=6444), KUBE) is Provider.UNKNOWN


def test_a_presigned_credential_does_not_override_the_kubernetes_grammar(
    aws_index: AwsIndex,
) -> None:
    request = http(
        "DELETE", f"/api/v1/namespaces/prod?{PRESIGNED}", host="k8s.corp", headers=KUBECTL
    )
    action = recognise(request, RecogniseSettings(), aws_index=aws_index)
    assert (action.provider, action.operation, action.verb) == (
        Provider.K8S,
        "delete",
        Verb.DESTROY,
    )
    assert [(r.provider, r.operation) for r in action.readings] == [(Provider.AWS, "DeleteObject")]
    assert action.confidence is Confidence.AMBIGUOUS
    assert "ambiguous:protocol" in action.risk_tags
    provider, reason = dispatch_reason(request, RecogniseSettings(), aws_index=aws_index)
    assert provider is Provider.K8S
    assert "also parsed as aws" in reason and "DeleteObject (delete) decided as a reading" in reason


def test_a_signed_request_with_a_kubernetes_shape_has_both_readings(aws_index: AwsIndex) -> None:
    request = http(
        "DELETE",
        "/api/v1/namespaces/prod",
        host="k8s.corp",
        headers={"Authorization": SIGV4, "User-Agent": "kubectl/v1.32.4"},
    )
    action = recognise(request, RecogniseSettings(), aws_index=aws_index)
    assert action.provider is Provider.AWS  # the signature is the most certain claim
    assert [(r.provider, r.operation, r.verb) for r in action.readings] == [
        (Provider.K8S, "delete", Verb.DESTROY)
    ]


def test_a_claimant_reading_a_read_adds_nothing(aws_index: AwsIndex) -> None:
    request = http("GET", f"/api/v1/namespaces/prod?{PRESIGNED}", host="k8s.corp", headers=KUBECTL)
    action = recognise(request, RecogniseSettings(), aws_index=aws_index)
    assert (action.provider, action.verb, action.readings) == (Provider.K8S, Verb.READ, [])
    assert action.confidence is Confidence.EXACT
    _provider, reason = dispatch_reason(request, RecogniseSettings(), aws_index=aws_index)
    assert "no reading added" in reason


def test_a_docker_request_on_a_kubernetes_host(aws_index: AwsIndex) -> None:
    request = http("DELETE", "/v1.47/volumes/data", port=6443)
    action = recognise(request, KUBE, aws_index=aws_index)
    assert action.provider is Provider.K8S
    assert [(r.provider, r.operation, r.verb) for r in action.readings] == [
        (Provider.DOCKER, "volumes.delete", Verb.DESTROY)
    ]


def test_a_claimant_that_fails_adds_an_unknown_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(_request: object) -> None:
        raise RuntimeError("recogniser bug")

    monkeypatch.setitem(recognise_module._RECOGNISERS, Provider.DOCKER, explode)
    action = recognise(http("DELETE", "/v1.47/volumes/data", port=6443), KUBE)
    assert action.provider is Provider.K8S
    assert [(r.provider, r.verb) for r in action.readings] == [(Provider.DOCKER, Verb.UNKNOWN)]


# ------------------------------------------------------------------ structural fallback


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "expected"),
    [
        ("DELETE", "/api/v1/namespaces/prod", b"", {}, (Provider.K8S, "delete", Verb.DESTROY)),
        (
            "DELETE",
            "/apis/apps/v1/namespaces/prod/deployments/web",
            b"",
            {},
            (Provider.K8S, "delete", Verb.DELETE),
        ),
        ("DELETE", "/volumes/data", b"", {}, (Provider.DOCKER, "volumes.delete", Verb.DESTROY)),
        (
            "POST",
            "/",
            b"Action=DeleteStack&StackName=prod-calc",
            {"Content-Type": "application/x-www-form-urlencoded"},
            (Provider.AWS, "DeleteStack", Verb.DESTROY),
        ),
        (
            "POST",
            "/",
            b'{"TableName": "prod-t"}',
            {"X-Amz-Target": "DynamoDB_20120810.DeleteTable"},
            (Provider.AWS, "DeleteTable", Verb.DESTROY),
        ),
    ],
)
def test_an_unclaimed_request_that_parses_as_a_destructive_call(
    method: str,
    path: str,
    body: bytes,
    headers: dict[str, str],
    expected: tuple[Provider, str, Verb],
    aws_index: AwsIndex,
) -> None:
    request = http(method, path, host="localhost", port=8001, headers=headers, body=body)
    action = recognise(request, RecogniseSettings(), aws_index=aws_index)
    assert (action.provider, action.operation, action.verb) == expected
    assert action.confidence is Confidence.AMBIGUOUS
    assert "ambiguous:protocol" in action.risk_tags
    # the generic reading stays: what the bundle decides for an unclassified request too
    assert [(r.provider, r.verb) for r in action.readings] == [(Provider.UNKNOWN, Verb.UNKNOWN)]
    provider, reason = dispatch_reason(request, RecogniseSettings(), aws_index=aws_index)
    assert provider is expected[0]
    assert "generic reading is decided beside it" in reason


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/items"),
        ("DELETE", "/api/v1/items/3"),
        ("DELETE", "/apis/payments/v2/charges/1"),
        ("GET", "/api/v1/namespaces/prod"),
        ("GET", "/containers/json"),
    ],
)
def test_an_ordinary_local_app_stays_generic(method: str, path: str) -> None:
    request = http(method, path, host="127.0.0.1", port=3000)
    action = recognise(request, RecogniseSettings())
    assert (action.provider, action.readings) == (Provider.UNKNOWN, [])


def test_sql_carried_by_a_google_api_is_both_not_ambiguous() -> None:
    """BigQuery's jobs endpoint runs a statement *and* is a Google Cloud API call: the
    API method is a further operation of the request, decided too, not an ambiguity."""
    body = b'{"configuration": {"query": {"query": "SELECT 1", "useLegacySql": false}}}'
    request = http(
        "POST",
        "/bigquery/v2/projects/acme-prod/jobs",
        host="bigquery.googleapis.com",
        port=443,
        headers={"Authorization": "Bearer x", "Content-Type": "application/json"},
        body=body,
    )
    action = recognise(request, RecogniseSettings())
    assert (action.provider, action.verb, action.confidence) == (
        Provider.SQL,
        Verb.READ,
        Confidence.EXACT,
    )
    assert [(r.provider, r.operation) for r in action.readings] == [
        (Provider.GCP, "bigquery.jobs.insert")
    ]
    assert "ambiguous:protocol" not in action.risk_tags
