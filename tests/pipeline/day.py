"""A recorded day of mixed agent traffic: a deterministic list of HTTP calls, and an
upstream that answers them.

Every provider guardproxy recognises, three sessions (two with credentials, one
anonymous client), deletes followed by re-creates of the same resource, a burst of
deletes over the destructive budget, an EC2 instance whose name and environment are
learned from a DescribeInstances response and later renamed by another, requests that
perform several operations (SQL statements, GraphQL mutation fields, git ref updates),
a change whose Host header names another host, reads and writes.

AWS calls are serialised and SigV4-signed by boto3 itself (captured before they are
sent); the other providers' are written out as their clients send them. Every URL is
plain HTTP to the provider's real host name: the test's proxy connects every one of
them to the loopback :class:`DayUpstream`, nothing leaves the machine.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import boto3
from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from botocore.config import Config
from e2e._http import BaseHandler, UpstreamServer

START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
KUBE = "kube.day.test:6443"
"""The Kubernetes API server of the day (configured as one on the proxy)."""
REGION = "us-east-1"
INSTANCE = "i-0da4f00d5eed1e55"
"""Named ``staging-web`` by the first DescribeInstances, ``prod-web`` by the second."""
WORKER = "i-0da4f00d5eed1e66"
"""Named ``staging-worker`` by the first DescribeInstances, then terminated."""
ZERO = "0" * 40
OLD = "1" * 40


@dataclass(frozen=True)
class Call:
    """One request of the day: who sends it, when (seconds after the previous call)."""

    who: str
    """``alice`` or ``bob`` (sessions with credentials) or ``anonymous``."""
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    after: int = 30
    learns: tuple[str, str] | None = None
    """(instance id, name) the response teaches the proxy's name cache."""


# ----------------------------------------------------------------------------- AWS


class _EmptyBody:
    def stream(self, **_kwargs: Any) -> Any:
        return iter([b""])


class Sdk:
    """boto3 clients whose requests are captured, signed, instead of sent."""

    def __init__(self) -> None:
        self._session = boto3.session.Session(
            aws_access_key_id="AKIDEXAMPLEDAY",
            aws_secret_access_key="day-secret-for-tests",
            region_name=REGION,
        )
        self._clients: dict[str, Any] = {}
        self._sent: list[AWSPreparedRequest] = []

    def _capture(self, request: AWSPreparedRequest, **_kwargs: Any) -> AWSResponse:
        self._sent.append(request)
        return AWSResponse(request.url, 200, {}, _EmptyBody())  # type: ignore[arg-type]

    def _client(self, service: str) -> Any:
        if service not in self._clients:
            factory: Any = self._session
            config = Config(retries={"total_max_attempts": 1}, s3={"addressing_style": "path"})
            client = factory.client(service, config=config)
            client.meta.events.register("before-send", self._capture)
            self._clients[service] = client
        return self._clients[service]

    def call(
        self,
        who: str,
        service: str,
        operation: str,
        after: int = 30,
        learns: tuple[str, str] | None = None,
        **params: Any,
    ) -> Call:
        before = len(self._sent)
        try:
            getattr(self._client(service), operation)(**params)
        except Exception:  # the empty fake answer rarely parses; the request is captured
            if len(self._sent) == before:
                raise
        sent = self._sent[-1]
        parts = urlsplit(sent.url)
        body: Any = sent.body or b""
        if hasattr(body, "read"):
            body = body.read()
        headers = {
            str(k): v.decode() if isinstance(v, bytes) else str(v) for k, v in sent.headers.items()
        }
        return Call(
            who,
            sent.method,
            urlunsplit(("http", parts.netloc, parts.path, parts.query, "")),
            headers,
            body.encode() if isinstance(body, str) else bytes(body),
            after,
            learns,
        )


# ---------------------------------------------------------------------- the others


def _json(value: object) -> bytes:
    return json.dumps(value).encode()


def kube(
    who: str, method: str, path: str, body: object = None, after: int = 30, **headers: str
) -> Call:
    raw = b"" if body is None else _json(body)
    head = {"User-Agent": "kubectl/v1.31.0 (linux/amd64)", "Accept": "application/json"}
    if body is not None:
        head["Content-Type"] = "application/json"
    return Call(who, method, f"http://{KUBE}{path}", {**head, **headers}, raw, after)


def pkt(line: bytes) -> bytes:
    return f"{len(line) + 4:04x}".encode() + line


def push(*refs: str) -> bytes:
    """A receive-pack request deleting ``refs`` (a delete sends no pack)."""
    first, *rest = refs
    lines = pkt(f"{OLD} {ZERO} {first}".encode() + b"\x00report-status side-band-64k\n")
    lines += b"".join(pkt(f"{OLD} {ZERO} {ref}\n".encode()) for ref in rest)
    return lines + b"0000"


def recorded_day() -> list[Call]:
    """The day's calls, in order; the same list every time (AWS signatures aside)."""
    aws = Sdk()
    ec2 = "ec2"
    gcp = "http://compute.googleapis.com/compute/v1/projects/acme-staging/zones/us-central1-a"
    arm = "http://management.azure.com/subscriptions/00000000-0000-0000-0000-00000000da7a"
    tfc = "http://app.terraform.io/api/v2"
    docker = "http://docker.day.test:2375/v1.47"
    github = "http://api.github.com"
    json_api = {"Content-Type": "application/vnd.api+json", "Authorization": "Bearer tfc-day"}
    gh = {"Authorization": "bearer ghp_daytoken", "Content-Type": "application/json"}
    neon = {
        "Content-Type": "application/json",
        "Neon-Connection-String": "postgresql://app:pw@ep-day.us-east-2.aws.neon.tech/shop",
    }
    generation = [{"Name": "tag:generation", "Values": ["generation-1"]}]
    renamed = [{"Name": "tag:generation", "Values": ["generation-2"]}]
    namespaces = "/api/v1/namespaces"
    configmaps = "/api/v1/namespaces/dev-app/configmaps"
    return [
        # alice: an AWS morning (query, JSON and REST protocols)
        aws.call("alice", "cloudformation", "describe_stacks", after=1, StackName="staging-calc"),
        aws.call("alice", "cloudformation", "delete_stack", StackName="staging-calc"),
        aws.call("alice", "cloudformation", "describe_stacks", StackName="staging-calc"),
        aws.call(
            "alice",
            "cloudformation",
            "create_stack",
            after=120,
            StackName="staging-calc",
            TemplateBody="{}",
        ),
        aws.call("alice", "dynamodb", "describe_table", TableName="staging-orders"),
        aws.call("alice", "dynamodb", "delete_table", TableName="staging-orders"),
        aws.call("alice", "s3", "list_objects_v2", Bucket="prod-logs"),
        aws.call("alice", "s3", "delete_bucket", Bucket="prod-logs"),
        # the names learner: an id named by one response, renamed by a later one
        aws.call(
            "alice",
            ec2,
            "describe_instances",
            learns=(WORKER, "staging-worker"),
            Filters=generation,
        ),
        aws.call("alice", ec2, "stop_instances", InstanceIds=[INSTANCE]),
        aws.call("alice", ec2, "terminate_instances", InstanceIds=[WORKER]),
        aws.call(
            "alice",
            ec2,
            "describe_instances",
            after=600,
            learns=(INSTANCE, "prod-web"),
            Filters=renamed,
        ),
        aws.call("alice", ec2, "terminate_instances", InstanceIds=[INSTANCE]),
        # bob: Kubernetes, with a namespace deleted and re-created
        kube("bob", "GET", f"{namespaces}/staging-app/pods", after=5),
        kube("bob", "DELETE", f"{namespaces}/staging-app"),
        kube("bob", "GET", f"{namespaces}/staging-app", after=2),
        kube("bob", "POST", namespaces, {"metadata": {"name": "staging-app"}}),
        kube(
            "bob",
            "POST",
            "/apis/apps/v1/namespaces/staging-app/deployments",
            {"metadata": {"name": "web"}},
        ),
        kube("bob", "DELETE", f"{namespaces}/prod"),
        # bob: a burst of deletes runs over the destructive budget
        *(kube("bob", "DELETE", f"{configmaps}/cache-{i}", after=5) for i in range(12)),
        # alice: Google Cloud and Azure
        Call("alice", "GET", f"{gcp}/instances", after=900),
        Call("alice", "DELETE", f"{gcp}/instances/web-1"),
        Call(
            "alice",
            "POST",
            f"{gcp}/instances",
            {"Content-Type": "application/json"},
            _json({"name": "web-1", "machineType": "e2-small"}),
            after=45,
        ),
        Call("alice", "GET", f"{arm}/resourcegroups?api-version=2021-04-01"),
        Call("alice", "DELETE", f"{arm}/resourcegroups/prod-rg?api-version=2021-04-01"),
        # bob: GitHub REST and GraphQL, a git push deleting two branches
        Call("bob", "GET", f"{github}/repos/acme/api/pulls", gh, after=300),
        Call("bob", "DELETE", f"{github}/repos/acme/api/git/refs/heads/old-feature", gh),
        Call(
            "bob",
            "POST",
            f"{github}/graphql",
            gh,
            _json(
                {
                    "query": (
                        'mutation { a: deleteRef(input: {refId: "REF_main"}) { clientMutationId } '
                        'b: addStar(input: {starrableId: "R_api"}) { clientMutationId } }'
                    )
                }
            ),
        ),
        Call(
            "bob",
            "POST",
            "http://git.day.test/acme/api.git/git-receive-pack",
            {"Content-Type": "application/x-git-receive-pack-request"},
            push("refs/heads/release", "refs/heads/main"),
        ),
        # alice: Terraform Cloud, SQL over HTTP
        Call("alice", "GET", f"{tfc}/organizations/acme/workspaces", json_api, after=1200),
        Call("alice", "DELETE", f"{tfc}/organizations/acme/workspaces/prod-network", json_api),
        Call(
            "alice",
            "POST",
            "http://ep-day.us-east-2.aws.neon.tech/sql",
            neon,
            _json(
                {
                    "query": "SELECT 1; DELETE FROM orders WHERE id = 7; DROP TABLE audit",
                    "params": [],
                }
            ),
        ),
        Call(
            "alice",
            "DELETE",
            "http://abcd.supabase.co/rest/v1/orders?id=eq.7",
            {"apikey": "sb-day-key"},
        ),
        # the anonymous client: Docker, a change sent with another Host, an unknown call
        Call("anonymous", "GET", f"{docker}/containers/json", after=60),
        Call("anonymous", "DELETE", f"{docker}/containers/web?force=1"),
        Call(
            "anonymous",
            "POST",
            f"{docker}/containers/create?name=web",
            {"Content-Type": "application/json"},
            _json({"Image": "nginx:1.27"}),
        ),
        kube(
            "anonymous", "POST", configmaps, {"metadata": {"name": "flags"}}, Host="other.day.test"
        ),
        Call("anonymous", "POST", "http://tools.day.test/do-something", {}, b"{}"),
        # bob again, later: a read, a configmap deleted and re-created
        kube("bob", "GET", f"{namespaces}/staging-app/pods", after=1800),
        kube("bob", "DELETE", f"{namespaces}/dev-app/configmaps/settings", after=10),
        kube("bob", "POST", configmaps, {"metadata": {"name": "settings"}}),
    ]


def times(calls: list[Call]) -> list[datetime]:
    """When each call is made on the day's clock."""
    moments, now = [], START
    for call in calls:
        now += timedelta(seconds=call.after)
        moments.append(now)
    return moments


# ------------------------------------------------------------------------ upstream


def instances_xml(*named: tuple[str, str, str]) -> bytes:
    """A DescribeInstancesResponse listing (instance id, Name tag, environment tag)."""
    items = "".join(
        f"<item><instanceId>{instance}</instanceId><tagSet>"
        f"<item><key>Name</key><value>{name}</value></item>"
        f"<item><key>environment</key><value>{environment}</value></item></tagSet></item>"
        for instance, name, environment in named
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
        "<requestId>day</requestId><reservationSet><item><instancesSet>"
        f"{items}</instancesSet></item></reservationSet></DescribeInstancesResponse>"
    ).encode()


class _DayHandler(BaseHandler):
    """DescribeInstances names the day's instances (which, by the generation filter
    sent); everything else gets a small JSON document."""

    def _answer(self) -> None:
        body = self.read_body()
        self.record(body)
        if b"Action=DescribeInstances" in body:
            if b"generation-2" in body:
                xml = instances_xml((INSTANCE, "prod-web", "prod"))
            else:
                xml = instances_xml(
                    (INSTANCE, "staging-web", "staging"), (WORKER, "staging-worker", "staging")
                )
            self.send_bytes(200, xml, "text/xml;charset=UTF-8")
        else:
            self.send_json(200, {"ok": True})

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer  # noqa: N815


class DayUpstream(UpstreamServer):
    def __init__(self) -> None:
        super().__init__(_DayHandler)
