"""AWS requests no SDK sends: every way a server may read them is a reading.

Each case is a request botocore's serialisers could not have produced (a member given
twice or spelled another way, two operations on the wire, two credentials); the
recogniser must return the destructive reading among the action and its readings,
mark the action ambiguous and name the ambiguity in a risk tag. The end-to-end
versions (through the real proxy, shipped policies) are in tests/adversarial/test_aws.py.
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from recognise_support import capture

from guardproxy.action import Action, Confidence, Provider, Verb
from guardproxy.recognise import RecogniseSettings, recognise
from guardproxy.recognise.aws import MAX_READINGS
from guardproxy.recognise.aws_index import AwsIndex
from guardproxy.recognise.request import HttpRequest

SCOPE = "AKIDEXAMPLE/20261125/{region}/{service}/aws4_request"
FORM = ("content-type", "application/x-www-form-urlencoded; charset=utf-8")
JSON10 = ("content-type", "application/x-amz-json-1.0")
JSON11 = ("content-type", "application/x-amz-json-1.1")


def authorization(service: str, region: str = "us-east-1") -> tuple[str, str]:
    credential = SCOPE.format(service=service, region=region)
    return (
        "authorization",
        f"AWS4-HMAC-SHA256 Credential={credential}, SignedHeaders=host, Signature=00",
    )


def signed(
    method: str,
    path: str,
    service: str | None,
    *,
    body: bytes = b"",
    headers: Iterable[tuple[str, str]] = (),
    host: str = "127.0.0.1",
    port: int = 4566,
) -> HttpRequest:
    """A request signed (fake SigV4) for ``service``, as the proxy sees it."""
    pairs = [authorization(service)] if service else []
    pairs += [(k.lower(), v) for k, v in headers]
    return HttpRequest(method, "https", host, port, path, tuple(pairs), body, f"{host}:{port}")


def read(request: HttpRequest, aws_index: AwsIndex) -> Action:
    return recognise(request, RecogniseSettings(), aws_index=aws_index)


def readings(action: Action) -> list[tuple[str, str, str, Verb]]:
    """(service, operation, target, verb) of the action and each of its readings."""
    return [
        (a.service, a.operation, a.resource.name or a.resource.id, a.verb)
        for a in action.all_readings()
    ]


def assert_ambiguous(action: Action, tag: str) -> None:
    assert action.confidence is Confidence.AMBIGUOUS
    assert tag in action.risk_tags
    assert all(tag in r.risk_tags for r in action.readings)


# --------------------------------------------------------------------------- awsQuery


@pytest.mark.parametrize(
    "polluted",
    [
        "StackName.member=dev-x&StackName=prod-calc",
        "StackName.1=dev-x&StackName=prod-calc",
        "member.StackName=dev-x&StackName=prod-calc",
        "StackName=dev-x&StackName=prod-calc",
        "StackName=prod-calc&StackName=dev-x",
        "stackname=dev-x&StackName=prod-calc",
        "StackName.member.1=prod-calc&StackName=dev-x",
    ],
)
def test_form_parameter_pollution_is_read_both_ways(polluted: str, aws_index: AwsIndex) -> None:
    body = f"Action=DeleteStack&Version=2010-05-15&{polluted}".encode()
    action = read(signed("POST", "/", "cloudformation", body=body, headers=[FORM]), aws_index)
    found = readings(action)
    assert ("cloudformation", "DeleteStack", "prod-calc", Verb.DESTROY) in found
    assert ("cloudformation", "DeleteStack", "dev-x", Verb.DESTROY) in found
    assert action.resource.name == "prod-calc"  # the most dangerous reading first
    assert action.confidence is Confidence.AMBIGUOUS
    assert {"ambiguous:duplicate-parameter", "ambiguous:parameter-alias"} & set(action.risk_tags)


def test_a_form_botocore_wrote_is_read_exactly(aws_index: AwsIndex) -> None:
    request = capture("cloudformation").call(
        "DeleteStack", {"StackName": "prod-calc", "RetainResources": ["a", "b"]}
    )
    assert b"RetainResources.member.2=b" in request.body
    action = read(request, aws_index)
    assert readings(action) == [("cloudformation", "DeleteStack", "prod-calc", Verb.DESTROY)]
    assert action.confidence is Confidence.EXACT
    assert not [t for t in action.risk_tags if t.startswith("ambiguous:")]


@pytest.mark.parametrize(
    ("query", "body"),
    [
        ("Action=DeleteStack&StackName=prod-calc", "Action=DescribeStacks&Version=2010-05-15"),
        ("Action=DescribeStacks", "Action=DeleteStack&Version=2010-05-15&StackName=prod-calc"),
    ],
)
def test_action_in_the_query_and_in_the_body(query: str, body: str, aws_index: AwsIndex) -> None:
    request = signed("POST", f"/?{query}", "cloudformation", body=body.encode(), headers=[FORM])
    action = read(request, aws_index)
    found = readings(action)
    assert found[0] == ("cloudformation", "DeleteStack", "prod-calc", Verb.DESTROY)
    assert ("cloudformation", "DescribeStacks", "prod-calc", Verb.READ) in found
    assert_ambiguous(action, "ambiguous:operation")


def test_an_action_spelled_otherwise_is_an_operation_too(aws_index: AwsIndex) -> None:
    body = b"Action=DescribeStacks&action=DeleteStack&StackName=prod-calc"
    action = read(signed("POST", "/", "cloudformation", body=body, headers=[FORM]), aws_index)
    assert readings(action)[0] == ("cloudformation", "DeleteStack", "prod-calc", Verb.DESTROY)
    assert_ambiguous(action, "ambiguous:parameter-alias")


@pytest.mark.parametrize(
    "action", ["DescribeStacks;Action=DeleteStack", "DescribeStacks%3BAction%3DDeleteStack"]
)
def test_an_action_that_is_no_operation_name_is_unknown(action: str, aws_index: AwsIndex) -> None:
    """Read by its first word it is a Describe; a server that also splits fields on
    ``;`` runs DeleteStack."""
    body = f"Action={action}&StackName=prod-calc".encode()
    action_read = read(signed("POST", "/", "cloudformation", body=body, headers=[FORM]), aws_index)
    assert (action_read.verb, action_read.confidence) == (Verb.UNKNOWN, Confidence.UNKNOWN)


def test_a_form_body_without_a_form_type_is_still_read(aws_index: AwsIndex) -> None:
    body = b"StackName=prod-calc&Action=DeleteStack"
    request = signed("POST", "/", "cloudformation", body=body, headers=[("content-type", "x/y")])
    assert readings(read(request, aws_index)) == [
        ("cloudformation", "DeleteStack", "prod-calc", Verb.DESTROY)
    ]


@pytest.mark.parametrize(
    "versions", ["Version=2099-01-01", "Version=2010-05-15&Version=2011-01-01"]
)
def test_a_version_the_model_does_not_have_is_ambiguous(versions: str, aws_index: AwsIndex) -> None:
    body = f"Action=DeleteStack&{versions}&StackName=prod-calc".encode()
    action = read(signed("POST", "/", "cloudformation", body=body, headers=[FORM]), aws_index)
    assert readings(action)[0] == ("cloudformation", "DeleteStack", "prod-calc", Verb.DESTROY)
    assert_ambiguous(action, "ambiguous:version")


@pytest.mark.parametrize(
    ("ids", "expected"),
    [
        ("InstanceId.1=i-dev&InstanceId.member.1=i-prod", {"i-dev", "i-prod"}),
        ("InstanceId.1=i-dev&InstanceId.1=i-prod", {"i-dev", "i-prod"}),
        ("InstanceId.1=i-dev&instanceid.1=i-prod", {"i-dev", "i-prod"}),
    ],
)
def test_ec2_list_pollution(ids: str, expected: set[str], aws_index: AwsIndex) -> None:
    body = f"Action=TerminateInstances&Version=2016-11-15&{ids}".encode()
    action = read(signed("POST", "/", "ec2", body=body, headers=[FORM]), aws_index)
    assert {target for _s, _o, target, _v in readings(action)} == expected
    assert action.confidence is Confidence.AMBIGUOUS


def test_an_ec2_list_with_a_gap_is_read_whole(aws_index: AwsIndex) -> None:
    body = b"Action=TerminateInstances&Version=2016-11-15&InstanceId.1=i-1&InstanceId.3=i-2"
    action = read(signed("POST", "/", "ec2", body=body, headers=[FORM]), aws_index)
    assert any("bulk" in a.risk_tags for a in action.all_readings())
    assert_ambiguous(action, "ambiguous:parameter-alias")


def test_a_queue_url_path_naming_another_queue(aws_index: AwsIndex) -> None:
    """Posted to a queue's URL with another queue in QueueUrl: which one a server
    deletes is undocumented (moto takes the parameter, the legacy API the path)."""
    queue = "https://sqs.us-east-1.amazonaws.com/111122223333/dev-q"
    request = signed(
        "POST",
        "/111122223333/prod-q",
        "sqs",
        body=f"Action=DeleteQueue&QueueUrl={queue}".encode(),
        headers=[FORM],
    )
    action = read(request, aws_index)
    assert {target for _s, _o, target, _v in readings(action)} == {"prod-q", "dev-q"}
    assert action.resource.name == "prod-q"
    assert_ambiguous(action, "ambiguous:parameter-alias")
    same = signed("POST", "/111122223333/prod-q", "sqs", body=b"Action=DeleteQueue", headers=[FORM])
    assert readings(read(same, aws_index)) == [("sqs", "DeleteQueue", "prod-q", Verb.DESTROY)]


def test_a_flag_given_both_ways_keeps_its_risk(aws_index: AwsIndex) -> None:
    body = (
        b"Action=DeleteDBInstance&Version=2014-10-31&DBInstanceIdentifier=orders"
        b"&SkipFinalSnapshot=false&SkipFinalSnapshot=true"
    )
    action = read(signed("POST", "/", "rds", body=body, headers=[FORM]), aws_index)
    assert "skip-final-snapshot" in action.risk_tags  # the reading with the tag first
    assert any("skip-final-snapshot" not in r.risk_tags for r in action.readings)
    assert_ambiguous(action, "ambiguous:duplicate-parameter")


def test_a_dry_run_given_both_ways_is_also_a_real_run(aws_index: AwsIndex) -> None:
    body = b"Action=TerminateInstances&Version=2016-11-15&InstanceId.1=i-1&DryRun=true&DryRun=false"
    action = read(signed("POST", "/", "ec2", body=body, headers=[FORM]), aws_index)
    assert not action.dry_run
    assert any(r.dry_run for r in action.readings)


def test_too_many_readings_add_an_unknown_one(aws_index: AwsIndex) -> None:
    members = ["StackName", "RoleARN", "ClientRequestToken", "DeletionMode", "RetainResources"]
    fields = "&".join(f"{m}=a&{m}=b&{m}=c" for m in members)
    body = f"Action=DeleteStack&Version=2010-05-15&{fields}".encode()
    action = read(signed("POST", "/", "cloudformation", body=body, headers=[FORM]), aws_index)
    assert len(action.all_readings()) <= MAX_READINGS
    assert any(r.verb is Verb.UNKNOWN for r in action.all_readings())
    assert "ambiguous:too-many-readings" in action.risk_tags


# --------------------------------------------------------------------------- awsJson / CBOR


def dynamodb(body: bytes, *targets: str) -> HttpRequest:
    headers = [JSON10, *(("x-amz-target", f"DynamoDB_20120810.{t}") for t in targets)]
    return signed("POST", "/", "dynamodb", body=body, headers=headers)


@pytest.mark.parametrize(
    "body",
    [
        b'{"TableName": "prod-t", "TableName": "dev-t"}',
        b'{"TableName": "dev-t", "TableName": "prod-t"}',
        b'{"tablename": "prod-t", "TableName": "dev-t"}',
        b'{"TableName": "dev-t", "TABLENAME": "prod-t"}',
    ],
)
def test_json_keys_given_twice_or_in_another_case(body: bytes, aws_index: AwsIndex) -> None:
    action = read(dynamodb(body, "DeleteTable"), aws_index)
    assert {target for _s, _o, target, _v in readings(action)} == {"prod-t", "dev-t"}
    assert action.resource.name == "prod-t"
    assert action.confidence is Confidence.AMBIGUOUS


def test_a_nested_json_key_given_twice(aws_index: AwsIndex) -> None:
    force = b'"ForceDeleteWithoutRecovery"'
    body = b'{"SecretId": "db", ' + force + b": false, " + force + b": true}"
    target = ("x-amz-target", "secretsmanager.DeleteSecret")
    action = read(
        signed("POST", "/", "secretsmanager", body=body, headers=[JSON11, target]), aws_index
    )
    assert "force" in action.risk_tags
    assert_ambiguous(action, "ambiguous:duplicate-parameter")


def test_two_target_headers_are_two_operations(aws_index: AwsIndex) -> None:
    action = read(dynamodb(b'{"TableName": "prod-t"}', "DescribeTable", "DeleteTable"), aws_index)
    assert readings(action) == [
        ("dynamodb", "DeleteTable", "prod-t", Verb.DESTROY),
        ("dynamodb", "DescribeTable", "prod-t", Verb.READ),
    ]
    assert_ambiguous(action, "ambiguous:operation")


@pytest.mark.parametrize(
    "targets",
    [
        "DynamoDB_20120810.DeleteTable, DynamoDB_20120810.DescribeTable",
        "DynamoDB_20120810.DescribeTable,DynamoDB_20120810.DeleteTable",
    ],
)
def test_a_folded_target_header_names_each_operation(targets: str, aws_index: AwsIndex) -> None:
    headers = [JSON10, ("x-amz-target", targets)]
    request = signed("POST", "/", "dynamodb", body=b'{"TableName": "prod-t"}', headers=headers)
    assert readings(read(request, aws_index))[0] == (
        "dynamodb",
        "DeleteTable",
        "prod-t",
        Verb.DESTROY,
    )


def test_a_target_header_and_a_form_action(aws_index: AwsIndex) -> None:
    queue = "https://sqs.us-east-1.amazonaws.com/111122223333/prod-q"
    body = f"Action=DeleteQueue&QueueUrl={queue}".encode()
    headers = [FORM, ("x-amz-target", "AmazonSQS.GetQueueUrl")]
    action = read(signed("POST", "/", "sqs", body=body, headers=headers), aws_index)
    assert readings(action)[0] == ("sqs", "DeleteQueue", "prod-q", Verb.DESTROY)
    assert ("sqs", "GetQueueUrl") in [(s, o) for s, o, _t, _v in readings(action)]


def test_a_body_that_is_not_json_is_an_unknown_reading(aws_index: AwsIndex) -> None:
    action = read(dynamodb(b'{"TableName": "prod-t",', "DeleteTable"), aws_index)
    assert any(r.verb is Verb.UNKNOWN for r in action.all_readings())
    assert "ambiguous:unparsed-body" in action.risk_tags


@pytest.mark.parametrize("encoding", ["compress", "br", "x-custom", "gzip, x-custom"])
def test_a_body_in_an_encoding_the_guard_cannot_undo(encoding: str, aws_index: AwsIndex) -> None:
    """A server that ignores the header reads the force flag the guard could not."""
    body = b'{"SecretId": "db", "ForceDeleteWithoutRecovery": true}'
    headers = [
        JSON11,
        ("x-amz-target", "secretsmanager.DeleteSecret"),
        ("content-encoding", encoding),
    ]
    action = read(signed("POST", "/", "secretsmanager", body=body, headers=headers), aws_index)
    assert any(r.verb is Verb.UNKNOWN for r in action.all_readings())
    assert "ambiguous:unparsed-body" in action.risk_tags


def cbor_text(text: str) -> bytes:
    data = text.encode()
    assert len(data) < 24
    return bytes([0x60 | len(data)]) + data


def test_cbor_map_keys_given_twice(aws_index: AwsIndex) -> None:
    names = (cbor_text("AlarmNames") + b"\x81" + cbor_text("dev-alarm")) + (
        cbor_text("AlarmNames") + b"\x81" + cbor_text("prod-alarm")
    )
    request = signed(
        "POST",
        "/service/GraniteServiceVersion20100801/operation/DeleteAlarms",
        "monitoring",
        body=b"\xa2" + names,
        headers=[("content-type", "application/cbor"), ("smithy-protocol", "rpc-v2-cbor")],
    )
    action = read(request, aws_index)
    assert {target for _s, _o, target, _v in readings(action)} == {"dev-alarm", "prod-alarm"}
    assert_ambiguous(action, "ambiguous:duplicate-parameter")


# --------------------------------------------------------------------------- REST


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/clusters/dev-c", b'{"name": "prod-c"}'),
        ("/clusters/dev-c?name=prod-c", b""),
        ("/clusters/dev-c?Name=prod-c", b""),
    ],
)
def test_a_uri_member_also_in_the_body_or_query(
    path: str, body: bytes, aws_index: AwsIndex
) -> None:
    headers = [("content-type", "application/json")]
    action = read(signed("DELETE", path, "eks", body=body, headers=headers), aws_index)
    assert {target for _s, _o, target, _v in readings(action)} == {"dev-c", "prod-c"}
    assert action.resource.name == "prod-c"
    assert_ambiguous(action, "ambiguous:parameter-alias")


def test_a_body_member_does_not_override_the_uri(aws_index: AwsIndex) -> None:
    body = b'{"nodegroupName": "dev-ng", "scalingConfig": {"desiredSize": 0}}'
    request = signed(
        "POST",
        "/clusters/web/node-groups/prod-ng/update-config",
        "eks",
        body=body,
        headers=[("content-type", "application/json")],
    )
    action = read(request, aws_index)
    assert action.operation == "UpdateNodegroupConfig"
    assert {target for _s, _o, target, _v in readings(action)} == {"dev-ng", "prod-ng"}
    assert action.resource.name == "prod-ng"
    assert "scale-to-zero" in action.risk_tags


def test_a_query_member_given_twice(aws_index: AwsIndex) -> None:
    action = read(signed("DELETE", "/jobs/prod-job?force=false&force=true", "iot"), aws_index)
    assert action.operation == "DeleteJob"
    assert "force" in action.risk_tags
    assert any("force" not in r.risk_tags for r in action.readings)
    assert_ambiguous(action, "ambiguous:duplicate-parameter")


def test_a_header_member_given_twice(aws_index: AwsIndex) -> None:
    headers = [
        ("x-amz-bypass-governance-retention", "false"),
        ("x-amz-bypass-governance-retention", "true"),
    ]
    action = read(signed("DELETE", "/prod-bucket/report.csv", "s3", headers=headers), aws_index)
    assert action.operation == "DeleteObject"
    assert "force" in action.risk_tags
    assert_ambiguous(action, "ambiguous:duplicate-parameter")


def test_a_folded_header_member(aws_index: AwsIndex) -> None:
    headers = [("x-amz-bypass-governance-retention", "false, true")]
    action = read(signed("DELETE", "/prod-bucket/report.csv", "s3", headers=headers), aws_index)
    assert "force" in action.risk_tags
    assert action.confidence is Confidence.AMBIGUOUS
    plain = [("if-match", "a, b"), ("x-amz-bypass-governance-retention", "true")]
    action = read(signed("DELETE", "/prod-bucket/report.csv", "s3", headers=plain), aws_index)
    assert action.confidence is Confidence.EXACT  # items that change nothing


def test_a_target_header_on_a_rest_service(aws_index: AwsIndex) -> None:
    headers = [("x-amz-target", "DynamoDB_20120810.DescribeTable")]
    action = read(signed("DELETE", "/prod-bucket", "s3", headers=headers), aws_index)
    assert readings(action)[0] == ("s3", "DeleteBucket", "prod-bucket", Verb.DESTROY)
    assert ("dynamodb", "DescribeTable") in [(s, o) for s, o, _t, _v in readings(action)]
    assert_ambiguous(action, "ambiguous:operation")


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("X-HTTP-Method-Override", "DELETE"),
        ("X-HTTP-Method", "DELETE"),
        ("X-Method-Override", "DELETE"),
        ("X-HTTP-Method-Override", "GET, DELETE"),
    ],
)
def test_a_method_override_is_a_reading(header: str, value: str, aws_index: AwsIndex) -> None:
    action = read(signed("GET", "/prod-bucket", "s3", headers=[(header, value)]), aws_index)
    found = readings(action)
    assert found[0] == ("s3", "DeleteBucket", "prod-bucket", Verb.DESTROY)
    assert ("s3", "ListObjects", "prod-bucket", Verb.READ) in found
    assert_ambiguous(action, "ambiguous:method-override")


def test_an_xml_element_given_twice_keeps_its_risk(aws_index: AwsIndex) -> None:
    body = (
        b"<VersioningConfiguration><Status>Enabled</Status>"
        b"<Status>Suspended</Status></VersioningConfiguration>"
    )
    action = read(signed("PUT", "/prod-bucket?versioning", "s3", body=body), aws_index)
    assert action.operation == "PutBucketVersioning"
    assert "versioning-suspended" in action.risk_tags


# --------------------------------------------------------------------------- credentials


def test_header_and_presigned_query_credentials_for_two_services(aws_index: AwsIndex) -> None:
    query = (
        "Action=DeleteStack&StackName=prod-calc&X-Amz-Credential="
        "AKIDEXAMPLE%2F20261125%2Fus-east-1%2Fcloudformation%2Faws4_request"
    )
    action = read(signed("GET", f"/prod-bucket?{query}", "s3"), aws_index)
    found = readings(action)
    assert found[0] == ("cloudformation", "DeleteStack", "prod-calc", Verb.DESTROY)
    assert ("s3", "ListObjects", "prod-bucket", Verb.READ) in found
    assert_ambiguous(action, "ambiguous:credential")


def test_two_authorization_headers(aws_index: AwsIndex) -> None:
    request = signed(
        "GET",
        "/prod-bucket?Action=DeleteStack&StackName=prod-calc",
        "s3",
        headers=[authorization("cloudformation", "eu-west-1")],
    )
    action = read(request, aws_index)
    assert readings(action)[0] == ("cloudformation", "DeleteStack", "prod-calc", Verb.DESTROY)
    assert action.scope.region == "eu-west-1"
    assert_ambiguous(action, "ambiguous:credential")


def test_two_credentials_in_one_header(aws_index: AwsIndex) -> None:
    s3, cfn = (SCOPE.format(service=s, region="us-east-1") for s in ("s3", "cloudformation"))
    header = f"AWS4-HMAC-SHA256 Credential={s3}, Credential={cfn}, SignedHeaders=host, Signature=0"
    request = signed(
        "GET",
        "/prod-bucket?Action=DeleteStack&StackName=prod-calc",
        None,
        headers=[("authorization", header)],
    )
    action = read(request, aws_index)
    assert readings(action)[0] == ("cloudformation", "DeleteStack", "prod-calc", Verb.DESTROY)


def test_a_signing_name_the_host_does_not_serve(aws_index: AwsIndex) -> None:
    request = signed(
        "DELETE", "/prod-bucket", "cloudformation", host="s3.us-east-1.amazonaws.com", port=443
    )
    action = read(request, aws_index)
    assert readings(action)[0] == ("s3", "DeleteBucket", "prod-bucket", Verb.DESTROY)
    assert_ambiguous(action, "ambiguous:credential")


def test_a_host_header_naming_another_bucket(aws_index: AwsIndex) -> None:
    """S3 routes by the Host header: connected to s3.amazonaws.com, ``Host:
    prod-bucket.s3.amazonaws.com`` makes ``/dev-x`` an object of prod-bucket."""
    request = HttpRequest(
        "DELETE",
        "https",
        "s3.amazonaws.com",
        443,
        "/dev-x",
        (authorization("s3"),),
        b"",
        "prod-bucket.s3.amazonaws.com",
    )
    action = read(request, aws_index)
    found = readings(action)
    assert ("s3", "DeleteObject", "prod-bucket/dev-x", Verb.DELETE) in found
    assert ("s3", "DeleteBucket", "dev-x", Verb.DESTROY) in found
    assert_ambiguous(action, "ambiguous:host")
    same = HttpRequest(
        "DELETE", "https", "s3.amazonaws.com", 443, "/dev-x", (authorization("s3"),), b"",
        "S3.amazonaws.com.:443",
    )  # fmt: skip
    assert readings(read(same, aws_index)) == [("s3", "DeleteBucket", "dev-x", Verb.DESTROY)]


def test_unsigned_rpc_calls_name_their_service(aws_index: AwsIndex) -> None:
    form = signed("POST", "/", None, body=b"Action=DeleteStack&StackName=prod-calc", headers=[FORM])
    target = signed(
        "POST",
        "/",
        None,
        body=b'{"TableName": "prod-t"}',
        headers=[JSON10, ("x-amz-target", "DynamoDB_20120810.DeleteTable")],
    )
    for request, expected in (
        (form, ("cloudformation", "DeleteStack", "prod-calc", Verb.DESTROY)),
        (target, ("dynamodb", "DeleteTable", "prod-t", Verb.DESTROY)),
    ):
        action = read(request, aws_index)
        assert action.provider is Provider.AWS
        assert readings(action)[0] == expected
