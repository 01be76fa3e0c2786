"""The Azure Resource Manager recogniser: a ``management.azure.com`` request -> an Action.

ARM needs no model: every resource lives at a path of one grammar,
``/subscriptions/{sub}/resourceGroups/{rg}/providers/{Namespace}/{type}/{name}
[/{childType}/{childName}...][/{action}]``, and the operation RBAC authorises is
derived from method and path (Azure/azure-resource-manager-rpc, proxy-api-reference):
GET -> ``{Namespace}/{types}/read``, PUT/PATCH -> ``.../write``, DELETE ->
``.../delete``, POST ``.../{action}`` -> ``.../{action}/action``. The RBAC string is the
``operation``, so policies speak the same vocabulary as Azure role definitions.

The path is read decoded, as ARM reads it: every segment percent-decoded, so
``roleAssignment%73`` is ``roleAssignments``. Whether an encoded ``/`` (``%2F``) also
separates segments to ARM is not documented, so such a path is read both ways and both
readings are decided.

Two requests whose method understates them are read from their body: a deployment in
``Complete`` mode deletes every resource of its resource group that its template does
not name, and a deployment stack whose ``actionOnUnmanage`` deletes removes what its
template no longer names (ARM template deployment modes; deployment stacks,
``actionOnUnmanage``). Both are bulk destroys of the resource group as well as writes.

The subscription and resource group segments are themselves ``Microsoft.Resources``
types (``Microsoft.Resources/subscriptions/resourceGroups/delete``); an extension
resource (a role assignment on a storage account) is named by the *last*
``providers`` segment, as ARM itself resolves it.

The provider module (see ``recognise/registry.py``): claims ARM hosts (public and
sovereign clouds); refusals are ARM's ``AuthorizationFailed``; selectors
``azure:subscription:<id>``, names the resource and its resource group; containers:
resource groups.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from guardproxy.action import Action, Confidence, Provider, Resource, Scope, Verb
from guardproxy.hosts import canonical_host
from guardproxy.recognise.common import actor_of, cap, decoded_body, resource_key, summary_of
from guardproxy.recognise.examples import NAME, example_request
from guardproxy.recognise.registry import (
    Claim,
    Containers,
    Example,
    NativeError,
    ProviderModule,
    Selectors,
    Spelling,
    json_error,
)
from guardproxy.recognise.request import HttpRequest, RecogniseSettings

__all__ = ["PROVIDER", "looks_like_azure", "parse_path", "recognise_azure"]

_ARM_HOSTS = frozenset(
    {"management.azure.com", "management.usgovcloudapi.net", "management.chinacloudapi.cn"}
)

_RESOURCES = "Microsoft.Resources"

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

# Deleting one of these deletes data or an environment ("Namespace/type", any case).
_DESTROY = frozenset(
    t.lower()
    for t in (
        "Microsoft.Resources/subscriptions",
        "Microsoft.Resources/subscriptions/resourceGroups",
        "Microsoft.Management/managementGroups",
        "Microsoft.Compute/virtualMachines",
        "Microsoft.Compute/virtualMachineScaleSets",
        "Microsoft.Compute/disks",
        "Microsoft.Compute/snapshots",
        "Microsoft.ContainerService/managedClusters",
        "Microsoft.Storage/storageAccounts",
        "Microsoft.Storage/storageAccounts/blobServices/containers",
        "Microsoft.Storage/storageAccounts/fileServices/shares",
        "Microsoft.Sql/servers",
        "Microsoft.Sql/servers/databases",
        "Microsoft.Sql/managedInstances",
        "Microsoft.Sql/managedInstances/databases",
        "Microsoft.DBforPostgreSQL/flexibleServers",
        "Microsoft.DBforPostgreSQL/flexibleServers/databases",
        "Microsoft.DBforPostgreSQL/servers",
        "Microsoft.DBforMySQL/flexibleServers",
        "Microsoft.DBforMySQL/flexibleServers/databases",
        "Microsoft.DBforMySQL/servers",
        "Microsoft.DocumentDB/databaseAccounts",
        "Microsoft.DocumentDB/databaseAccounts/sqlDatabases",
        "Microsoft.DocumentDB/databaseAccounts/mongodbDatabases",
        "Microsoft.Cache/redis",
        "Microsoft.KeyVault/vaults",
        "Microsoft.KeyVault/managedHSMs",
        "Microsoft.RecoveryServices/vaults",
        "Microsoft.DataProtection/backupVaults",
        "Microsoft.Kusto/clusters",
        "Microsoft.Kusto/clusters/databases",
        "Microsoft.Synapse/workspaces",
        "Microsoft.Databricks/workspaces",
        "Microsoft.OperationalInsights/workspaces",
    )
)

# Changing these changes who may do what.
_PERMISSION = frozenset(
    t.lower()
    for t in (
        "Microsoft.Authorization/roleAssignments",
        "Microsoft.Authorization/roleDefinitions",
        "Microsoft.Authorization/denyAssignments",
        "Microsoft.Authorization/roleEligibilityScheduleRequests",
        "Microsoft.Authorization/roleAssignmentScheduleRequests",
        "Microsoft.KeyVault/vaults/accessPolicies",
        "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials",
    )
)

_LOCKS = "microsoft.authorization/locks"

# POST actions, by the action name's leading word (lower case).
_ACTION_WORDS: dict[str, Verb] = {
    **dict.fromkeys(("list", "get", "check", "validate", "what", "export", "preview"), Verb.READ),
    **dict.fromkeys(
        (
            "start",
            "stop",
            "restart",
            "power",
            "deallocate",
            "redeploy",
            "reimage",
            "reapply",
            "generalize",
            "capture",
            "convert",
            "resize",
            "failover",
            "regenerate",
            "rotate",
            "move",
            "register",
            "unregister",
            "upgrade",
            "update",
            "reset",
            "restore",
            "simulate",
            "perform",
            "assess",
            "install",
            "enable",
            "disable",
            "suspend",
            "resume",
            "pause",
            "approve",
            "reject",
            "refresh",
            "sync",
            "attach",
            "detach",
            "set",
            "abort",
        ),
        Verb.UPDATE,
    ),
    **dict.fromkeys(("run", "execute", "invoke", "trigger"), Verb.EXECUTE),
    **dict.fromkeys(("purge",), Verb.DESTROY),
    # POST .../virtualMachineScaleSets/{n}/delete (DeleteInstances),
    # .../agentPools/{p}/deleteMachines, .../removeNodes...: deletes under another name
    **dict.fromkeys(("delete", "remove"), Verb.DELETE),
    **dict.fromkeys(("elevate",), Verb.PERMISSION),
}

# Actions that hand out credentials: reads, but tagged for policies that care.
_SECRET_ACTIONS = (
    "listkeys",
    "listkey",
    "listadminkeys",
    "listquerykeys",
    "listcredentials",
    "listclusteradmincredential",
    "listclusterusercredential",
    "listclustermonitoringusercredential",
    "listconnectionstrings",
    "listsecrets",
    "listaccountsas",
    "listservicesas",
    "listauthkeys",
    "listpublishingcredentials",
    "getaccesstoken",
)

# Whole actions whose class the leading word does not tell.
_ACTION_NAMES: dict[str, Verb] = {
    "microsoft.subscription/cancel": Verb.DESTROY,
    "microsoft.subscription/subscriptions/cancel": Verb.DESTROY,
    "microsoft.resources/subscriptions/resourcegroups/exporttemplate": Verb.READ,
}

_TRUE = frozenset({"true", "True", "TRUE", "1"})


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
            return ArmPath(_RESOURCES, (), (), "tenants", "", "")
        if lowered[0] != "subscriptions":
            return None
        types, names, trailing = _pairs(segments)
        return ArmPath(_RESOURCES, types, names, trailing, subscription, resource_group)
    after = segments[providers + 1 :]
    if not after:
        # "/subscriptions/{s}/providers": the subscription's resource providers.
        types, names, _ = _pairs(segments[:providers])
        return ArmPath(_RESOURCES, types, names, "providers", subscription, resource_group)
    if len(after) == 1:
        # ".../providers/Microsoft.Compute": the registration of one resource provider.
        types, names, _ = _pairs([*segments[:providers], "providers", after[0]])
        return ArmPath(_RESOURCES, types, names, "", subscription, resource_group)
    types, names, trailing = _pairs(after[1:])
    return ArmPath(after[0], types, names, trailing, subscription, resource_group)


def _action_verb(arm: ArmPath, action: str) -> tuple[Verb, bool]:
    """(verb class, exact?) of ``POST .../{action}``."""
    whole = f"{arm.arm_type}/{action}".lower()
    if whole in _ACTION_NAMES:
        return _ACTION_NAMES[whole], True
    word = ""
    for char in action:
        if char.isupper() and word:
            break
        word += char.lower()
    verb = _ACTION_WORDS.get(word)
    if verb is None:
        return Verb.UPDATE, False
    return verb, True


def _operation(method: str, arm: ArmPath) -> tuple[str, Verb, bool, str]:
    """(RBAC operation, verb class, exact?, resource type) for ``method`` on ``arm``."""
    method = method.upper()
    rtype = arm.arm_type
    if method == "POST" and arm.trailing:
        verb, exact = _action_verb(arm, arm.trailing)
        return f"{rtype}/{arm.trailing}/action", verb, exact, rtype
    if arm.trailing:  # a collection: listing it, or (rarely) creating in it
        rtype = f"{rtype}/{arm.trailing}"
    suffix, verb = {
        "GET": ("read", Verb.READ),
        "HEAD": ("read", Verb.READ),
        "PUT": ("write", Verb.CREATE),
        "PATCH": ("write", Verb.UPDATE),
        "DELETE": ("delete", Verb.DELETE),
        "POST": ("action", Verb.UPDATE),
    }.get(method, ("", Verb.UNKNOWN))
    if not suffix:
        return "", Verb.UNKNOWN, False, rtype
    exact = method != "POST"
    key = rtype.lower()
    if verb is Verb.DELETE and key in _DESTROY:
        verb = Verb.DESTROY
    if verb is not Verb.READ and key in _PERMISSION:
        verb = Verb.PERMISSION
    return f"{rtype}/{suffix}", verb, exact, rtype


def _display_type(rtype: str) -> str:
    """ARM's own ``type`` property: resource groups are ``Microsoft.Resources/resourceGroups``."""
    prefix = f"{_RESOURCES}/subscriptions/"
    if rtype.startswith(prefix):
        return _RESOURCES + "/" + rtype[len(prefix) :]
    return rtype


def _risk_tags(request: HttpRequest, arm: ArmPath, operation: str, verb: Verb) -> list[str]:
    query = {k.lower(): v for k, v in request.query}
    tags: list[str] = []
    if query.get("forcedeletion") in _TRUE or query.get("forcedeletiontypes"):
        tags.append("force")
    if arm.arm_type.lower() == _LOCKS and verb is Verb.DELETE:
        tags.append("protection-removal")
    if arm.trailing.lower() in _SECRET_ACTIONS and operation.endswith("/action"):
        tags.append("secret-read")
    if verb is not Verb.READ and _scales_to_zero(request, arm):
        tags.append("scale-to-zero")
    return tags


def _unknown(request: HttpRequest, arm: ArmPath | None) -> Action:
    return Action(
        provider=Provider.AZURE,
        scope=Scope(
            subscription=arm.subscription if arm else "",
            resource_group=arm.resource_group if arm else "",
        ),
        actor=actor_of(request),
        request=summary_of(request),
    )


_SEVERITY = {
    Verb.UNKNOWN: 7,
    Verb.DESTROY: 6,
    Verb.PERMISSION: 5,
    Verb.DELETE: 4,
    Verb.EXECUTE: 3,
    Verb.UPDATE: 2,
    Verb.CREATE: 1,
    Verb.READ: 0,
}
_ENCODED_SLASH = "ambiguous:encoded-slash"


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


def _scales_to_zero(request: HttpRequest, arm: ArmPath) -> bool:
    """Whether a PUT/PATCH of a resource sizes it (or one of its pools) to zero."""
    if request.method.upper() not in ("PUT", "PATCH") or arm.trailing:
        return False
    document = _body_document(request)
    return bool(document) and _sets_capacity_to_zero(document)


def _deletes_unmanaged(request: HttpRequest, arm: ArmPath) -> bool | None:
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


def recognise_azure(request: HttpRequest) -> Action:
    """The Action for an ARM request (environment is resolved by the caller).

    ``/batch`` (many requests in one JSON body) is not decoded and fails closed. A path
    with an encoded ``/`` is also read with it as a separator; the most dangerous
    reading comes first.
    """
    path = request.path_only
    actions = [_recognise_path(request, path)]
    if "%2f" in path.lower():
        other = _recognise_path(request, unquote(path))
        if other != actions[0]:
            actions.append(other)
    if len(actions) == 1:
        return actions[0]
    actions.sort(key=lambda a: -_SEVERITY[a.verb])
    marked = [
        a.model_copy(
            update={
                "risk_tags": [*a.risk_tags, _ENCODED_SLASH],
                "confidence": Confidence.AMBIGUOUS if a.classified else a.confidence,
            }
        )
        for a in actions
    ]
    return marked[0].model_copy(update={"readings": marked[1:]})


def _recognise_path(request: HttpRequest, path: str) -> Action:
    arm = parse_path(path)
    if arm is None:
        return _unknown(request, None)
    operation, verb, exact, rtype = _operation(request.method, arm)
    if not operation:
        return _unknown(request, arm)
    collection = bool(arm.trailing) and not operation.endswith("/action")
    names = arm.names
    if arm.namespace == _RESOURCES and arm.types[:1] == ("subscriptions",) and len(names) > 1:
        names = names[1:]  # a resource group is named by itself, not "{sub}/{rg}"
    name, cut = cap("" if collection else "/".join(names))
    display = f"azure:{_display_type(rtype)}"
    if not arm.types and not collection and arm.namespace != _RESOURCES and arm.subscription:
        # A provider-level action (register, Microsoft.Subscription/cancel) acts on
        # the subscription it is invoked in.
        display, name = f"azure:{_RESOURCES}/subscriptions", arm.subscription
    region = ""
    if "locations" in arm.types:
        region = arm.names[arm.types.index("locations")]
    scope = (arm.subscription, arm.resource_group)
    action = Action(
        provider=Provider.AZURE,
        service=arm.namespace,
        operation=operation,
        verb=verb,
        resource=Resource(type=display, name=name, key=resource_key("azure", scope, display, name)),
        scope=Scope(
            subscription=arm.subscription, resource_group=arm.resource_group, region=region
        ),
        risk_tags=_risk_tags(request, arm, operation, verb),
        actor=actor_of(request),
        request=summary_of(request),
        confidence=Confidence.EXACT if exact else Confidence.HEURISTIC,
        truncated=cut,
    )
    unmanaged = _deletes_unmanaged(request, arm)
    if unmanaged is False:
        return action
    if unmanaged is None:  # a body that may say Complete: unknown, never a plain write
        wipe = action.model_copy(update={"verb": Verb.UNKNOWN, "confidence": Confidence.UNKNOWN})
    else:
        wipe = action.model_copy(
            update={"verb": Verb.DESTROY, "risk_tags": [*action.risk_tags, "bulk"]}
        )
    return wipe.model_copy(update={"readings": [action]})


# ------------------------------------------------------------------ the provider


def _claims(request: HttpRequest, settings: RecogniseSettings) -> bool:
    return looks_like_azure(request)


def _reason(request: HttpRequest) -> str:
    return f"{request.host} is Azure Resource Manager"


def _error(request: HttpRequest, action: Action, message: str, reference: str) -> NativeError:
    error = {"code": "AuthorizationFailed", "message": message}
    return json_error("application/json; charset=utf-8", {"error": error})


def _selectors(action: Action, spell: Spelling) -> list[str]:
    subscription = action.scope.subscription
    return [f"azure:subscription:{subscription}"] if subscription else []


def _names(action: Action) -> list[str]:
    # the resource group a resource lives in is read like a Kubernetes namespace
    return [
        action.resource.name or action.resource.id,
        action.scope.namespace,
        action.scope.resource_group,
    ]


def _resource_group(subscription: str, name: str) -> str:
    return f"azure:{subscription.lower()}:resourcegroup/{name.lower()}"


def _destroyed(action: Action) -> str:
    if action.resource.type.lower().endswith("/resourcegroups"):
        return _resource_group(action.scope.subscription, action.resource.name)
    return ""


def _enclosing(action: Action) -> list[str]:
    scope = action.scope
    if scope.resource_group and not action.resource.type.lower().endswith("/resourcegroups"):
        return [_resource_group(scope.subscription, scope.resource_group)]
    return []


# ------------------------------------------------------------------ destructive examples

_ARM_HOST = "management.azure.com"
_SUBSCRIPTION = "00000000-0000-0000-0000-0000000000ca"
_ARM_GROUP = f"/subscriptions/{_SUBSCRIPTION}/resourceGroups/{NAME}"
_ARM_VERSION = "?api-version=2024-01-01"

# Common ARM resource types (Azure resource providers reference,
# learn.microsoft.com/azure/azure-resource-manager/management/azure-services-resource-providers,
# and the REST API references of each service), as paths below a resource group:
# ``Namespace/type[/name/childType]``; the catalogue deletes a resource of each.
_ARM_TYPES = (
    "Microsoft.ApiManagement/service",
    "Microsoft.App/containerApps",
    "Microsoft.App/managedEnvironments",
    "Microsoft.AppConfiguration/configurationStores",
    "Microsoft.Authorization/locks",
    "Microsoft.Automation/automationAccounts",
    "Microsoft.Batch/batchAccounts",
    "Microsoft.Cache/redis",
    "Microsoft.Cdn/profiles",
    "Microsoft.Cdn/profiles/calc/endpoints",
    "Microsoft.CognitiveServices/accounts",
    "Microsoft.Compute/availabilitySets",
    "Microsoft.Compute/disks",
    "Microsoft.Compute/galleries",
    "Microsoft.Compute/images",
    "Microsoft.Compute/snapshots",
    "Microsoft.Compute/virtualMachineScaleSets",
    "Microsoft.Compute/virtualMachines",
    "Microsoft.Compute/virtualMachines/calc/extensions",
    "Microsoft.ContainerInstance/containerGroups",
    "Microsoft.ContainerRegistry/registries",
    "Microsoft.ContainerService/managedClusters",
    "Microsoft.ContainerService/managedClusters/calc/agentPools",
    "Microsoft.DataFactory/factories",
    "Microsoft.DataProtection/backupVaults",
    "Microsoft.Databricks/workspaces",
    "Microsoft.DBforMySQL/flexibleServers",
    "Microsoft.DBforMySQL/flexibleServers/calc/databases",
    "Microsoft.DBforPostgreSQL/flexibleServers",
    "Microsoft.DBforPostgreSQL/flexibleServers/calc/databases",
    "Microsoft.DBforPostgreSQL/flexibleServers/calc/firewallRules",
    "Microsoft.DocumentDB/databaseAccounts",
    "Microsoft.DocumentDB/databaseAccounts/calc/sqlDatabases",
    "Microsoft.EventGrid/topics",
    "Microsoft.EventHub/namespaces",
    "Microsoft.EventHub/namespaces/calc/eventhubs",
    "Microsoft.Insights/actionGroups",
    "Microsoft.Insights/components",
    "Microsoft.Insights/diagnosticSettings",
    "Microsoft.Insights/metricAlerts",
    "Microsoft.KeyVault/managedHSMs",
    "Microsoft.KeyVault/vaults",
    "Microsoft.KeyVault/vaults/calc/secrets",
    "Microsoft.Kusto/clusters",
    "Microsoft.Logic/workflows",
    "Microsoft.MachineLearningServices/workspaces",
    "Microsoft.ManagedIdentity/userAssignedIdentities",
    "Microsoft.Network/applicationGateways",
    "Microsoft.Network/azureFirewalls",
    "Microsoft.Network/bastionHosts",
    "Microsoft.Network/dnsZones",
    "Microsoft.Network/dnsZones/calc/A",
    "Microsoft.Network/frontDoors",
    "Microsoft.Network/loadBalancers",
    "Microsoft.Network/natGateways",
    "Microsoft.Network/networkInterfaces",
    "Microsoft.Network/networkSecurityGroups",
    "Microsoft.Network/networkSecurityGroups/calc/securityRules",
    "Microsoft.Network/privateDnsZones",
    "Microsoft.Network/privateEndpoints",
    "Microsoft.Network/publicIPAddresses",
    "Microsoft.Network/routeTables",
    "Microsoft.Network/trafficmanagerprofiles",
    "Microsoft.Network/virtualNetworkGateways",
    "Microsoft.Network/virtualNetworks",
    "Microsoft.Network/virtualNetworks/calc/subnets",
    "Microsoft.Network/virtualNetworks/calc/virtualNetworkPeerings",
    "Microsoft.OperationalInsights/workspaces",
    "Microsoft.RecoveryServices/vaults",
    "Microsoft.Search/searchServices",
    "Microsoft.ServiceBus/namespaces",
    "Microsoft.ServiceBus/namespaces/calc/queues",
    "Microsoft.SignalRService/signalR",
    "Microsoft.Sql/managedInstances",
    "Microsoft.Sql/servers",
    "Microsoft.Sql/servers/calc/databases",
    "Microsoft.Sql/servers/calc/firewallRules",
    "Microsoft.Storage/storageAccounts",
    "Microsoft.Storage/storageAccounts/calc/blobServices/default/containers",
    "Microsoft.Storage/storageAccounts/calc/fileServices/default/shares",
    "Microsoft.Synapse/workspaces",
    "Microsoft.Web/serverfarms",
    "Microsoft.Web/sites",
    "Microsoft.Web/sites/calc/slots",
    "Microsoft.Web/staticSites",
)

# Permission changes: role assignments and definitions at subscription, resource group
# and resource scope (Microsoft.Authorization REST reference), Key Vault access
# policies, federated credentials.
_ARM_PERMISSION_PATHS = (
    f"/subscriptions/{_SUBSCRIPTION}/providers/Microsoft.Authorization/roleAssignments/{NAME}",
    f"{_ARM_GROUP}/providers/Microsoft.Authorization/roleAssignments/{NAME}",
    f"{_ARM_GROUP}/providers/Microsoft.Storage/storageAccounts/{NAME}"
    f"/providers/Microsoft.Authorization/roleAssignments/{NAME}",
    f"/subscriptions/{_SUBSCRIPTION}/providers/Microsoft.Authorization/roleDefinitions/{NAME}",
    f"{_ARM_GROUP}/providers/Microsoft.KeyVault/vaults/{NAME}/accessPolicies/add",
    f"{_ARM_GROUP}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{NAME}"
    f"/federatedIdentityCredentials/{NAME}",
)


def _arm(method: str, path: str) -> HttpRequest:
    headers = (("user-agent", "AZURECLI/2.67.0 azsdk-python-core/1.32.0"),)
    body: dict[str, object] = {"properties": {}} if method in ("PUT", "PATCH") else {}
    return example_request(method, _ARM_HOST, path + _ARM_VERSION, body or b"", headers)


def _destructive() -> Iterator[Example]:
    """Resource group, subscription, management group and deployment deletes, a delete
    of each common resource type, role and lock changes, purges."""
    yield Example("azure:resourceGroups:delete", _arm("DELETE", _ARM_GROUP))
    subscription = f"/subscriptions/{_SUBSCRIPTION}"
    yield Example(
        "azure:subscription:cancel",
        _arm("POST", f"{subscription}/providers/Microsoft.Subscription/cancel"),
    )
    yield Example(
        "azure:managementGroups:delete",
        _arm("DELETE", f"/providers/Microsoft.Management/managementGroups/{NAME}"),
    )
    yield Example(
        "azure:deployments:delete",
        _arm("DELETE", f"{_ARM_GROUP}/providers/Microsoft.Resources/deployments/{NAME}"),
    )
    for rtype in _ARM_TYPES:
        path = f"{_ARM_GROUP}/providers/{rtype}/{NAME}"
        yield Example(f"azure:{rtype}:delete", _arm("DELETE", path))
    for path in _ARM_PERMISSION_PATHS:
        tail = path.split("/providers/")[-1]
        for method in ("PUT", "DELETE"):
            yield Example(f"azure:{tail}:{method.lower()}", _arm(method, path))
    for purge in (
        f"{subscription}/providers/Microsoft.KeyVault/locations/westeurope/deletedVaults/{NAME}/purge",
        f"{subscription}/providers/Microsoft.KeyVault/locations/westeurope/deletedManagedHSMs/{NAME}/purge",
    ):
        yield Example(f"azure:{purge.split('/providers/')[-1]}", _arm("POST", purge))
    yield Example(
        "azure:Microsoft.Authorization/elevateAccess",
        _arm("POST", "/providers/Microsoft.Authorization/elevateAccess"),
    )


PROVIDER = ProviderModule(
    provider=Provider.AZURE,
    recognise=recognise_azure,
    claims=(Claim(60, "azure", _claims, _reason),),
    error=_error,
    selectors=Selectors(_selectors, names=_names),
    containers=Containers(destroyed=_destroyed, enclosing=_enclosing),
    destructive=_destructive,
)
