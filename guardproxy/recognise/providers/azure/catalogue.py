"""Azure's destructive operations, one request each: resource group, subscription,
management group and deployment deletes, a delete of each common resource type, role
and lock changes, purges.
"""

from __future__ import annotations

from collections.abc import Iterator

from guardproxy.recognise.examples import NAME, example_request
from guardproxy.recognise.registry import (
    Example,
)
from guardproxy.recognise.request import HttpRequest

__all__ = ["destructive"]

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


def destructive() -> Iterator[Example]:
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
