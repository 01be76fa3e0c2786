"""Impact previews and snapshots for AWS, through a real guard, against moto.

Each test builds the resources at moto directly, makes the delete through the guard
(boto3 or the aws CLI, waiting live on its hold), and checks that the hold's impact
shows what the test built. Approving with ``--with snapshot`` (the real CLI) must
produce the snapshot at moto *before* the delete reaches it: moto's request log is the
ground truth for the order. A failed step leaves the hold pending and forwards nothing.

The guard has no brokered AWS credentials here: its own calls use its environment
(``AWS_ACCESS_KEY_ID`` of the test process, botocore's default chain), the source the
broker would use.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import boto3
import pytest
from botocore.config import Config

from .guard_fixtures import Guard, GuardSession, StartGuard, describe
from .impact_fixtures import approver_env, hold_deletes_bundle, in_thread, wait_for_impact
from .servers import MotoServer, RecordedRequest

pytestmark = pytest.mark.slow

REGION = "us-east-1"
SNAPSHOT_HEADER = "x-guardproxy-safety-steps"


@pytest.fixture(autouse=True)
def guard_aws_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The guard's own AWS credentials (its environment: this process), no shared files."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def guard(start_guard: StartGuard, tmp_path: Path) -> Iterator[Guard]:
    yield start_guard(policies=hold_deletes_bundle(tmp_path / "policies"), hold_window_seconds=60)


@pytest.fixture
def session(guard: Guard) -> GuardSession:
    return guard.session("impact-aws")


def direct(moto: MotoServer, service: str) -> Any:
    """A client straight to moto: the upstream's truth."""
    session: Any = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    )
    return session.client(service, endpoint_url=moto.url, config=Config(proxies={}))


def guarded(moto: MotoServer, session: GuardSession, service: str) -> Any:
    """The agent's client: through the guard, no retries (a hold answer is final)."""
    proxies = {"http": session.proxy_url, "https": session.proxy_url}
    config = Config(proxies=proxies, retries={"total_max_attempts": 1}, read_timeout=120)
    client_session: Any = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    )
    return client_session.client(service, endpoint_url=moto.url, config=config)


def operation(request: RecordedRequest) -> str:
    """The AWS operation of a request moto received (query Action, JSON target, REST)."""
    target = request.header("X-Amz-Target") or ""
    if target:
        return target.rpartition(".")[2]
    found = dict(parse_qsl(request.body.decode(errors="replace"))).get("Action", "")
    if found:
        return found
    return f"{request.method} {request.path}"


def operations(moto: MotoServer) -> list[str]:
    """Every operation moto received, the guard's own included, in order."""
    return [operation(r) for r in moto.all_requests]


def pending_hold(guard: Guard) -> dict[str, Any]:
    hold = guard.wait_for_pending_hold()
    return wait_for_impact(guard, hold["id"])


def approve_with_snapshot(guard: Guard, hold_id: str) -> str:
    done = guard.cli(
        "approve", hold_id, "--reason", "copy first", "--with", "snapshot",
        env=approver_env(guard), timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, describe(done)
    return done.stdout


# -- RDS


def test_rds_delete_shows_the_database_and_is_released_after_its_snapshot(
    guard: Guard, session: GuardSession, moto_server: MotoServer
) -> None:
    rds = direct(moto_server, "rds")
    rds.create_db_instance(
        DBInstanceIdentifier="prod-db", DBInstanceClass="db.t3.micro", Engine="postgres",
        AllocatedStorage=20, MasterUsername="admin", MasterUserPassword="password123",
    )  # fmt: skip
    rds.create_db_snapshot(DBSnapshotIdentifier="nightly-1", DBInstanceIdentifier="prod-db")
    agent = guarded(moto_server, session, "rds")
    live = in_thread(
        lambda: agent.delete_db_instance(DBInstanceIdentifier="prod-db", SkipFinalSnapshot=True)
    )
    hold = pending_hold(guard)
    impact = hold["impact"]
    assert impact["status"] == "known", impact
    facts = impact["impact"]
    assert facts["identifier"] == "prod-db" and facts["engine"] == "postgres"
    assert facts["allocated_storage_gib"] == 20 and facts["deletion_protection"] is False
    existing = rds.describe_db_snapshots(DBInstanceIdentifier="prod-db")["DBSnapshots"]
    assert facts["snapshots"] == len(existing) >= 1
    latest = max(s["SnapshotCreateTime"] for s in existing)
    assert datetime.fromisoformat(facts["latest_snapshot"]) == latest
    assert facts["skip_final_snapshot"] is True
    assert "the request skips the final snapshot" in impact["summary"]
    assert "DeleteDBInstance" not in operations(moto_server)  # the preview only read

    listed = guard.cli("holds", env=approver_env(guard))
    assert f"impact: {impact['summary']}" in listed.stdout, describe(listed)
    assert "safety steps: snapshot (--with snapshot)" in listed.stdout

    said = approve_with_snapshot(guard, hold["id"])
    assert f"rds snapshot guardproxy-{hold['id']}-" in said
    answer = live.join()
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
    header = answer["ResponseMetadata"]["HTTPHeaders"].get(SNAPSHOT_HEADER, "")
    assert header.startswith(f"snapshot: rds snapshot guardproxy-{hold['id']}-"), header

    seen = operations(moto_server)
    assert seen.index("CreateDBSnapshot") < seen.index("DeleteDBInstance")
    assert seen.count("DeleteDBInstance") == 1
    snapshots = rds.describe_db_snapshots(DBInstanceIdentifier="prod-db")["DBSnapshots"]
    ours = [s for s in snapshots if s["DBSnapshotIdentifier"].startswith("guardproxy-")]
    assert [s["Status"] for s in ours] == ["available"]
    steps = guard.hold(hold["id"])["safety_steps"]
    assert [(s["step"], s["state"], s["actor"]) for s in steps] == [
        ("snapshot", "succeeded", "alice")
    ]
    assert steps[0]["result"]["snapshot"] == ours[0]["DBSnapshotIdentifier"]


def test_rds_cluster_delete_is_released_after_its_cluster_snapshot(
    guard: Guard, session: GuardSession, moto_server: MotoServer
) -> None:
    rds = direct(moto_server, "rds")
    rds.create_db_cluster(
        DBClusterIdentifier="prod-aurora", Engine="aurora-postgresql", DeletionProtection=False,
        MasterUsername="admin", MasterUserPassword="password123",
    )  # fmt: skip
    agent = guarded(moto_server, session, "rds")
    live = in_thread(
        lambda: agent.delete_db_cluster(DBClusterIdentifier="prod-aurora", SkipFinalSnapshot=True)
    )
    hold = pending_hold(guard)
    impact = hold["impact"]
    assert impact["status"] == "known", impact
    assert impact["impact"]["kind"] == "aws:rds:db-cluster"
    assert impact["impact"]["skip_final_snapshot"] is True
    existing = rds.describe_db_cluster_snapshots(DBClusterIdentifier="prod-aurora")
    assert impact["impact"]["snapshots"] == len(existing["DBClusterSnapshots"])
    assert "the request skips the final snapshot" in impact["summary"]

    said = approve_with_snapshot(guard, hold["id"])
    assert f"rds cluster snapshot guardproxy-{hold['id']}-" in said
    live.join()
    seen = operations(moto_server)
    assert seen.index("CreateDBClusterSnapshot") < seen.index("DeleteDBCluster")
    snapshots = rds.describe_db_cluster_snapshots(DBClusterIdentifier="prod-aurora")
    ours = [
        s for s in snapshots["DBClusterSnapshots"]
        if s["DBClusterSnapshotIdentifier"].startswith(f"guardproxy-{hold['id']}-")
    ]  # fmt: skip
    assert [s["Status"] for s in ours] == ["available"]


def test_a_failed_snapshot_leaves_the_hold_pending_and_forwards_nothing(
    guard: Guard, session: GuardSession, moto_server: MotoServer
) -> None:
    """The database is deleted behind the guard's back: the snapshot cannot be made."""
    rds = direct(moto_server, "rds")
    rds.create_db_instance(
        DBInstanceIdentifier="prod-db", DBInstanceClass="db.t3.micro", Engine="postgres",
        AllocatedStorage=20, MasterUsername="admin", MasterUserPassword="password123",
    )  # fmt: skip
    agent = guarded(moto_server, session, "rds")
    live = in_thread(
        lambda: agent.delete_db_instance(DBInstanceIdentifier="prod-db", SkipFinalSnapshot=True)
    )
    hold = pending_hold(guard)
    rds.delete_db_instance(DBInstanceIdentifier="prod-db", SkipFinalSnapshot=True)
    before = operations(moto_server).count("DeleteDBInstance")
    failed = guard.cli(
        "approve", hold["id"], "--reason", "copy first", "--with", "snapshot",
        env=approver_env(guard), timeout=120,
    )  # fmt: skip
    assert failed.returncode == 1, describe(failed)
    assert "safety step snapshot failed" in failed.stdout and "DBInstanceNotFound" in failed.stdout
    current = guard.hold(hold["id"])
    assert current["state"] == "pending" and current["progress"]["approvers"] == []
    assert [(s["state"], s["actor"]) for s in current["safety_steps"]] == [("failed", "alice")]
    assert "DBInstanceNotFound" in current["safety_steps"][0]["error"]
    guard.approver("alice").resolve(hold["id"], approve=False, reason="cannot copy it")
    live.thread.join(30)
    assert operations(moto_server).count("DeleteDBInstance") == before  # nothing forwarded


# -- DynamoDB


def test_dynamodb_delete_shows_items_and_recovery_and_backs_up_first(
    guard: Guard, session: GuardSession, moto_server: MotoServer
) -> None:
    dynamodb = direct(moto_server, "dynamodb")
    dynamodb.create_table(
        TableName="prod-orders", BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
    )  # fmt: skip
    for n in range(3):
        dynamodb.put_item(TableName="prod-orders", Item={"id": {"S": f"order-{n}"}})
    dynamodb.update_continuous_backups(
        TableName="prod-orders",
        PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
    )
    agent = guarded(moto_server, session, "dynamodb")
    live = in_thread(lambda: agent.delete_table(TableName="prod-orders"))
    hold = pending_hold(guard)
    impact = hold["impact"]
    assert impact["status"] == "known", impact
    assert impact["impact"]["items"] == 3
    assert impact["impact"]["point_in_time_recovery"] == "ENABLED"
    assert impact["summary"].startswith("3 items")

    approve_with_snapshot(guard, hold["id"])
    live.join()
    seen = operations(moto_server)
    assert seen.index("CreateBackup") < seen.index("DeleteTable")
    backups = dynamodb.list_backups(TableName="prod-orders")["BackupSummaries"]
    assert [b["BackupName"].startswith(f"guardproxy-{hold['id']}-") for b in backups] == [True]


# -- EC2


def test_ec2_terminate_shows_tags_and_group_and_snapshots_each_volume_first(
    guard: Guard, session: GuardSession, moto_server: MotoServer
) -> None:
    ec2 = direct(moto_server, "ec2")
    image = ec2.describe_images()["Images"][0]["ImageId"]
    tags = [{"Key": "Name", "Value": "web-1"}, {"Key": "environment", "Value": "prod"},
            {"Key": "aws:autoscaling:groupName", "Value": "web-asg"}]  # fmt: skip
    created = ec2.run_instances(
        ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.micro",
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
    )["Instances"][0]  # fmt: skip
    instance = created["InstanceId"]
    volumes = [
        m["Ebs"]["VolumeId"]
        for m in ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0][
            "BlockDeviceMappings"
        ]
    ]
    assert volumes
    agent = guarded(moto_server, session, "ec2")
    live = in_thread(lambda: agent.terminate_instances(InstanceIds=[instance]))
    hold = pending_hold(guard)
    impact = hold["impact"]
    assert impact["status"] == "known", impact
    [listed] = impact["impact"]["instances"]
    assert listed["id"] == instance and listed["name"] == "web-1"
    assert listed["environment"] == "prod" and listed["autoscaling_group"] == "web-asg"
    assert listed["volumes"] == volumes
    assert "Auto Scaling group web-asg" in impact["summary"]

    approve_with_snapshot(guard, hold["id"])
    live.join()
    seen = operations(moto_server)
    assert seen.index("CreateSnapshot") < seen.index("TerminateInstances")
    snapshots = ec2.describe_snapshots(
        Filters=[{"Name": "tag:guardproxy:hold", "Values": [hold["id"]]}]
    )["Snapshots"]
    assert sorted(s["VolumeId"] for s in snapshots) == sorted(volumes)


# -- EKS and ECS (previews)


def test_cluster_deletes_show_node_groups_and_services(
    guard: Guard, session: GuardSession, moto_server: MotoServer
) -> None:
    eks = direct(moto_server, "eks")
    role = "arn:aws:iam::123456789012:role/eks"
    eks.create_cluster(
        name="prod-eks", roleArn=role, resourcesVpcConfig={"subnetIds": ["subnet-1"]}
    )
    for group in ("system", "workers"):
        eks.create_nodegroup(
            clusterName="prod-eks", nodegroupName=group, nodeRole=role, subnets=["subnet-1"]
        )
    ecs = direct(moto_server, "ecs")
    ecs.create_cluster(clusterName="prod-ecs")
    ecs.register_task_definition(
        family="web", containerDefinitions=[{"name": "web", "image": "nginx", "memory": 64}]
    )
    for service in ("web", "worker"):
        ecs.create_service(
            cluster="prod-ecs", serviceName=service, taskDefinition="web", desiredCount=0
        )
    alice = guard.approver("alice")

    live = in_thread(lambda: guarded(moto_server, session, "eks").delete_cluster(name="prod-eks"))
    hold = pending_hold(guard)
    impact = hold["impact"]
    assert impact["status"] == "known", impact
    assert impact["impact"]["cluster"] == "prod-eks"
    assert sorted(impact["impact"]["nodegroups"]) == ["system", "workers"]
    assert impact["summary"].startswith("2 node groups")
    alice.resolve(hold["id"], approve=False, reason="keep it")
    live.thread.join(30)

    live = in_thread(
        lambda: guarded(moto_server, session, "ecs").delete_cluster(cluster="prod-ecs")
    )
    hold = pending_hold(guard)
    impact = hold["impact"]
    assert impact["status"] == "known", impact
    assert impact["impact"]["cluster"] == "prod-ecs"
    assert sorted(impact["impact"]["services"]) == ["web", "worker"]
    assert impact["summary"].startswith("2 services")
    alice.resolve(hold["id"], approve=False, reason="keep it")
    live.thread.join(30)
    seen = operations(moto_server)
    assert "DELETE /clusters/prod-eks" not in seen and "DeleteCluster" not in seen


# -- S3 and CloudFormation (previews), CloudFormation (template saved)


def test_s3_delete_bucket_counts_objects_and_versioning(
    guard: Guard, session: GuardSession, moto_server: MotoServer
) -> None:
    s3 = direct(moto_server, "s3")
    s3.create_bucket(Bucket="prod-assets")
    s3.put_bucket_versioning(Bucket="prod-assets", VersioningConfiguration={"Status": "Enabled"})
    for n in range(4):
        s3.put_object(Bucket="prod-assets", Key=f"file-{n}.txt", Body=b"x")
    agent = guarded(moto_server, session, "s3")
    live = in_thread(lambda: agent.delete_bucket(Bucket="prod-assets"))
    hold = pending_hold(guard)
    impact = hold["impact"]
    assert impact["status"] == "known", impact
    assert impact["impact"]["objects"] == 4 and impact["impact"]["objects_at_least"] is False
    assert impact["impact"]["versioning"] == "Enabled"
    assert impact["summary"] == "4 objects; versioning enabled"
    # S3 offers no snapshot: the approver is told before anything runs
    refused = guard.cli(
        "approve", hold["id"], "--reason", "x", "--with", "snapshot", env=approver_env(guard)
    )
    assert refused.returncode == 1 and "no snapshot step" in refused.stderr, describe(refused)
    guard.approver("alice").resolve(hold["id"], approve=False, reason="keep it")
    live.thread.join(30)


STACK_TEMPLATE = {
    "AWSTemplateFormatVersion": "2010-09-09",
    "Resources": {
        "Queue": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": "prod-calc-q"}},
        "Other": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": "prod-calc-r"}},
        "Bucket": {"Type": "AWS::S3::Bucket", "Properties": {"BucketName": "prod-calc-b"}},
    },
    "Outputs": {
        "QueueArn": {
            "Value": {"Fn::GetAtt": ["Queue", "Arn"]},
            "Export": {"Name": "prod-calc-QueueArn"},
        }
    },
}
IMPORTER = {
    "AWSTemplateFormatVersion": "2010-09-09",
    "Resources": {
        "Topic": {
            "Type": "AWS::SNS::Topic",
            "Properties": {"TopicName": {"Fn::Select": [5, {"Fn::Split": [":", {
                "Fn::ImportValue": "prod-calc-QueueArn"}]}]}},
        }
    },
}  # fmt: skip


def test_cloudformation_delete_shows_resources_and_importers_and_saves_the_template(
    guard: Guard, session: GuardSession, moto_server: MotoServer
) -> None:
    cfn = direct(moto_server, "cloudformation")
    cfn.create_stack(StackName="prod-calc", TemplateBody=json.dumps(STACK_TEMPLATE))
    cfn.create_stack(StackName="billing", TemplateBody=json.dumps(IMPORTER))
    agent = guarded(moto_server, session, "cloudformation")
    live = in_thread(lambda: agent.delete_stack(StackName="prod-calc"))
    hold = pending_hold(guard)
    impact = hold["impact"]
    assert impact["status"] == "known", impact
    facts = impact["impact"]
    assert facts["resources"] == 3
    assert facts["resource_types"] == {"AWS::SQS::Queue": 2, "AWS::S3::Bucket": 1}
    assert facts["termination_protection"] is False
    assert facts["imported_by"] == {"prod-calc-QueueArn": ["billing"]}
    assert impact["summary"].startswith("3 resources (2 AWS::SQS::Queue, 1 AWS::S3::Bucket)")

    said = approve_with_snapshot(guard, hold["id"])
    live.join()
    [step] = guard.hold(hold["id"])["safety_steps"]
    folder = Path(step["result"]["folder"])
    assert folder.is_relative_to(guard.data_dir / "safety" / hold["id"]), said
    assert json.loads((folder / "template.json").read_text()) == STACK_TEMPLATE
    saved = json.loads((folder / "resources.json").read_text())
    assert sorted(r["LogicalResourceId"] for r in saved) == ["Bucket", "Other", "Queue"]
    seen = operations(moto_server)
    assert seen.index("GetTemplate") < seen.index("DeleteStack")


# -- bounds


def test_a_slow_upstream_gives_impact_unknown_within_the_bound(
    start_guard: StartGuard, tmp_path: Path, moto_server: MotoServer
) -> None:
    """The guard's reads are held up at moto past the preview's bound (a slow region)."""
    guard = start_guard(
        policies=hold_deletes_bundle(tmp_path / "slow-policies"), hold_window_seconds=60,
        impact={"timeout_seconds": 1.5},
    )  # fmt: skip
    session = guard.session("slow")
    direct(moto_server, "dynamodb").create_table(
        TableName="prod-slow", BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
    )  # fmt: skip
    moto_server.delay("DescribeTable", 4.0)
    agent = guarded(moto_server, session, "dynamodb")
    held_at = datetime.now(UTC)
    live = in_thread(lambda: agent.delete_table(TableName="prod-slow"))
    hold = guard.wait_for_pending_hold()
    done = wait_for_impact(guard, hold["id"], timeout=10)
    impact = done["impact"]
    assert impact["status"] == "unknown"
    assert impact["line"].startswith("impact unknown: ")
    assert "1.5 s" in impact["line"] or "in time" in impact["line"], impact
    gathered = datetime.fromisoformat(impact["gathered_at"])
    assert (gathered - held_at).total_seconds() < 3.5  # the bound, not the slow answer
    assert done["state"] == "pending"
    guard.approver("alice").resolve(hold["id"], approve=False, reason="done")
    live.thread.join(30)


def test_without_credentials_the_impact_says_why(
    start_guard: StartGuard,
    tmp_path: Path,
    moto_server: MotoServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    guard = start_guard(
        policies=hold_deletes_bundle(tmp_path / "bare-policies"), hold_window_seconds=60
    )
    session = guard.session("bare")
    agent = guarded(moto_server, session, "dynamodb")
    live = in_thread(lambda: agent.delete_table(TableName="prod-anything"))
    hold = guard.wait_for_pending_hold()
    impact = wait_for_impact(guard, hold["id"])["impact"]
    assert impact["status"] == "unknown"
    assert "botocore found no credentials" in impact["line"], impact
    guard.approver("alice").resolve(hold["id"], approve=False, reason="done")
    live.thread.join(30)
