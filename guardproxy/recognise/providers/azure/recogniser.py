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

The path grammar is read by ``arm.py``, the body by ``body.py``.
"""

from __future__ import annotations

from urllib.parse import unquote

from guardproxy.action import Action, Confidence, Provider, Resource, Scope, Verb
from guardproxy.recognise.common import actor_of, cap, resource_key, summary_of
from guardproxy.recognise.providers.azure.arm import RESOURCES, ArmPath, parse_path
from guardproxy.recognise.providers.azure.body import deletes_unmanaged, scales_to_zero
from guardproxy.recognise.request import HttpRequest

__all__ = ["recognise_azure"]

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
    prefix = f"{RESOURCES}/subscriptions/"
    if rtype.startswith(prefix):
        return RESOURCES + "/" + rtype[len(prefix) :]
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
    if verb is not Verb.READ and scales_to_zero(request, arm):
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
    if arm.namespace == RESOURCES and arm.types[:1] == ("subscriptions",) and len(names) > 1:
        names = names[1:]  # a resource group is named by itself, not "{sub}/{rg}"
    name, cut = cap("" if collection else "/".join(names))
    display = f"azure:{_display_type(rtype)}"
    if not arm.types and not collection and arm.namespace != RESOURCES and arm.subscription:
        # A provider-level action (register, Microsoft.Subscription/cancel) acts on
        # the subscription it is invoked in.
        display, name = f"azure:{RESOURCES}/subscriptions", arm.subscription
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
    unmanaged = deletes_unmanaged(request, arm)
    if unmanaged is False:
        return action
    if unmanaged is None:  # a body that may say Complete: unknown, never a plain write
        wipe = action.model_copy(update={"verb": Verb.UNKNOWN, "confidence": Confidence.UNKNOWN})
    else:
        wipe = action.model_copy(
            update={"verb": Verb.DESTROY, "risk_tags": [*action.risk_tags, "bulk"]}
        )
    return wipe.model_copy(update={"readings": [action]})
