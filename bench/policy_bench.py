"""Decision latency of ``guardproxy.policy.evaluate(bundle, action, context)``.

What it measures
    The time of one policy decision, timed call by call with ``time.perf_counter_ns``
    (the garbage collector is disabled while timing and re-enabled afterwards), after a
    warm-up of 500 decisions, against two bundles:

    * the shipped bundle in ``policies/`` (``--policies`` points elsewhere); the script
      stops with a clear message when it does not load;
    * a synthetic bundle of 200 rules generated into a temporary directory: structured
      ``match`` rules over aws/k8s/gcp/azure/github/git/tfc/docker/sql with globs on
      operations and resource names, about a quarter with a CEL ``condition``, some
      ``matchConditions``, variables and params, deny/hold/allow with approval blocks on
      holds, audit-mode rules, a mode override and a PolicyException.

    CEL runs compiled (``guardproxy.policy.compiler``); ``--interpreter`` loads both
    bundles with cel-python's interpreter only, as the engine ran before the compiler,
    and ``--compare`` times each bundle both ways in one run, interpreted rows first.
    The compiled synthetic rows are compared with the CEL targets (p50 <= 20 us, p99
    <= 200 us).

    The workload is ``--actions`` realistic actions (80 % reads, a small share that no
    recogniser classified) drawn from ``random.Random(--seed)``, so every run decides the
    same inputs. Reported per scenario: p50, p90, p99, max and mean in microseconds,
    decisions per second, and the outcome and basis distribution, so it is visible that
    the workload hits real rules. The shipped-bundle rows are compared with the targets
    (p50 <= 100 us, p99 <= 1 ms) and marked PASS or MISS.

How to run (from the repository root)
    .venv/bin/python bench/policy_bench.py                  # table for people
    .venv/bin/python bench/policy_bench.py --json           # machine-readable
    .venv/bin/python bench/policy_bench.py --profile        # + cProfile of slow decisions
    .venv/bin/python bench/policy_bench.py --repeat 3       # fastest of 3 passes per decision
    .venv/bin/python bench/policy_bench.py --compare        # interpreter and compiler side by side
    .venv/bin/python bench/policy_bench.py --actions 2000 --seed 7 --policies path/to/bundle
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import math
import os
import platform
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import CodeType
from typing import Any

import yaml

from guardproxy.action import (
    Action,
    Actor,
    Confidence,
    Environment,
    Provider,
    RequestSummary,
    Resource,
    Scope,
    Verb,
)
from guardproxy.context import Context, SessionInfo
from guardproxy.policy import Bundle, cel, evaluate, load_bundle
from guardproxy.policy.cel import CELPY_VERSION
from guardproxy.policy.engine import ENGINE_VERSION

DEFAULT_ACTIONS = 10_000
DEFAULT_SEED = 20_260_304
WARMUP = 500
READ_SHARE = 0.80
UNCLASSIFIED_SHARE = 0.03
SYNTHETIC_RULES = 200
TARGET_P50_US = 100.0
TARGET_P99_US = 1_000.0
CEL_TARGET_P50_US = 20.0
CEL_TARGET_P99_US = 200.0
NOW = datetime(2026, 3, 4, 15, 30, tzinfo=UTC)
PROFILE_SLOWEST_SHARE = 0.01
PROFILE_SAMPLE = 500
PROFILE_TOP = 15

Document = dict[str, Any]


class BenchError(Exception):
    """A problem that stops the benchmark, with a message for the person running it."""


# ---------------------------------------------------------------------------
# The operation catalogue: what the workload is drawn from and the rules refer to.


@dataclass(frozen=True)
class Op:
    """One provider operation as a recogniser would classify it."""

    provider: Provider
    service: str
    operation: str
    verb: Verb
    resource_type: str
    method: str
    path: str
    bases: tuple[str, ...]
    weight: int = 1
    always: tuple[str, ...] = ()
    maybe: tuple[str, ...] = ()
    host: str = ""


@dataclass(frozen=True)
class ProviderInfo:
    host: str
    port: int
    tools: tuple[tuple[str, str], ...]
    headers: tuple[str, ...]
    weight: int


_AWS_HEADERS = ("authorization", "content-type", "host", "user-agent", "x-amz-date",
                "x-amz-security-token")  # fmt: skip
PROVIDERS: dict[Provider, ProviderInfo] = {
    Provider.AWS: ProviderInfo(
        "{service}.{region}.amazonaws.com", 443,
        (("aws-cli", "aws-cli/2.15.30 Python/3.11.8 Linux/6.8 exe/x86_64 command/{op}"),
         ("boto3", "Boto3/1.34.60 md/Botocore#1.34.60 os/linux lang/python#3.12.1"),
         ("terraform", "APN/1.0 HashiCorp/1.0 Terraform/1.7.4")),
        _AWS_HEADERS, 30),
    Provider.K8S: ProviderInfo(
        "{env}-eks.example.internal", 6443,
        (("kubectl", "kubectl/v1.29.2 (linux/amd64) kubernetes/4b8e819"),
         ("helm", "Helm/3.14.2")),
        ("accept", "authorization", "content-type", "user-agent"), 30),
    Provider.GCP: ProviderInfo(
        "{service}.googleapis.com", 443,
        (("gcloud", "google-cloud-sdk gcloud/467.0.0 command/{op}"),),
        ("authorization", "content-type", "user-agent", "x-goog-api-client"), 8),
    Provider.AZURE: ProviderInfo(
        "management.azure.com", 443,
        (("az", "AZURECLI/2.58.0 (DEB) azsdk-python-core/1.29.7 Python/3.11.8"),),
        ("authorization", "content-type", "user-agent", "x-ms-client-request-id"), 7),
    Provider.GITHUB: ProviderInfo(
        "api.github.com", 443, (("gh", "GitHub CLI 2.45.0"),),
        ("accept", "authorization", "user-agent", "x-github-api-version"), 8),
    Provider.GIT: ProviderInfo(
        "github.com", 443, (("git", "git/2.43.0"),),
        ("authorization", "content-type", "git-protocol", "user-agent"), 5),
    Provider.TFC: ProviderInfo(
        "app.terraform.io", 443, (("terraform", "go-tfe/1.44.0 Terraform/1.7.4"),),
        ("authorization", "content-type", "user-agent"), 4),
    Provider.DOCKER: ProviderInfo(
        "docker.example.internal", 2376, (("docker", "Docker-Client/25.0.3 (linux)"),),
        ("content-type", "user-agent"), 4),
    Provider.SQL: ProviderInfo(
        "{env}-db.cluster-c9x.eu-west-1.rds.amazonaws.com", 5432,
        (("psql", "psql/16.2"), ("sqlalchemy", "SQLAlchemy/2.0.28")), (), 4),
}  # fmt: skip


def _ops(
    provider: Provider,
    service: str,
    rtype: str,
    method: str,
    path: str,
    bases: tuple[str, ...],
    rows: Sequence[tuple[Any, ...]],
) -> list[Op]:
    """Rows of (operation, verb, weight[, always[, maybe[, method]]]) sharing a resource."""
    found = []
    for row in rows:
        operation, verb, weight = row[0], row[1], row[2]
        always = row[3] if len(row) > 3 else ()
        maybe = row[4] if len(row) > 4 else ()
        row_method = row[5] if len(row) > 5 else method
        found.append(
            Op(
                provider,
                service,
                operation,
                verb,
                rtype,
                row_method,
                path,
                bases,
                weight,
                always,
                maybe,
            )
        )
    return found


R, C, U, D, X = Verb.READ, Verb.CREATE, Verb.UPDATE, Verb.DELETE, Verb.DESTROY
P, E = Verb.PERMISSION, Verb.EXECUTE
A, K, G, Z = Provider.AWS, Provider.K8S, Provider.GCP, Provider.AZURE
K_PODS = "/api/v1/namespaces/{ns}/pods/{name}"
K_DEPLOY = "/apis/apps/v1/namespaces/{ns}/deployments/{name}"
AZ_RG = "/subscriptions/{sub}/resourceGroups/{rg}"
AZ_VM = AZ_RG + "/providers/Microsoft.Compute/virtualMachines/{name}"

CATALOG: list[Op] = [
    *_ops(A, "ec2", "aws:ec2:instance", "POST", "/", ("api", "worker", "batch"), [
        ("DescribeInstances", R, 10), ("RunInstances", C, 3),
        ("StopInstances", U, 2, (), ("force",)),
        ("ModifyInstanceAttribute", U, 1, (), ("protection-removal",)),
        ("TerminateInstances", X, 2)]),
    *_ops(A, "ec2", "aws:ec2:security-group", "POST", "/", ("web-sg", "db-sg"), [
        ("DescribeSecurityGroups", R, 3), ("AuthorizeSecurityGroupIngress", P, 1)]),
    *_ops(A, "cloudformation", "aws:cloudformation:stack", "POST", "/",
          ("calc", "billing", "network"), [
        ("DescribeStacks", R, 6), ("ListStackResources", R, 2), ("CreateStack", C, 1),
        ("UpdateStack", U, 2), ("DeleteStack", X, 2)]),
    *_ops(A, "rds", "aws:rds:db-instance", "POST", "/", ("orders-db", "users-db"), [
        ("DescribeDBInstances", R, 4), ("ModifyDBInstance", U, 1, (), ("protection-removal",)),
        ("DeleteDBInstance", X, 1, (), ("skip-final-snapshot", "delete-backups"))]),
    *_ops(A, "s3", "aws:s3:object", "GET", "/{name}/reports/2026/03/part-0001.parquet",
          ("assets", "logs", "backups"), [
        ("GetObject", R, 8), ("PutObject", C, 4, (), (), "PUT"),
        ("DeleteObjects", D, 2, ("bulk",), ("versioned-object-delete",), "POST")]),
    *_ops(A, "s3", "aws:s3:bucket", "GET", "/{name}", ("assets", "logs", "backups"), [
        ("ListObjectsV2", R, 4),
        ("PutBucketVersioning", U, 1, (), ("versioning-suspended",), "PUT"),
        ("DeleteBucket", X, 1, (), (), "DELETE")]),
    *_ops(A, "iam", "aws:iam:role", "POST", "/", ("deploy-role", "ci-role"), [
        ("ListRoles", R, 2), ("AttachRolePolicy", P, 1), ("CreateAccessKey", P, 1)]),
    *_ops(A, "sts", "aws:sts:identity", "POST", "/", ("caller",), [("GetCallerIdentity", R, 3)]),
    *_ops(A, "logs", "aws:logs:log-group", "POST", "/", ("api-logs",), [("FilterLogEvents", R, 3)]),
    *_ops(A, "cloudtrail", "aws:cloudtrail:trail", "POST", "/", ("org-trail",), [
        ("DescribeTrails", R, 1), ("StopLogging", U, 1, ("audit-disabled",))]),
    *_ops(A, "route53", "aws:route53:hostedzone", "POST", "/2013-04-01/hostedzone/{name}/rrset",
          ("example-com",), [
        ("ListResourceRecordSets", R, 2), ("ChangeResourceRecordSets", U, 1, (), ("dns-delete",))]),
    *_ops(A, "lambda", "aws:lambda:function", "POST", "/2015-03-31/functions/{name}/invocations",
          ("resize", "notify"), [("Invoke", E, 2)]),
    *_ops(A, "ssm", "aws:ssm:document", "POST", "/", ("run-shell",), [("SendCommand", E, 1)]),
    *_ops(K, "core", "k8s:core:pods", "GET", K_PODS, ("api", "checkout", "worker"), [
        ("get", R, 8), ("list", R, 8), ("watch", R, 4), ("delete", D, 3, (), ("force",), "DELETE"),
        ("deletecollection", D, 1, ("bulk",), (), "DELETE")]),
    *_ops(K, "core", "k8s:core:pods/exec", "POST", K_PODS + "/exec", ("api", "worker"), [
        ("exec", E, 2)]),
    *_ops(K, "apps", "k8s:apps:deployments", "GET", K_DEPLOY, ("api", "checkout"), [
        ("get", R, 5), ("list", R, 3), ("create", C, 2, (), (), "POST"),
        ("patch", U, 4, (), ("scale-to-zero",), "PATCH"), ("delete", D, 1, (), (), "DELETE")]),
    *_ops(K, "core", "k8s:core:namespaces", "GET", "/api/v1/namespaces/{name}", ("ns",), [
        ("list", R, 2), ("delete", X, 1, (), (), "DELETE")]),
    *_ops(K, "core", "k8s:core:configmaps", "GET", "/api/v1/namespaces/{ns}/configmaps/{name}",
          ("api-config",), [("get", R, 2), ("update", U, 1, (), (), "PUT")]),
    *_ops(K, "core", "k8s:core:secrets", "GET", "/api/v1/namespaces/{ns}/secrets/{name}",
          ("db-credentials",), [("get", R, 1), ("patch", U, 1, (), (), "PATCH")]),
    *_ops(K, "rbac.authorization.k8s.io", "k8s:rbac.authorization.k8s.io:clusterrolebindings",
          "POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", ("agent-admin",), [
        ("create", P, 1)]),
    *_ops(G, "compute", "gcp:compute:instances", "GET",
          "/compute/v1/projects/{project}/zones/europe-west1-b/instances/{name}",
          ("api", "batch"), [
        ("compute.instances.list", R, 5), ("compute.instances.get", R, 3),
        ("compute.instances.insert", C, 1, (), (), "POST"),
        ("compute.instances.stop", U, 1, (), (), "POST"),
        ("compute.instances.delete", X, 1, (), (), "DELETE")]),
    *_ops(G, "storage", "gcp:storage:objects", "GET", "/storage/v1/b/{name}/o",
          ("assets", "logs"), [
        ("storage.objects.get", R, 4), ("storage.objects.list", R, 2),
        ("storage.objects.create", C, 2, (), (), "POST"),
        ("storage.buckets.delete", X, 1, (), (), "DELETE")]),
    *_ops(G, "container", "gcp:container:clusters", "GET",
          "/v1/projects/{project}/locations/europe-west1/clusters/{name}", ("gke",), [
        ("container.projects.locations.clusters.get", R, 2),
        ("container.projects.locations.clusters.delete", X, 1, (), (), "DELETE")]),
    *_ops(G, "cloudresourcemanager", "gcp:cloudresourcemanager:projects", "POST",
          "/v3/projects/{project}:setIamPolicy", ("project",), [
        ("cloudresourcemanager.projects.get", R, 1, (), (), "GET"),
        ("cloudresourcemanager.projects.setIamPolicy", P, 1)]),
    *_ops(Z, "Microsoft.Compute", "azure:Microsoft.Compute/virtualMachines", "GET", AZ_VM,
          ("api", "batch"), [
        ("Microsoft.Compute/virtualMachines/read", R, 5),
        ("Microsoft.Compute/virtualMachines/write", C, 1, (), (), "PUT"),
        ("Microsoft.Compute/virtualMachines/restart/action", E, 1, (), (), "POST"),
        ("Microsoft.Compute/virtualMachines/delete", X, 1, (), ("force",), "DELETE")]),
    *_ops(Z, "Microsoft.Resources", "azure:Microsoft.Resources/resourceGroups", "GET", AZ_RG,
          ("rg",), [
        ("Microsoft.Resources/subscriptions/resourceGroups/read", R, 3),
        ("Microsoft.Resources/subscriptions/resourceGroups/delete", X, 1, (), (), "DELETE")]),
    *_ops(Z, "Microsoft.Authorization", "azure:Microsoft.Authorization/roleAssignments", "PUT",
          AZ_RG + "/providers/Microsoft.Authorization/roleAssignments/{name}", ("owner",), [
        ("Microsoft.Authorization/roleAssignments/write", P, 1)]),
    *_ops(Provider.GITHUB, "repos", "github:repository", "GET", "/repos/{repo}", ("repo",), [
        ("repos/get", R, 4), ("repos/update", U, 1, (), (), "PATCH"),
        ("repos/delete", X, 1, (), (), "DELETE"),
        ("repos/collaborators/put", P, 1, (), (), "PUT")]),
    *_ops(Provider.GITHUB, "repos", "github:branch-protection", "GET",
          "/repos/{repo}/branches/main/protection", ("repo",), [
        ("repos/get-branch-protection", R, 1),
        ("repos/delete-branch-protection", U, 1, ("protection-removal",), (), "DELETE")]),
    *_ops(Provider.GITHUB, "pulls", "github:pull", "GET", "/repos/{repo}/pulls", ("repo",), [
        ("pulls/list", R, 4), ("pulls/create", C, 2, (), (), "POST"),
        ("pulls/merge", U, 1, (), (), "PUT")]),
    *_ops(Provider.GITHUB, "actions", "github:workflow", "GET", "/repos/{repo}/actions/runs",
          ("repo",), [
        ("actions/runs/list", R, 2), ("actions/workflows/dispatch", E, 1, (), (), "POST"),
        ("actions/secrets/put", P, 1, (), (), "PUT")]),
    *_ops(Provider.GITHUB, "git", "git:ref", "DELETE", "/repos/{repo}/git/refs/heads/{name}",
          ("ref",), [("git/refs/delete", D, 1, ("branch-delete",))]),
    *_ops(Provider.GIT, "git", "git:ref", "POST", "/{repo}.git/git-upload-pack", ("ref",), [
        ("fetch", R, 5), ("clone", R, 2)]),
    *_ops(Provider.GIT, "git", "git:ref", "POST", "/{repo}.git/git-receive-pack", ("ref",), [
        ("push", U, 4, (), ("possible-force-push", "force-push")), ("push", C, 1),
        ("push", D, 1, ("branch-delete",))]),
    *_ops(Provider.TFC, "workspaces", "tfc:workspace", "GET", "/api/v2/workspaces/{name}",
          ("network", "app"), [
        ("workspaces.show", R, 3), ("workspaces.lock", U, 1, (), (), "POST"),
        ("workspaces.delete", X, 1, (), (), "DELETE")]),
    *_ops(Provider.TFC, "runs", "tfc:run", "POST", "/api/v2/runs", ("network", "app"), [
        ("runs.list", R, 2, (), (), "GET"),
        ("runs.create", C, 2, (), ("auto-apply", "destroy-run")),
        ("runs.apply", E, 2)]),
    *_ops(Provider.DOCKER, "containers", "docker:container", "GET",
          "/v1.45/containers/{name}/json", ("api", "db"), [
        ("containers.list", R, 3), ("containers.inspect", R, 2), ("containers.logs", R, 2),
        ("containers.create", C, 1, (), ("privileged", "host-mount"), "POST"),
        ("containers.exec", E, 1, (), (), "POST"),
        ("containers.delete", D, 1, (), ("force",), "DELETE")]),
    *_ops(Provider.DOCKER, "volumes", "docker:volume", "GET", "/v1.45/volumes/{name}", ("data",), [
        ("volumes.list", R, 1), ("volumes.delete", X, 1, (), (), "DELETE"),
        ("volumes.prune", X, 1, ("bulk",), (), "POST")]),
    *_ops(Provider.DOCKER, "system", "docker:system", "POST", "/v1.45/system/prune", ("host",), [
        ("system.prune", X, 1, ("bulk",))]),
    *_ops(Provider.SQL, "postgres", "sql:table", "", "", ("orders", "users", "payments"), [
        ("SELECT", R, 8), ("EXPLAIN", R, 1), ("SHOW", R, 1), ("INSERT", C, 2), ("UPDATE", U, 2),
        ("ALTER TABLE", U, 1), ("DELETE", D, 1, (), ("delete-without-where",)),
        ("DROP TABLE", X, 1), ("TRUNCATE", X, 1, ("truncate",)), ("GRANT", P, 1)]),
    *_ops(Provider.SQL, "postgres", "sql:database", "", "", ("orders", "analytics"), [
        ("DROP DATABASE", X, 1)]),
]  # fmt: skip

# (provider, service, operation, method, host, path): what no recogniser classified.
UNCLASSIFIED: list[tuple[Provider, str, str, str, str, str]] = [
    (Provider.UNKNOWN, "", "", "POST", "api.anthropic.com", "/v1/messages"),
    (Provider.UNKNOWN, "", "", "GET", "pypi.org", "/simple/requests/"),
    (Provider.UNKNOWN, "", "", "POST", "jobs.example.internal", "/internal/v1/jobs/{name}/run"),
    (Provider.UNKNOWN, "", "", "GET", "admin.example.com", "/admin/config"),
    (Provider.AWS, "ec2", "ModifyInstanceMetadataOptions", "POST", "", "/"),
    (Provider.K8S, "core", "proxy", "GET", "", "/api/v1/namespaces/{ns}/pods/{name}/proxy"),
    (
        Provider.AZURE,
        "Microsoft.Web",
        "",
        "POST",
        "",
        AZ_RG + "/providers/Microsoft.Web/sites/{name}",
    ),
    (Provider.SQL, "postgres", "", "", "", ""),
]
REFS = ("refs/heads/main", "refs/heads/feature-x", "refs/heads/release/2026.03",
        "refs/heads/fix-latency")  # fmt: skip
ENVIRONMENTS = (Environment.PROD, Environment.STAGING, Environment.DEV, Environment.UNKNOWN)
ENVIRONMENT_WEIGHTS = (35, 20, 35, 10)
NAMESPACES = ("payments", "checkout", "kube-system", "default", "monitoring")
REPOSITORIES = ("platform-infra", "api", "web", "terraform-live", "docs")
ACCOUNTS = {"prod": "111111111111", "staging": "222222222222", "dev": "333333333333",
            "unknown": "444444444444"}  # fmt: skip

# ---------------------------------------------------------------------------
# The workload.


def make_contexts() -> list[Context]:
    """A few agent sessions, all deciding at the same fixed instant."""
    sessions = [
        SessionInfo(id="sess-7f3a9c", name="fix-checkout-latency", user="alice@example.com",
                    agent="claude-code", labels=["team:payments", "ticket:OPS-1234"],
                    anonymous=False),
        SessionInfo(id="sess-21b04e", name="cleanup-staging", user="bob@example.com",
                    agent="codex", labels=["team:platform"], anonymous=False),
        SessionInfo(id="anonymous:10.0.3.7", agent="cursor"),
    ]  # fmt: skip
    return [Context(now=NOW, session=s) for s in sessions]


def _fill(template: str, values: dict[str, str]) -> str:
    return template.format(**values) if template else ""


def _resource_name(rng: random.Random, op: Op, env: str, ns: str, repo: str) -> str:
    if op.resource_type == "git:ref":
        return rng.choice(REFS)
    if op.provider in (Provider.GITHUB, Provider.GIT):
        return repo
    if op.resource_type == "k8s:core:namespaces":
        return ns
    if op.provider is Provider.SQL:
        return rng.choice(op.bases)
    base = f"{rng.choice(op.bases)}-{rng.randint(1, 9)}"
    return base if env == "unknown" else f"{env}-{base}"


def _scope(op_provider: Provider, env: str, ns: str, repo: str, region: str) -> Scope:
    if op_provider is Provider.AWS:
        return Scope(account=ACCOUNTS[env], region=region)
    if op_provider is Provider.K8S:
        return Scope(cluster=f"{env}-eks.example.internal", namespace=ns)
    if op_provider is Provider.GCP:
        return Scope(project=f"acme-{env}", region="europe-west1")
    if op_provider is Provider.AZURE:
        return Scope(
            subscription=f"sub-{ACCOUNTS[env][:4]}",
            resource_group=f"rg-{env}-app",
            region="westeurope",
        )
    if op_provider in (Provider.GITHUB, Provider.GIT):
        return Scope(repository=repo)
    if op_provider is Provider.TFC:
        return Scope(project="acme")
    return Scope()


def _risk_tags(rng: random.Random, op: Op) -> list[str]:
    tags = list(op.always)
    tags.extend(tag for tag in op.maybe if rng.random() < 0.4)
    return tags


def _action(rng: random.Random, op: Op, verb: Verb, confidence: Confidence) -> Action:
    """One action for ``op``: names, scope, actor and request filled in plausibly."""
    env = rng.choices(ENVIRONMENTS, ENVIRONMENT_WEIGHTS)[0]
    ns = rng.choice(NAMESPACES)
    repo = f"acme/{rng.choice(REPOSITORIES)}"
    region = rng.choice(("eu-west-1", "us-east-1"))
    info = PROVIDERS.get(op.provider)
    name = _resource_name(rng, op, env.value, ns, repo)
    values = {"name": name, "ns": ns, "repo": repo, "env": env.value, "region": region,
              "service": op.service, "project": f"acme-{env.value}", "op": op.operation,
              "sub": f"sub-{ACCOUNTS[env.value][:4]}", "rg": f"rg-{env.value}-app"}  # fmt: skip
    tool, agent = rng.choice(info.tools) if info else ("curl", "curl/8.5.0")
    scope = _scope(op.provider, env.value, ns, repo, region)
    scope_id = scope.account or scope.cluster or scope.project or scope.repository or "-"
    resource_id = f"i-0{rng.getrandbits(64):016x}" if op.resource_type == "aws:ec2:instance" else ""
    write = verb is not Verb.READ
    return Action(
        provider=op.provider,
        service=op.service,
        operation=op.operation,
        verb=verb,
        resource=Resource(type=op.resource_type, id=resource_id, name=name,
                          key=f"{op.provider}:{scope_id}:{op.resource_type}:{name}"),
        scope=scope,
        environment=env,
        risk_tags=_risk_tags(rng, op),
        actor=Actor(session_id="", tool=tool, user_agent=_fill(agent, values)),
        request=RequestSummary(
            method=op.method,
            host=op.host or _fill(info.host if info else "", values),
            port=info.port if info else 443,
            path=_fill(op.path, values),
            header_names=list(info.headers) if info else ["content-type", "user-agent"],
            body_bytes=rng.randint(64, 16_384) if write else 0,
        ),
        confidence=confidence,
        dry_run=write and rng.random() < 0.05,
    )  # fmt: skip


def _unclassified(rng: random.Random) -> Action:
    provider, service, operation, method, host, path = rng.choice(UNCLASSIFIED)
    op = Op(provider, service, operation, Verb.UNKNOWN, "", method, path, ("svc",), host=host)
    confidence = Confidence.HEURISTIC if operation else Confidence.UNKNOWN
    return _action(rng, op, Verb.UNKNOWN, confidence)


def make_workload(count: int, seed: int) -> list[tuple[Action, Context]]:
    """``count`` (action, context) pairs: 80 % reads, a few unclassified, deterministic."""
    rng = random.Random(seed)
    reads = [op for op in CATALOG if op.verb is Verb.READ]
    writes = [op for op in CATALOG if op.verb is not Verb.READ]

    def weights(ops: list[Op]) -> list[int]:
        return [op.weight * PROVIDERS[op.provider].weight for op in ops]

    read_weights, write_weights = weights(reads), weights(writes)
    contexts = make_contexts()
    workload = []
    for _ in range(count):
        draw = rng.random()
        if draw < READ_SHARE:
            op = rng.choices(reads, read_weights)[0]
        elif draw < 1 - UNCLASSIFIED_SHARE:
            op = rng.choices(writes, write_weights)[0]
        else:
            workload.append((_unclassified(rng), rng.choice(contexts)))
            continue
        confidence = Confidence.EXACT if rng.random() < 0.95 else Confidence.HEURISTIC
        workload.append((_action(rng, op, op.verb, confidence), rng.choice(contexts)))
    return workload


# ---------------------------------------------------------------------------
# The synthetic 200-rule bundle.

RESTRICTIVE_CEL = (
    'action.resource.name.startsWith("prod-")',
    '"force" in action.risk_tags || "bulk" in action.risk_tags',
    'action.risk_tags.exists(t, t.startsWith("skip-") || t == "delete-without-where")',
    "variables.is_prod && !action.dry_run",
    "variables.protected || variables.risky",
    "action.resource.name in params.protected_names",
    "!(session.agent in params.trusted_agents)",
    "now.getHours() >= 18 || now.getDayOfWeek() == 0 || now.getDayOfWeek() == 6",
    'glob(action.resource.name, "prod-*") && action.confidence == "exact"',
    'action.request.method in ["DELETE", "POST", "PATCH", "PUT"] && action.environment != "dev"',
    'action.resource.key.matches("prod") && size(action.risk_tags) > 0',
    'action.scope.namespace in ["kube-system", "payments"] || '
    'action.scope.account == "111111111111"',
    '!session.labels.exists(l, l == "break-glass")',
    'action.request.body_bytes > 4096 || globAny(action.risk_tags, "force*")',
)
PERMISSIVE_CEL = (
    'session.labels.exists(l, l.startsWith("ticket:"))',
    "!variables.protected",
    "session.agent in params.trusted_agents && !variables.risky",
    'action.dry_run || action.environment == "dev"',
    'lowerAscii(action.actor.tool) in ["terraform", "kubectl", "aws-cli"]',
    '!action.resource.name.startsWith("prod-")',
)
MATCH_CONDITIONS = (
    {"name": "not-dry-run", "expression": "!action.dry_run"},
    {"name": "exact", "expression": 'action.confidence == "exact"'},
    {"name": "named", "expression": 'action.resource.name != ""'},
    {"name": "has-session", "expression": 'session.id != ""'},
)
SET_VARIABLES = [
    {"name": "is_prod", "expression": 'action.environment == "prod"'},
    {"name": "protected", "expression": "action.resource.name in params.protected_names || "
                                        'action.scope.namespace == "kube-system"'},
    {"name": "risky", "expression": "size(action.risk_tags) > 0 || action.truncated"},
]  # fmt: skip
MESSAGE_EXPRESSION = '"guardproxy stopped " + action.operation + " on " + action.resource.name'
# (kind, decision, weight): the shapes of per-provider rules.
RULE_KINDS = (
    ("allow-reads", "allow", 14), ("allow-nonprod-writes", "allow", 12),
    ("allow-op", "allow", 6), ("deny-prod-destroy", "deny", 10), ("deny-risk", "deny", 10),
    ("deny-op", "deny", 10), ("hold-prod-delete", "hold", 12), ("hold-permission", "hold", 8),
    ("hold-execute", "hold", 6), ("hold-op", "hold", 12),
)  # fmt: skip
APPROVAL_GROUPS = ("sre-oncall", "platform", "dba", "security")


def _approval(rng: random.Random) -> Document:
    groups = sorted(rng.sample(APPROVAL_GROUPS, rng.randint(1, 2)))
    approval: Document = {"groups": groups, "quorum": rng.choice((1, 1, 2))}
    if approval["quorum"] > 1:
        approval["requiredGroups"] = groups[:1]
    approval["timeout"] = rng.choice(("15m", "30m", "2h"))
    approval["grant"] = rng.choice(("once", "once", "session:1h"))
    return approval


def _glob(rng: random.Random, operation: str) -> str:
    style = rng.random()
    if style < 0.4:
        return operation
    if style < 0.8:
        return operation[: max(3, len(operation) // 2)] + "*"
    return "*" + operation[-max(3, len(operation) // 3) :]


def _kind_match(rng: random.Random, kind: str, provider: Provider, ops: list[Op]) -> Document:
    """The structured ``match`` of one per-provider rule of ``kind``."""
    match: Document = {"providers": [provider.value]}
    writes = [op for op in ops if op.verb is not Verb.READ]
    op = rng.choice(writes)
    if kind == "allow-reads":
        match["verbs"] = ["read"]
        read = rng.choice([o for o in ops if o.verb is Verb.READ])
        if rng.random() < 0.5:
            match["services"] = [read.service]
        elif rng.random() < 0.5:
            match["operations"] = [_glob(rng, read.operation)]
    elif kind == "allow-nonprod-writes":
        match["verbs"] = ["create", "update"]
        match["environments"] = rng.choice((["dev"], ["dev", "staging"]))
    elif kind == "deny-prod-destroy":
        match["verbs"] = ["destroy"]
        match["environments"] = ["prod"]
        match["resourceNames"] = rng.choice((["prod-*"], [f"prod-{op.bases[0]}-*"], ["*-db-*"]))
    elif kind == "deny-risk":
        tags = sorted({t for o in ops for t in (*o.always, *o.maybe)}) or ["force"]
        tag = rng.choice(tags)
        match["riskTags"] = [tag if rng.random() < 0.6 else tag.split("-")[0] + "*"]
    elif kind == "hold-prod-delete":
        match["verbs"] = ["delete", "destroy"]
        match["environments"] = rng.choice((["prod"], ["prod", "staging"]))
    elif kind in ("hold-permission", "hold-execute"):
        match["verbs"] = ["permission" if kind == "hold-permission" else "execute"]
    else:  # allow-op, deny-op, hold-op: one operation, by name or glob
        match["operations"] = [_glob(rng, op.operation)]
        if rng.random() < 0.8:
            match["verbs"] = [op.verb.value]
        if rng.random() < 0.5:
            match["services"] = [op.service]
        if rng.random() < 0.3:
            match["resourceTypes"] = [op.resource_type]
        if rng.random() < 0.3:
            match["resourceNames"] = [rng.choice(("prod-*", "staging-*", "*-1", "*db*"))]
    if rng.random() < 0.05:
        match["agents"] = ["codex*", "cursor*"]
    return match


def _synthetic_rule(
    rng: random.Random, index: int, kind: str, decision: str, match: Document
) -> Document:
    rule: Document = {"id": f"{kind}-{index:03d}", "match": match}
    if rng.random() < 0.12:
        rule["matchConditions"] = [rng.choice(MATCH_CONDITIONS)]
    if rng.random() < 0.25:
        pool = PERMISSIVE_CEL if decision == "allow" else RESTRICTIVE_CEL
        rule["condition"] = rng.choice(pool)
    rule["decision"] = decision
    if decision != "allow" and rng.random() < 0.3:
        match["dryRun"] = False
    if decision != "allow":
        rule["message"] = f"{kind.replace('-', ' ')} is not allowed here; ask #platform."
        if rng.random() < 0.1:
            rule["messageExpression"] = MESSAGE_EXPRESSION
    if decision == "hold":
        rule["approval"] = _approval(rng)
    if rng.random() < 0.1:
        rule["mode"] = "audit"
    return rule


def _provider_set(rng: random.Random, provider: Provider, count: int) -> Document:
    ops = [op for op in CATALOG if op.provider is provider]
    kinds, decisions, weights = zip(*RULE_KINDS, strict=True)
    rules = []
    for index in range(count):
        pick = rng.choices(range(len(kinds)), weights)[0]
        match = _kind_match(rng, kinds[pick], provider, ops)
        rules.append(_synthetic_rule(rng, index, kinds[pick], decisions[pick], match))
    protected = sorted({f"prod-{op.bases[0]}-1" for op in ops} | {"kube-system", "acme/api"})
    return _policy_set(
        provider.value, rules, {"protected_names": protected, "trusted_agents": ["claude-code"]}
    )


def _policy_set(name: str, rules: list[Document], params: Document) -> Document:
    return {
        "apiVersion": "guardproxy.dev/v1",
        "kind": "PolicySet",
        "metadata": {"name": name, "description": f"synthetic {name} rules"},
        "spec": {"params": params, "variables": SET_VARIABLES, "rules": rules},
    }


def _global_rules() -> list[Document]:
    """Rules without ``providers``: they sit in every index bucket of their verbs."""
    hold = {"groups": ["platform", "sre-oncall"], "quorum": 2, "requiredGroups": ["sre-oncall"]}
    writes = ["create", "update", "delete", "destroy", "permission", "execute"]
    return [
        {"id": "allow-reads", "match": {"verbs": ["read"]}, "decision": "allow"},
        {"id": "deny-unclassified-prod", "match": {"verbs": ["unknown"], "environments": ["prod"]},
         "decision": "deny", "message": "Unrecognised requests are never allowed in prod."},
        {"id": "allow-unclassified-dev-get", "match": {"verbs": ["unknown"],
                                                        "environments": ["dev"]},
         "condition": 'action.request.method == "GET"', "decision": "allow"},
        {"id": "hold-prod-destroy", "match": {"verbs": ["destroy"], "environments": ["prod"]},
         "decision": "hold", "message": "Destroying prod resources needs two approvals.",
         "approval": hold},
        {"id": "deny-force-prod", "match": {"riskTags": ["force*"], "environments": ["prod"]},
         "decision": "deny", "message": "Forced operations are not allowed in prod."},
        {"id": "audit-permission", "match": {"verbs": ["permission"]}, "decision": "hold",
         "mode": "audit", "message": "Permission changes will need security approval.",
         "approval": {"groups": ["security"]}},
        {"id": "hold-codex-writes", "match": {"agents": ["codex*"], "verbs": writes[:3]},
         "decision": "hold", "message": "Writes by codex sessions are reviewed.",
         "approval": {"groups": ["platform"], "grant": "session:1h"}},
        {"id": "deny-truncated", "match": {"verbs": writes}, "condition": "action.truncated",
         "decision": "deny", "message": "The request was too large to check; split it."},
        {"id": "deny-internal-hosts", "match": {"hosts": ["*.internal"],
                                                 "verbs": ["delete", "destroy"],
                                                 "environments": ["prod"]},
         "condition": '!session.labels.exists(l, l == "break-glass")', "decision": "deny",
         "message": "Deleting on internal prod clusters needs a break-glass session."},
        {"id": "audit-after-hours", "match": {"verbs": writes[:4]}, "mode": "audit",
         "condition": "now.getHours() >= 18", "decision": "deny",
         "message": "Changes after 18:00 UTC will be denied."},
    ]  # fmt: skip


PROVIDER_RULE_WEIGHTS = {Provider.AWS: 36, Provider.K8S: 36, Provider.GCP: 18,
                         Provider.AZURE: 18, Provider.GITHUB: 18, Provider.GIT: 14,
                         Provider.TFC: 14, Provider.DOCKER: 14, Provider.SQL: 22}  # fmt: skip


def _rule_counts(total: int) -> dict[Provider, int]:
    """Split ``total`` rules across providers by weight (largest remainder)."""
    weight_sum = sum(PROVIDER_RULE_WEIGHTS.values())
    exact = {p: total * w / weight_sum for p, w in PROVIDER_RULE_WEIGHTS.items()}
    counts = {p: math.floor(v) for p, v in exact.items()}
    by_remainder = sorted(exact, key=lambda p: counts[p] - exact[p])
    for provider in by_remainder[: total - sum(counts.values())]:
        counts[provider] += 1
    return counts


def synthetic_documents(seed: int, total: int = SYNTHETIC_RULES) -> dict[str, list[Document]]:
    """File name -> documents of a bundle with exactly ``total`` rules."""
    rng = random.Random(seed)
    global_rules = _global_rules()
    files: dict[str, list[Document]] = {
        "bundle.yaml": [{
            "apiVersion": "guardproxy.dev/v1", "kind": "BundleConfig",
            "metadata": {"name": "synthetic"},
            "spec": {"defaultDecision": "hold", "unclassified": "deny",
                     "defaultApproval": {"groups": ["sre-oncall"]},
                     "modeOverrides": [{"environments": ["dev"], "providers": ["docker"],
                                        "mode": "audit"}]},
        }],
        "global.yaml": [_policy_set("global", global_rules, {
            "protected_names": ["kube-system", "prod-orders-db-1"],
            "trusted_agents": ["claude-code"]})],
    }  # fmt: skip
    sets = {p: _provider_set(rng, p, n) for p, n in _rule_counts(total - len(global_rules)).items()}
    for provider, document in sets.items():
        files[f"{provider.value}.yaml"] = [document]
    aws_rules = sets[Provider.AWS]["spec"]["rules"]
    target = next(r["id"] for r in aws_rules if r["decision"] != "allow")
    files["exceptions.yaml"] = [{
        "apiVersion": "guardproxy.dev/v1", "kind": "PolicyException",
        "metadata": {"name": "staging-migration"},
        "spec": {"rules": [f"aws/{target}"], "match": {"environments": ["staging"]},
                 "expires": (NOW + timedelta(days=30)).isoformat().replace("+00:00", "Z"),
                 "reason": "OPS-1234: staging migration, approved by platform"},
    }]  # fmt: skip
    return files


def write_synthetic_bundle(directory: Path, seed: int) -> None:
    for name, documents in synthetic_documents(seed).items():
        text = yaml.safe_dump_all(documents, sort_keys=False, width=100)
        (directory / name).write_text(text, encoding="utf-8")


# ---------------------------------------------------------------------------
# Loading.


def load(path: Path, what: str) -> Bundle:
    """Load a bundle directory or raise :class:`BenchError` saying why it cannot be used."""
    if not path.is_dir():
        raise BenchError(f"{what}: {path} is not a directory")
    result = load_bundle([path])
    if result.bundle is None:
        errors = result.errors
        shown = "\n".join(f"  {problem}" for problem in errors[:10])
        more = f"\n  ... and {len(errors) - 10} more" if len(errors) > 10 else ""
        raise BenchError(
            f"{what}: the bundle in {path} does not load ({len(errors)} errors):\n{shown}{more}"
        )
    if not result.bundle.rules:
        raise BenchError(f"{what}: the bundle in {path} has no rules")
    return result.bundle


# ---------------------------------------------------------------------------
# Timing.


@dataclass
class Run:
    """Per-decision results of one bundle over the whole workload, in workload order."""

    times_ns: list[int]
    outcomes: list[str]
    bases: list[str]
    errored: list[bool]


def time_decisions(
    bundle: Bundle, workload: Sequence[tuple[Action, Context]], repeat: int = 1
) -> Run:
    """Warm up, then time every decision on its own with the collector off.

    With ``repeat`` > 1 the whole workload is decided that many times and each decision
    keeps its fastest time, which filters out interference from other processes.
    """
    for action, context in workload[:WARMUP]:
        evaluate(bundle, action, context)
    run = Run([], [], [], [])
    run.times_ns = _timed_pass(bundle, workload, run)
    for _ in range(repeat - 1):
        times = _timed_pass(bundle, workload, None)
        run.times_ns = [min(pair) for pair in zip(run.times_ns, times, strict=True)]
    return run


def _timed_pass(
    bundle: Bundle, workload: Sequence[tuple[Action, Context]], record: Run | None
) -> list[int]:
    """One pass over the workload; the outcomes go into ``record`` when given."""
    times = []
    clock = time.perf_counter_ns
    gc.collect()
    gc.disable()
    try:
        for action, context in workload:
            start = clock()
            decision = evaluate(bundle, action, context)
            times.append(clock() - start)
            if record is not None:
                record.outcomes.append(decision.outcome.value)
                record.bases.append(decision.basis)
                record.errored.append(bool(decision.errors))
    finally:
        gc.enable()
    return times


def percentile(ordered: Sequence[int], share: float) -> int:
    """Nearest-rank percentile of an ascending sequence."""
    rank = max(1, math.ceil(share * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Scenario:
    name: str
    bundle: str
    decisions: int
    p50_us: float
    p90_us: float
    p99_us: float
    max_us: float
    mean_us: float
    per_second: float
    outcomes: dict[str, int]
    bases: dict[str, int]
    cel_errors: int
    verdict: str = field(default="")


Targets = tuple[float, float] | None


def summarise(
    name: str, bundle: str, run: Run, selected: Sequence[int], targets: Targets
) -> Scenario:
    times = sorted(run.times_ns[i] for i in selected)
    if not times:
        raise BenchError(f"scenario {name!r} selected no decisions; use more --actions")
    total = sum(times)
    outcomes = Counter(run.outcomes[i] for i in selected)
    scenario = Scenario(
        name=name,
        bundle=bundle,
        decisions=len(times),
        p50_us=percentile(times, 0.50) / 1e3,
        p90_us=percentile(times, 0.90) / 1e3,
        p99_us=percentile(times, 0.99) / 1e3,
        max_us=times[-1] / 1e3,
        mean_us=total / len(times) / 1e3,
        per_second=len(times) / (total / 1e9),
        outcomes={o: outcomes.get(o, 0) for o in ("allow", "hold", "deny")},
        bases=dict(sorted(Counter(run.bases[i] for i in selected).items())),
        cel_errors=sum(run.errored[i] for i in selected),
    )
    if targets is not None:
        met = scenario.p50_us <= targets[0] and scenario.p99_us <= targets[1]
        scenario.verdict = "PASS" if met else "MISS"
    return scenario


def scenarios_for(
    bundle: str,
    run: Run,
    workload: Sequence[tuple[Action, Context]],
    parts: Sequence[str],
    targets: Targets,
) -> list[Scenario]:
    """The ``all``/``reads``/``non-reads`` slices of one run that ``parts`` names."""
    reads = [i for i, (a, _) in enumerate(workload) if a.verb is Verb.READ]
    writes = [i for i, (a, _) in enumerate(workload) if a.verb is not Verb.READ]
    slices = {"all": list(range(len(workload))), "reads": reads, "non-reads": writes}
    return [summarise(f"{bundle} {part}", bundle, run, slices[part], targets) for part in parts]


# ---------------------------------------------------------------------------
# Profiling (--profile).


@dataclass
class Hotspot:
    function: str
    where: str
    calls: int
    self_ms: float
    cumulative_ms: float


@dataclass
class Profile:
    label: str
    decisions: int
    total_ms: float
    top_self: list[Hotspot]
    guardproxy: list[Hotspot]


def _where(code: str | CodeType) -> tuple[str, str]:
    if isinstance(code, str):
        return code, "~"
    path = code.co_filename
    marker = "guardproxy" + os.sep
    short = path[path.rfind(marker) :] if marker in path else "/".join(Path(path).parts[-2:])
    return code.co_name, f"{short}:{code.co_firstlineno}"


def profile_decisions(
    label: str, bundle: Bundle, items: Sequence[tuple[Action, Context]], repeat: int = 3
) -> Profile:
    """cProfile ``items`` decided ``repeat`` times; hotspots by self and by cumulative time."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(repeat):
        for action, context in items:
            evaluate(bundle, action, context)
    profiler.disable()
    hotspots = []
    for entry in profiler.getstats():
        function, where = _where(entry.code)
        hotspots.append(
            Hotspot(function, where, entry.callcount, entry.inlinetime * 1e3, entry.totaltime * 1e3)
        )
    total = sum(h.self_ms for h in hotspots)
    top_self = sorted(hotspots, key=lambda h: h.self_ms, reverse=True)[:PROFILE_TOP]
    ours = [
        h
        for h in hotspots
        if h.where.startswith(("guardproxy/policy/engine.py", "guardproxy/policy/cel.py"))
    ]
    ours.sort(key=lambda h: h.cumulative_ms, reverse=True)
    return Profile(label, len(items) * repeat, total, top_self, ours[:PROFILE_TOP])


def profiles_for(
    label: str, bundle: Bundle, run: Run, workload: Sequence[tuple[Action, Context]], seed: int
) -> list[Profile]:
    count = max(20, int(len(workload) * PROFILE_SLOWEST_SHARE))
    slowest = sorted(range(len(workload)), key=lambda i: run.times_ns[i], reverse=True)[:count]
    sample = random.Random(seed).sample(range(len(workload)), min(PROFILE_SAMPLE, len(workload)))
    return [
        profile_decisions(f"{label}: slowest {count}", bundle, [workload[i] for i in slowest]),
        profile_decisions(f"{label}: random {len(sample)}", bundle, [workload[i] for i in sample]),
    ]


# ---------------------------------------------------------------------------
# Output.


def machine() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "celpy": CELPY_VERSION,
        "engine": ENGINE_VERSION,
    }


def workload_summary(workload: Sequence[tuple[Action, Context]]) -> dict[str, Any]:
    verbs = Counter(a.verb.value for a, _ in workload)
    providers = Counter(a.provider.value for a, _ in workload)
    return {
        "actions": len(workload),
        "reads": verbs.get("read", 0),
        "non_reads": len(workload) - verbs.get("read", 0),
        "unclassified": verbs.get("unknown", 0),
        "verbs": dict(verbs.most_common()),
        "providers": dict(providers.most_common()),
    }


def slowest_actions(
    run: Run, workload: Sequence[tuple[Action, Context]], count: int = 3
) -> list[dict[str, Any]]:
    order = sorted(range(len(workload)), key=lambda i: run.times_ns[i], reverse=True)[:count]
    return [
        {"us": run.times_ns[i] / 1e3, "action": workload[i][0].summary(),
         "verb": workload[i][0].verb.value, "outcome": run.outcomes[i]}
        for i in order
    ]  # fmt: skip


def _table(scenarios: Sequence[Scenario]) -> list[str]:
    head = (f"{'scenario':<40}{'n':>7}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>10}{'mean':>9}"
            f"{'dec/s':>9}{'allow':>7}{'hold':>6}{'deny':>6}  target")  # fmt: skip
    lines = [head, "-" * len(head)]
    for s in scenarios:
        lines.append(
            f"{s.name:<40}{s.decisions:>7}{s.p50_us:>9.1f}{s.p90_us:>9.1f}{s.p99_us:>9.1f}"
            f"{s.max_us:>10.1f}{s.mean_us:>9.1f}{s.per_second:>9.0f}{s.outcomes['allow']:>7}"
            f"{s.outcomes['hold']:>6}{s.outcomes['deny']:>6}  {s.verdict or '-'}"
        )
    return lines


def _profile_lines(profile: Profile) -> list[str]:
    def rows(hotspots: Sequence[Hotspot]) -> list[str]:
        return [f"    {h.self_ms:>9.1f} {h.cumulative_ms:>9.1f} {h.calls:>9}  {h.function}  "
                f"({h.where})" for h in hotspots]  # fmt: skip

    head = f"    {'self ms':>9} {'cum ms':>9} {'calls':>9}  function"
    return [
        f"profile {profile.label} ({profile.decisions} decisions, {profile.total_ms:.0f} ms "
        f"profiled, {profile.total_ms / profile.decisions * 1e3:.0f} us/decision under cProfile)",
        "  top self time:", head, *rows(profile.top_self),
        "  guardproxy/policy/engine.py and cel.py by cumulative time:", head,
        *rows(profile.guardproxy),
    ]  # fmt: skip


def render_text(
    report: dict[str, Any], scenarios: Sequence[Scenario], profiles: Sequence[Profile]
) -> str:
    m, w = report["machine"], report["workload"]
    lines = [
        "guardproxy policy decision latency (times in microseconds, per decision)",
        f"machine: {m['cpu_count']} cpus, {m['implementation']} {m['python']}, celpy "
        f"{m['celpy']}, {m['platform']}",
        f"workload: {w['actions']} actions, seed {report['seed']}: {w['reads']} reads, "
        f"{w['non_reads']} non-reads ({w['unclassified']} unclassified); warm-up {WARMUP}, "
        f"{report['repeat']} timed pass(es)",
    ]
    for name, info in report["bundles"].items():
        lines.append(
            f"bundle {name}: {info['rules']} rules, {info['files']} files, "
            f"{info['digest'][:19]}..., {info['path']}"
        )
    lines += ["", *_table(scenarios), "",
              f"target (shipped bundle): p50 <= {TARGET_P50_US:.0f} us and p99 <= "
              f"{TARGET_P99_US:.0f} us; compiled CEL (synthetic bundle): p50 <= "
              f"{CEL_TARGET_P50_US:.0f} us and p99 <= {CEL_TARGET_P99_US:.0f} us", ""]  # fmt: skip
    for s in scenarios:
        if s.name.endswith(" all"):
            bases = ", ".join(f"{k} {v}" for k, v in s.bases.items())
            lines.append(f"{s.bundle}: outcomes allow {s.outcomes['allow']}, hold "
                         f"{s.outcomes['hold']}, deny {s.outcomes['deny']}; basis {bases}; "
                         f"{s.cel_errors} decisions with CEL errors")  # fmt: skip
    for name, info in report["bundles"].items():
        for slow in info["slowest"]:
            lines.append(
                f"{name} slowest: {slow['us']:>8.0f} us  {slow['action']} "
                f"({slow['verb']}) -> {slow['outcome']}"
            )
    for profile in profiles:
        lines += ["", *_profile_lines(profile)]
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Main.


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--actions",
        type=int,
        default=DEFAULT_ACTIONS,
        help=f"workload size (default {DEFAULT_ACTIONS})",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=DEFAULT_SEED,
        help="seed of the workload and the synthetic bundle",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="time the workload N times and keep each decision's fastest time (default 1)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also cProfile the slowest 1%% and a random sample of decisions",
    )
    parser.add_argument("--policies", type=Path, default=Path("policies"),
                        help="the shipped bundle directory (default: policies)")  # fmt: skip
    engines = parser.add_mutually_exclusive_group()
    engines.add_argument("--interpreter", action="store_true",
                         help="run CEL on cel-python's interpreter only (the engine before "
                              "the compiler)")  # fmt: skip
    engines.add_argument("--compare", action="store_true",
                         help="time every bundle with the interpreter and compiled, side by "
                              "side")  # fmt: skip
    args = parser.parse_args(argv)
    if args.actions < 100:
        parser.error("--actions must be at least 100")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


PARTS = ("all", "reads", "non-reads")


@dataclass
class BundleResult:
    name: str
    info: dict[str, Any]
    scenarios: list[Scenario]
    profiles: list[Profile]


def bench_bundle(
    name: str,
    bundle: Bundle,
    path: Path,
    workload: Sequence[tuple[Action, Context]],
    targets: Targets,
    args: argparse.Namespace,
) -> BundleResult:
    """Time ``bundle`` over the workload; profile it too with ``--profile``."""
    run = time_decisions(bundle, workload, args.repeat)
    info = {"path": str(path), "rules": len(bundle.rules), "files": len(bundle.files),
            "digest": bundle.digest, "slowest": slowest_actions(run, workload)}  # fmt: skip
    scenarios = scenarios_for(name, run, workload, PARTS, targets)
    profiles = profiles_for(name, bundle, run, workload, args.seed) if args.profile else []
    return BundleResult(name, info, scenarios, profiles)


def engines(args: argparse.Namespace) -> list[tuple[str, bool]]:
    """(row suffix, interpreted) for each way CEL is to run."""
    if args.compare:
        return [(" (interpreted)", True), ("", False)]
    return [(" (interpreted)", True)] if args.interpreter else [("", False)]


def load_as(path: Path, what: str, interpreted: bool) -> Bundle:
    if interpreted:
        with cel.interpreter_only():
            return load(path, what)
    return load(path, what)


def run(args: argparse.Namespace) -> str:
    workload = make_workload(args.actions, args.seed)
    results = []
    for suffix, interpreted in engines(args):
        shipped = load_as(args.policies, "shipped bundle", interpreted)
        targets = (TARGET_P50_US, TARGET_P99_US)
        results.append(
            bench_bundle(f"shipped{suffix}", shipped, args.policies, workload, targets, args)
        )
    with tempfile.TemporaryDirectory(prefix="guardproxy-bench-") as tmp:
        path = Path(tmp)
        write_synthetic_bundle(path, args.seed)
        for suffix, interpreted in engines(args):
            synthetic = load_as(path, "synthetic bundle", interpreted)
            name = f"synthetic-{SYNTHETIC_RULES}{suffix}"
            cel_targets = None if interpreted else (CEL_TARGET_P50_US, CEL_TARGET_P99_US)
            results.append(bench_bundle(name, synthetic, path, workload, cel_targets, args))
    scenarios = [s for r in results for s in r.scenarios]
    profiles = [p for r in results for p in r.profiles]
    report: dict[str, Any] = {
        "machine": machine(),
        "seed": args.seed,
        "warmup": WARMUP,
        "repeat": args.repeat,
        "workload": workload_summary(workload),
        "bundles": {r.name: r.info for r in results},
        "targets": {
            "p50_us": TARGET_P50_US,
            "p99_us": TARGET_P99_US,
            "applies_to": "shipped",
            "cel": {
                "p50_us": CEL_TARGET_P50_US,
                "p99_us": CEL_TARGET_P99_US,
                "applies_to": f"synthetic-{SYNTHETIC_RULES}, compiled",
            },
        },
        "scenarios": [asdict(s) for s in scenarios],
    }
    if args.json:
        report["profiles"] = [asdict(p) for p in profiles]
        return json.dumps(report, indent=2)
    return render_text(report, scenarios, profiles)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        print(run(args))
    except BenchError as error:
        print(f"policy_bench: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
