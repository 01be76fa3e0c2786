"""What an ARM write's JSON body says that its method does not: a resource (or one of
its pools) sized to zero, and a deployment that deletes what its template does not name.

A deployment in ``Complete`` mode deletes every resource of its resource group that its
template does not name, and a deployment stack whose ``actionOnUnmanage`` deletes
removes what its template no longer names (ARM template deployment modes; deployment
stacks, ``actionOnUnmanage``). The body is read as ARM's JSON binding reads it: member
names case-insensitive, a member given twice keeps both values.
"""

from __future__ import annotations

import json
from typing import Any

from guardproxy.recognise.common import decoded_body
from guardproxy.recognise.providers.azure.arm import ArmPath
from guardproxy.recognise.request import HttpRequest


class _Pairs(list[tuple[str, Any]]):
    """A JSON object as its (key, value) pairs: a key given twice keeps both values."""


def _members(node: Any, name: str) -> list[Any]:
    """Every value of member ``name`` (case-insensitive, as ARM's JSON binding reads it)."""
    if not isinstance(node, _Pairs):
        return []
    return [v for k, v in node if k.lower() == name.lower()]


def _body_document(request: HttpRequest) -> Any:
    """The JSON body as pairs; False when there is none, None when it cannot be read."""
    body = decoded_body(request)
    if body is None:
        return None
    if not body.strip():
        return False
    try:
        return json.loads(body, object_pairs_hook=_Pairs)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


_CAPACITY_MEMBERS = frozenset({"capacity", "count", "maxcount", "maxreplicas"})
"""Members that size a fleet: a VM scale set's or App Service plan's ``sku.capacity``,
an AKS agent pool's ``count``/``maxCount``, a container app's ``scale.maxReplicas``."""


def _sets_capacity_to_zero(node: Any, depth: int = 0) -> bool:
    """Whether any capacity member anywhere in ``node`` (a few levels deep) is zero."""
    if depth > 6:
        return False
    if isinstance(node, _Pairs):
        for key, value in node:
            if key.lower() in _CAPACITY_MEMBERS and value == 0 and value is not False:
                return True
            if _sets_capacity_to_zero(value, depth + 1):
                return True
    elif isinstance(node, list):
        return any(_sets_capacity_to_zero(item, depth + 1) for item in node)
    return False


def scales_to_zero(request: HttpRequest, arm: ArmPath) -> bool:
    """Whether a PUT/PATCH of a resource sizes it (or one of its pools) to zero."""
    if request.method.upper() not in ("PUT", "PATCH") or arm.trailing:
        return False
    document = _body_document(request)
    return bool(document) and _sets_capacity_to_zero(document)


def deletes_unmanaged(request: HttpRequest, arm: ArmPath) -> bool | None:
    """Whether a deployment (stack) write deletes what its template does not name:
    ``properties.mode`` ``Complete``, or ``properties.actionOnUnmanage`` deleting
    resources, resource groups or management groups. None when the body cannot be read
    (it may say either)."""
    kind = arm.arm_type.lower()
    if (
        request.method.upper() not in ("PUT", "PATCH")
        or arm.trailing
        or kind
        not in (
            "microsoft.resources/deployments",
            "microsoft.resources/deploymentstacks",
        )
    ):
        return False
    document = _body_document(request)
    if document is None or document is False:
        return None if document is None else False
    properties = _members(document, "properties")
    modes = [m for p in properties for m in _members(p, "mode")]
    if any(isinstance(m, str) and m.lower() == "complete" for m in modes):
        return True
    actions = [a for p in properties for a in _members(p, "actionOnUnmanage")]
    values = [v for a in actions for k in ("resources", "resourceGroups", "managementGroups")
              for v in _members(a, k)]  # fmt: skip
    return any(isinstance(v, str) and v.lower() == "delete" for v in values)
