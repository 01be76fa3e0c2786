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

The botocore calls are in ``_client``; the previews and snapshots per service family in
``cloudformation``, ``data`` (S3, RDS, DynamoDB) and ``compute`` (EC2, EKS, ECS).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from guardproxy.impact.aws._client import AwsTarget
from guardproxy.impact.aws.cloudformation import preview_stack, save_stack
from guardproxy.impact.aws.compute import (
    preview_ecs,
    preview_eks,
    preview_instances,
    snapshot_volumes,
)
from guardproxy.impact.aws.data import (
    backup_table,
    preview_bucket,
    preview_db_cluster,
    preview_db_instance,
    preview_table,
    snapshot_db_cluster,
    snapshot_db_instance,
)
from guardproxy.impact.model import Budget, Facts, StepContext

__all__ = ["AWS_PREVIEWS", "AWS_SNAPSHOTS", "AwsTarget"]

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


AWS_SNAPSHOTS: dict[tuple[str, str], Callable[[AwsTarget, Budget, StepContext], dict[str, Any]]] = {
    ("rds", "DeleteDBInstance"): snapshot_db_instance,
    ("rds", "DeleteDBCluster"): snapshot_db_cluster,
    ("dynamodb", "DeleteTable"): backup_table,
    ("ec2", "TerminateInstances"): snapshot_volumes,
    ("cloudformation", "DeleteStack"): save_stack,
}
