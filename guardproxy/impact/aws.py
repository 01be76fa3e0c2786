"""AWS: what a delete would destroy, and the snapshot taken before it is released.

Calls are made with botocore (the SDK the recognisers read models from), to the held
request's own endpoint when it is not an AWS host (LocalStack, a test server) and to
botocore's endpoint for the region otherwise; each call takes one of the budget's
calls and at most its time left (no retries: a slow upstream is reported as such).

Previews: CloudFormation ``DeleteStack`` (resources by type, termination protection,
exports other stacks import), S3 ``DeleteBucket`` (objects, at least N; versioning),
RDS ``DeleteDBInstance`` / ``DeleteDBCluster`` (size, deletion protection, latest
snapshot, whether the request skips the final snapshot), DynamoDB ``DeleteTable``
(items, point-in-time recovery), EC2 ``TerminateInstances`` (Name and environment tags,
Auto Scaling group, EBS volumes), EKS ``DeleteCluster`` (node groups), ECS
``DeleteCluster`` (services, tasks).

Snapshots: RDS ``CreateDBSnapshot`` / ``CreateDBClusterSnapshot`` until available,
DynamoDB ``CreateBackup`` until available, EBS ``CreateSnapshot`` of every volume of
the terminated instances until completed, CloudFormation's template and resource list
saved to the data directory.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from guardproxy.impact.access import USER_AGENT, Access
from guardproxy.impact.model import (
    Budget,
    Facts,
    ImpactError,
    StepContext,
    count_text,
    plural,
    stamp,
)

__all__ = ["AWS_PREVIEWS", "AWS_SNAPSHOTS", "AwsTarget"]

_SESSION_LOCK = threading.Lock()
_SESSION: Any = None
PAGE_CAP = 10
"""Pages of a list read at most (resources, exports, objects)."""
S3_OBJECT_CAP = 1000
POLL_SECONDS = 1.0


def _session() -> Any:
    global _SESSION  # noqa: PLW0603 - one botocore session: its model loading is costly
    with _SESSION_LOCK:
        if _SESSION is None:
            import botocore.session  # noqa: PLC0415

            _SESSION = botocore.session.Session()
        return _SESSION


def _is_aws_host(host: str) -> bool:
    host = host.lower().rstrip(".")
    return host.endswith((".amazonaws.com", ".amazonaws.com.cn", ".api.aws"))


class AwsTarget:
    """The held request's AWS side: its parameters, its credentials, its endpoint."""

    def __init__(self, access: Access, params: list[dict[str, Any]], service: str) -> None:
        self.access = access
        self.readings = params
        self.service = service

    @property
    def params(self) -> dict[str, Any]:
        return self.readings[0] if self.readings else {}

    def one(self, name: str) -> str:
        """The parameter's value, the same in every reading (ImpactError otherwise: an
        ambiguous request is not previewed or snapshotted as one of its readings)."""
        values = {str(p.get(name, "")) for p in self.readings}
        if len(values) != 1 or not next(iter(values)):
            raise ImpactError(f"the request does not name one {name}")
        return values.pop()

    def client(self, service: str, budget: Budget) -> Any:
        """A botocore client for ``service``, counted and bounded by ``budget``."""
        from botocore.config import Config  # noqa: PLC0415

        credentials = self.access.aws_credentials()
        origin = self.access.origin
        endpoint = None if _is_aws_host(origin.host) else origin.url
        trust = self.access.trust()
        left = budget.left()
        config = Config(
            connect_timeout=max(0.1, min(left, 10.0)),
            read_timeout=max(0.1, min(left, 60.0)),
            retries={"total_max_attempts": 1, "mode": "standard"},
            user_agent_extra=USER_AGENT,
            proxies={},
            s3={"addressing_style": "path"} if endpoint else {},
        )
        session = _session()
        with _SESSION_LOCK:  # botocore sessions are not safe to create clients concurrently
            client = session.create_client(
                service,
                region_name=self.access.region or "us-east-1",
                endpoint_url=endpoint,
                aws_access_key_id=credentials.access_key,
                aws_secret_access_key=credentials.secret_key,
                aws_session_token=credentials.token,
                config=config,
                verify=str(trust) if trust else True,
            )

        def count(**_: Any) -> None:
            budget.call()

        client.meta.events.register("before-send", count)
        return _Calls(client)


class _Calls:
    """A botocore client whose errors are one-line ImpactErrors."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._client, name)

        def call(**kwargs: Any) -> Any:
            from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

            try:
                return method(**kwargs)
            except ImpactError:
                raise
            except ClientError as error:
                info = error.response.get("Error", {})
                code, message = info.get("Code", "error"), info.get("Message", "")
                raise ImpactError(f"{name}: {code}" + (f": {message}" if message else "")) from None
            except BotoCoreError as error:
                text = str(error)
                if "timeout" in text.lower():
                    text = "the endpoint did not answer in time"
                raise ImpactError(f"{name}: {text}") from None
            except Exception as error:  # botocore's parsers raise their own kinds
                raise ImpactError(f"{name} failed ({type(error).__name__})") from None

        return call


def _pages(
    fetch: Callable[..., dict[str, Any]], key: str, token: str, out_token: str = "", **kwargs: Any
) -> tuple[list[Any], bool]:
    """Items of ``key`` over at most PAGE_CAP pages; whether more were left unread."""
    items: list[Any] = []
    marker = ""
    for _ in range(PAGE_CAP):
        answer = fetch(**kwargs, **({token: marker} if marker else {}))
        items.extend(answer.get(key) or [])
        marker = str(answer.get(out_token or token) or "")
        if not marker:
            return items, False
    return items, True


def _time(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value or "")


# -- previews ---------------------------------------------------------------------------


def preview_stack(target: AwsTarget, budget: Budget) -> Facts:
    name = target.one("StackName")
    cfn = target.client("cloudformation", budget)
    stacks = cfn.describe_stacks(StackName=name).get("Stacks") or []
    if not stacks:
        raise ImpactError(f"stack {name} does not exist")
    stack = stacks[0]
    stack_id = str(stack.get("StackId", ""))
    resources, more = _pages(
        cfn.list_stack_resources, "StackResourceSummaries", "NextToken", StackName=name
    )
    counts: dict[str, int] = {}
    for resource in resources:
        kind = str(resource.get("ResourceType", "?"))
        counts[kind] = counts.get(kind, 0) + 1
    exports, _ = _pages(cfn.list_exports, "Exports", "NextToken")
    own = [str(e.get("Name", "")) for e in exports if e.get("ExportingStackId") == stack_id]
    imported, source = _importers(cfn, own, name)
    protected = bool(stack.get("EnableTerminationProtection"))
    parts = [
        plural(len(resources), "resource", at_least=more)
        + (f" ({count_text(counts)})" if counts else ""),
        f"termination protection {'on' if protected else 'off'}",
    ]
    if imported:
        parts.append(
            "exports imported by other stacks: "
            + "; ".join(f"{e} by {', '.join(s)}" for e, s in imported.items())
        )
    elif own and source:
        parts.append(f"{plural(len(own), 'export')}, imported by no other stack")
    elif own:
        parts.append(f"{plural(len(own), 'export')}; who imports them is unknown")
    return Facts(
        "; ".join(parts),
        {
            "kind": "aws:cloudformation:stack",
            "stack": name,
            "status": stack.get("StackStatus", ""),
            "resources": len(resources),
            "resources_at_least": more,
            "resource_types": counts,
            "termination_protection": protected,
            "exports": own,
            "imported_by": imported,
            "imports_read_from": source,
        },
    )


IMPORT_SCAN_STACKS = 10
"""Other stacks whose templates are read for imports when ListImports cannot answer."""


def _importers(cfn: Any, exports: list[str], stack: str) -> tuple[dict[str, list[str]], str]:
    """Which stacks import each export, and from where that was read (``ListImports``,
    ``templates``, or "" when it could not be). ListImports first; where an endpoint
    cannot answer it (moto, LocalStack), the other stacks' templates are read for
    ``Fn::ImportValue`` of the name, as CloudFormation itself resolves it."""
    if not exports:
        return {}, "ListImports"
    imported: dict[str, list[str]] = {}
    try:
        for export in exports[:5]:
            try:
                importers, _ = _pages(cfn.list_imports, "Imports", "NextToken", ExportName=export)
            except ImpactError as error:
                if "not imported" not in str(error).lower():  # CloudFormation's "none"
                    raise
                importers = []
            if importers:
                imported[export] = [str(i) for i in importers]
        return imported, "ListImports"
    except ImpactError:
        pass
    try:
        stacks, more = _pages(
            cfn.list_stacks, "StackSummaries", "NextToken",
            StackStatusFilter=["CREATE_COMPLETE", "UPDATE_COMPLETE", "UPDATE_ROLLBACK_COMPLETE",
                               "IMPORT_COMPLETE", "ROLLBACK_COMPLETE"],
        )  # fmt: skip
        others = [str(s.get("StackName")) for s in stacks if s.get("StackName") != stack]
        if more or len(others) > IMPORT_SCAN_STACKS:
            return {}, ""
        for other in others:
            body = cfn.get_template(StackName=other).get("TemplateBody")
            for export in exports:
                if _imports(body, export):
                    imported.setdefault(export, []).append(other)
    except ImpactError:
        return {}, ""
    return imported, "templates"


def _imports(template: Any, export: str) -> bool:
    """Whether a template imports ``export`` by name (``Fn::ImportValue``/``!ImportValue``)."""
    if isinstance(template, str):
        pattern = rf"(Fn::ImportValue|!ImportValue)[\s:\"']*{re.escape(export)}\b"
        return re.search(pattern, template) is not None
    if isinstance(template, dict):
        if template.get("Fn::ImportValue") == export:
            return True
        return any(_imports(value, export) for value in template.values())
    if isinstance(template, list):
        return any(_imports(value, export) for value in template)
    return False


def preview_bucket(target: AwsTarget, budget: Budget) -> Facts:
    bucket = target.one("Bucket")
    s3 = target.client("s3", budget)
    count, more, token = 0, False, ""
    while True:
        answer = s3.list_objects_v2(
            Bucket=bucket,
            MaxKeys=min(1000, S3_OBJECT_CAP),
            **({"ContinuationToken": token} if token else {}),
        )
        count += int(answer.get("KeyCount") or len(answer.get("Contents") or []))
        token = str(answer.get("NextContinuationToken") or "")
        if not token:
            break
        if count >= S3_OBJECT_CAP:
            more = True
            break
    versioning = str(s3.get_bucket_versioning(Bucket=bucket).get("Status") or "Disabled")
    return Facts(
        f"{plural(count, 'object', at_least=more)}; versioning {versioning.lower()}",
        {
            "kind": "aws:s3:bucket",
            "bucket": bucket,
            "objects": count,
            "objects_at_least": more,
            "versioning": versioning,
        },
    )


def _latest(snapshots: list[dict[str, Any]], key: str) -> str:
    times = [s[key] for s in snapshots if isinstance(s.get(key), datetime)]
    return _time(max(times)) if times else ""


def preview_db_instance(target: AwsTarget, budget: Budget) -> Facts:
    name = target.one("DBInstanceIdentifier")
    rds = target.client("rds", budget)
    found = rds.describe_db_instances(DBInstanceIdentifier=name).get("DBInstances") or []
    if not found:
        raise ImpactError(f"DB instance {name} does not exist")
    db = found[0]
    snapshots, _ = _pages(
        rds.describe_db_snapshots, "DBSnapshots", "Marker", DBInstanceIdentifier=name
    )
    return _db_facts(
        target,
        "aws:rds:db-instance",
        name,
        db,
        _latest(snapshots, "SnapshotCreateTime"),
        len(snapshots),
    )


def preview_db_cluster(target: AwsTarget, budget: Budget) -> Facts:
    name = target.one("DBClusterIdentifier")
    rds = target.client("rds", budget)
    found = rds.describe_db_clusters(DBClusterIdentifier=name).get("DBClusters") or []
    if not found:
        raise ImpactError(f"DB cluster {name} does not exist")
    snapshots, _ = _pages(
        rds.describe_db_cluster_snapshots, "DBClusterSnapshots", "Marker", DBClusterIdentifier=name
    )
    return _db_facts(
        target,
        "aws:rds:db-cluster",
        name,
        found[0],
        _latest(snapshots, "SnapshotCreateTime"),
        len(snapshots),
    )


def _db_facts(
    target: AwsTarget, kind: str, name: str, db: dict[str, Any], latest: str, snapshots: int
) -> Facts:
    size = db.get("AllocatedStorage")
    protected = bool(db.get("DeletionProtection"))
    skips = any(str(p.get("SkipFinalSnapshot", "")).lower() == "true" for p in target.readings)
    final = str(target.params.get("FinalDBSnapshotIdentifier", ""))
    engine = " ".join(str(db.get(k, "")) for k in ("Engine", "DBInstanceClass") if db.get(k))
    parts = [
        " ".join(p for p in (engine, f"{size} GiB" if size else "") if p) or name,
        f"deletion protection {'on' if protected else 'off'}",
        f"latest snapshot {latest}" if latest else "no snapshot",
        "the request skips the final snapshot"
        if skips
        else f"final snapshot {final}"
        if final
        else "the request keeps a final snapshot",
    ]
    return Facts(
        "; ".join(parts),
        {
            "kind": kind,
            "identifier": name,
            "engine": db.get("Engine", ""),
            "class": db.get("DBInstanceClass", ""),
            "allocated_storage_gib": size,
            "status": db.get("DBInstanceStatus") or db.get("Status", ""),
            "deletion_protection": protected,
            "snapshots": snapshots,
            "latest_snapshot": latest,
            "skip_final_snapshot": skips,
            "final_snapshot": final,
        },
    )


def preview_table(target: AwsTarget, budget: Budget) -> Facts:
    name = target.one("TableName")
    dynamodb = target.client("dynamodb", budget)
    table = dynamodb.describe_table(TableName=name).get("Table") or {}
    backups = dynamodb.describe_continuous_backups(TableName=name)
    description = backups.get("ContinuousBackupsDescription") or {}
    pitr = str(
        (description.get("PointInTimeRecoveryDescription") or {}).get(
            "PointInTimeRecoveryStatus", "DISABLED"
        )
    )
    items = int(table.get("ItemCount") or 0)
    size = int(table.get("TableSizeBytes") or 0)
    protected = bool(table.get("DeletionProtectionEnabled"))
    return Facts(
        f"{plural(items, 'item')} ({size} bytes, as DynamoDB last counted); "
        f"point-in-time recovery {pitr.lower()}"
        + ("; deletion protection on" if protected else ""),
        {
            "kind": "aws:dynamodb:table",
            "table": name,
            "items": items,
            "size_bytes": size,
            "status": table.get("TableStatus", ""),
            "point_in_time_recovery": pitr,
            "deletion_protection": protected,
        },
    )


def _instances(target: AwsTarget, budget: Budget) -> tuple[Any, list[dict[str, Any]]]:
    ids = [str(i) for i in target.params.get("InstanceIds") or []]
    for reading in target.readings[1:]:
        if [str(i) for i in reading.get("InstanceIds") or []] != ids:
            raise ImpactError("the request does not name one set of instances")
    if not ids:
        raise ImpactError("the request names no instance")
    ec2 = target.client("ec2", budget)
    reservations, _ = _pages(ec2.describe_instances, "Reservations", "NextToken", InstanceIds=ids)
    return ec2, [i for r in reservations for i in r.get("Instances") or []]


def _tags(instance: dict[str, Any]) -> dict[str, str]:
    return {str(t.get("Key")): str(t.get("Value")) for t in instance.get("Tags") or []}


def _volumes(instance: dict[str, Any]) -> list[str]:
    return [
        str(m["Ebs"]["VolumeId"])
        for m in instance.get("BlockDeviceMappings") or []
        if isinstance(m.get("Ebs"), dict) and m["Ebs"].get("VolumeId")
    ]


def preview_instances(target: AwsTarget, budget: Budget) -> Facts:
    _, instances = _instances(target, budget)
    listed = []
    for instance in instances:
        tags = _tags(instance)
        environment = next(
            (v for k, v in tags.items() if k.lower() in ("environment", "env", "stage")), ""
        )
        listed.append(
            {
                "id": instance.get("InstanceId", ""),
                "name": tags.get("Name", ""),
                "environment": environment,
                "autoscaling_group": tags.get("aws:autoscaling:groupName", ""),
                "state": (instance.get("State") or {}).get("Name", ""),
                "type": instance.get("InstanceType", ""),
                "volumes": _volumes(instance),
            }
        )

    def line(i: dict[str, Any]) -> str:
        said = [
            f"Name {i['name']}" if i["name"] else "",
            f"environment {i['environment']}" if i["environment"] else "",
            f"Auto Scaling group {i['autoscaling_group']}" if i["autoscaling_group"] else "",
            plural(len(i["volumes"]), "EBS volume"),
        ]
        return f"{i['id']} ({', '.join(s for s in said if s)})"

    shown = "; ".join(line(i) for i in listed[:3])
    more = f"; +{len(listed) - 3} more" if len(listed) > 3 else ""
    return Facts(
        f"{plural(len(listed), 'instance')}: {shown}{more}",
        {"kind": "aws:ec2:instances", "instances": listed},
    )


def preview_eks(target: AwsTarget, budget: Budget) -> Facts:
    name = target.one("name")
    eks = target.client("eks", budget)
    groups, more = _pages(eks.list_nodegroups, "nodegroups", "nextToken", clusterName=name)
    profiles, _ = _pages(
        eks.list_fargate_profiles, "fargateProfileNames", "nextToken", clusterName=name
    )
    return Facts(
        f"{plural(len(groups), 'node group', at_least=more)}"
        + (f" ({', '.join(groups[:5])})" if groups else "")
        + (f"; {plural(len(profiles), 'Fargate profile')}" if profiles else ""),
        {
            "kind": "aws:eks:cluster",
            "cluster": name,
            "nodegroups": groups,
            "fargate_profiles": profiles,
        },
    )


def preview_ecs(target: AwsTarget, budget: Budget) -> Facts:
    name = target.one("cluster")
    ecs = target.client("ecs", budget)
    clusters = ecs.describe_clusters(clusters=[name]).get("clusters") or []
    services, more = _pages(ecs.list_services, "serviceArns", "nextToken", cluster=name)
    info = clusters[0] if clusters else {}
    tasks = int(info.get("runningTasksCount") or 0)
    return Facts(
        f"{plural(len(services), 'service', at_least=more)}; {plural(tasks, 'running task')}",
        {
            "kind": "aws:ecs:cluster",
            "cluster": name,
            "services": [s.rpartition("/")[2] for s in services],
            "running_tasks": tasks,
            "container_instances": int(info.get("registeredContainerInstancesCount") or 0),
        },
    )


AWS_PREVIEWS: dict[tuple[str, str], Callable[[AwsTarget, Budget], Facts]] = {
    ("cloudformation", "DeleteStack"): preview_stack,
    ("s3", "DeleteBucket"): preview_bucket,
    ("rds", "DeleteDBInstance"): preview_db_instance,
    ("rds", "DeleteDBCluster"): preview_db_cluster,
    ("dynamodb", "DeleteTable"): preview_table,
    ("ec2", "TerminateInstances"): preview_instances,
    ("eks", "DeleteCluster"): preview_eks,
    ("ecs", "DeleteCluster"): preview_ecs,
}


# -- snapshots --------------------------------------------------------------------------


def _wait(
    budget: Budget, what: str, poll: Callable[[], str], done: set[str], failed: set[str]
) -> str:
    """Poll until the status is in ``done`` (returned), ImpactError if it fails or the
    budget runs out."""
    while True:
        status = poll()
        if status in done:
            return status
        if status in failed:
            raise ImpactError(f"{what} is {status}")
        left = budget.left()
        time.sleep(min(POLL_SECONDS, left))


def snapshot_db_instance(target: AwsTarget, budget: Budget, ctx: StepContext) -> dict[str, Any]:
    name = target.one("DBInstanceIdentifier")
    rds = target.client("rds", budget)
    snapshot = f"guardproxy-{ctx.hold_id}-{stamp(ctx.now)}"
    rds.create_db_snapshot(DBSnapshotIdentifier=snapshot, DBInstanceIdentifier=name)

    def poll() -> str:
        found = rds.describe_db_snapshots(DBSnapshotIdentifier=snapshot).get("DBSnapshots") or []
        return str(found[0].get("Status", "")) if found else "missing"

    status = _wait(budget, f"DB snapshot {snapshot}", poll, {"available"}, {"failed", "missing"})
    return {
        "text": f"rds snapshot {snapshot} of {name} ({status})",
        "snapshot": snapshot,
        "db_instance": name,
        "status": status,
    }


def snapshot_db_cluster(target: AwsTarget, budget: Budget, ctx: StepContext) -> dict[str, Any]:
    name = target.one("DBClusterIdentifier")
    rds = target.client("rds", budget)
    snapshot = f"guardproxy-{ctx.hold_id}-{stamp(ctx.now)}"
    rds.create_db_cluster_snapshot(DBClusterSnapshotIdentifier=snapshot, DBClusterIdentifier=name)

    def poll() -> str:
        found = (
            rds.describe_db_cluster_snapshots(DBClusterSnapshotIdentifier=snapshot).get(
                "DBClusterSnapshots"
            )
            or []
        )
        return str(found[0].get("Status", "")) if found else "missing"

    status = _wait(
        budget, f"cluster snapshot {snapshot}", poll, {"available"}, {"failed", "missing"}
    )
    return {
        "text": f"rds cluster snapshot {snapshot} of {name} ({status})",
        "snapshot": snapshot,
        "db_cluster": name,
        "status": status,
    }


def backup_table(target: AwsTarget, budget: Budget, ctx: StepContext) -> dict[str, Any]:
    name = target.one("TableName")
    dynamodb = target.client("dynamodb", budget)
    backup = f"guardproxy-{ctx.hold_id}-{stamp(ctx.now)}"
    details = dynamodb.create_backup(TableName=name, BackupName=backup).get("BackupDetails") or {}
    arn = str(details.get("BackupArn", ""))
    if not arn:
        raise ImpactError("CreateBackup answered no backup")

    def poll() -> str:
        described = dynamodb.describe_backup(BackupArn=arn).get("BackupDescription") or {}
        return str((described.get("BackupDetails") or {}).get("BackupStatus", ""))

    status = _wait(budget, f"backup {backup}", poll, {"AVAILABLE"}, {"DELETED"})
    return {
        "text": f"dynamodb backup {backup} of {name} ({status.lower()})",
        "backup": backup,
        "backup_arn": arn,
        "table": name,
        "status": status,
    }


def snapshot_volumes(target: AwsTarget, budget: Budget, ctx: StepContext) -> dict[str, Any]:
    ec2, instances = _instances(target, budget)
    volumes = [(str(i.get("InstanceId")), v) for i in instances for v in _volumes(i)]
    if not volumes:
        raise ImpactError("the instances have no EBS volume to snapshot")
    snapshots: dict[str, str] = {}
    for instance, volume in volumes:
        answer = ec2.create_snapshot(
            VolumeId=volume,
            Description=f"guardproxy {ctx.hold_id}: {volume} of {instance} before termination",
            TagSpecifications=[
                {
                    "ResourceType": "snapshot",
                    "Tags": [
                        {"Key": "guardproxy:hold", "Value": ctx.hold_id},
                        {"Key": "guardproxy:instance", "Value": instance},
                    ],
                }
            ],
        )
        snapshots[volume] = str(answer.get("SnapshotId", ""))
    ids = list(snapshots.values())

    def poll() -> str:
        found = ec2.describe_snapshots(SnapshotIds=ids).get("Snapshots") or []
        states = {str(s.get("State", "")) for s in found}
        if len(found) < len(ids) or "error" in states:
            return "error"
        return "completed" if states == {"completed"} else "pending"

    _wait(budget, "EBS snapshots", poll, {"completed"}, {"error"})
    return {
        "text": "ebs snapshots " + ", ".join(f"{s} of {v}" for v, s in snapshots.items()),
        "snapshots": snapshots,
    }


def save_stack(target: AwsTarget, budget: Budget, ctx: StepContext) -> dict[str, Any]:
    name = target.one("StackName")
    cfn = target.client("cloudformation", budget)
    stacks = cfn.describe_stacks(StackName=name).get("Stacks") or []
    template = cfn.get_template(StackName=name, TemplateStage="Original").get("TemplateBody")
    resources, more = _pages(
        cfn.list_stack_resources, "StackResourceSummaries", "NextToken", StackName=name
    )
    if more:
        raise ImpactError(f"stack {name} has more resources than the step reads")
    folder = ctx.folder(f"cloudformation-{name}")
    body = template if isinstance(template, str) else json.dumps(template, indent=2)
    suffix = "json" if body.lstrip().startswith("{") else "yaml"
    (folder / f"template.{suffix}").write_text(body, encoding="utf-8")
    (folder / "resources.json").write_text(
        json.dumps(resources, indent=2, default=_time), encoding="utf-8"
    )
    (folder / "stack.json").write_text(
        json.dumps(stacks[0] if stacks else {}, indent=2, default=_time), encoding="utf-8"
    )
    return {
        "text": f"template and {plural(len(resources), 'resource')} of {name} saved to {folder}",
        "folder": str(folder),
        "resources": len(resources),
    }


AWS_SNAPSHOTS: dict[tuple[str, str], Callable[[AwsTarget, Budget, StepContext], dict[str, Any]]] = {
    ("rds", "DeleteDBInstance"): snapshot_db_instance,
    ("rds", "DeleteDBCluster"): snapshot_db_cluster,
    ("dynamodb", "DeleteTable"): backup_table,
    ("ec2", "TerminateInstances"): snapshot_volumes,
    ("cloudformation", "DeleteStack"): save_stack,
}
