"""AWS: resources, risk tags, protocols and hosts, on requests boto3 really sends."""

from __future__ import annotations

import gzip
from typing import Any

import boto3
import pytest
from botocore.config import Config
from recognise_support import ACCOUNT, FAKE_KEY, FAKE_SECRET, capture, http

from guardproxy.action import Action, Confidence, Environment, Provider, Verb
from guardproxy.recognise import RecogniseSettings, recognise
from guardproxy.recognise.providers.aws.index import AwsIndex

UPSERT = {
    "Action": "UPSERT",
    "ResourceRecordSet": {
        "Name": "a.example.com",
        "Type": "A",
        "TTL": 60,
        "ResourceRecords": [{"Value": "192.0.2.1"}],
    },
}
SIGNED = (
    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261125/us-east-1/{}/aws4_request, "
    "SignedHeaders=host, Signature=00"
)


def run(
    aws_index: AwsIndex,
    service: str,
    operation: str,
    params: dict[str, Any],
    settings: RecogniseSettings | None = None,
    **options: Any,
) -> Action:
    request = capture(service, **options).call(operation, params)
    return recognise(request, settings or RecogniseSettings())


# --------------------------------------------------------------------------- resources


def test_delete_stack_is_a_destroy_of_a_named_stack(aws_index: AwsIndex) -> None:
    action = run(
        aws_index, "cloudformation", "DeleteStack", {"StackName": "prod-calc"}, endpoint_url=None
    )
    assert action.provider is Provider.AWS
    assert (action.service, action.operation, action.verb) == (
        "cloudformation",
        "DeleteStack",
        Verb.DESTROY,
    )
    assert action.resource.type == "aws:cloudformation:stack"
    assert action.resource.name == "prod-calc"
    assert action.resource.key == "aws::us-east-1:aws:cloudformation:stack/prod-calc"
    assert action.scope.region == "us-east-1"
    assert action.environment is Environment.PROD  # from the name
    assert action.confidence is Confidence.EXACT
    assert action.actor.tool == "boto3"
    assert action.request.host == "cloudformation.us-east-1.amazonaws.com"
    assert action.summary() == "aws cloudformation DeleteStack prod-calc"


def test_account_from_an_arn_selects_the_configured_environment(aws_index: AwsIndex) -> None:
    settings = RecogniseSettings(environments={f"aws:account:{ACCOUNT}": "dev"})
    arn = f"arn:aws:cloudformation:us-east-1:{ACCOUNT}:stack/prod-calc/0a1b2c3d"
    action = run(aws_index, "cloudformation", "DeleteStack", {"StackName": arn}, settings)
    assert action.scope.account == ACCOUNT
    assert action.resource.id == arn
    assert action.resource.name == "prod-calc"
    # the key has no account: CreateStack by name and DeleteStack by ARN key alike
    assert action.resource.key == "aws::us-east-1:aws:cloudformation:stack/prod-calc"
    assert action.environment is Environment.DEV  # configuration beats the name


@pytest.mark.parametrize(
    ("service", "operation", "params", "rtype", "name", "rid"),
    [
        (
            "rds",
            "DeleteDBInstance",
            {"DBInstanceIdentifier": "orders-db"},
            "aws:rds:db-instance",
            "orders-db",
            "",
        ),
        (
            "ec2",
            "TerminateInstances",
            {"InstanceIds": ["i-0abc"]},
            "aws:ec2:instance",
            "",
            "i-0abc",
        ),
        ("dynamodb", "DeleteTable", {"TableName": "orders"}, "aws:dynamodb:table", "orders", ""),
        (
            "sqs",
            "DeleteQueue",
            {"QueueUrl": f"https://sqs.us-east-1.amazonaws.com/{ACCOUNT}/orders"},
            "aws:sqs:queue",
            "orders",
            "",
        ),
        ("lambda", "DeleteFunction", {"FunctionName": "api"}, "aws:lambda:function", "api", ""),
        (
            "lambda",
            "Invoke",
            {"FunctionName": f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:api:live"},
            "aws:lambda:function",
            "api",
            f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:api:live",
        ),
        ("ecs", "DeleteCluster", {"cluster": "web"}, "aws:ecs:cluster", "web", ""),
        (
            "cloudtrail",
            "StopLogging",
            {"Name": "org-trail"},
            "aws:cloudtrail:trail",
            "org-trail",
            "",
        ),
        ("s3", "DeleteBucket", {"Bucket": "assets"}, "aws:s3:bucket", "assets", ""),
        (
            "s3",
            "DeleteObject",
            {"Bucket": "assets", "Key": "a/b.txt"},
            "aws:s3:object",
            "assets/a/b.txt",
            "",
        ),
        (
            "s3",
            "PutBucketVersioning",
            {"Bucket": "assets", "VersioningConfiguration": {"Status": "Enabled"}},
            "aws:s3:bucket",
            "assets",
            "",
        ),
        (
            "secretsmanager",
            "DeleteSecret",
            {"SecretId": "db/password"},
            "aws:secretsmanager:secret",
            "",
            "db/password",
        ),
        ("iam", "DeleteRole", {"RoleName": "deployer"}, "aws:iam:role", "deployer", ""),
        (
            "route53",
            "ChangeResourceRecordSets",
            {"HostedZoneId": "Z123", "ChangeBatch": {"Changes": [UPSERT]}},
            "aws:route53:hosted-zone",
            "",
            "Z123",
        ),
        (
            "ec2",
            "AuthorizeSecurityGroupIngress",
            {"GroupId": "sg-1"},
            "aws:ec2:security-group",
            "",
            "sg-1",
        ),
    ],
)
def test_resource_from_the_identifying_member(
    aws_index: AwsIndex,
    service: str,
    operation: str,
    params: dict[str, Any],
    rtype: str,
    name: str,
    rid: str,
) -> None:
    action = run(aws_index, service, operation, params)
    assert (action.resource.type, action.resource.name, action.resource.id) == (rtype, name, rid)


def test_queue_url_carries_the_account(aws_index: AwsIndex) -> None:
    url = f"https://sqs.us-east-1.amazonaws.com/{ACCOUNT}/orders"
    action = run(aws_index, "sqs", "DeleteQueue", {"QueueUrl": url})
    assert action.scope.account == ACCOUNT
    assert action.verb is Verb.DESTROY


def test_virtual_hosted_bucket_comes_from_the_host(aws_index: AwsIndex) -> None:
    action = run(
        aws_index,
        "s3",
        "DeleteObject",
        {"Bucket": "prod-assets", "Key": "logo.png"},
        endpoint_url=None,
        addressing_style="virtual",
    )
    assert action.request.host == "prod-assets.s3.amazonaws.com"
    assert action.operation == "DeleteObject"
    assert action.resource.name == "prod-assets/logo.png"
    assert action.environment is Environment.PROD


def test_delete_objects_names_the_bucket(aws_index: AwsIndex) -> None:
    params = {"Bucket": "prod-assets", "Delete": {"Objects": [{"Key": "a"}]}}
    action = run(aws_index, "s3", "DeleteObjects", params)
    assert (action.verb, action.resource.type, action.resource.name) == (
        Verb.DELETE,
        "aws:s3:object",
        "prod-assets",
    )
    assert action.risk_tags == ["bulk"]


# --------------------------------------------------------------------------- verbs


@pytest.mark.parametrize(
    ("service", "operation", "params", "verb"),
    [
        ("s3", "GetObject", {"Bucket": "b", "Key": "k"}, Verb.READ),
        ("s3", "PutObject", {"Bucket": "b", "Key": "k", "Body": b"x"}, Verb.CREATE),
        ("s3", "DeleteBucketPolicy", {"Bucket": "b"}, Verb.PERMISSION),
        (
            "iam",
            "AttachRolePolicy",
            {"RoleName": "r", "PolicyArn": "arn:aws:iam::aws:policy/ReadOnlyAccess"},
            Verb.PERMISSION,
        ),
        ("iam", "CreateAccessKey", {}, Verb.PERMISSION),
        ("kms", "ScheduleKeyDeletion", {"KeyId": "k"}, Verb.DESTROY),
        (
            "kms",
            "CreateGrant",
            {"KeyId": "k", "GranteePrincipal": "p", "Operations": ["Decrypt"]},
            Verb.PERMISSION,
        ),
        (
            "lambda",
            "AddPermission",
            {
                "FunctionName": "f",
                "StatementId": "s",
                "Action": "lambda:InvokeFunction",
                "Principal": "*",
            },
            Verb.PERMISSION,
        ),
        ("lambda", "Invoke", {"FunctionName": "f"}, Verb.EXECUTE),
        ("ec2", "RunInstances", {"MinCount": 1, "MaxCount": 1}, Verb.CREATE),
        ("ec2", "RebootInstances", {"InstanceIds": ["i-1"]}, Verb.UPDATE),
        ("ec2", "RevokeSecurityGroupIngress", {"GroupId": "sg-1"}, Verb.PERMISSION),
        ("ec2", "DeleteRouteTable", {"RouteTableId": "rtb-1"}, Verb.DELETE),
        ("ec2", "DeleteVolume", {"VolumeId": "vol-1"}, Verb.DESTROY),
        ("rds", "DeleteDBCluster", {"DBClusterIdentifier": "c"}, Verb.DESTROY),
        ("rds", "ModifyDBInstance", {"DBInstanceIdentifier": "d"}, Verb.UPDATE),
        ("dynamodb", "DeleteItem", {"TableName": "t", "Key": {"k": {"S": "v"}}}, Verb.DELETE),
        ("sqs", "PurgeQueue", {"QueueUrl": "https://sqs.us-east-1.amazonaws.com/1/q"}, Verb.DELETE),
        (
            "sqs",
            "ReceiveMessage",
            {"QueueUrl": "https://sqs.us-east-1.amazonaws.com/1/q"},
            Verb.READ,
        ),
        ("cloudtrail", "StopLogging", {"Name": "t"}, Verb.UPDATE),
        ("organizations", "CloseAccount", {"AccountId": ACCOUNT}, Verb.DESTROY),
        ("elasticbeanstalk", "TerminateEnvironment", {"EnvironmentName": "web-env"}, Verb.DESTROY),
        ("ssm", "SendCommand", {"DocumentName": "AWS-RunShellScript"}, Verb.EXECUTE),
        ("ssm", "StartSession", {"Target": "i-1"}, Verb.EXECUTE),
        ("sts", "GetCallerIdentity", {}, Verb.READ),
    ],
)
def test_verb_class(
    aws_index: AwsIndex, service: str, operation: str, params: dict[str, Any], verb: Verb
) -> None:
    assert run(aws_index, service, operation, params).verb is verb


# --------------------------------------------------------------------------- risk tags


@pytest.mark.parametrize(
    ("service", "operation", "params", "tags"),
    [
        ("ec2", "TerminateInstances", {"InstanceIds": ["i-1", "i-2"]}, ["bulk"]),
        ("ec2", "TerminateInstances", {"InstanceIds": ["i-1"]}, []),
        (
            "rds",
            "DeleteDBInstance",
            {
                "DBInstanceIdentifier": "d",
                "SkipFinalSnapshot": True,
                "DeleteAutomatedBackups": True,
            },
            ["skip-final-snapshot", "delete-backups"],
        ),
        (
            "rds",
            "DeleteDBInstance",
            {"DBInstanceIdentifier": "d", "FinalDBSnapshotIdentifier": "f"},
            [],
        ),
        (
            "neptune",
            "DeleteDBCluster",
            {"DBClusterIdentifier": "g", "SkipFinalSnapshot": True},
            ["skip-final-snapshot"],
        ),
        (
            "docdb",
            "DeleteDBCluster",
            {"DBClusterIdentifier": "g", "SkipFinalSnapshot": True},
            ["skip-final-snapshot"],
        ),
        (
            "secretsmanager",
            "DeleteSecret",
            {"SecretId": "s", "ForceDeleteWithoutRecovery": True},
            ["force"],
        ),
        ("secretsmanager", "DeleteSecret", {"SecretId": "s", "RecoveryWindowInDays": 30}, []),
        ("ecr", "DeleteRepository", {"repositoryName": "app", "force": True}, ["force"]),
        (
            "cloudformation",
            "DeleteStack",
            {"StackName": "s", "DeletionMode": "FORCE_DELETE_STACK"},
            ["force"],
        ),
        (
            "rds",
            "ModifyDBInstance",
            {"DBInstanceIdentifier": "d", "DeletionProtection": False},
            ["protection-removal"],
        ),
        ("rds", "ModifyDBInstance", {"DBInstanceIdentifier": "d", "DeletionProtection": True}, []),
        (
            "dynamodb",
            "UpdateTable",
            {"TableName": "t", "DeletionProtectionEnabled": False},
            ["protection-removal"],
        ),
        (
            "ec2",
            "ModifyInstanceAttribute",
            {"InstanceId": "i-1", "DisableApiTermination": {"Value": False}},
            ["protection-removal"],
        ),
        (
            "cloudformation",
            "UpdateTerminationProtection",
            {"StackName": "s", "EnableTerminationProtection": False},
            ["protection-removal"],
        ),
        (
            "autoscaling",
            "UpdateAutoScalingGroup",
            {"AutoScalingGroupName": "g", "DeletionProtection": "none"},
            ["protection-removal"],
        ),
        ("s3", "DeleteBucketPolicy", {"Bucket": "b"}, []),
        (
            "s3",
            "PutBucketVersioning",
            {"Bucket": "b", "VersioningConfiguration": {"Status": "Suspended"}},
            ["versioning-suspended"],
        ),
        (
            "s3",
            "PutBucketVersioning",
            {"Bucket": "b", "VersioningConfiguration": {"Status": "Enabled"}},
            [],
        ),
        (
            "s3",
            "DeleteObject",
            {"Bucket": "b", "Key": "k", "VersionId": "v1"},
            ["versioned-object-delete"],
        ),
        ("s3", "DeleteObject", {"Bucket": "b", "Key": "k"}, []),
        (
            "s3",
            "DeleteObjects",
            {"Bucket": "b", "Delete": {"Objects": [{"Key": "a", "VersionId": "v1"}]}},
            ["bulk", "versioned-object-delete"],
        ),
        (
            "s3",
            "DeleteObject",
            {"Bucket": "b", "Key": "k", "BypassGovernanceRetention": True},
            ["force"],
        ),
        (
            "ecs",
            "UpdateService",
            {"cluster": "c", "service": "web", "desiredCount": 0},
            ["scale-to-zero"],
        ),
        ("ecs", "UpdateService", {"cluster": "c", "service": "web", "desiredCount": 2}, []),
        (
            "autoscaling",
            "SetDesiredCapacity",
            {"AutoScalingGroupName": "g", "DesiredCapacity": 0},
            ["scale-to-zero"],
        ),
        (
            "autoscaling",
            "UpdateAutoScalingGroup",
            {"AutoScalingGroupName": "g", "MinSize": 0, "MaxSize": 0},
            ["scale-to-zero"],
        ),
        ("cloudtrail", "StopLogging", {"Name": "t"}, ["audit-disabled"]),
        ("cloudtrail", "DeleteTrail", {"Name": "t"}, ["audit-disabled"]),
        ("cloudtrail", "StartLogging", {"Name": "t"}, []),
        ("sqs", "PurgeQueue", {"QueueUrl": "https://sqs.us-east-1.amazonaws.com/1/q"}, ["bulk"]),
    ],
)
def test_risk_tags(
    aws_index: AwsIndex, service: str, operation: str, params: dict[str, Any], tags: list[str]
) -> None:
    action = run(aws_index, service, operation, params)
    assert action.operation == operation
    assert action.risk_tags == tags


def test_route53_record_deletion_inside_the_xml_body(aws_index: AwsIndex) -> None:
    def change(kind: str) -> dict[str, Any]:
        record = {
            "Name": "a.example.com",
            "Type": "A",
            "TTL": 60,
            "ResourceRecords": [{"Value": "192.0.2.1"}],
        }
        return {"Action": kind, "ResourceRecordSet": record}

    for actions, tags in ((["UPSERT"], []), (["CREATE", "DELETE"], ["dns-delete"])):
        params = {"HostedZoneId": "Z1", "ChangeBatch": {"Changes": [change(a) for a in actions]}}
        action = run(aws_index, "route53", "ChangeResourceRecordSets", params)
        assert action.risk_tags == tags


def test_ec2_dry_run(aws_index: AwsIndex) -> None:
    action = run(aws_index, "ec2", "TerminateInstances", {"InstanceIds": ["i-1"], "DryRun": True})
    assert action.dry_run is True
    assert run(aws_index, "ec2", "TerminateInstances", {"InstanceIds": ["i-1"]}).dry_run is False


# --------------------------------------------------------------------------- protocols and hosts


def test_legacy_query_sqs_request(aws_index: AwsIndex) -> None:
    """Old SDKs and CLIs still send SQS as awsQuery; the JSON-only model must catch it."""
    body = (
        b"Action=DeleteQueue&Version=2012-11-05"
        b"&QueueUrl=https%3A%2F%2Fsqs.us-east-1.amazonaws.com%2F111122223333%2Fq"
    )
    request = http(
        "POST",
        "/",
        host="sqs.us-east-1.amazonaws.com",
        port=443,
        headers={
            "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
            "Authorization": SIGNED.format("sqs"),
            "User-Agent": "aws-cli/1.18.69 Python/3.8.10 Linux/5.4 botocore/1.16.19",
        },
        body=body,
    )
    action = recognise(request, RecogniseSettings())
    assert (action.service, action.operation, action.verb) == ("sqs", "DeleteQueue", Verb.DESTROY)
    assert action.resource.name == "q"
    assert action.actor.tool == "aws-cli"


def test_gzip_query_body(aws_index: AwsIndex) -> None:
    """CloudWatch PutMetricData may compress its awsQuery body."""
    body = gzip.compress(b"Action=DeleteAlarms&Version=2010-08-01&AlarmNames.member.1=high-cpu")
    request = http(
        "POST",
        "/",
        host="monitoring.us-east-1.amazonaws.com",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Content-Encoding": "gzip",
            "Authorization": SIGNED.format("monitoring"),
        },
        body=body,
    )
    action = recognise(request, RecogniseSettings())
    assert (action.service, action.operation, action.verb) == (
        "cloudwatch",
        "DeleteAlarms",
        Verb.DELETE,
    )
    assert action.resource.name == "high-cpu"


def test_cbor_parameters(aws_index: AwsIndex) -> None:
    arn = f"arn:aws:events:us-east-1:{ACCOUNT}:event-busv2/prod-bus/abcdefghijklmnopqrstuvwxy"
    action = run(aws_index, "eventbridgev2", "DeleteEventBus", {"EventBusArn": arn})
    assert action.request.header_names.count("smithy-protocol") == 1
    assert (action.operation, action.resource.id, action.scope.account) == (
        "DeleteEventBus",
        arn,
        ACCOUNT,
    )
    assert action.resource.name == "prod-bus"


def test_cloudwatch_as_json_query_and_cbor(aws_index: AwsIndex) -> None:
    """One service, three encodings depending on the SDK's age."""
    json_request = capture("cloudwatch").call("DeleteAlarms", {"AlarmNames": ["a"]})
    query_request = http(
        "POST",
        "/",
        host="127.0.0.1",
        headers={
            "Authorization": SIGNED.format("monitoring"),
            "Content-Type": "application/x-www-form-urlencoded",
        },
        body=b"Action=DeleteAlarms&Version=2010-08-01&AlarmNames.member.1=a",
    )
    cbor_request = http(
        "POST",
        "/service/GraniteServiceVersion20100801/operation/DeleteAlarms",
        host="127.0.0.1",
        headers={"Authorization": SIGNED.format("monitoring"), "Smithy-Protocol": "rpc-v2-cbor"},
        body=bytes([0xA1, 0x6A]) + b"AlarmNames" + bytes([0x81, 0x61]) + b"a",
    )
    for request in (json_request, query_request, cbor_request):
        action = recognise(request, RecogniseSettings())
        assert (action.service, action.operation, action.resource.name) == (
            "cloudwatch",
            "DeleteAlarms",
            "a",
        )


def test_presigned_url(aws_index: AwsIndex) -> None:
    client = boto3.session.Session(
        aws_access_key_id=FAKE_KEY, aws_secret_access_key=FAKE_SECRET, region_name="eu-west-1"
    ).client("s3", config=Config(signature_version="s3v4"))
    url = client.generate_presigned_url(
        "delete_object", Params={"Bucket": "prod-assets", "Key": "k"}
    )
    host, _, path = url.removeprefix("https://").partition("/")
    request = http("DELETE", "/" + path, host=host, port=443, headers={"User-Agent": "curl/8.5.0"})
    action = recognise(request, RecogniseSettings())
    assert (action.operation, action.resource.name, action.scope.region) == (
        "DeleteObject",
        "prod-assets/k",
        "eu-west-1",
    )
    assert action.request.path == "/k"  # the signature in the query is not kept
    assert action.actor.tool == "curl"


def test_unsigned_request_recognised_from_the_host(aws_index: AwsIndex) -> None:
    request = http(
        "POST",
        "/",
        host="dynamodb.eu-west-1.amazonaws.com",
        port=443,
        headers={
            "X-Amz-Target": "DynamoDB_20120810.DeleteTable",
            "Content-Type": "application/x-amz-json-1.0",
        },
        body=b'{"TableName": "orders"}',
    )
    action = recognise(request, RecogniseSettings())
    assert (action.operation, action.resource.name, action.scope.region) == (
        "DeleteTable",
        "orders",
        "eu-west-1",
    )


def test_operation_newer_than_the_models_is_heuristic(aws_index: AwsIndex) -> None:
    request = http(
        "POST",
        "/",
        host="127.0.0.1",
        headers={
            "Authorization": SIGNED.format("dynamodb"),
            "X-Amz-Target": "DynamoDB_20120810.DeleteEverything",
        },
        body=b"{}",
    )
    action = recognise(request, RecogniseSettings())
    assert (action.provider, action.service, action.operation) == (
        Provider.AWS,
        "dynamodb",
        "DeleteEverything",
    )
    assert (action.verb, action.confidence) == (Verb.DELETE, Confidence.HEURISTIC)


def test_unknown_rest_route_fails_closed(aws_index: AwsIndex) -> None:
    request = http(
        "PATCH",
        "/no/such/route",
        host="127.0.0.1",
        headers={"Authorization": SIGNED.format("lambda")},
    )
    action = recognise(request, RecogniseSettings())
    assert (action.provider, action.service, action.operation) == (Provider.AWS, "lambda", "")
    assert (action.verb, action.confidence) == (Verb.UNKNOWN, Confidence.UNKNOWN)


def test_terraform_user_agent(aws_index: AwsIndex) -> None:
    user_agent = (
        "APN/1.0 HashiCorp/1.0 Terraform/1.11.4 (+https://www.terraform.io) "
        "terraform-provider-aws/5.100.0 aws-sdk-go-v2/1.36.3 api/sqs#1.38.6"
    )
    request = http(
        "POST",
        "/",
        host="sqs.us-east-1.amazonaws.com",
        headers={
            "X-Amz-Target": "AmazonSQS.ListQueues",
            "User-Agent": user_agent,
            "Authorization": SIGNED.format("sqs"),
        },
        body=b"{}",
    )
    action = recognise(request, RecogniseSettings())
    assert (action.operation, action.verb, action.actor.tool) == (
        "ListQueues",
        Verb.READ,
        "terraform",
    )


def test_outposts_control_plane_is_not_s3(aws_index: AwsIndex) -> None:
    """``s3-outposts.<region>`` is S3 on Outposts' own API; buckets live on other hosts."""
    action = run(aws_index, "s3outposts", "ListEndpoints", {}, endpoint_url=None)
    assert (action.service, action.operation, action.verb) == (
        "s3outposts",
        "ListEndpoints",
        Verb.READ,
    )


def test_sibling_models_resolve_to_the_canonical_one(aws_index: AwsIndex) -> None:
    """DocumentDB and Neptune calls are RDS API calls on the wire."""
    action = run(
        aws_index, "docdb", "DeleteDBCluster", {"DBClusterIdentifier": "c"}, endpoint_url=None
    )
    assert (action.service, action.operation, action.request.host) == (
        "rds",
        "DeleteDBCluster",
        "rds.us-east-1.amazonaws.com",
    )
