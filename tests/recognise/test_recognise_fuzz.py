"""No input crashes recognition: whatever arrives becomes an Action.

Truncated and malformed bodies, wrong content types, invalid UTF-8, deeply nested
or huge JSON, absurd paths and header values, aimed at each recogniser's door.
(How long recognition takes is measured in bench/recognise_bench.py, not here.)
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guardproxy.action import Action
from guardproxy.recognise import recognise
from guardproxy.recognise.request import HttpRequest, RecogniseSettings

SETTINGS = RecogniseSettings(kubernetes_hosts=("k8s.internal:6443",))
SIGV4 = (
    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261125/us-east-1/{service}/aws4_request, "
    "SignedHeaders=host;x-amz-date, Signature=0123"
)
HOSTS = st.sampled_from([
    "cloudformation.us-east-1.amazonaws.com", "s3.amazonaws.com",
    "bucket.s3.eu-west-1.amazonaws.com", "ec2.us-east-1.amazonaws.com", "k8s.internal",
    "api.github.com", "example.com", "127.0.0.1",
    "management.azure.com", "compute.googleapis.com", "app.terraform.io", "",
])  # fmt: skip
SERVICES = st.sampled_from(["cloudformation", "s3", "ec2", "dynamodb", "lambda", "sqs",
                            "route53", "rds", "nosuch", "", "s3express"])  # fmt: skip
CONTENT_TYPES = st.sampled_from([
    "application/x-www-form-urlencoded", "application/json", "application/x-amz-json-1.0",
    "application/xml", "application/cbor", "application/vnd.kubernetes.protobuf",
    "application/x-git-receive-pack-request", "text/plain", "",
])  # fmt: skip
PATHS = st.one_of(
    st.sampled_from([
        "/", "/api/v1/namespaces/prod", "/apis/apps/v1/namespaces/x/deployments/y/scale",
        "/api/v1/namespaces/prod/pods/p/exec?command=sh", "/repo.git/git-receive-pack",
        "/info/refs?service=git-receive-pack", "/bucket/key?versionId=1", "/2015-03-31/functions/f",
        "/%00/../..//;?x=%ff", "/" + "a/" * 500, "/api/v1/" + "x" * 5000,
    ]),
    st.text(alphabet=st.characters(codec="latin-1"), max_size=300).map(lambda t: "/" + t),
)  # fmt: skip


def _nested(depth: int) -> bytes:
    return ("[" * depth + "]" * depth).encode()


BODIES = st.one_of(
    st.binary(max_size=2048),
    st.sampled_from([
        b"Action=DeleteStack&StackName=prod&Version=2010-05-15", b"Action=", b"Action=%zz",
        b'{"TableName": ', b'{"metadata": {"name": 5}}', b"\xff\xfe\x00garbage",
        b"k8s\x00\x0a\x0b\x12", b"0032" + b"0" * 40, b"00940000000000", _nested(5000),
        json.dumps({"a": ["x" * 1000] * 1000}).encode(), b"<ChangeBatch><Changes>",
    ]),
)  # fmt: skip


@st.composite
def requests(draw: st.DrawFn) -> HttpRequest:
    service = draw(SERVICES)
    headers = [("content-type", draw(CONTENT_TYPES))]
    if draw(st.booleans()):
        headers.append(("authorization", SIGV4.format(service=service)))
    if draw(st.booleans()):
        headers.append(("x-amz-target", draw(st.text(max_size=60))))
    if draw(st.booleans()):
        headers.append(("kubectl-command", "kubectl delete"))
    headers.append(("user-agent", draw(st.text(max_size=300))))
    return HttpRequest(
        method=draw(st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "BREW"])),
        scheme=draw(st.sampled_from(["https", "http"])),
        host=draw(HOSTS),
        port=draw(st.sampled_from([443, 80, 6443, 0, 65535])),
        path=draw(PATHS),
        headers=tuple(headers),
        body=draw(BODIES),
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests())
def test_any_request_becomes_an_action(request: HttpRequest) -> None:
    action = recognise(request, SETTINGS)
    assert isinstance(action, Action)
    assert action.request.method == request.method


def test_a_deeply_nested_body_fails_closed_not_loudly() -> None:
    request = HttpRequest(
        "POST", "https", "k8s.internal", 6443, "/api/v1/namespaces",
        (("content-type", "application/json"),), _nested(100_000),
    )  # fmt: skip
    action = recognise(request, SETTINGS)
    assert action.provider == "k8s"
    assert action.verb in ("create", "unknown")
