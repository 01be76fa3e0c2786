"""Azure Resource Manager's path grammar: which hosts are ARM, and a path read as ARM
reads it.

Every resource lives at a path of one grammar,
``/subscriptions/{sub}/resourceGroups/{rg}/providers/{Namespace}/{type}/{name}
[/{childType}/{childName}...][/{action}]`` (Azure/azure-resource-manager-rpc,
proxy-api-reference). The path is read decoded, as ARM reads it: every segment
percent-decoded, so ``roleAssignment%73`` is ``roleAssignments``. The subscription and
resource group segments are themselves ``Microsoft.Resources`` types; an extension
resource (a role assignment on a storage account) is named by the *last* ``providers``
segment, as ARM itself resolves it.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

from guardproxy.hosts import canonical_host
from guardproxy.recognise.request import HttpRequest

_ARM_HOSTS = frozenset(
    {"management.azure.com", "management.usgovcloudapi.net", "management.chinacloudapi.cn"}
)

RESOURCES = "Microsoft.Resources"


# Canonical spelling of path keywords clients send in any case (Terraform sends
# "resourcegroups"); RBAC strings are case-insensitive but policies compare exactly.
_KEYWORDS = {
    k.lower(): k
    for k in (
        "subscriptions",
        "resourceGroups",
        "providers",
        "locations",
        "resources",
        "tagNames",
        "tagValues",
        "deployments",
    )
}


def looks_like_azure(request: HttpRequest) -> bool:
    """Whether ``request`` goes to Azure Resource Manager (public or sovereign cloud)."""
    host = canonical_host(request.host)
    return host in _ARM_HOSTS or host.endswith(".management.azure.com")


@dataclass(frozen=True, slots=True)
class ArmPath:
    """An ARM path, parsed: the namespace and its (type, name) chain."""

    namespace: str
    types: tuple[str, ...]
    names: tuple[str, ...]  # one per type, or one fewer when the path names a collection
    trailing: str  # the segment after the last (type, name) pair: action or collection
    subscription: str
    resource_group: str

    @property
    def arm_type(self) -> str:
        """``Namespace/type[/subtype]`` as RBAC spells it (``trailing`` not included)."""
        return "/".join((self.namespace, *self.types))


def _keyword(segment: str) -> str:
    return _KEYWORDS.get(segment.lower(), segment)


def _pairs(segments: list[str]) -> tuple[tuple[str, ...], tuple[str, ...], str]:
    """(types, names, trailing segment) of an alternating type/name list."""
    types = tuple(_keyword(s) for s in segments[0::2])
    names = tuple(segments[1::2])
    if len(types) > len(names):
        return types[:-1], names, types[-1]
    return types, names, ""


def parse_path(path: str) -> ArmPath | None:
    """The ARM reading of ``path`` (each segment percent-decoded), or None if it is not a
    resource path."""
    segments = [unquote(s) for s in path.split("/") if s]
    if not segments:
        return None
    lowered = [s.lower() for s in segments]
    subscription = resource_group = ""
    if lowered[0] == "subscriptions" and len(segments) > 1:
        subscription = segments[1]
        if len(lowered) > 3 and lowered[2] == "resourcegroups":
            resource_group = segments[3]
    providers = max((i for i, s in enumerate(lowered) if s == "providers"), default=-1)
    if providers < 0:
        if lowered == ["tenants"]:
            return ArmPath(RESOURCES, (), (), "tenants", "", "")
        if lowered[0] != "subscriptions":
            return None
        types, names, trailing = _pairs(segments)
        return ArmPath(RESOURCES, types, names, trailing, subscription, resource_group)
    after = segments[providers + 1 :]
    if not after:
        # "/subscriptions/{s}/providers": the subscription's resource providers.
        types, names, _ = _pairs(segments[:providers])
        return ArmPath(RESOURCES, types, names, "providers", subscription, resource_group)
    if len(after) == 1:
        # ".../providers/Microsoft.Compute": the registration of one resource provider.
        types, names, _ = _pairs([*segments[:providers], "providers", after[0]])
        return ArmPath(RESOURCES, types, names, "", subscription, resource_group)
    types, names, trailing = _pairs(after[1:])
    return ArmPath(after[0], types, names, trailing, subscription, resource_group)
