"""AWS request-reading bypasses, end to end: each one reached the upstream on main.

A real guardproxy with the shipped policies sits in front of a recording upstream on
loopback. Every case is an AWS call no SDK sends (a form key given twice or spelled
another way, ``Action`` in the query and in the body, a JSON key repeated, two
credentials, a target header on a REST call...) whose harmless reading main judged
while the destructive one is what a server may execute. Each must be held or
denied, and never arrive upstream. The signatures are fake: the guard does not
verify them (the upstream would), it reads them.

Unit versions of every case, faster and more detailed, are in
tests/recognise/test_recognise_aws_ambiguity.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from e2e.guard_fixtures import Guard
from e2e.servers import EchoServer

from ._through import arrived, module_guard, through

pytestmark = pytest.mark.slow

FORM = ("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
JSON10 = ("Content-Type", "application/x-amz-json-1.0")
PRESIGNED_CFN = (
    "X-Amz-Credential=AKIDEXAMPLE%2F20261125%2Fus-east-1%2Fcloudformation%2Faws4_request"
)


def sigv4(service: str) -> tuple[str, str]:
    return (
        "Authorization",
        f"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261125/us-east-1/{service}/aws4_request, "
        "SignedHeaders=host;x-amz-date, Signature=00",
    )


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""


def delete_stack(fields: str) -> bytes:
    return f"Action=DeleteStack&Version=2010-05-15&{fields}".encode()


CASES = [
    # 1. form parameter pollution: main kept dev-x, the upstream may delete prod-calc
    Case(
        "member-suffix",
        "POST",
        "/",
        (sigv4("cloudformation"), FORM),
        delete_stack("StackName.member=dev-x&StackName=prod-calc"),
    ),
    Case(
        "index-suffix",
        "POST",
        "/",
        (sigv4("cloudformation"), FORM),
        delete_stack("StackName.1=dev-x&StackName=prod-calc"),
    ),
    Case(
        "member-prefix",
        "POST",
        "/",
        (sigv4("cloudformation"), FORM),
        delete_stack("member.StackName=dev-x&StackName=prod-calc"),
    ),
    Case(
        "repeated-key",
        "POST",
        "/",
        (sigv4("cloudformation"), FORM),
        delete_stack("StackName=dev-x&StackName=prod-calc"),
    ),
    # 2. Action in the query and in the body
    Case(
        "action-twice",
        "POST",
        "/?Action=DeleteStack&StackName=prod-calc",
        (sigv4("cloudformation"), FORM),
        b"Action=DescribeStacks&Version=2010-05-15",
    ),
    # posted to a queue's URL, another queue in the parameter
    Case(
        "queue-url-path",
        "POST",
        "/111122223333/prod-q",
        (sigv4("sqs"), FORM),
        b"Action=DeleteQueue&QueueUrl=https%3A%2F%2Fsqs.us-east-1.amazonaws.com%2F111122223333%2Fdev-q",
    ),
    # an Action no operation is called, read as a Describe by its first word
    Case(
        "semicolon-action",
        "POST",
        "/",
        (sigv4("cloudformation"), FORM),
        b"Action=DescribeStacks;Action=DeleteStack&StackName=prod-calc",
    ),
    # awsJson: a key given twice (a first-wins parser reads prod-t) or in another case
    Case(
        "json-repeated-key",
        "POST",
        "/",
        (sigv4("dynamodb"), JSON10, ("X-Amz-Target", "DynamoDB_20120810.DeleteTable")),
        b'{"TableName": "prod-t", "TableName": "dev-t"}',
    ),
    Case(
        "json-key-case",
        "POST",
        "/",
        (sigv4("dynamodb"), JSON10, ("X-Amz-Target", "DynamoDB_20120810.DeleteTable")),
        b'{"tablename": "prod-t", "TableName": "dev-t"}',
    ),
    Case(
        "two-targets",
        "POST",
        "/",
        (
            sigv4("dynamodb"),
            JSON10,
            ("X-Amz-Target", "DynamoDB_20120810.DescribeTable"),
            ("X-Amz-Target", "DynamoDB_20120810.DeleteTable"),
        ),
        b'{"TableName": "prod-t"}',
    ),
    # a body in an encoding the guard cannot undo, read raw by a lenient server
    Case(
        "unknown-content-encoding",
        "POST",
        "/",
        (
            sigv4("secretsmanager"),
            ("Content-Type", "application/x-amz-json-1.1"),
            ("Content-Encoding", "compress"),
            ("X-Amz-Target", "secretsmanager.DeleteSecret"),
        ),
        b'{"SecretId": "prod-db", "ForceDeleteWithoutRecovery": true}',
    ),
    Case(
        "folded-target-header",
        "POST",
        "/",
        (
            sigv4("dynamodb"),
            JSON10,
            ("X-Amz-Target", "DynamoDB_20120810.DeleteTable, DynamoDB_20120810.DescribeTable"),
        ),
        b'{"TableName": "prod-t"}',
    ),
    # REST: a target header, a member bound to the URI also in the body, a query member
    # and a header member given twice, a method override
    Case(
        "target-on-rest",
        "DELETE",
        "/prod-bucket",
        (sigv4("s3"), ("X-Amz-Target", "DynamoDB_20120810.DescribeTable")),
    ),
    Case(
        "uri-member-in-body",
        "POST",
        "/clusters/web/node-groups/prod-ng/update-config",
        (sigv4("eks"), ("Content-Type", "application/json")),
        b'{"nodegroupName": "dev-ng", "scalingConfig": {"desiredSize": 0}}',
    ),
    Case("query-member-twice", "DELETE", "/jobs/prod-job?force=false&force=true", (sigv4("iot"),)),
    Case(
        "header-member-twice",
        "DELETE",
        "/prod-bucket/report.csv",
        (
            sigv4("s3"),
            ("x-amz-bypass-governance-retention", "false"),
            ("x-amz-bypass-governance-retention", "true"),
        ),
    ),
    Case(
        "method-override",
        "GET",
        "/prod-bucket",
        (sigv4("s3"), ("X-HTTP-Method-Override", "DELETE")),
    ),
    # S3 routes by the Host header: /dev-x is an object of prod-bucket, force-deleted
    Case(
        "host-header-bucket",
        "DELETE",
        "/dev-x",
        (
            sigv4("s3"),
            ("Host", "prod-bucket.s3.amazonaws.com"),
            ("x-amz-bypass-governance-retention", "true"),
        ),
    ),
    # two credentials: header auth and a presigned query, two Authorization headers
    Case(
        "header-and-query-credential",
        "GET",
        f"/prod-bucket?Action=DeleteStack&StackName=prod-calc&{PRESIGNED_CFN}",
        (sigv4("s3"),),
    ),
    Case(
        "two-authorization-headers",
        "GET",
        "/prod-bucket?Action=DeleteStack&StackName=prod-calc",
        (sigv4("s3"), sigv4("cloudformation")),
    ),
]


@pytest.fixture(scope="module")
def upstream() -> Iterator[EchoServer]:
    with EchoServer() as server:
        yield server


@pytest.fixture(scope="module")
def guard(tmp_path_factory: pytest.TempPathFactory, upstream: EchoServer) -> Iterator[Guard]:
    yield from module_guard(tmp_path_factory.mktemp("aws-guard"), hold_window_seconds=0.3)


def test_the_harness_sees_what_arrives(guard: Guard, upstream: EchoServer) -> None:
    """The same client, an honest read: forwarded, and seen upstream."""
    answer = through(
        guard,
        "POST",
        f"{upstream.url}/",
        (sigv4("cloudformation"), FORM),
        b"Action=DescribeStacks&Version=2010-05-15&StackName=prod-calc",
        case="control",
    )
    assert (answer.status, answer.decision) == (200, "")
    assert arrived(upstream, "control")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_the_destructive_reading_is_decided(case: Case, guard: Guard, upstream: EchoServer) -> None:
    answer = through(
        guard, case.method, f"{upstream.url}{case.path}", case.headers, case.body, case=case.id
    )
    assert answer.decision in ("hold", "deny"), (answer.status, answer.body[:300])
    assert answer.status >= 400
    assert not arrived(upstream, case.id)
