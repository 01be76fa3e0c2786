"""Kubernetes: what a namespace, PersistentVolume or CustomResourceDefinition delete
takes with it, and the export of a namespace before it is released.

The calls go to the held request's API server with the client credentials the proxy
presents for it (the session user's brokered certificate, token or exec plugin; else
the request's own token), as plain API ``list``/``get`` calls; lists are read in pages
(``limit``/``continue``) up to a bound, and a capped count says "at least".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

import yaml

from guardproxy.action import Action
from guardproxy.impact.access import HttpClient, NotFound
from guardproxy.impact.model import Facts, ImpactError, StepContext, plural

__all__ = ["KUBE_PREVIEWS", "KUBE_SNAPSHOTS", "count_list"]

PAGE_SIZE = 500
PAGE_CAP = 4
EXPORT_PAGE_CAP = 40
EXPORT_TYPE_CAP = 300

NAMESPACE_KINDS = (
    ("deployments", "/apis/apps/v1/namespaces/{ns}/deployments"),
    ("statefulsets", "/apis/apps/v1/namespaces/{ns}/statefulsets"),
    ("persistentvolumeclaims", "/api/v1/namespaces/{ns}/persistentvolumeclaims"),
    ("services", "/api/v1/namespaces/{ns}/services"),
    ("pods", "/api/v1/namespaces/{ns}/pods"),
)


def _pages(client: HttpClient, path: str, cap: int) -> tuple[list[dict[str, Any]], bool]:
    """The items of a list over at most ``cap`` pages, and whether more were left."""
    items: list[dict[str, Any]] = []
    token = ""
    for _ in range(cap):
        query = {"limit": str(PAGE_SIZE), **({"continue": token} if token else {})}
        answer = client.get_json(f"{path}?{urlencode(query)}")
        if not isinstance(answer, dict) or not isinstance(answer.get("items"), list):
            raise ImpactError(f"{path} did not answer a Kubernetes list")
        items.extend(i for i in answer["items"] if isinstance(i, dict))
        token = str((answer.get("metadata") or {}).get("continue") or "")
        if not token:
            return items, False
    return items, True


def _expect(answer: Any, kind: str) -> dict[str, Any]:
    """``answer`` if it is a ``kind`` object, else ImpactError (not a Kubernetes API)."""
    if not isinstance(answer, dict) or answer.get("kind") != kind:
        raise ImpactError(f"the server did not answer a {kind}")
    return answer


def count_list(client: HttpClient, path: str) -> tuple[int, bool]:
    items, more = _pages(client, path, PAGE_CAP)
    return len(items), more


def preview_namespace(client: HttpClient, action: Action) -> Facts:
    namespace = action.resource.name
    ns = quote(namespace, safe="")
    _expect(client.get_json(f"/api/v1/namespaces/{ns}"), "Namespace")
    counts: dict[str, int] = {}
    capped: list[str] = []
    not_served: list[str] = []
    for kind, template in NAMESPACE_KINDS:
        try:
            count, more = count_list(client, template.format(ns=ns))
        except NotFound:
            not_served.append(kind)
            continue
        counts[kind] = count
        if more:
            capped.append(kind)
    said = ", ".join(
        plural(n, k[:-1] if k.endswith("s") else k, at_least=k in capped) for k, n in counts.items()
    )
    if not_served:
        said += f" ({', '.join(not_served)}: not served by this API server)"
    return Facts(
        f"namespace {namespace}: {said}",
        {
            "kind": "k8s:namespace",
            "namespace": namespace,
            "counts": counts,
            "at_least": capped,
            "not_served": not_served,
        },
    )


def _uses_claim(pod: dict[str, Any], claim: str) -> bool:
    volumes = (pod.get("spec") or {}).get("volumes") or []
    return any(
        ((v or {}).get("persistentVolumeClaim") or {}).get("claimName") == claim for v in volumes
    )


def preview_volume(client: HttpClient, action: Action) -> Facts:
    name = action.resource.name
    volume = _expect(
        client.get_json(f"/api/v1/persistentvolumes/{quote(name, safe='')}"), "PersistentVolume"
    )
    spec = volume.get("spec") or {}
    claim = spec.get("claimRef") or {}
    phase = str((volume.get("status") or {}).get("phase", ""))
    size = str((spec.get("capacity") or {}).get("storage", ""))
    policy = str(spec.get("persistentVolumeReclaimPolicy", ""))
    pods: list[str] = []
    if claim.get("name") and claim.get("namespace"):
        items, _ = _pages(
            client, f"/api/v1/namespaces/{quote(str(claim['namespace']))}/pods", PAGE_CAP
        )
        pods = [
            str((p.get("metadata") or {}).get("name", ""))
            for p in items
            if _uses_claim(p, str(claim["name"]))
        ]
    bound = (
        f"bound to claim {claim.get('namespace')}/{claim.get('name')}"
        + (
            f", mounted by {plural(len(pods), 'pod')} ({', '.join(pods[:5])})"
            if pods
            else ", mounted by no pod"
        )
        if claim.get("name")
        else "bound to no claim"
    )
    return Facts(
        f"{size or 'a'} volume, {phase or 'phase unknown'}, "
        f"reclaim policy {policy or '?'}; {bound}",
        {
            "kind": "k8s:persistentvolume",
            "name": name,
            "phase": phase,
            "capacity": size,
            "reclaim_policy": policy,
            "claim": {k: claim.get(k, "") for k in ("namespace", "name")},
            "pods": pods,
        },
    )


def preview_crd(client: HttpClient, action: Action) -> Facts:
    name = action.resource.name
    crd = _expect(
        client.get_json(
            f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{quote(name, safe='')}"
        ),
        "CustomResourceDefinition",
    )
    spec = crd.get("spec") or {}
    group = str(spec.get("group", ""))
    plural_name = str((spec.get("names") or {}).get("plural", ""))
    versions = [v for v in spec.get("versions") or [] if isinstance(v, dict)]
    storage = next((v for v in versions if v.get("storage")), versions[0] if versions else {})
    version = str(storage.get("name", ""))
    if not (group and plural_name and version):
        raise ImpactError(f"the definition {name} names no group, plural or version")
    items, more = _pages(client, f"/apis/{group}/{version}/{plural_name}", PAGE_CAP)
    namespaces = sorted({str((i.get("metadata") or {}).get("namespace", "")) for i in items} - {""})
    return Facts(
        f"{plural(len(items), 'custom resource', at_least=more)} of {plural_name}.{group} "
        "deleted with it"
        + (
            f", in {plural(len(namespaces), 'namespace')} ({', '.join(namespaces[:5])})"
            if namespaces
            else ""
        ),
        {
            "kind": "k8s:customresourcedefinition",
            "name": name,
            "group": group,
            "version": version,
            "plural": plural_name,
            "objects": len(items),
            "objects_at_least": more,
            "namespaces": namespaces,
        },
    )


def _preview_for(action: Action) -> Callable[[HttpClient, Action], Facts] | None:
    kind = action.resource.type
    if action.operation != "delete" or not action.resource.name:
        return None
    return {
        "k8s:core:namespaces": preview_namespace,
        "k8s:core:persistentvolumes": preview_volume,
        "k8s:apiextensions.k8s.io:customresourcedefinitions": preview_crd,
    }.get(kind)


KUBE_PREVIEWS = _preview_for


# -- the namespace export -----------------------------------------------------------------


def _namespaced_lists(client: HttpClient) -> list[tuple[str, str, str]]:
    """(group/version, plural, kind) of every namespaced resource type the server lists,
    from discovery (core, then each group's preferred version)."""
    found: list[tuple[str, str, str]] = []
    versions = ["v1"]
    groups = client.get_json("/apis")
    for group in (groups or {}).get("groups") or []:
        preferred = (group.get("preferredVersion") or {}).get("groupVersion")
        if preferred:
            versions.append(str(preferred))
    for group_version in versions:
        path = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
        try:
            listed = client.get_json(path)
        except NotFound:
            continue
        for resource in (listed or {}).get("resources") or []:
            name = str(resource.get("name", ""))
            if "/" in name or not resource.get("namespaced"):
                continue
            if "list" not in (resource.get("verbs") or []):
                continue
            found.append((group_version, name, str(resource.get("kind", ""))))
    return found[:EXPORT_TYPE_CAP]


def export_namespace(
    client: HttpClient, action: Action, ctx: StepContext, include_secrets: bool
) -> dict[str, Any]:
    namespace = action.resource.name
    ns = quote(namespace, safe="")
    _expect(client.get_json(f"/api/v1/namespaces/{ns}"), "Namespace")
    folder = ctx.folder(f"k8s-namespace-{namespace}")
    counts: dict[str, int] = {}
    skipped: list[str] = []
    for group_version, name, kind in _namespaced_lists(client):
        if name == "secrets" and group_version == "v1" and not include_secrets:
            skipped.append("secrets")
            continue
        base = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
        items, more = _pages(client, f"{base}/namespaces/{ns}/{name}", EXPORT_PAGE_CAP)
        if more:
            raise ImpactError(f"{name} in {namespace} has more objects than the export reads")
        if not items:
            continue
        for item in items:
            item.setdefault("apiVersion", group_version)
            item.setdefault("kind", kind)
        file = folder / f"{group_version.replace('/', '_')}_{name}.yaml"
        file.write_text(yaml.safe_dump_all(items, sort_keys=False), encoding="utf-8")
        counts[name] = len(items)
    total = sum(counts.values())
    note = "; Secrets left out" if skipped else ""
    return {
        "text": f"{plural(total, 'object')} of namespace {namespace} exported to {folder}{note}",
        "folder": str(folder),
        "objects": counts,
        "secrets_included": include_secrets,
    }


KUBE_SNAPSHOTS = {"k8s:core:namespaces": export_namespace}
