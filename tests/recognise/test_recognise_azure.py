"""Azure Resource Manager: the RBAC operation string from method and path.

The table holds URLs as the Azure REST reference documents them (and as az, the
Azure SDKs and Terraform's azurerm provider send them, lower-case keywords included).
"""

from __future__ import annotations

import pytest
from recognise_support import http

from guardproxy.action import Action, Confidence, Provider, Verb
from guardproxy.recognise.providers.azure import looks_like_azure, parse_path, recognise_azure

SUB = "00000000-0000-0000-0000-000000000001"
RG = f"/subscriptions/{SUB}/resourceGroups/rg-prod-web"
API = "?api-version=2024-03-01"


def arm(method: str, path: str, host: str = "management.azure.com", **headers: str) -> Action:
    named = {k.replace("_", "-"): v for k, v in headers.items()}
    return recognise_azure(http(method, path, host=host, port=443, headers=named))


# (method, path, operation, verb, resource type, name)
TABLE: list[tuple[str, str, str, Verb, str, str]] = [
    (
        "DELETE",
        f"{RG}{API}",
        "Microsoft.Resources/subscriptions/resourceGroups/delete",
        Verb.DESTROY,
        "azure:Microsoft.Resources/resourceGroups",
        "rg-prod-web",
    ),
    (
        "DELETE",
        f"/subscriptions/{SUB}/resourcegroups/rg-prod-web{API}",
        "Microsoft.Resources/subscriptions/resourceGroups/delete",
        Verb.DESTROY,
        "azure:Microsoft.Resources/resourceGroups",
        "rg-prod-web",
    ),
    (
        "GET",
        f"{RG}{API}",
        "Microsoft.Resources/subscriptions/resourceGroups/read",
        Verb.READ,
        "azure:Microsoft.Resources/resourceGroups",
        "rg-prod-web",
    ),
    (
        "PUT",
        f"{RG}{API}",
        "Microsoft.Resources/subscriptions/resourceGroups/write",
        Verb.CREATE,
        "azure:Microsoft.Resources/resourceGroups",
        "rg-prod-web",
    ),
    (
        "GET",
        f"/subscriptions/{SUB}/resourcegroups{API}",
        "Microsoft.Resources/subscriptions/resourceGroups/read",
        Verb.READ,
        "azure:Microsoft.Resources/resourceGroups",
        "",
    ),
    (
        "GET",
        f"/subscriptions{API}",
        "Microsoft.Resources/subscriptions/read",
        Verb.READ,
        "azure:Microsoft.Resources/subscriptions",
        "",
    ),
    (
        "GET",
        f"/subscriptions/{SUB}{API}",
        "Microsoft.Resources/subscriptions/read",
        Verb.READ,
        "azure:Microsoft.Resources/subscriptions",
        SUB,
    ),
    (
        "GET",
        f"/tenants{API}",
        "Microsoft.Resources/tenants/read",
        Verb.READ,
        "azure:Microsoft.Resources/tenants",
        "",
    ),
    (
        "GET",
        f"{RG}/resources{API}",
        "Microsoft.Resources/subscriptions/resourceGroups/resources/read",
        Verb.READ,
        "azure:Microsoft.Resources/resourceGroups/resources",
        "",
    ),
    (
        "POST",
        f"{RG}/exportTemplate{API}",
        "Microsoft.Resources/subscriptions/resourceGroups/exportTemplate/action",
        Verb.READ,
        "azure:Microsoft.Resources/resourceGroups",
        "rg-prod-web",
    ),
    (
        "DELETE",
        f"{RG}/providers/Microsoft.Compute/virtualMachines/vm-web-1?forceDeletion=true",
        "Microsoft.Compute/virtualMachines/delete",
        Verb.DESTROY,
        "azure:Microsoft.Compute/virtualMachines",
        "vm-web-1",
    ),
    (
        "POST",
        f"{RG}/providers/Microsoft.Compute/virtualMachines/vm-web-1/powerOff{API}",
        "Microsoft.Compute/virtualMachines/powerOff/action",
        Verb.UPDATE,
        "azure:Microsoft.Compute/virtualMachines",
        "vm-web-1",
    ),
    (
        "POST",
        f"{RG}/providers/Microsoft.Compute/virtualMachines/vm-web-1/runCommand{API}",
        "Microsoft.Compute/virtualMachines/runCommand/action",
        Verb.EXECUTE,
        "azure:Microsoft.Compute/virtualMachines",
        "vm-web-1",
    ),
    (
        "GET",
        f"{RG}/providers/Microsoft.Compute/virtualMachines{API}",
        "Microsoft.Compute/virtualMachines/read",
        Verb.READ,
        "azure:Microsoft.Compute/virtualMachines",
        "",
    ),
    (
        "PATCH",
        f"{RG}/providers/Microsoft.Compute/virtualMachines/vm-web-1{API}",
        "Microsoft.Compute/virtualMachines/write",
        Verb.UPDATE,
        "azure:Microsoft.Compute/virtualMachines",
        "vm-web-1",
    ),
    (
        "DELETE",
        f"{RG}/providers/Microsoft.Sql/servers/sql-prod/databases/orders{API}",
        "Microsoft.Sql/servers/databases/delete",
        Verb.DESTROY,
        "azure:Microsoft.Sql/servers/databases",
        "sql-prod/orders",
    ),
    (
        "DELETE",
        f"{RG}/providers/Microsoft.Sql/servers/sql-prod/firewallRules/office{API}",
        "Microsoft.Sql/servers/firewallRules/delete",
        Verb.DELETE,
        "azure:Microsoft.Sql/servers/firewallRules",
        "sql-prod/office",
    ),
    (
        "DELETE",
        f"{RG}/providers/Microsoft.Storage/storageAccounts/stprodweb{API}",
        "Microsoft.Storage/storageAccounts/delete",
        Verb.DESTROY,
        "azure:Microsoft.Storage/storageAccounts",
        "stprodweb",
    ),
    (
        "POST",
        f"{RG}/providers/Microsoft.Storage/storageAccounts/stprodweb/listKeys{API}",
        "Microsoft.Storage/storageAccounts/listKeys/action",
        Verb.READ,
        "azure:Microsoft.Storage/storageAccounts",
        "stprodweb",
    ),
    (
        "DELETE",
        f"{RG}/providers/Microsoft.ContainerService/managedClusters/aks-prod{API}",
        "Microsoft.ContainerService/managedClusters/delete",
        Verb.DESTROY,
        "azure:Microsoft.ContainerService/managedClusters",
        "aks-prod",
    ),
    (
        "PUT",
        f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleAssignments/"
        f"11111111-2222-3333-4444-555555555555{API}",
        "Microsoft.Authorization/roleAssignments/write",
        Verb.PERMISSION,
        "azure:Microsoft.Authorization/roleAssignments",
        "11111111-2222-3333-4444-555555555555",
    ),
    (
        "PUT",
        f"{RG}/providers/Microsoft.Storage/storageAccounts/stprodweb/providers/"
        f"Microsoft.Authorization/roleAssignments/abc{API}",
        "Microsoft.Authorization/roleAssignments/write",
        Verb.PERMISSION,
        "azure:Microsoft.Authorization/roleAssignments",
        "abc",
    ),
    (
        "DELETE",
        f"{RG}/providers/Microsoft.Authorization/locks/do-not-delete{API}",
        "Microsoft.Authorization/locks/delete",
        Verb.DELETE,
        "azure:Microsoft.Authorization/locks",
        "do-not-delete",
    ),
    (
        "POST",
        f"/subscriptions/{SUB}/providers/Microsoft.Subscription/cancel{API}",
        "Microsoft.Subscription/cancel/action",
        Verb.DESTROY,
        "azure:Microsoft.Resources/subscriptions",
        SUB,
    ),
    (
        "POST",
        f"/subscriptions/{SUB}/providers/Microsoft.Compute/register{API}",
        "Microsoft.Compute/register/action",
        Verb.UPDATE,
        "azure:Microsoft.Resources/subscriptions",
        SUB,
    ),
    (
        "GET",
        f"/subscriptions/{SUB}/providers/Microsoft.Compute{API}",
        "Microsoft.Resources/subscriptions/providers/read",
        Verb.READ,
        "azure:Microsoft.Resources/providers",
        "Microsoft.Compute",
    ),
    (
        "POST",
        f"/subscriptions/{SUB}/providers/Microsoft.KeyVault/locations/westeurope/"
        f"deletedVaults/kv-prod/purge{API}",
        "Microsoft.KeyVault/locations/deletedVaults/purge/action",
        Verb.DESTROY,
        "azure:Microsoft.KeyVault/locations/deletedVaults",
        "westeurope/kv-prod",
    ),
    (
        "PUT",
        f"{RG}/providers/Microsoft.Resources/deployments/main{API}",
        "Microsoft.Resources/deployments/write",
        Verb.CREATE,
        "azure:Microsoft.Resources/deployments",
        "main",
    ),
    (
        "GET",
        "/providers/Microsoft.Management/managementGroups/mg-prod" + API,
        "Microsoft.Management/managementGroups/read",
        Verb.READ,
        "azure:Microsoft.Management/managementGroups",
        "mg-prod",
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "operation", "verb", "rtype", "name"),
    TABLE,
    ids=[f"{row[0]} {row[2]}" for row in TABLE],
)
def test_table(method: str, path: str, operation: str, verb: Verb, rtype: str, name: str) -> None:
    action = arm(method, path)
    assert action.provider is Provider.AZURE
    assert action.operation == operation
    assert action.verb is verb
    assert action.resource.type == rtype
    assert action.resource.name == name
    assert action.service == operation.split("/", 1)[0]


def test_resource_group_delete_scope_and_key() -> None:
    action = arm("DELETE", f"{RG}{API}", user_agent="AZURECLI/2.67.0 azsdk-python-core/1.32.0")
    assert action.scope.subscription == SUB
    assert action.scope.resource_group == "rg-prod-web"
    assert action.resource.key == (
        f"azure:{SUB}:rg-prod-web:azure:Microsoft.Resources/resourceGroups/rg-prod-web"
    )
    assert action.confidence is Confidence.EXACT
    assert action.actor.tool == "azure-cli"


def test_extension_resource_keeps_the_parent_scope() -> None:
    path = (
        f"{RG}/providers/Microsoft.Storage/storageAccounts/st/providers/"
        f"Microsoft.Authorization/roleAssignments/abc{API}"
    )
    action = arm("DELETE", path)
    assert (action.scope.subscription, action.scope.resource_group) == (SUB, "rg-prod-web")
    assert action.verb is Verb.PERMISSION


def test_risk_tags() -> None:
    force = f"{RG}/providers/Microsoft.Compute/virtualMachines/vm?forceDeletion=true"
    assert arm("DELETE", force).risk_tags == ["force"]
    types = f"{RG}?forceDeletionTypes=Microsoft.Compute/virtualMachines&api-version=2021-04-01"
    assert arm("DELETE", types).risk_tags == ["force"]
    lock = f"{RG}/providers/Microsoft.Authorization/locks/keep{API}"
    assert arm("DELETE", lock).risk_tags == ["protection-removal"]
    keys = f"{RG}/providers/Microsoft.Storage/storageAccounts/st/listKeys{API}"
    assert arm("POST", keys).risk_tags == ["secret-read"]
    creds = (
        f"{RG}/providers/Microsoft.ContainerService/managedClusters/aks/"
        f"listClusterAdminCredential{API}"
    )
    assert arm("POST", creds).risk_tags == ["secret-read"]


def test_location_is_the_region() -> None:
    path = f"/subscriptions/{SUB}/providers/Microsoft.Compute/locations/westeurope/usages{API}"
    action = arm("GET", path)
    assert action.operation == "Microsoft.Compute/locations/usages/read"
    assert action.scope.region == "westeurope"


def test_unknown_actions_are_heuristic_updates() -> None:
    path = f"{RG}/providers/Microsoft.Web/sites/app/syncfunctiontriggers{API}"
    action = arm("POST", path)
    assert action.operation == "Microsoft.Web/sites/syncfunctiontriggers/action"
    assert (action.verb, action.confidence) == (Verb.UPDATE, Confidence.HEURISTIC)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/batch?api-version=2020-06-01"),
        ("GET", "/"),
        ("GET", "/metadata/endpoints?api-version=2022-09-01"),
        ("OPTIONS", f"{RG}{API}"),
    ],
)
def test_what_is_not_arm_fails_closed(method: str, path: str) -> None:
    action = arm(method, path)
    assert action.provider is Provider.AZURE
    assert not action.classified


def test_parse_path_alternates_types_and_names() -> None:
    parsed = parse_path(f"{RG}/providers/Microsoft.Sql/servers/s/databases/d/backup")
    assert parsed is not None
    assert parsed.arm_type == "Microsoft.Sql/servers/databases"
    assert parsed.names == ("s", "d")
    assert parsed.trailing == "backup"


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("management.azure.com", True),
        ("MANAGEMENT.AZURE.COM", True),
        ("westeurope.management.azure.com", True),
        ("management.usgovcloudapi.net", True),
        ("management.azure.com.evil.example", False),
        ("stprodweb.blob.core.windows.net", False),
        ("compute.googleapis.com", False),
    ],
)
def test_looks_like_azure(host: str, expected: bool) -> None:
    assert looks_like_azure(http("GET", "/", host=host, port=443)) is expected
