"""AWS compute: EC2 ``TerminateInstances`` (Name and environment tags, Auto Scaling group,
EBS volumes), EKS ``DeleteCluster`` (node groups), ECS ``DeleteCluster`` (services,
tasks); and the EBS ``CreateSnapshot`` of every volume of the terminated instances,
until completed, before the termination is released.
"""

from __future__ import annotations

from typing import Any

from guardproxy.impact.aws._client import AwsTarget, read_pages, wait_until
from guardproxy.impact.model import Budget, Facts, ImpactError, StepContext, plural


def _instances(target: AwsTarget, budget: Budget) -> tuple[Any, list[dict[str, Any]]]:
    ids = [str(i) for i in target.params.get("InstanceIds") or []]
    for reading in target.readings[1:]:
        if [str(i) for i in reading.get("InstanceIds") or []] != ids:
            raise ImpactError("the request does not name one set of instances")
    if not ids:
        raise ImpactError("the request names no instance")
    ec2 = target.client("ec2", budget)
    reservations, _ = read_pages(
        ec2.describe_instances, "Reservations", "NextToken", InstanceIds=ids
    )
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
    groups, more = read_pages(eks.list_nodegroups, "nodegroups", "nextToken", clusterName=name)
    profiles, _ = read_pages(
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
    services, more = read_pages(ecs.list_services, "serviceArns", "nextToken", cluster=name)
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

    wait_until(budget, "EBS snapshots", poll, {"completed"}, {"error"})
    return {
        "text": "ebs snapshots " + ", ".join(f"{s} of {v}" for v, s in snapshots.items()),
        "snapshots": snapshots,
    }
