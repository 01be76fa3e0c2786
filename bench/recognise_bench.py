"""Recognition latency per provider: p50 / p99 of ``recognise()``, and of the AWS lookup.

Requests are real: AWS ones are built and signed by boto3 itself for every operation
of a dozen services (captured before sending, as the recogniser tests do), plus a few
no SDK sends ("aws ambiguous": a form key twice, Action in query and body, a JSON key
twice, two credentials...; each is read several ways); GCP ones are
built by googleapiclient from the discovery documents (every method of Compute,
Storage, Cloud SQL Admin and GKE, as the GCP sweep test does); Azure, GitHub (REST and
GraphQL), Terraform Cloud, Docker Engine and SQL-over-HTTP ones are the request tables
of their recogniser tests; Kubernetes and git ones are shaped like what kubectl and git
send. The AWS model index and the GCP discovery index are loaded before timing (their
load times are printed too).

    .venv/bin/python bench/recognise_bench.py [--rounds N] [--json]
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "recognise"))

from google.auth.credentials import AnonymousCredentials  # noqa: E402
from googleapiclient.discovery import build, key2param  # type: ignore[import-untyped]  # noqa: E402
from recognise_support import Capture, http, k8s_protobuf, minimal_params, pkt  # noqa: E402
from test_recognise_azure import TABLE as AZURE_TABLE  # noqa: E402
from test_recognise_docker import CASES as DOCKER_CASES  # noqa: E402
from test_recognise_docker import engine  # noqa: E402
from test_recognise_gcp import _methods, _value, as_request  # noqa: E402
from test_recognise_github import GQL_CASES, REST_CASES, api, gql  # noqa: E402
from test_recognise_sql import CARRIERS, POSTGREST  # noqa: E402
from test_recognise_tfc import CASES as TFC_CASES  # noqa: E402
from test_recognise_tfc import tfc  # noqa: E402

from guardproxy.recognise import recognise  # noqa: E402
from guardproxy.recognise.aws import _form_pairs  # noqa: E402
from guardproxy.recognise.aws_index import shared_index  # noqa: E402
from guardproxy.recognise.aws_match import resolve  # noqa: E402
from guardproxy.recognise.aws_wire import credential_scope, parse_host  # noqa: E402
from guardproxy.recognise.gcp_index import documents_dir  # noqa: E402
from guardproxy.recognise.gcp_index import shared_index as gcp_shared_index  # noqa: E402
from guardproxy.recognise.request import HttpRequest, RecogniseSettings  # noqa: E402

AWS_SERVICES = ("cloudformation", "ec2", "rds", "s3", "dynamodb", "sqs", "lambda", "iam",
                "route53", "secretsmanager", "kms", "ecs", "cloudtrail")  # fmt: skip
SETTINGS = RecogniseSettings(kubernetes_hosts=("127.0.0.1:6443",))


def aws_requests() -> list[HttpRequest]:
    requests: list[HttpRequest] = []
    for service in AWS_SERVICES:
        capture = Capture(service)
        model = capture.service_model
        for name in model.operation_names:
            try:
                requests.append(capture.call(name, minimal_params(model.operation_model(name))))
            except Exception:
                continue
    return requests


GCP_APIS = (("compute", "v1"), ("storage", "v1"), ("sqladmin", "v1beta4"), ("container", "v1"))


def _signed(
    service: str,
    method: str,
    path: str,
    body: bytes = b"",
    headers: tuple[tuple[str, str], ...] = (),
) -> HttpRequest:
    auth = (
        "authorization",
        f"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261125/us-east-1/"
        f"{service}/aws4_request, SignedHeaders=host, Signature=00",
    )
    return HttpRequest(method, "https", "127.0.0.1", 4566, path, (auth, *headers), body)


def aws_ambiguous_requests() -> list[HttpRequest]:
    """AWS requests no SDK sends (the adversarial suite's shapes): each has readings."""
    form = ("content-type", "application/x-www-form-urlencoded")
    json10 = ("content-type", "application/x-amz-json-1.0")
    stack = b"Action=DeleteStack&Version=2010-05-15&"
    return [
        _signed("cloudformation", "POST", "/", stack + b"StackName.member=dev-x&StackName=prod",
                (form,)),
        _signed("cloudformation", "POST", "/", stack + b"StackName=dev-x&StackName=prod", (form,)),
        _signed("cloudformation", "POST", "/?Action=DeleteStack&StackName=prod",
                b"Action=DescribeStacks&Version=2010-05-15", (form,)),
        _signed("ec2", "POST", "/", b"Action=TerminateInstances&Version=2016-11-15"
                b"&InstanceId.1=i-dev&InstanceId.member.1=i-prod", (form,)),
        _signed("dynamodb", "POST", "/", b'{"TableName": "prod-t", "TableName": "dev-t"}',
                (json10, ("x-amz-target", "DynamoDB_20120810.DeleteTable"))),
        _signed("s3", "DELETE", "/prod-bucket",
                headers=(("x-amz-target", "DynamoDB_20120810.DescribeTable"),)),
        _signed("eks", "DELETE", "/clusters/dev-c?name=prod-c"),
        _signed("iot", "DELETE", "/jobs/prod-job?force=false&force=true"),
        _signed("s3", "GET", "/prod-bucket?Action=DeleteStack&StackName=prod-calc",
                headers=(("authorization", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261125/"
                          "us-east-1/cloudformation/aws4_request, Signature=0"),)),
    ]  # fmt: skip


def gcp_requests() -> list[HttpRequest]:
    """Every method of a few APIs, built (not sent) by googleapiclient."""
    requests: list[HttpRequest] = []
    for api_name, version in GCP_APIS:
        document = json.loads((documents_dir() / f"{api_name}.{version}.json").read_text())
        credentials = AnonymousCredentials()  # type: ignore[no-untyped-call]
        client = build(api_name, version, credentials=credentials, static_discovery=True)
        for method, bound in _methods(document, client):
            kwargs = {
                key2param(k): _value(k, p)
                for k, p in (method.get("parameters") or {}).items()
                if p.get("required")
            }
            if method.get("request"):
                kwargs["body"] = {}
            requests.append(as_request(bound(**kwargs)))
    return requests


def azure_requests() -> list[HttpRequest]:
    return [http(method, path, host="management.azure.com", port=443,
                 headers={"authorization": "Bearer x", "user-agent": "AZURECLI/2.67.0"})
            for method, path, *_ in AZURE_TABLE]  # fmt: skip


def github_requests() -> list[HttpRequest]:
    rest = [api(method, path, body) for method, path, body, *_ in REST_CASES]
    return rest + [gql(query, variables) for query, variables, *_ in GQL_CASES]


def tfc_requests() -> list[HttpRequest]:
    return [tfc(method, path, body) for method, path, body, *_ in TFC_CASES]


def docker_requests() -> list[HttpRequest]:
    return [engine(method, path, body) for method, path, body, *_ in DOCKER_CASES]


def sql_requests() -> list[HttpRequest]:
    carried: list[HttpRequest] = [request for request, *_ in CARRIERS]
    return carried + [http(method, path, host=host, port=443, headers={"apikey": "x"})
                      for method, path, host, *_ in POSTGREST]  # fmt: skip


def k8s_requests() -> list[HttpRequest]:
    host, port = "127.0.0.1", 6443
    paths = [
        ("GET", "/api/v1/namespaces/default/pods"),
        ("GET", "/api/v1/namespaces/default/pods/web-0"),
        ("GET", "/apis/apps/v1/namespaces/default/deployments?watch=1"),
        ("DELETE", "/api/v1/namespaces/prod"),
        ("DELETE", "/apis/apps/v1/namespaces/default/deployments"),
        ("PATCH", "/apis/apps/v1/namespaces/default/deployments/api/scale"),
        ("GET", "/api/v1/namespaces/prod/pods/web-0/exec?command=sh"),
    ]
    built = [http(method, path, host=host, port=port, headers={"user-agent": "kubectl/v1.32"})
             for method, path in paths]  # fmt: skip
    built.append(
        http("POST", "/api/v1/namespaces", host=host, port=port,
             headers={"content-type": "application/vnd.kubernetes.protobuf"},
             body=k8s_protobuf("v1", "Namespace", "prod"))
    )  # fmt: skip
    return built


def git_requests() -> list[HttpRequest]:
    zero, old, new = "0" * 40, "1" * 40, "2" * 40
    delete = pkt(f"{old} {zero} refs/heads/feature\0report-status side-band-64k".encode())
    update = pkt(f"{old} {new} refs/heads/main\0report-status".encode())
    path = "/acme/api.git/git-receive-pack"
    content = {"content-type": "application/x-git-receive-pack-request"}

    def git(method: str, path: str, body: bytes = b"") -> HttpRequest:
        return http(method, path, host="git.example", port=80, scheme="http", headers=content,
                    body=body)  # fmt: skip

    return [
        git("POST", path, delete + b"0000"),
        git("POST", path, update + b"0000PACK"),
        git("GET", "/acme/api.git/info/refs?service=git-upload-pack"),
    ]


def generic_requests() -> list[HttpRequest]:
    return [
        http("GET", "/simple/requests/", host="pypi.org", port=443),
        http("POST", "/v1/messages", host="api.anthropic.com", port=443,
             headers={"content-type": "application/json"}, body=b'{"model": "x"}'),
    ]  # fmt: skip


def time_calls(
    call: Callable[[HttpRequest], Any], requests: list[HttpRequest], rounds: int
) -> list[float]:
    for request in requests[:200]:
        call(request)
    samples: list[float] = []
    gc.disable()
    try:
        for _ in range(rounds):
            for request in requests:
                started = time.perf_counter_ns()
                call(request)
                samples.append((time.perf_counter_ns() - started) / 1000)
    finally:
        gc.enable()
    return samples


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "n": len(ordered),
        "p50": statistics.median(ordered),
        "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        "max": ordered[-1],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    started = time.perf_counter()
    index = shared_index()
    load_ms = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    gcp_shared_index()
    gcp_load_ms = (time.perf_counter() - started) * 1000
    aws = aws_requests()
    corpora = {"aws": aws, "aws ambiguous": aws_ambiguous_requests(),
               "gcp": gcp_requests(), "azure": azure_requests(),
               "github": github_requests(), "tfc": tfc_requests(),
               "docker": docker_requests(), "sql": sql_requests(), "k8s": k8s_requests(),
               "git": git_requests(), "generic": generic_requests()}  # fmt: skip
    results = {
        name: summary(time_calls(lambda r: recognise(r, SETTINGS), requests, args.rounds))
        for name, requests in corpora.items()
    }

    # the model lookup alone: which service and operation (the 50 us target)
    prepared = {id(r): (credential_scope(r), parse_host(r.host, index.prefixes), _form_pairs(r))
                for r in aws}  # fmt: skip

    def lookup(request: HttpRequest) -> Any:
        credential, host, form = prepared[id(request)]
        return resolve(index, request, credential, host, form)

    results["aws lookup only"] = summary(time_calls(lookup, aws, args.rounds))
    report = {
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
        "aws_index_load_ms": round(load_ms, 1),
        "gcp_index_load_ms": round(gcp_load_ms, 1),
        "aws_operations": len(aws),
        "results": {k: {m: round(v, 1) for m, v in r.items()} for k, r in results.items()},
        "target": "AWS lookup p50 <= 50 us",
        "lookup_target_met": results["aws lookup only"]["p50"] <= 50,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print("guardproxy recognition latency (microseconds per request)")
    print(f"python {platform.python_version()}, AWS index loaded in {load_ms:.1f} ms, "
          f"GCP index in {gcp_load_ms:.1f} ms, "
          f"{len(aws)} AWS operations from {len(AWS_SERVICES)} services")  # fmt: skip
    print(f"{'provider':<18}{'n':>8}{'p50':>10}{'p99':>10}{'max':>10}")
    for name, result in results.items():
        print(f"{name:<18}{result['n']:>8.0f}{result['p50']:>10.1f}{result['p99']:>10.1f}"
              f"{result['max']:>10.1f}")  # fmt: skip
    verdict = "PASS" if report["lookup_target_met"] else "MISS"
    print(f"target: AWS lookup p50 <= 50 us: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
