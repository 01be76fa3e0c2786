"""Every destructive operation the recognisers know, as the actions they produce.

The shipped bundle promises to hold every delete, destroy and permission change in a
production or unknown environment (unless an allowlist entry says why not). This
catalogue is what that promise is measured against (``guardproxy.audit.coverage``,
``guardproxy policy test --coverage``, ``tests/test_bundle_coverage.py``):

* **AWS**: every operation of every botocore model that ``aws_verbs.classify`` calls a
  delete, destroy or permission change, as the action the AWS recogniser builds for
  it (the AWS sweep test proves the recogniser maps each operation's request back to
  that operation).
* **Every other provider**: a real request per destructive operation, run through the
  real ``recognise()``, so the catalogue holds what the recognisers actually produce:
  Kubernetes (every built-in resource of a current release: ``DELETE`` of a named
  object and of the collection, RBAC writes, eviction, token requests, CSR approval),
  GitHub (every REST route of ``github.route_table()`` recognised as destructive, and
  every mutation of GitHub's public GraphQL schema recognised as destructive), GCP
  (every discovery method ``gcp.classify`` calls destructive), Azure (ARM deletes of
  resource groups, management groups, subscriptions and common resource types, role
  and lock changes, purges), Terraform Cloud and Docker (their destructive routes) and
  SQL (each destructive statement kind through each carrier).

Lists that are written here rather than read from a model (Kubernetes resources, ARM
types, TFC and Docker routes, SQL statements) follow the providers' API references,
cited beside each list. An entry whose request the recogniser does not class as
destructive stays in the catalogue (with the action as recognised): the coverage then
counts it as allowed, which is what the bundle does with it.

The environment is made ``prod`` with a ``host:*`` selector (every request-built entry)
or set on the action (AWS); ``unknown`` uses names that carry no environment token.
Recognise layer only: nothing here knows about policies.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from functools import cache
from importlib.resources import files

from guardproxy.action import Action, Confidence, Environment, Provider, Resource, Verb
from guardproxy.recognise import aws_verbs, gcp_index, recognise
from guardproxy.recognise.aws_index import shared_index
from guardproxy.recognise.gcp import classify as gcp_classify
from guardproxy.recognise.github import route_table
from guardproxy.recognise.request import HttpRequest, RecogniseSettings

__all__ = [
    "DESTRUCTIVE_VERBS",
    "PROVIDERS",
    "Destructive",
    "catalogue",
    "operation_key",
    "settings_for",
]

DESTRUCTIVE_VERBS = frozenset({Verb.DELETE, Verb.DESTROY, Verb.PERMISSION})

PROVIDERS = (
    Provider.AWS,
    Provider.K8S,
    Provider.GITHUB,
    Provider.GCP,
    Provider.AZURE,
    Provider.TFC,
    Provider.DOCKER,
    Provider.SQL,
)
"""The providers the catalogue covers, in the order reports list them. (git pushes are
judged per ref update by the GitHub set's branch rules, not by verb.)"""

NAME = "calc"
"""Every name the catalogue's requests give: no environment token in it (see
``environment.environment_from_names``), so without a selector the environment is
``unknown``."""

_K8S_HOST = "k8s.calc.internal"
_K8S_PORT = 6443
_JSON = ("content-type", "application/json")


@dataclass(frozen=True, slots=True)
class Destructive:
    """One destructive operation and the action the recogniser made of it."""

    provider: Provider
    label: str
    """Unique within the catalogue: the operation key, with what sets variants apart."""
    action: Action

    @property
    def key(self) -> str:
        """What an allowlist entry names (see ``operation_key``)."""
        return operation_key(self.action)


def operation_key(action: Action) -> str:
    """``provider:service:operation`` (``aws:sqs:DeleteMessage``); for Kubernetes, whose
    operation is the RBAC verb, ``<resource type>:<verb>`` (``k8s:core:events:delete``).

    ``policies/common.yaml`` computes the same key in CEL (variable ``operationKey``)
    to look it up in its allowlist of low-risk deletes.
    """
    if action.provider is Provider.K8S:
        return f"{action.resource.type}:{action.operation}"
    return f"{action.provider}:{action.service}:{action.operation}"


def settings_for(environment: Environment) -> RecogniseSettings:
    """Settings under which every catalogue request resolves to ``environment``."""
    selectors = {} if environment is Environment.UNKNOWN else {"host:*": str(environment)}
    return RecogniseSettings(environments=selectors, kubernetes_hosts=(f"{_K8S_HOST}:{_K8S_PORT}",))


def catalogue(
    environment: Environment, providers: Collection[Provider] | None = None
) -> list[Destructive]:
    """Every destructive operation of ``providers`` (default: all of ``PROVIDERS``) as
    recognised in ``environment``, ordered by provider then label."""
    wanted = PROVIDERS if providers is None else tuple(p for p in PROVIDERS if p in providers)
    settings = settings_for(environment)
    entries: list[Destructive] = []
    for provider in wanted:
        if provider is Provider.AWS:
            entries += _aws(environment)
            continue
        found: dict[str, Destructive] = {}
        for label, request, include in _REQUESTS[provider]():
            action = recognise(request, settings)
            if include is _IF_DESTRUCTIVE and not _destructive(action):
                continue
            found.setdefault(label, Destructive(provider, label, action))
        entries += sorted(found.values(), key=lambda e: e.label)
    return entries


def _destructive(action: Action) -> bool:
    return any(r.verb in DESTRUCTIVE_VERBS for r in action.all_readings())


_ALWAYS = "always"
"""The request performs a destructive operation by the provider's API reference."""
_IF_DESTRUCTIVE = "if-destructive"
"""A candidate (every route, every mutation): kept when the recogniser calls it one."""

Request = tuple[str, HttpRequest, str]
"""(label, request, _ALWAYS or _IF_DESTRUCTIVE)."""


def _request(
    method: str,
    host: str,
    path: str,
    body: object = b"",
    headers: tuple[tuple[str, str], ...] = (),
    port: int = 443,
) -> HttpRequest:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    sent = headers + ((_JSON,) if data and not any(k == "content-type" for k, _ in headers) else ())
    return HttpRequest(
        method=method,
        scheme="https",
        host=host,
        port=port,
        path=path,
        headers=(("host", host), *sent),
        body=data,
        host_header=host,
    )


# ------------------------------------------------------------------ AWS


def _aws(environment: Environment) -> list[Destructive]:
    """The AWS recogniser's action for each destructive operation of botocore's models.

    Built from the model index rather than requests: the recogniser's action for an
    operation is exactly this (service, operation, verb from ``aws_verbs.classify``,
    resource type from the model), which the AWS sweep test checks request by request.
    """
    index = shared_index()
    entries: list[Destructive] = []
    for name in index.names:
        model = index.model(name)
        if model is None:
            continue
        for op in model.ops.values():
            verb = aws_verbs.classify(model.name, op.name, model.resource_nouns)
            if verb not in DESTRUCTIVE_VERBS:
                continue
            action = Action(
                provider=Provider.AWS,
                service=model.name,
                operation=op.name,
                verb=verb,
                resource=Resource(type=f"aws:{model.name}:{op.resource}", name=NAME),
                environment=environment,
                confidence=Confidence.EXACT,
            )
            entries.append(Destructive(Provider.AWS, operation_key(action), action))
    return sorted(entries, key=lambda e: e.label)


# ------------------------------------------------------------------ Kubernetes

# The built-in resources of Kubernetes 1.34 served by default (GA groups; beta APIs are
# off by default), from the API reference (kubernetes.io/docs/reference/kubernetes-api,
# and kubernetes/kubernetes api/discovery/aggregated_v2.json): (group, version, resource,
# namespaced, supports deletecollection). Every one supports delete.
_K8S_RESOURCES: tuple[tuple[str, str, str, bool, bool], ...] = (
    ("", "v1", "configmaps", True, True),
    ("", "v1", "endpoints", True, True),
    ("", "v1", "events", True, True),
    ("", "v1", "limitranges", True, True),
    ("", "v1", "namespaces", False, False),
    ("", "v1", "nodes", False, True),
    ("", "v1", "persistentvolumeclaims", True, True),
    ("", "v1", "persistentvolumes", False, True),
    ("", "v1", "pods", True, True),
    ("", "v1", "podtemplates", True, True),
    ("", "v1", "replicationcontrollers", True, True),
    ("", "v1", "resourcequotas", True, True),
    ("", "v1", "secrets", True, True),
    ("", "v1", "serviceaccounts", True, True),
    ("", "v1", "services", True, True),
    ("admissionregistration.k8s.io", "v1", "mutatingwebhookconfigurations", False, True),
    ("admissionregistration.k8s.io", "v1", "validatingadmissionpolicies", False, True),
    ("admissionregistration.k8s.io", "v1", "validatingadmissionpolicybindings", False, True),
    ("admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations", False, True),
    ("apiextensions.k8s.io", "v1", "customresourcedefinitions", False, True),
    ("apiregistration.k8s.io", "v1", "apiservices", False, True),
    ("apps", "v1", "controllerrevisions", True, True),
    ("apps", "v1", "daemonsets", True, True),
    ("apps", "v1", "deployments", True, True),
    ("apps", "v1", "replicasets", True, True),
    ("apps", "v1", "statefulsets", True, True),
    ("autoscaling", "v2", "horizontalpodautoscalers", True, True),
    ("batch", "v1", "cronjobs", True, True),
    ("batch", "v1", "jobs", True, True),
    ("certificates.k8s.io", "v1", "certificatesigningrequests", False, True),
    ("coordination.k8s.io", "v1", "leases", True, True),
    ("discovery.k8s.io", "v1", "endpointslices", True, True),
    ("events.k8s.io", "v1", "events", True, True),
    ("flowcontrol.apiserver.k8s.io", "v1", "flowschemas", False, True),
    ("flowcontrol.apiserver.k8s.io", "v1", "prioritylevelconfigurations", False, True),
    ("networking.k8s.io", "v1", "ingressclasses", False, True),
    ("networking.k8s.io", "v1", "ingresses", True, True),
    ("networking.k8s.io", "v1", "ipaddresses", False, True),
    ("networking.k8s.io", "v1", "networkpolicies", True, True),
    ("networking.k8s.io", "v1", "servicecidrs", False, True),
    ("node.k8s.io", "v1", "runtimeclasses", False, True),
    ("policy", "v1", "poddisruptionbudgets", True, True),
    ("rbac.authorization.k8s.io", "v1", "clusterrolebindings", False, True),
    ("rbac.authorization.k8s.io", "v1", "clusterroles", False, True),
    ("rbac.authorization.k8s.io", "v1", "rolebindings", True, True),
    ("rbac.authorization.k8s.io", "v1", "roles", True, True),
    ("resource.k8s.io", "v1", "deviceclasses", False, True),
    ("resource.k8s.io", "v1", "resourceclaims", True, True),
    ("resource.k8s.io", "v1", "resourceclaimtemplates", True, True),
    ("resource.k8s.io", "v1", "resourceslices", False, True),
    ("scheduling.k8s.io", "v1", "priorityclasses", False, True),
    ("storage.k8s.io", "v1", "csidrivers", False, True),
    ("storage.k8s.io", "v1", "csinodes", False, True),
    ("storage.k8s.io", "v1", "csistoragecapacities", True, True),
    ("storage.k8s.io", "v1", "storageclasses", False, True),
    ("storage.k8s.io", "v1", "volumeattachments", False, True),
    ("storage.k8s.io", "v1", "volumeattributesclasses", False, True),
)

_RBAC_KINDS = {
    "roles": "Role",
    "rolebindings": "RoleBinding",
    "clusterroles": "ClusterRole",
    "clusterrolebindings": "ClusterRoleBinding",
}


def _k8s_collection(group: str, version: str, resource: str, namespaced: bool) -> str:
    base = f"/api/{version}" if not group else f"/apis/{group}/{version}"
    return f"{base}/namespaces/{NAME}/{resource}" if namespaced else f"{base}/{resource}"


def _k8s(method: str, path: str, body: object = None) -> HttpRequest:
    headers: tuple[tuple[str, str], ...] = (
        ("user-agent", "kubectl/v1.34.0 (linux/amd64) kubernetes/0000000"),
    )
    if method == "PATCH":  # kubectl patch's default; plain JSON is no patch type (415)
        headers += (("content-type", "application/strategic-merge-patch+json"),)
    return _request(method, _K8S_HOST, path, body or b"", headers, port=_K8S_PORT)


def _k8s_requests() -> Iterator[Request]:
    for group, version, resource, namespaced, collection in _K8S_RESOURCES:
        where = _k8s_collection(group, version, resource, namespaced)
        kind = f"k8s:{group or 'core'}:{resource}"
        yield f"{kind}:delete", _k8s("DELETE", f"{where}/{NAME}"), _ALWAYS
        if collection:
            yield f"{kind}:deletecollection", _k8s("DELETE", where), _ALWAYS
        if resource in _RBAC_KINDS:
            body: dict[str, object] = {
                "apiVersion": f"{group}/{version}",
                "kind": _RBAC_KINDS[resource],
                "metadata": {"name": NAME},
            }
            yield f"{kind}:create", _k8s("POST", where, body), _ALWAYS
            yield f"{kind}:update", _k8s("PUT", f"{where}/{NAME}", body), _ALWAYS
            yield f"{kind}:patch", _k8s("PATCH", f"{where}/{NAME}", {"rules": []}), _ALWAYS
    pods = _k8s_collection("", "v1", "pods", True)
    eviction = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": NAME}}
    evict = _k8s("POST", f"{pods}/{NAME}/eviction", eviction)
    yield "k8s:core:pods/eviction:create", evict, _ALWAYS
    accounts = _k8s_collection("", "v1", "serviceaccounts", True)
    token = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest"}
    yield (
        "k8s:core:serviceaccounts/token:create",
        _k8s("POST", f"{accounts}/{NAME}/token", token),
        _ALWAYS,
    )
    csrs = _k8s_collection("certificates.k8s.io", "v1", "certificatesigningrequests", False)
    approval = {"status": {"conditions": [{"type": "Approved", "status": "True"}]}}
    for method in ("PUT", "PATCH"):
        yield (
            f"k8s:certificates.k8s.io:certificatesigningrequests/approval:{method.lower()}",
            _k8s(method, f"{csrs}/{NAME}/approval", approval),
            _ALWAYS,
        )


# ------------------------------------------------------------------ GitHub

_GITHUB_HOST = "api.github.com"
_GITHUB_VALUES = {"owner": "acme", "org": "acme", "enterprise": "acme", "repo": NAME}
_GITHUB_HEADERS = (("user-agent", "GitHub CLI 2.60.0"), ("authorization", "token x"))


def _github_value(parameter: str) -> str:
    if parameter in _GITHUB_VALUES:
        return _GITHUB_VALUES[parameter]
    if parameter == "ref":
        return f"heads/{NAME}"
    if parameter.endswith(("_id", "_number", "number", "id")):
        return "7"
    return NAME


def _github_requests() -> Iterator[Request]:
    """Every REST route (DELETE, POST, PUT, PATCH) and every GraphQL mutation."""
    for method, routes in route_table().items():
        if method in ("GET", "HEAD"):
            continue
        for route in routes:
            path = "/" + "/".join(
                _github_value(s[1:-1]) if s.startswith("{") else s for s in route.segments
            )
            request = _request(method, _GITHUB_HOST, path, headers=_GITHUB_HEADERS)
            yield f"github:{route.operation}", request, _IF_DESTRUCTIVE
    for mutation in graphql_mutations():
        query = f"mutation {{ {mutation}(input: {{}}) {{ clientMutationId }} }}"
        request = _request("POST", _GITHUB_HOST, "/graphql", {"query": query}, _GITHUB_HEADERS)
        yield f"github:graphql:{mutation}", request, _IF_DESTRUCTIVE


@cache
def graphql_mutations() -> tuple[str, ...]:
    """The mutation fields of GitHub's public GraphQL schema (shipped data file)."""
    text = files("guardproxy.recognise").joinpath("data/github_graphql_mutations.txt")
    lines = text.read_text("utf-8").splitlines()
    return tuple(s for s in (line.strip() for line in lines) if s and not s.startswith("#"))


# ------------------------------------------------------------------ GCP


def _gcp_requests() -> Iterator[Request]:
    """One request per discovery method id that ``gcp.classify`` calls destructive.

    A method id is served by several API versions and hosts; the first stable
    version's template (sorted) stands for it.
    """
    index = gcp_index.shared_index()
    chosen: dict[str, tuple[tuple[bool, str, str, str], str, gcp_index.RouteSpec]] = {}
    for host, specs in index.routes.items():
        for spec in specs:
            if not spec.method_id or spec.http_method in ("GET", "HEAD"):
                continue
            verb, _exact = gcp_classify(spec.api, spec.method_id, spec.collection, spec.http_method)
            if verb not in DESTRUCTIVE_VERBS:
                continue
            unstable = "alpha" in spec.version or "beta" in spec.version
            rank = (unstable, spec.version, host, spec.template)
            if spec.method_id not in chosen or rank < chosen[spec.method_id][0]:
                chosen[spec.method_id] = (rank, host, spec)
    for method_id, (_rank, host, spec) in sorted(chosen.items()):
        request = _request(spec.http_method, host, _fill_template(spec.template))
        yield f"gcp:{spec.api}:{method_id}", request, _ALWAYS


def _fill_template(template: str) -> str:
    """A discovery template with every ``{x}`` / ``{+x}`` replaced by a plain name."""
    out: list[str] = []
    rest = template
    while "{" in rest:
        before, _, after = rest.partition("{")
        _name, _, rest = after.partition("}")
        out += [before, NAME]
    out.append(rest)
    return "".join(out)


# ------------------------------------------------------------------ Azure

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
    return _request(method, _ARM_HOST, path + _ARM_VERSION, body or b"", headers)


def _azure_requests() -> Iterator[Request]:
    yield "azure:resourceGroups:delete", _arm("DELETE", _ARM_GROUP), _ALWAYS
    subscription = f"/subscriptions/{_SUBSCRIPTION}"
    yield (
        "azure:subscription:cancel",
        _arm("POST", f"{subscription}/providers/Microsoft.Subscription/cancel"),
        _ALWAYS,
    )
    yield (
        "azure:managementGroups:delete",
        _arm("DELETE", f"/providers/Microsoft.Management/managementGroups/{NAME}"),
        _ALWAYS,
    )
    yield (
        "azure:deployments:delete",
        _arm("DELETE", f"{_ARM_GROUP}/providers/Microsoft.Resources/deployments/{NAME}"),
        _ALWAYS,
    )
    for rtype in _ARM_TYPES:
        path = f"{_ARM_GROUP}/providers/{rtype}/{NAME}"
        yield f"azure:{rtype}:delete", _arm("DELETE", path), _ALWAYS
    for path in _ARM_PERMISSION_PATHS:
        tail = path.split("/providers/")[-1]
        for method in ("PUT", "DELETE"):
            yield f"azure:{tail}:{method.lower()}", _arm(method, path), _ALWAYS
    for purge in (
        f"{subscription}/providers/Microsoft.KeyVault/locations/westeurope/deletedVaults/{NAME}/purge",
        f"{subscription}/providers/Microsoft.KeyVault/locations/westeurope/deletedManagedHSMs/{NAME}/purge",
    ):
        yield f"azure:{purge.split('/providers/')[-1]}", _arm("POST", purge), _ALWAYS
    yield (
        "azure:Microsoft.Authorization/elevateAccess",
        _arm("POST", "/providers/Microsoft.Authorization/elevateAccess"),
        _ALWAYS,
    )


# ------------------------------------------------------------------ Terraform Cloud

_TFC_HOST = "app.terraform.io"
_TFC_HEADERS = (
    ("content-type", "application/vnd.api+json"),
    ("user-agent", "go-tfe"),
    ("authorization", "Bearer x"),
)

# Destructive routes of the HCP Terraform API (developer.hashicorp.com/terraform/cloud-docs
# /api-docs): deletes of the things a workspace or organisation holds, destroy runs,
# and team access, membership and token changes.
_TFC_ROUTES: tuple[tuple[str, str, dict[str, object] | None], ...] = (
    ("DELETE", f"organizations/{NAME}", None),
    ("DELETE", f"organizations/{NAME}/workspaces/{NAME}", None),
    ("POST", f"organizations/{NAME}/workspaces/{NAME}/actions/safe-delete", None),
    ("DELETE", "workspaces/ws-calc", None),
    ("POST", "workspaces/ws-calc/actions/safe-delete", None),
    ("DELETE", "projects/prj-calc", None),
    (
        "POST",
        "runs",
        {
            "data": {
                "type": "runs",
                "attributes": {"is-destroy": True},
                "relationships": {"workspace": {"data": {"type": "workspaces", "id": "ws-calc"}}},
            }
        },
    ),
    ("DELETE", "workspaces/ws-calc/vars/var-calc", None),
    ("DELETE", "varsets/varset-calc", None),
    ("DELETE", "policy-sets/polset-calc", None),
    ("DELETE", "policies/pol-calc", None),
    ("DELETE", "oauth-clients/oc-calc", None),
    ("DELETE", "ssh-keys/sshkey-calc", None),
    ("DELETE", "agent-pools/apool-calc", None),
    ("DELETE", "run-tasks/task-calc", None),
    ("DELETE", "notification-configurations/nc-calc", None),
    ("DELETE", "teams/team-calc", None),
    ("POST", "team-workspaces", {"data": {"type": "team-workspaces", "attributes": {}}}),
    ("PATCH", "team-workspaces/tws-calc", {"data": {"type": "team-workspaces"}}),
    ("DELETE", "team-workspaces/tws-calc", None),
    ("POST", "team-projects", {"data": {"type": "team-projects", "attributes": {}}}),
    ("PATCH", "team-projects/tprj-calc", {"data": {"type": "team-projects"}}),
    ("DELETE", "team-projects/tprj-calc", None),
    ("POST", "teams/team-calc/relationships/users", {"data": [{"type": "users", "id": NAME}]}),
    ("DELETE", "teams/team-calc/relationships/users", {"data": [{"type": "users", "id": NAME}]}),
    (
        "POST",
        f"organizations/{NAME}/organization-memberships",
        {"data": {"type": "organization-memberships", "attributes": {"email": "a@b.c"}}},
    ),
    ("DELETE", "organization-memberships/ou-calc", None),
    ("POST", "teams/team-calc/authentication-token", None),
    ("DELETE", "teams/team-calc/authentication-token", None),
    ("POST", f"organizations/{NAME}/authentication-token", None),
    ("DELETE", f"organizations/{NAME}/authentication-token", None),
)


def _tfc_requests() -> Iterator[Request]:
    for method, path, body in _TFC_ROUTES:
        request = _request(method, _TFC_HOST, f"/api/v2/{path}", body or b"", _TFC_HEADERS)
        yield f"tfc:{method} /{path}", request, _ALWAYS


# ------------------------------------------------------------------ Docker

_DOCKER_HOST = "docker.calc.internal"

# The Docker Engine API's removals (docs.docker.com/reference/api/engine/version/v1.47):
# every DELETE, every prune, leaving a swarm, and the calls that grant privileges
# (installing a plugin, creating a secret).
_DOCKER_ROUTES = (
    ("DELETE", f"containers/{NAME}"),
    ("POST", "containers/prune"),
    ("DELETE", f"images/{NAME}"),
    ("POST", "images/prune"),
    ("POST", "build/prune"),
    ("DELETE", f"networks/{NAME}"),
    ("POST", "networks/prune"),
    ("DELETE", f"volumes/{NAME}"),
    ("POST", "volumes/prune"),
    ("DELETE", f"services/{NAME}"),
    ("DELETE", f"nodes/{NAME}"),
    ("DELETE", f"secrets/{NAME}"),
    ("DELETE", f"configs/{NAME}"),
    ("DELETE", f"plugins/{NAME}"),
    ("POST", "swarm/leave"),
    ("POST", "plugins/pull"),
    ("POST", "secrets/create"),
)


def _docker_requests() -> Iterator[Request]:
    headers = (("user-agent", "Docker-Client/27.3.1 (linux)"),)
    for method, path in _DOCKER_ROUTES:
        body: dict[str, object] | list[object] = {}
        if path == "plugins/pull":
            body = [{"Name": "network", "Value": ["host"]}]
        elif path == "secrets/create":
            body = {"Name": NAME, "Data": "Y2FsYw=="}
        request = _request(method, _DOCKER_HOST, f"/v1.47/{path}", body or b"", headers, port=2376)
        yield f"docker:{method} /{path}", request, _ALWAYS


# ------------------------------------------------------------------ SQL

# Destructive statement kinds (PostgreSQL, BigQuery, Snowflake and Databricks SQL
# references), each sent through every carrier that takes SQL text.
_SQL_STATEMENTS = (
    ("DROP DATABASE", f"DROP DATABASE {NAME}"),
    ("DROP SCHEMA", f"DROP SCHEMA {NAME}"),
    ("DROP TABLE", f"DROP TABLE {NAME}"),
    ("DROP VIEW", f"DROP VIEW {NAME}"),
    ("DROP INDEX", f"DROP INDEX {NAME}"),
    ("DROP FUNCTION", f"DROP FUNCTION {NAME}"),
    ("DROP USER", f"DROP USER {NAME}"),
    ("DROP ROLE", f"DROP ROLE {NAME}"),
    ("TRUNCATE", f"TRUNCATE TABLE {NAME}"),
    ("DELETE without WHERE", f"DELETE FROM {NAME}"),
    ("DELETE with WHERE", f"DELETE FROM {NAME} WHERE id = 7"),
    ("ALTER TABLE DROP COLUMN", f"ALTER TABLE {NAME} DROP COLUMN note"),
    ("CREATE OR REPLACE TABLE", f"CREATE OR REPLACE TABLE {NAME} AS SELECT 1 AS id"),
    ("GRANT", f"GRANT SELECT ON {NAME} TO {NAME}"),
    ("REVOKE", f"REVOKE SELECT ON {NAME} FROM {NAME}"),
    ("CREATE ROLE", f"CREATE ROLE {NAME}"),
    ("ALTER ROLE", f"ALTER ROLE {NAME} WITH SUPERUSER"),
    ("ALTER TABLE OWNER", f"ALTER TABLE {NAME} OWNER TO {NAME}"),
)


def _sql_carriers(sql: str) -> Iterator[tuple[str, HttpRequest]]:
    """``sql`` sent through each SQL-over-HTTP carrier the SQL recogniser reads."""
    yield "neon", _request("POST", "ep-calc.eu-central-1.aws.neon.tech", "/sql", {"query": sql})
    yield (
        "supabase",
        _request("POST", "api.supabase.com", f"/v1/projects/{NAME}/database/query", {"query": sql}),
    )
    yield (
        "snowflake",
        _request(
            "POST", f"{NAME}.snowflakecomputing.com", "/api/v2/statements", {"statement": sql}
        ),
    )
    yield (
        "databricks",
        _request(
            "POST",
            f"{NAME}.cloud.databricks.com",
            "/api/2.0/sql/statements",
            {"statement": sql, "warehouse_id": NAME},
        ),
    )
    bigquery = f"/bigquery/v2/projects/{NAME}"
    yield (
        "bigquery queries",
        _request("POST", "bigquery.googleapis.com", f"{bigquery}/queries", {"query": sql}),
    )
    job = {"configuration": {"query": {"query": sql, "useLegacySql": False}}}
    yield "bigquery jobs", _request("POST", "bigquery.googleapis.com", f"{bigquery}/jobs", job)


def _sql_requests() -> Iterator[Request]:
    for kind, sql in _SQL_STATEMENTS:
        for carrier, request in _sql_carriers(sql):
            yield f"sql:{carrier}:{kind}", request, _ALWAYS
    # PostgREST (Supabase's REST API): the HTTP method is the statement.
    headers = (("apikey", "x"), ("x-client-info", "supabase-js/2.45.0"))
    for carrier, host in (("supabase", f"{NAME}.supabase.co"), ("postgrest", "db.calc.internal")):
        for kind, query in (("DELETE with filter", "?id=eq.7"), ("DELETE without filter", "")):
            request = _request("DELETE", host, f"/rest/v1/{NAME}{query}", headers=headers)
            yield f"sql:{carrier}:{kind}", request, _ALWAYS


_REQUESTS: dict[Provider, Callable[[], Iterator[Request]]] = {
    Provider.K8S: _k8s_requests,
    Provider.GITHUB: _github_requests,
    Provider.GCP: _gcp_requests,
    Provider.AZURE: _azure_requests,
    Provider.TFC: _tfc_requests,
    Provider.DOCKER: _docker_requests,
    Provider.SQL: _sql_requests,
}
