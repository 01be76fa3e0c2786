"""AWS data stores: S3 ``DeleteBucket`` (objects, at least N; versioning), RDS
``DeleteDBInstance`` / ``DeleteDBCluster`` (size, deletion protection, latest snapshot,
whether the request skips the final snapshot), DynamoDB ``DeleteTable`` (items,
point-in-time recovery); and the snapshots taken first: RDS ``CreateDBSnapshot`` /
``CreateDBClusterSnapshot`` and DynamoDB ``CreateBackup``, each until available.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from guardproxy.impact.aws._client import AwsTarget, read_pages, time_text, wait_until
from guardproxy.impact.model import Budget, Facts, ImpactError, StepContext, plural, stamp

S3_OBJECT_CAP = 1000


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
    return time_text(max(times)) if times else ""


def preview_db_instance(target: AwsTarget, budget: Budget) -> Facts:
    name = target.one("DBInstanceIdentifier")
    rds = target.client("rds", budget)
    found = rds.describe_db_instances(DBInstanceIdentifier=name).get("DBInstances") or []
    if not found:
        raise ImpactError(f"DB instance {name} does not exist")
    db = found[0]
    snapshots, _ = read_pages(
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
    snapshots, _ = read_pages(
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


def snapshot_db_instance(target: AwsTarget, budget: Budget, ctx: StepContext) -> dict[str, Any]:
    name = target.one("DBInstanceIdentifier")
    rds = target.client("rds", budget)
    snapshot = f"guardproxy-{ctx.hold_id}-{stamp(ctx.now)}"
    rds.create_db_snapshot(DBSnapshotIdentifier=snapshot, DBInstanceIdentifier=name)

    def poll() -> str:
        found = rds.describe_db_snapshots(DBSnapshotIdentifier=snapshot).get("DBSnapshots") or []
        return str(found[0].get("Status", "")) if found else "missing"

    status = wait_until(
        budget, f"DB snapshot {snapshot}", poll, {"available"}, {"failed", "missing"}
    )
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

    status = wait_until(
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

    status = wait_until(budget, f"backup {backup}", poll, {"AVAILABLE"}, {"DELETED"})
    return {
        "text": f"dynamodb backup {backup} of {name} ({status.lower()})",
        "backup": backup,
        "backup_arn": arn,
        "table": name,
        "status": status,
    }
