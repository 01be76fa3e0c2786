"""An independent red-team pass over the hardened guard (issues 13 and 20).

Each case in ``BYPASSES`` is a request a real server executes destructively (a delete,
a destroy, a permission change, a protection removal, a forced removal) that the shipped
policies let through before this pass; each was fixed in its recogniser (or, for the
workspace auto-apply, in ``policies/tfc.yaml``), and each test below failed on the code
before its fix. What the server does, per case:

Docker Engine (moby ``httputils.BoolValue``, ``encoding/json`` into ``CreateRequest``)
  * ``force=yes`` (or ``on``, ``2``...) is a forced image removal: only ``""``, ``0``,
    ``no``, ``false``, ``none`` are false; the guard knew ``1``/``true``/``t`` only, and
    ``images.delete`` is a low-risk delete unless forced;
  * ``force=1&force=0``: the daemon takes the first value, the guard took the last;
  * ``{"hostconfig": {"privileged": true}}``: Go matches keys case-insensitively (and
    folds U+017F to ``s``), so the container is privileged; the guard read ``HostConfig``
    and ``Privileged`` only, and allowed a privileged container on an unknown daemon.
GitHub (REST "Update a repository/organization ruleset", GraphQL)
  * ``PUT .../rulesets/{id}`` with ``enforcement: disabled`` switches a ruleset off, as
    its DELETE (held as a protection removal) does; the body was not read;
  * ``updateBranchProtectionRule`` with a new ``pattern`` moves the rule off ``main``, and
    ``bypassForcePushActorIds`` exempts actors from it; ``updateRepositoryRuleset`` with
    ``conditions`` excluding every ref guards nothing; only flags were read;
  * ``PATCH /orgs/{org}`` with ``default_repository_permission: admin`` makes every
    member admin of every repository: a permission change read as an update.
Terraform Cloud
  * ``auto-destroy-at`` on a workspace schedules a destroy run of everything it manages;
  * ``auto-apply: true`` on a workspace makes its next runs apply unreviewed: the
    recogniser tagged it, but the policy held ``auto-apply`` on ``runs.create`` only;
  * ``"is-destroy": "true"``: a Rails backend casts the string to true (a destroy run);
    the guard compared with ``True``.
AWS data plane (API reference of each operation)
  * DynamoDB ``BatchWriteItem`` ``DeleteRequest``s and PartiQL ``DELETE`` delete items
    as ``DeleteItem`` (held) does; they were an allowed update/execute;
  * RDS Data API ``ExecuteStatement`` with ``DROP TABLE`` (and Redshift Data, Athena)
    runs SQL no reader looked at;
  * S3 ``DeleteObject`` of ``customer-data/test/report.csv``: the key's ``test`` token
    made the environment ``dev``.
Environment names
  * a CRD ``services.serving.knative.dev``: the ``.dev`` top-level domain read as ``dev``,
    so deleting the CRD (every Knative service in the cluster) was allowed;
  * a VM ``test-vm`` in resource group ``prod-rg``, an instance ``test-runner`` in
    project ``acme-prod``: the resource group and project were not read.
Azure Resource Manager
  * ``POST .../virtualMachineScaleSets/{n}/delete`` (DeleteInstances) and
    ``.../agentPools/{p}/deleteMachines`` delete VMs; ``delete`` was an unknown action
    word, read as an update;
  * ``roleAssignment%73``: ARM decodes the path; the guard matched the raw segment;
  * a deployment in ``Complete`` mode deletes every resource its template omits.
Google Cloud
  * ``validateOnly=false&validateOnly=true``: dry run for the guard (last value), a real
    delete for a server that takes the first;
  * ``X-HTTP-Method-Override: DELETE`` on a ``POST`` (documented by the GCS JSON API);
  * ``setDeletionProtection?deletionProtection=false``, ``versioning.enabled: false``.
git smart HTTP (``policies/github.yaml``)
  * a force push of ``develop``, ``trunk`` or ``stable*`` (which the git recogniser ranks
    with ``main``) or of a tag: only main, master, release/* and prod* were held.
Kubernetes
  * ``PATCH pods/{p}/ephemeralcontainers`` (``kubectl debug``) runs any command inside a
    running pod with its volumes: read as an update, now an ``execute`` (held in prod).

The requests that can reach a loopback upstream go through the real proxy (``E2E``);
the ones whose recogniser is chosen by a public host name (``api.github.com``,
``management.azure.com``, ``*.googleapis.com``) cannot be routed to loopback without
DNS, so they are decided by the decision pipeline the proxy uses (``PIPELINE``).
``HELD_CLASSES`` are attempts that did not get through, in classes no other adversarial
suite covers (transport framing, tunnels, Expect), kept as regressions. ``OPEN`` are
bypasses left open, each ``xfail(strict=True)`` with the reason. Closed after the probe
(now in ``PIPELINE``): a shell through SSM (``remote-shell``, held in prod), ``ALTER
COLUMN ... TYPE ... USING`` (``alter-column-type``, an irreversible rewrite of every row)
and a scale set sized to zero through ARM (``scale-to-zero`` read from the body).
"""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from e2e.guard_fixtures import Guard
from e2e.servers import EchoServer, GitHttpServer

from guardproxy.action import Action
from guardproxy.context import SessionInfo
from guardproxy.pipeline import FixedPolicies, Pipeline
from guardproxy.recognise import RecogniseSettings
from guardproxy.recognise.request import HttpRequest
from guardproxy.server import load_policies
from guardproxy.session.history import SessionHistory
from guardproxy.store import SqliteStore

from ._through import CASE_HEADER, arrived, module_guard, through
from .test_git import EMPTY_PACK, pkt, send_push

POLICIES = Path(__file__).resolve().parents[2] / "policies"
BUNDLE = load_policies(POLICIES)
T0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
REFUSED = ("hold", "deny")

JSON = "application/json"
JSON_API = "application/vnd.api+json"
KUBE = "k8s.corp.example:6443"


def sigv4(service: str) -> tuple[str, str]:
    """A SigV4 Authorization header for ``service`` (the signature is not checked by the
    guard; AWS would check it, the loopback upstream does not)."""
    return (
        "Authorization",
        f"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261207/us-east-1/{service}/aws4_request, "
        "SignedHeaders=host;x-amz-date, Signature=" + "0" * 64,
    )


def amz_json(service: str, target: str, version: str = "1.0") -> tuple[tuple[str, str], ...]:
    return (
        sigv4(service),
        ("Content-Type", f"application/x-amz-json-{version}"),
        ("X-Amz-Target", target),
    )


def tfc_workspace(attributes: dict[str, object]) -> bytes:
    return json.dumps({"data": {"type": "workspaces", "attributes": attributes}}).encode()


def graphql(query: str) -> bytes:
    return json.dumps({"query": query}).encode()


@dataclass(frozen=True)
class Sent:
    """One request: method, target (path and query, or an absolute URL for PIPELINE
    cases), headers and body; ``upstream`` names the loopback server it goes to."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    upstream: str = "plain"
    refused: tuple[str, ...] = REFUSED


# ----------------------------------------------------------------- through the proxy

E2E: dict[str, Sent] = {
    "docker-force-yes": Sent("DELETE", "/v1.47/images/app:latest?force=yes"),
    "docker-force-first-value": Sent("DELETE", "/v1.47/images/app:latest?force=1&force=0"),
    "docker-privileged-lowercase-keys": Sent(
        "POST",
        "/v1.47/containers/create",
        (("Content-Type", JSON),),
        b'{"Image": "alpine", "hostconfig": {"privileged": true}}',
        refused=("deny",),
    ),
    "docker-root-bind-folded-keys": Sent(
        "POST",
        "/v1.47/containers/create",
        (("Content-Type", JSON),),
        '{"Image": "alpine", "Ho\u017ftConfig": {"Bind\u017f": ["/:/host"]}}'.encode(),
        refused=("deny",),
    ),
    "github-ruleset-disabled": Sent(
        "PUT",
        "/api/v3/repos/acme/web/rulesets/42",
        (("Content-Type", JSON), ("Authorization", "token ghp_redteam")),
        b'{"enforcement": "disabled"}',
    ),
    "github-org-ruleset-evaluate": Sent(
        "PUT",
        "/api/v3/orgs/acme/rulesets/7",
        (("Content-Type", JSON), ("Authorization", "token ghp_redteam")),
        b'{"name": "main", "enforcement": "evaluate"}',
    ),
    "github-branch-rule-moved-off-main": Sent(
        "POST",
        "/api/graphql",
        (("Content-Type", JSON), ("Authorization", "bearer ghp_redteam")),
        graphql(
            'mutation { updateBranchProtectionRule(input: {branchProtectionRuleId: "BPR_1", '
            'pattern: "no-such-branch"}) { clientMutationId } }'
        ),
    ),
    "github-force-push-bypass-actors": Sent(
        "POST",
        "/api/graphql",
        (("Content-Type", JSON), ("Authorization", "bearer ghp_redteam")),
        graphql(
            'mutation { updateBranchProtectionRule(input: {branchProtectionRuleId: "BPR_1", '
            'bypassForcePushActorIds: ["U_agent"]}) { clientMutationId } }'
        ),
    ),
    "github-ruleset-excludes-every-ref": Sent(
        "POST",
        "/api/graphql",
        (("Content-Type", JSON), ("Authorization", "bearer ghp_redteam")),
        graphql(
            'mutation { updateRepositoryRuleset(input: {repositoryRulesetId: "RRS_1", '
            'conditions: {refName: {include: [], exclude: ["~ALL"]}}}) { clientMutationId } }'
        ),
    ),
    "github-org-default-permission-admin": Sent(
        "PATCH",
        "/api/v3/orgs/acme",
        (("Content-Type", JSON), ("Authorization", "token ghp_redteam")),
        b'{"default_repository_permission": "admin"}',
    ),
    "tfc-auto-destroy-at": Sent(
        "PATCH",
        "/api/v2/workspaces/ws-network",
        (("Content-Type", JSON_API),),
        tfc_workspace({"auto-destroy-at": "2026-12-07T09:05:00Z"}),
    ),
    "tfc-workspace-auto-apply": Sent(
        "PATCH",
        "/api/v2/workspaces/ws-network",
        (("Content-Type", JSON_API),),
        tfc_workspace({"auto-apply": True}),
    ),
    "tfc-is-destroy-string": Sent(
        "POST",
        "/api/v2/runs",
        (("Content-Type", JSON_API),),
        json.dumps(
            {
                "data": {
                    "type": "runs",
                    "attributes": {"is-destroy": "true"},
                    "relationships": {
                        "workspace": {"data": {"type": "workspaces", "id": "ws-network"}}
                    },
                }
            }
        ).encode(),
    ),
    "dynamodb-batch-write-delete": Sent(
        "POST",
        "/",
        amz_json("dynamodb", "DynamoDB_20120810.BatchWriteItem"),
        b'{"RequestItems": {"orders": [{"DeleteRequest": {"Key": {"pk": {"S": "1"}}}}]}}',
    ),
    "dynamodb-partiql-delete": Sent(
        "POST",
        "/",
        amz_json("dynamodb", "DynamoDB_20120810.ExecuteStatement"),
        b'{"Statement": "DELETE FROM \\"orders\\" WHERE pk = \'1\'"}',
    ),
    "rds-data-drop-table": Sent(
        "POST",
        "/Execute",
        (sigv4("rds-data"), ("Content-Type", JSON)),
        json.dumps(
            {
                "resourceArn": "arn:aws:rds:us-east-1:111122223333:cluster:orders",
                "secretArn": "arn:aws:secretsmanager:us-east-1:111122223333:secret:orders",
                "sql": "DROP TABLE customers",
            }
        ).encode(),
    ),
    "redshift-data-batch-drop": Sent(
        "POST",
        "/",
        amz_json("redshift-data", "RedshiftData.BatchExecuteStatement", "1.1"),
        b'{"ClusterIdentifier": "warehouse", "Database": "dw",'
        b' "Sqls": ["SELECT 1", "DROP TABLE sales"]}',
    ),
    "s3-key-under-test-prefix": Sent("DELETE", "/customer-data/test/report.csv", (sigv4("s3"),)),
    "k8s-crd-on-a-dev-domain": Sent(
        "DELETE",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/services.serving.knative.dev",
        upstream="kube",
    ),
    "k8s-ephemeral-container-in-prod": Sent(
        "PATCH",
        "/api/v1/namespaces/prod/pods/api-0/ephemeralcontainers",
        (("Content-Type", "application/strategic-merge-patch+json"),),
        json.dumps(
            {
                "spec": {
                    "ephemeralContainers": [
                        {
                            "name": "debugger",
                            "image": "busybox",
                            "command": ["sh", "-c", "rm -rf /data/*"],
                            "targetContainerName": "api",
                        }
                    ]
                }
            }
        ).encode(),
        upstream="kube",
    ),
}

# The harmless twin of several cases: forwarded, so each refusal above is the case's own.
E2E_FORWARDED: dict[str, Sent] = {
    "docker-delete-unforced": Sent("DELETE", "/v1.47/images/app:latest?force=no"),
    "docker-plain-container": Sent(
        "POST",
        "/v1.47/containers/create",
        (("Content-Type", JSON),),
        b'{"Image": "alpine", "hostconfig": {"Memory": 1048576}}',
    ),
    "github-ruleset-renamed": Sent(
        "PUT",
        "/api/v3/repos/acme/web/rulesets/42",
        (("Content-Type", JSON), ("Authorization", "token ghp_redteam")),
        b'{"name": "main branch", "enforcement": "active"}',
    ),
    "tfc-workspace-description": Sent(
        "PATCH",
        "/api/v2/workspaces/ws-network",
        (("Content-Type", JSON_API),),
        tfc_workspace({"description": "network"}),
    ),
    "dynamodb-batch-write-put": Sent(
        "POST",
        "/",
        amz_json("dynamodb", "DynamoDB_20120810.BatchWriteItem"),
        b'{"RequestItems": {"orders": [{"PutRequest": {"Item": {"pk": {"S": "1"}}}}]}}',
    ),
    "rds-data-select": Sent(
        "POST",
        "/Execute",
        (sigv4("rds-data"), ("Content-Type", JSON)),
        json.dumps(
            {
                "resourceArn": "arn:aws:rds:us-east-1:111122223333:cluster:orders",
                "secretArn": "arn:aws:secretsmanager:us-east-1:111122223333:secret:orders",
                "sql": "SELECT count(*) FROM customers",
            }
        ).encode(),
    ),
}


@pytest.fixture(scope="module")
def plain() -> Iterator[EchoServer]:
    """An upstream nothing is configured for: Docker, GHES, TFE, AWS emulators by path."""
    with EchoServer() as server:
        yield server
        assert not server.handler_errors, server.handler_errors


@pytest.fixture(scope="module")
def kube() -> Iterator[EchoServer]:
    """The upstream configured as a Kubernetes API server."""
    with EchoServer() as server:
        yield server
        assert not server.handler_errors, server.handler_errors


@pytest.fixture(scope="module")
def guard(tmp_path_factory: pytest.TempPathFactory, kube: EchoServer) -> Iterator[Guard]:
    yield from module_guard(
        tmp_path_factory.mktemp("redteam-guard"),
        hold_window_seconds=0.3,
        kubernetes_hosts=[f"127.0.0.1:{kube.port}"],
    )


def _send(guard: Guard, upstream: EchoServer, case: str, sent: Sent) -> tuple[str, bool]:
    url = f"http://127.0.0.1:{upstream.port}{sent.target}"
    answer = through(guard, sent.method, url, sent.headers, sent.body, case=case)
    return answer.decision, arrived(upstream, case)


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(E2E))
def test_a_bypass_is_refused_before_the_upstream(
    case: str, guard: Guard, plain: EchoServer, kube: EchoServer
) -> None:
    sent = E2E[case]
    upstream = kube if sent.upstream == "kube" else plain
    decision, reached = _send(guard, upstream, case, sent)
    assert decision in sent.refused, (case, decision)
    assert not reached, f"{case} reached the upstream"


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(E2E_FORWARDED))
def test_the_harmless_twin_is_forwarded(
    case: str, guard: Guard, plain: EchoServer, kube: EchoServer
) -> None:
    sent = E2E_FORWARDED[case]
    decision, reached = _send(guard, plain, case, sent)
    assert (decision, reached) == ("", True), case


@pytest.mark.slow
@pytest.mark.parametrize("ref", ["refs/heads/develop", "refs/tags/v1.0.0"])
def test_a_push_rewinding_develop_or_moving_a_tag_is_held(
    ref: str, guard: Guard, git_server: GitHttpServer
) -> None:
    """A force push (``git push --force``: no pack proves a fast-forward, the wire does
    not say) of a long-lived branch the git recogniser itself ranks with main, or of a
    tag: receive-pack rewinds it. Only main, master, release/* and prod* were held."""
    if ref.startswith("refs/tags/"):
        git_server.git("tag", ref.removeprefix("refs/tags/"), "main")
    else:
        git_server.git("branch", ref.removeprefix("refs/heads/"), "main")
    tip = git_server.git("rev-parse", ref).strip()
    older = git_server.git("rev-parse", "main~1").strip()
    body = pkt(f"{tip} {older} {ref}\x00report-status\n".encode()) + b"0000" + EMPTY_PACK
    response = send_push(guard, git_server, body)

    assert b"held for approval" in response.content, response.content
    assert git_server.log.matching(None, "/repo.git/git-receive-pack") == []
    assert git_server.git("rev-parse", ref).strip() == tip


# ----------------------------------------------------------------- the decision pipeline

PIPELINE: dict[str, Sent] = {
    "api-github-com-ruleset-disabled": Sent(
        "PUT",
        "https://api.github.com/repos/acme/web/rulesets/42",
        (("Content-Type", JSON), ("Authorization", "token ghp_redteam")),
        b'{"enforcement": "disabled"}',
    ),
    "azure-vmss-delete-instances": Sent(
        "POST",
        "https://management.azure.com/subscriptions/1111/resourceGroups/shop/providers/"
        "Microsoft.Compute/virtualMachineScaleSets/web/delete?api-version=2024-07-01",
        (("Content-Type", JSON),),
        b'{"instanceIds": ["0", "1", "2"]}',
    ),
    "azure-aks-delete-machines": Sent(
        "POST",
        "https://management.azure.com/subscriptions/1111/resourceGroups/shop/providers/"
        "Microsoft.ContainerService/managedClusters/aks/agentPools/np1/deleteMachines"
        "?api-version=2024-07-01",
        (("Content-Type", JSON),),
        b'{"machineNames": ["aks-np1-0"]}',
    ),
    "azure-encoded-role-assignments": Sent(
        "PUT",
        "https://management.azure.com/subscriptions/1111/resourceGroups/shop/providers/"
        "Microsoft.Authorization/roleAssignment%73/ra-1?api-version=2022-04-01",
        (("Content-Type", JSON),),
        b'{"properties": {"roleDefinitionId": "owner", "principalId": "agent"}}',
    ),
    "azure-complete-mode-deployment": Sent(
        "PUT",
        "https://management.azure.com/subscriptions/1111/resourcegroups/shop/providers/"
        "Microsoft.Resources/deployments/cleanup?api-version=2021-04-01",
        (("Content-Type", JSON),),
        json.dumps({"properties": {"mode": "Complete", "template": {"resources": []}}}).encode(),
    ),
    "azure-test-vm-in-prod-resource-group": Sent(
        "DELETE",
        "https://management.azure.com/subscriptions/1111/resourceGroups/prod-rg/providers/"
        "Microsoft.Compute/virtualMachines/test-vm?api-version=2024-07-01",
    ),
    "gcp-validate-only-repeated": Sent(
        "DELETE",
        "https://run.googleapis.com/v2/projects/shop/locations/us-central1/services/api"
        "?validateOnly=false&validateOnly=true",
    ),
    "gcp-method-override-delete": Sent(
        "POST",
        "https://sqladmin.googleapis.com/v1/projects/shop/instances/db/users?name=app&host=%25",
        (("Content-Type", JSON), ("X-HTTP-Method-Override", "DELETE")),
        b"{}",
    ),
    "gcp-deletion-protection-off": Sent(
        "POST",
        "https://compute.googleapis.com/compute/v1/projects/shop/zones/us-central1-a/"
        "instances/db-1/setDeletionProtection?deletionProtection=false",
    ),
    "gcp-bucket-versioning-off": Sent(
        "PATCH",
        "https://storage.googleapis.com/storage/v1/b/shop-orders",
        (("Content-Type", JSON),),
        b'{"versioning": {"enabled": false}}',
    ),
    "gcp-test-instance-in-prod-project": Sent(
        "DELETE",
        "https://compute.googleapis.com/compute/v1/projects/acme-prod/zones/us-central1-a/"
        "instances/test-runner",
    ),
    "athena-drop-table": Sent(
        "POST",
        "https://athena.us-east-1.amazonaws.com/",
        amz_json("athena", "AmazonAthena.StartQueryExecution", "1.1"),
        b'{"QueryString": "DROP TABLE sales", "WorkGroup": "primary"}',
    ),
    "k8s-secret-on-a-dev-domain": Sent(
        "DELETE", f"https://{KUBE}/api/v1/namespaces/default/secrets/tls.shop.dev"
    ),
    "ssm-send-command-shell": Sent(
        "POST",
        "https://ssm.us-east-1.amazonaws.com/",
        amz_json("ssm", "AmazonSSM.SendCommand", "1.1"),
        json.dumps(
            {
                "DocumentName": "AWS-RunShellScript",
                "InstanceIds": ["i-0prod000000000001"],
                "Parameters": {"commands": ["rm -rf /var/lib/postgresql"]},
            }
        ).encode(),
    ),
    "postgres-alter-column-type-using": Sent(
        "POST",
        "https://ep-shop.us-east-2.aws.neon.tech/sql",
        (("Content-Type", JSON),),
        b'{"query": "ALTER TABLE customers ALTER COLUMN email TYPE text USING \'\'"}',
    ),
    "azure-vmss-scale-to-zero": Sent(
        "PATCH",
        "https://management.azure.com/subscriptions/1111/resourceGroups/shop/providers/"
        "Microsoft.Compute/virtualMachineScaleSets/web?api-version=2024-07-01",
        (("Content-Type", JSON),),
        b'{"sku": {"capacity": 0}}',
    ),
}

PIPELINE_ALLOWED: dict[str, Sent] = {
    "azure-vmss-list-instances": Sent(
        "POST",
        "https://management.azure.com/subscriptions/1111/resourceGroups/shop/providers/"
        "Microsoft.Compute/virtualMachineScaleSets/web/listSkus?api-version=2024-07-01",
    ),
    "azure-incremental-deployment": Sent(
        "PUT",
        "https://management.azure.com/subscriptions/1111/resourcegroups/shop/providers/"
        "Microsoft.Resources/deployments/app?api-version=2021-04-01",
        (("Content-Type", JSON),),
        b'{"properties": {"mode": "Incremental", "template": {"resources": []}}}',
    ),
    "gcp-validate-only": Sent(
        "DELETE",
        "https://run.googleapis.com/v2/projects/shop/locations/us-central1/services/api"
        "?validateOnly=true",
    ),
    "gcp-deletion-protection-on": Sent(
        "POST",
        "https://compute.googleapis.com/compute/v1/projects/shop/zones/us-central1-a/"
        "instances/db-1/setDeletionProtection?deletionProtection=true",
    ),
    "gcp-test-instance-in-dev-project": Sent(
        "DELETE",
        "https://compute.googleapis.com/compute/v1/projects/acme-dev/zones/us-central1-a/"
        "instances/test-runner",
    ),
}


def request_of(sent: Sent) -> HttpRequest:
    """``sent`` as the Guard addon reads it off a flow (headers lower-cased, the URL's
    host and port the destination)."""
    url = urlsplit(sent.target)
    port = url.port or (443 if url.scheme == "https" else 80)
    target = sent.target.split(url.netloc, 1)[1] or "/"
    return HttpRequest(
        method=sent.method,
        scheme=url.scheme,
        host=url.hostname or "",
        port=port,
        path=target,
        headers=tuple((k.lower(), v) for k, v in sent.headers),
        body=sent.body,
        host_header=url.netloc,
    )


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    store = SqliteStore(tmp_path_factory.mktemp("redteam-pipeline") / "guardproxy.db")
    try:
        settings = RecogniseSettings(kubernetes_hosts=(KUBE,))
        yield Pipeline(FixedPolicies(BUNDLE), settings, SessionHistory(store))
    finally:
        store.close()


def decided(pipeline: Pipeline, case: str, sent: Sent) -> tuple[str, Action]:
    session = SessionInfo(id=f"s-{case}", name=case, user="redteam", anonymous=False)
    verdict = pipeline.decide(request_of(sent), session, T0)
    return verdict.decision.outcome, verdict.action


@pytest.mark.parametrize("case", sorted(PIPELINE))
def test_a_bypass_is_refused_by_the_pipeline(case: str, pipeline: Pipeline) -> None:
    outcome, action = decided(pipeline, case, PIPELINE[case])
    assert outcome in REFUSED, (case, outcome, action.operation, action.verb, action.risk_tags)


@pytest.mark.parametrize("case", sorted(PIPELINE_ALLOWED))
def test_the_harmless_twin_is_allowed_by_the_pipeline(case: str, pipeline: Pipeline) -> None:
    outcome, action = decided(pipeline, case, PIPELINE_ALLOWED[case])
    assert outcome == "allow", (case, outcome, action.operation, action.verb, action.risk_tags)


@pytest.mark.parametrize("case", sorted(E2E))
def test_the_e2e_bypasses_are_refused_by_the_pipeline_too(case: str, pipeline: Pipeline) -> None:
    """The unit twin of the end-to-end cases (fast; the same request on a loopback
    destination, the Kubernetes ones on the configured API server)."""
    sent = E2E[case]
    host = KUBE if sent.upstream == "kube" else "127.0.0.1:8080"
    scheme = "https" if sent.upstream == "kube" else "http"
    local = Sent(sent.method, f"{scheme}://{host}{sent.target}", sent.headers, sent.body)
    outcome, action = decided(pipeline, case, local)
    assert outcome in sent.refused, (case, outcome, action.operation, action.verb)


# ----------------------------------------------------------------- classes that held


def _credential(guard: Guard, name: str) -> str:
    session = urlsplit(guard.session(f"redteam-{name}").proxy_url)
    login = f"{unquote(session.username or '')}:{unquote(session.password or '')}"
    return "Proxy-Authorization: Basic " + base64.b64encode(login.encode()).decode()


def _raw(guard: Guard, data: bytes, timeout: float = 10.0) -> bytes:
    """``data`` written to the proxy as is; everything it answers until it closes."""
    with socket.create_connection(("127.0.0.1", guard.proxy_port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            received += chunk
        return received


def _settle(upstream: EchoServer) -> None:
    time.sleep(0.5)  # a request the proxy forwarded is logged within milliseconds


@pytest.mark.slow
def test_content_length_beside_chunked_is_refused_by_the_proxy(
    guard: Guard, kube: EchoServer
) -> None:
    """Request smuggling: both framings at once. mitmproxy refuses the request (RFC 9112
    section 6.3), so no second request can hide in a body the guard decided as one."""
    host = f"127.0.0.1:{kube.port}"
    case = "cl-and-te"
    deletes = sum(r.method == "DELETE" for r in kube.requests)
    answer = _raw(
        guard,
        (
            f"POST http://{host}/api/v1/namespaces/dev/configmaps HTTP/1.1\r\nHost: {host}\r\n"
            f"{_credential(guard, case)}\r\n{CASE_HEADER}: {case}\r\nContent-Length: 5\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n"
            f"DELETE /api/v1/namespaces/prod HTTP/1.1\r\nHost: {host}\r\n\r\n"
        ).encode(),
    )
    _settle(kube)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert not arrived(kube, case)
    assert sum(r.method == "DELETE" for r in kube.requests) == deletes


@pytest.mark.slow
def test_expect_continue_does_not_start_the_body_before_the_decision(
    guard: Guard, kube: EchoServer
) -> None:
    """``Expect: 100-continue``: the proxy answers 100 itself and buffers the body; the
    delete is held and the API server never sees its headers."""
    host = f"127.0.0.1:{kube.port}"
    case = "expect-continue"
    answer = _raw(
        guard,
        (
            f"DELETE http://{host}/api/v1/namespaces/prod HTTP/1.1\r\nHost: {host}\r\n"
            f"{_credential(guard, case)}\r\n{CASE_HEADER}: {case}\r\nContent-Type: {JSON}\r\n"
            "Content-Length: 2\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n{}"
        ).encode(),
    )
    _settle(kube)
    assert b"X-Guardproxy-Decision: hold" in answer, answer[:300]
    assert not arrived(kube, case)


@pytest.mark.slow
def test_a_pipelined_delete_behind_a_read_is_decided_on_its_own(
    guard: Guard, kube: EchoServer
) -> None:
    host = f"127.0.0.1:{kube.port}"
    credential = _credential(guard, "pipelined")
    read = (
        f"GET http://{host}/api/v1/namespaces HTTP/1.1\r\nHost: {host}\r\n{credential}\r\n"
        f"{CASE_HEADER}: pipelined-read\r\n\r\n"
    )
    delete = (
        f"DELETE http://{host}/api/v1/namespaces/prod HTTP/1.1\r\nHost: {host}\r\n"
        f"{credential}\r\n{CASE_HEADER}: pipelined-delete\r\nContent-Length: 0\r\n"
        "Connection: close\r\n\r\n"
    )
    answer = _raw(guard, (read + delete).encode())
    _settle(kube)
    assert arrived(kube, "pipelined-read")
    assert b"X-Guardproxy-Decision: hold" in answer, answer[-400:]
    assert not arrived(kube, "pipelined-delete")


@pytest.mark.slow
@pytest.mark.parametrize("inner", ["origin-form", "absolute-form"])
def test_a_tunnel_is_judged_by_its_connect_target_not_by_what_is_said_inside(
    inner: str, guard: Guard, kube: EchoServer, plain: EchoServer
) -> None:
    """CONNECT to the API server, then name a local app inside (a ``Host`` header, or an
    absolute URL): the request goes to the API server, and is judged as one (an
    unclassified POST there is denied), not as local development (allowed)."""
    api = f"127.0.0.1:{kube.port}"
    app = f"localhost:{plain.port}"
    case = f"tunnel-{inner}"
    target = "/api/items" if inner == "origin-form" else f"http://{app}/api/items"
    answer = _raw(
        guard,
        (
            f"CONNECT {api} HTTP/1.1\r\nHost: {api}\r\n{_credential(guard, case)}\r\n\r\n"
            f"POST {target} HTTP/1.1\r\nHost: {app}\r\n{CASE_HEADER}: {case}\r\n"
            "Content-Length: 0\r\nConnection: close\r\n\r\n"
        ).encode(),
    )
    _settle(kube)
    assert b"X-Guardproxy-Decision: deny" in answer, answer[:300]
    assert not arrived(kube, case) and not arrived(plain, case)


@pytest.mark.slow
def test_a_credential_sent_inside_a_tunnel_is_not_forwarded(
    guard: Guard, plain: EchoServer
) -> None:
    """The tunnel's CONNECT credential decides the session; a ``Proxy-Authorization``
    header sent inside it (another session's token) was forwarded to the upstream."""
    app = f"localhost:{plain.port}"
    case = "credential-in-tunnel"
    _raw(
        guard,
        (
            f"CONNECT {app} HTTP/1.1\r\nHost: {app}\r\n{_credential(guard, 'tunnel')}\r\n\r\n"
            f"GET /items HTTP/1.1\r\nHost: {app}\r\n{_credential(guard, 'inside')}\r\n"
            f"{CASE_HEADER}: {case}\r\nConnection: close\r\n\r\n"
        ).encode(),
    )
    _settle(plain)
    [seen] = [r for r in plain.requests if r.header(CASE_HEADER) == case]
    assert seen.header("Proxy-Authorization") is None


@pytest.mark.slow
def test_an_h2c_upgrade_header_does_not_carry_a_delete_past_the_guard(
    guard: Guard, kube: EchoServer
) -> None:
    host = f"127.0.0.1:{kube.port}"
    case = "h2c"
    answer = _raw(
        guard,
        (
            f"DELETE http://{host}/api/v1/namespaces/prod HTTP/1.1\r\nHost: {host}\r\n"
            f"{_credential(guard, case)}\r\n{CASE_HEADER}: {case}\r\n"
            "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
            "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nContent-Length: 0\r\n\r\n"
        ).encode(),
        timeout=5.0,
    )
    _settle(kube)
    assert b"X-Guardproxy-Decision: hold" in answer, answer[:300]
    assert not arrived(kube, case)


# ----------------------------------------------------------------- left open

OPEN: dict[str, tuple[Sent, str]] = {
    "cloudformation-update-drops-every-resource": (
        Sent(
            "POST",
            "https://cloudformation.us-east-1.amazonaws.com/",
            (sigv4("cloudformation"), ("Content-Type", "application/x-www-form-urlencoded")),
            b"Action=UpdateStack&Version=2010-05-15&StackName=shop&TemplateBody="
            b"%7B%22Resources%22%3A%7B%22Keep%22%3A%7B%22Type%22%3A"
            b"%22AWS%3A%3ACloudFormation%3A%3AWaitConditionHandle%22%7D%7D%7D",
        ),
        "what an UpdateStack deletes is the difference to the stack's current template, "
        "which the request does not carry (the same for Terraform runs, kubectl apply "
        "--prune, Complete-mode deployments without a template to compare)",
    ),
}


@pytest.mark.parametrize(
    "case",
    [pytest.param(c, marks=pytest.mark.xfail(strict=True, reason=r)) for c, (_, r) in OPEN.items()],
)
def test_an_open_bypass(case: str, pipeline: Pipeline) -> None:
    sent, _reason = OPEN[case]
    outcome, action = decided(pipeline, case, sent)
    assert outcome in REFUSED, (case, outcome, action.operation, action.verb, action.risk_tags)
