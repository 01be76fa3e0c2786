"""The small parts: names, verbs, wire parsing, CBOR, protobuf, and the index cache."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest
from recognise_support import http, k8s_protobuf, pb_bytes

from guardproxy.action import Verb
from guardproxy.recognise import cbor
from guardproxy.recognise.index_cache import default_cache_dir
from guardproxy.recognise.providers.aws.index import (
    AwsIndex,
    build_index,
    cache_path,
    path_regex,
    read_index,
    save_index,
)
from guardproxy.recognise.providers.aws.names import (
    arn_resource_name,
    member_stem,
    singular,
    split_operation,
)
from guardproxy.recognise.providers.aws.verbs import classify
from guardproxy.recognise.providers.aws.wire import (
    Credential,
    credential_scope,
    form_tree,
    parse_host,
    parse_xml,
)
from guardproxy.recognise.providers.k8s.body import ProtobufError, body_facts, fields
from guardproxy.recognise.request import HttpRequest

# --------------------------------------------------------------------------- names and verbs


@pytest.mark.parametrize(
    ("operation", "expected"),
    [
        ("DeleteDBInstance", ("Delete", ("DB", "Instance"), False)),
        ("TerminateInstances", ("Terminate", ("Instance",), False)),
        ("ListObjectsV2", ("List", ("Object",), False)),
        ("BatchGetItem", ("Get", ("Item",), True)),
        ("RemoveAccountFromOrganization", ("Remove", ("Account",), False)),
        ("AdminDeleteUser", ("Delete", ("User",), False)),
        ("Invoke", ("Invoke", (), False)),
    ],
)
def test_split_operation(operation: str, expected: tuple[str, tuple[str, ...], bool]) -> None:
    assert split_operation(operation) == expected


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("Policies", "Policy"),
        ("Addresses", "Address"),
        ("Aliases", "Alias"),
        ("Branches", "Branch"),
        ("Caches", "Cache"),
        ("Status", "Status"),
        ("Databases", "Database"),
        ("Settings", "Settings"),
    ],
)
def test_singular(word: str, expected: str) -> None:
    assert singular(word) == expected


def test_member_stem() -> None:
    assert member_stem("DBInstanceIdentifier") == (("DB", "Instance"), "name", False)
    assert member_stem("InstanceIds") == (("Instance",), "id", True)
    assert member_stem("name") == ((), "name", False)
    assert member_stem("Bucket") is None


@pytest.mark.parametrize(
    ("service", "resource", "name"),
    [
        ("cloudformation", "stack/prod-calc/0a1b", "prod-calc"),
        ("lambda", "function:api:live", "api"),
        ("s3", "my-bucket", "my-bucket"),
        ("iam", "role/service/deployer", "deployer"),
    ],
)
def test_arn_resource_name(service: str, resource: str, name: str) -> None:
    assert arn_resource_name(service, resource) == name


@pytest.mark.parametrize(
    ("service", "operation", "verb"),
    [
        ("cloudformation", "DeleteStack", Verb.DESTROY),
        ("cloudformation", "DeleteChangeSet", Verb.DELETE),
        ("ec2", "DeleteRouteTable", Verb.DELETE),
        ("ec2", "TerminateClientVpnConnections", Verb.DELETE),
        ("emr", "TerminateJobFlows", Verb.DESTROY),
        ("s3", "DeleteBucketPolicy", Verb.PERMISSION),
        ("logs", "PutRetentionPolicy", Verb.UPDATE),
        ("autoscaling", "PutScalingPolicy", Verb.UPDATE),
        ("s3", "PutBucketAcl", Verb.PERMISSION),
        ("iam", "TagRole", Verb.PERMISSION),
        ("iam", "ListRoles", Verb.READ),
        ("kms", "RetireGrant", Verb.PERMISSION),
        ("acm-pca", "RevokeCertificate", Verb.DELETE),
        ("lakeformation", "GrantPermissions", Verb.PERMISSION),
        ("stepfunctions", "StartExecution", Verb.EXECUTE),
        ("athena", "StartQueryExecution", Verb.EXECUTE),
        ("organizations", "LeaveOrganization", Verb.DELETE),
        ("elasticbeanstalk", "RebuildEnvironment", Verb.DESTROY),
        ("cognito-idp", "AdminDeleteUser", Verb.DELETE),
        ("service", "FrobnicateCluster", Verb.UNKNOWN),
    ],
)
def test_classify(service: str, operation: str, verb: Verb) -> None:
    assert classify(service, operation) is verb


def test_put_creates_what_the_service_deletes() -> None:
    assert classify("s3", "PutObject", frozenset({"object", "bucket"})) is Verb.CREATE
    assert classify("s3", "PutBucketTagging", frozenset({"object", "bucket"})) is Verb.UPDATE


# --------------------------------------------------------------------------- wire


def test_credential_scope_forms() -> None:
    v4 = http(
        "GET",
        "/",
        headers={
            "Authorization": "AWS4-HMAC-SHA256 Credential=AKID/20261125/eu-west-1/s3/aws4_request, "
            "SignedHeaders=host, Signature=0"
        },
    )
    assert credential_scope(v4) == Credential(region="eu-west-1", service="s3")
    v4a = http(
        "GET",
        "/",
        headers={
            "Authorization": "AWS4-ECDSA-P256-SHA256 Credential=AKID/20261125/s3/aws4_request, "
            "SignedHeaders=host, Signature=0",
            "X-Amz-Region-Set": "us-west-2,us-east-1",
        },
    )
    scope = credential_scope(v4a)
    assert scope is not None and (scope.region, scope.service) == ("us-west-2", "s3")
    presigned = http(
        "GET",
        "/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKID%2F20261125%2Fap-south-1%2Fs3%2Faws4_request",
    )
    scope = credential_scope(presigned)
    assert scope is not None and (scope.region, scope.service) == ("ap-south-1", "s3")
    assert credential_scope(http("GET", "/", headers={"Authorization": "AWS AKID:sig"})) is None


@pytest.mark.parametrize(
    ("host", "prefix", "region", "bucket", "account"),
    [
        ("cloudformation.us-east-1.amazonaws.com", "cloudformation", "us-east-1", "", ""),
        ("iam.amazonaws.com", "iam", "", "", ""),
        ("ec2-fips.us-gov-west-1.amazonaws.com", "ec2", "us-gov-west-1", "", ""),
        ("runtime.sagemaker.eu-west-1.amazonaws.com", "runtime.sagemaker", "eu-west-1", "", ""),
        ("my.dotted.bucket.s3.eu-west-1.amazonaws.com", "s3", "eu-west-1", "my.dotted.bucket", ""),
        ("logs.s3-us-west-2.amazonaws.com", "s3", "us-west-2", "logs", ""),
        ("b.s3.dualstack.ap-south-1.amazonaws.com", "s3", "ap-south-1", "b", ""),
        ("s3.amazonaws.com", "s3", "", "", ""),
        (
            "ap-111122223333.s3-accesspoint.us-east-1.amazonaws.com",
            "s3",
            "us-east-1",
            "ap",
            "111122223333",
        ),
        (
            "111122223333.s3-control.us-east-1.amazonaws.com",
            "s3-control",
            "us-east-1",
            "",
            "111122223333",
        ),
        (
            "b--use1-az4--x-s3.s3express-use1-az4.us-east-1.amazonaws.com",
            "s3",
            "us-east-1",
            "b--use1-az4--x-s3",
            "",
        ),
        ("billing.us-east-1.api.aws", "billing", "us-east-1", "", ""),
        ("s3-outposts.us-east-1.amazonaws.com", "s3-outposts", "us-east-1", "", ""),
        ("logs.s3-outposts.us-east-1.amazonaws.com", "s3", "us-east-1", "logs", ""),
        ("example.com", "", "", "", ""),
    ],
)
def test_parse_host(
    aws_index: AwsIndex, host: str, prefix: str, region: str, bucket: str, account: str
) -> None:
    info = parse_host(host, aws_index.prefixes)
    assert (info.prefixes[0] if info.prefixes else "", info.region, info.bucket, info.account) == (
        prefix,
        region,
        bucket,
        account,
    )


def test_form_tree() -> None:
    pairs = [
        ("Action", "X"),
        ("InstanceId.2", "b"),
        ("InstanceId.1", "a"),
        ("Tags.member.1.Key", "k"),
        ("Tags.member.1.Value", "v"),
        ("Attributes.entry.1.key", "k2"),
        ("Scalar", "s"),
        ("Scalar.Nested", "ignored"),
    ]
    assert form_tree(pairs) == {
        "Action": "X",
        "InstanceId": ["a", "b"],
        "Tags": [{"Key": "k", "Value": "v"}],
        "Attributes": [{"key": "k2"}],
        "Scalar": "s",
    }


def test_xml_without_doctype_only() -> None:
    parsed = parse_xml(
        b'<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Object><Key>a</Key></Object><Object><Key>b</Key></Object></Delete>'
    )
    assert parsed == ("Delete", {"Object": [{"Key": "a"}, {"Key": "b"}]})
    bomb = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>'
    assert parse_xml(bomb) is None
    assert parse_xml(b"<unclosed>") is None


def test_path_regex() -> None:
    assert re.match(path_regex("/{Bucket}/{Key+}"), "/b/a/b/c")
    assert re.match(
        path_regex("/2013-04-01/hostedzone/{Id}/rrset/"), "/2013-04-01/hostedzone/Z1/rrset"
    )
    assert not re.match(path_regex("/{Bucket}"), "/b/k")


# --------------------------------------------------------------------------- CBOR


def test_cbor_values() -> None:
    data = (
        bytes([0xA6])  # map of 6
        + bytes([0x61])
        + b"a"
        + bytes([0x18, 0x64])  # "a": 100
        + bytes([0x61])
        + b"b"
        + bytes([0x38, 0x63])  # "b": -100
        + bytes([0x61])
        + b"c"
        + bytes([0x9F, 0xF5, 0xF4, 0xF6, 0xFF])  # "c": [_ true, false, null]
        + bytes([0x61])
        + b"d"
        + bytes([0xFB])
        + struct.pack(">d", 1.5)  # "d": 1.5
        + bytes([0x61])
        + b"e"
        + bytes([0x7F, 0x62])
        + b"ab"
        + bytes([0x61])
        + b"c"
        + bytes([0xFF])  # "e": "abc"
        + bytes([0x61])
        + b"f"
        + bytes([0xC1, 0x1A, 0, 0, 0, 1])  # "f": tag 1 -> 1
    )
    assert cbor.loads(data) == {
        "a": 100,
        "b": -100,
        "c": [True, False, None],
        "d": 1.5,
        "e": "abc",
        "f": 1,
    }
    assert cbor.loads(bytes([0xF9, 0x3C, 0x00])) == 1.0


@pytest.mark.parametrize(
    "data", [b"", bytes([0x62, 0x61]), bytes([0x1C]), bytes([0x81] * 100 + [0x01]), bytes([0xFF])]
)
def test_cbor_rejects(data: bytes) -> None:
    with pytest.raises(cbor.CborError):
        cbor.loads(data)


# --------------------------------------------------------------------------- protobuf


def test_protobuf_facts_and_garbage() -> None:
    facts = body_facts(
        k8s_protobuf("apps/v1", "Deployment", "web", "prod", replicas=0),
        "application/vnd.kubernetes.protobuf",
    )
    assert (facts.name, facts.namespace, facts.replicas) == ("web", "prod", 0)
    negative = body_facts(
        k8s_protobuf("apps/v1", "Scale", "web", replicas=-1), "application/vnd.kubernetes.protobuf"
    )
    assert negative.replicas == -1
    assert body_facts(b"k8s\x00\xff\xff", "application/vnd.kubernetes.protobuf").name == ""
    with pytest.raises(ProtobufError):
        list(fields(pb_bytes(1, b"abc")[:-1]))


# --------------------------------------------------------------------------- index cache


def test_index_round_trip(tmp_path: Path) -> None:
    index = build_index(services=["sqs", "s3", "s3control"])
    assert index.names == ["s3", "s3control", "sqs"]
    assert index.tables.by_signing["s3"] == ("s3", "s3control")
    assert "s3express" in index.tables.by_signing
    path = tmp_path / "cache" / "aws-index.pickle"
    save_index(index, path)
    loaded = read_index(path)
    assert loaded is not None
    model = loaded.model("sqs")
    assert model is not None and model.target_prefix == "AmazonSQS" and model.query_compatible
    assert "DeleteQueue" in model.ops
    assert loaded.model("nope") is None


def test_unreadable_cache_is_ignored(tmp_path: Path) -> None:
    garbage = tmp_path / "bad.pickle"
    garbage.write_bytes(b"not a pickle")
    assert read_index(garbage) is None
    assert read_index(tmp_path / "missing.pickle") is None


def test_cache_location(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("GUARDPROXY_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "guardproxy"
    monkeypatch.setenv("GUARDPROXY_CACHE_DIR", str(tmp_path / "explicit"))
    assert default_cache_dir() == tmp_path / "explicit"
    assert cache_path().parent == tmp_path / "explicit"
    assert "aws-index-" in cache_path().name


def test_the_request_target_is_split_as_a_path() -> None:
    request = HttpRequest("GET", "https", "k8s.internal", 6443, "//api/v1/x?watch=1#f", (), b"")
    assert request.path_only == "//api/v1/x"
    assert request.query == [("watch", "1")]
    assert HttpRequest("GET", "https", "h", 443, "//[", (), b"").path_only == "//["
