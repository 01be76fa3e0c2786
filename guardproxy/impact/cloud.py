"""GCP and Azure: what a project, instance or resource group delete takes with it.

* GCP project delete: the Cloud Asset API's asset list for the project (counts by
  asset type, read in pages up to a bound);
* GCP Compute instance delete: the instance (status, machine type, disks, labels);
* Azure resource group delete: Resource Manager's list of the group's resources
  (counts by type, ``nextLink`` pages up to a bound).

The calls go to the held request's host when it is not Google's or Microsoft's (a
private endpoint, a test server); for Google's API hosts, the project's assets are
asked of ``cloudasset.googleapis.com`` with the same brokered or presented token.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlsplit

from guardproxy.action import Action
from guardproxy.impact.access import HttpClient, Origin
from guardproxy.impact.model import Facts, ImpactError, count_text, plural

__all__ = ["CLOUD_PREVIEWS"]

PAGE_CAP = 10


def _asset_origin(client: HttpClient) -> Origin:
    origin = client.access.origin
    if origin.host.lower().endswith(".googleapis.com"):
        return Origin("https", "cloudasset.googleapis.com", 443)
    return origin


def preview_project(client: HttpClient, action: Action) -> Facts:
    project = action.resource.name or action.scope.project
    if not project:
        raise ImpactError("the request names no project")
    origin = _asset_origin(client)
    counts: dict[str, int] = {}
    token, more = "", False
    for page in range(PAGE_CAP):
        query = "pageSize=1000" + (f"&pageToken={quote(token)}" if token else "")
        answer = client.get_json(f"/v1/projects/{quote(project)}/assets?{query}", origin=origin)
        if not isinstance(answer, dict) or set(answer) - {"assets", "nextPageToken", "readTime"}:
            raise ImpactError("the Cloud Asset API did not answer a list of assets")
        for asset in answer.get("assets") or []:
            kind = str(asset.get("assetType", "?"))
            counts[kind] = counts.get(kind, 0) + 1
        token = str(answer.get("nextPageToken") or "")
        if not token:
            break
        more = page == PAGE_CAP - 1
    total = sum(counts.values())
    return Facts(
        f"project {project}: {plural(total, 'resource', at_least=more)}"
        + (f" ({count_text(counts)})" if counts else ""),
        {
            "kind": "gcp:project",
            "project": project,
            "resources": total,
            "resources_at_least": more,
            "resource_types": counts,
        },
    )


def preview_instance(client: HttpClient, action: Action) -> Facts:
    instance = client.get_json(action.request.path)
    if not isinstance(instance, dict) or instance.get("kind") != "compute#instance":
        raise ImpactError("Compute Engine did not answer an instance")
    disks = [
        str(d.get("deviceName") or d.get("source", "").rpartition("/")[2])
        for d in instance.get("disks") or []
    ]
    keep = [d for d in instance.get("disks") or [] if not d.get("autoDelete")]
    labels = instance.get("labels") or {}
    machine = str(instance.get("machineType", "")).rpartition("/")[2]
    return Facts(
        f"{instance.get('status', '?')} {machine}; {plural(len(disks), 'disk')}"
        f" ({len(disks) - len(keep)} deleted with it)"
        + (
            f"; labels {', '.join(f'{k}={v}' for k, v in sorted(labels.items()))}" if labels else ""
        ),
        {
            "kind": "gcp:compute:instance",
            "name": instance.get("name", action.resource.name),
            "status": instance.get("status", ""),
            "machine_type": machine,
            "disks": disks,
            "disks_kept": len(keep),
            "labels": labels,
        },
    )


def preview_resource_group(client: HttpClient, action: Action) -> Facts:
    subscription = action.scope.subscription
    group = action.resource.name or action.scope.resource_group
    if not subscription or not group:
        raise ImpactError("the request names no subscription or resource group")
    path: str | None = (
        f"/subscriptions/{quote(subscription)}/resourceGroups/{quote(group)}/resources"
        "?api-version=2021-04-01"
    )
    counts: dict[str, int] = {}
    more = False
    for page in range(PAGE_CAP):
        assert path is not None
        answer = client.get_json(path)
        if not isinstance(answer, dict) or not isinstance(answer.get("value"), list):
            raise ImpactError("Resource Manager did not answer a list of resources")
        for resource in answer["value"]:
            kind = str(resource.get("type", "?"))
            counts[kind] = counts.get(kind, 0) + 1
        link = str(answer.get("nextLink") or "")
        if not link:
            break
        split = urlsplit(link)
        if (split.hostname or "").lower() != client.access.origin.host.lower():
            raise ImpactError("Resource Manager's next page is on another host")
        path = split.path + (f"?{split.query}" if split.query else "")
        more = page == PAGE_CAP - 1
    total = sum(counts.values())
    return Facts(
        f"resource group {group}: {plural(total, 'resource', at_least=more)}"
        + (f" ({count_text(counts)})" if counts else ""),
        {
            "kind": "azure:resource-group",
            "subscription": subscription,
            "resource_group": group,
            "resources": total,
            "resources_at_least": more,
            "resource_types": counts,
        },
    )


CLOUD_PREVIEWS: dict[str, Callable[[HttpClient, Action], Any]] = {
    "cloudresourcemanager.projects.delete": preview_project,
    "compute.instances.delete": preview_instance,
    "Microsoft.Resources/subscriptions/resourceGroups/delete": preview_resource_group,
}
