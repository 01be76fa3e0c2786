"""Smoke tests: real clients work *directly* against each upstream server (no proxy).

If these fail, a failing proxy e2e test says nothing about the proxy.  They also pin
the client behaviour the proxy tests rely on (kubectl's protobuf create, streaming
watch, git's chunked pushes, CloudFormation's query-protocol bodies).
"""

from __future__ import annotations

import gzip
import http.client
import json
import os
import ssl
import stat
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import parse_qsl

import boto3
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from .pki import PkiFiles, ThrowawayPki, client_ssl_context, make_client_cert
from .servers import (
    EchoServer,
    GitHttpServer,
    KubeApiServer,
    MotoServer,
    RecordedRequest,
)

pytestmark = pytest.mark.slow

STACK_TEMPLATE = json.dumps(
    {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Resources": {
            "Queue": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": "e2e-queue"}}
        },
    }
)


def run(
    cmd: Sequence[str], env: Mapping[str, str], cwd: Path | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run a client, failing the test with its output unless it exits 0."""
    proc = subprocess.run(
        list(cmd),
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def timed_lines(stream: http.client.HTTPResponse, limit: int) -> list[tuple[float, bytes]]:
    """Read up to ``limit`` non-empty lines, each with the monotonic time it arrived."""
    out: list[tuple[float, bytes]] = []
    while len(out) < limit:
        line = stream.readline()
        if not line:
            break
        if line.strip():
            out.append((time.monotonic(), line))
    return out


# ------------------------------------------------------------------------------- PKI


def test_pki_files_and_certificates(pki: ThrowawayPki, pki_files: PkiFiles) -> None:
    for key in (pki_files.server_key, pki_files.client_key, pki_files.client_pem):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    server = x509.load_pem_x509_certificate(pki_files.server_cert.read_bytes())
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    server.verify_directly_issued_by(pki.ca.cert)
    client = x509.load_pem_x509_certificate(pki_files.client_cert.read_bytes())
    client.verify_directly_issued_by(pki.client_ca.cert)
    assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "kube-admin"
    orgs = client.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    assert orgs[0].value == "system:masters"


# ---------------------------------------------------------------------- Kubernetes API


def kubectl(kubectl_bin: str, kubeconfig: Path, *args: str) -> list[str]:
    return [kubectl_bin, "--kubeconfig", str(kubeconfig), *args]


def test_kubectl_get_namespaces_and_pods(
    kubectl_bin: str,
    kubeconfig_path: Path,
    kubectl_environ: dict[str, str],
    kube_api: KubeApiServer,
) -> None:
    out = run(kubectl(kubectl_bin, kubeconfig_path, "get", "ns"), kubectl_environ).stdout
    names = [line.split()[0] for line in out.splitlines()[1:]]
    assert out.splitlines()[0].split() == ["NAME", "STATUS", "AGE"]
    assert {"default", "prod", "dev"} <= set(names)

    out = run(
        kubectl(kubectl_bin, kubeconfig_path, "get", "pods", "-n", "default"), kubectl_environ
    ).stdout
    assert out.splitlines()[0].split()[:3] == ["NAME", "READY", "STATUS"]
    assert len(out.splitlines()) == 1 + len(kube_api.pods("default"))

    lists = kube_api.log.matching("GET", "/api/v1/namespaces")
    assert lists and all(r.client_cn == "kube-admin" for r in kube_api.requests)
    assert "as=Table" in (lists[0].header("Accept") or "")


def test_kubectl_delete_namespace(
    kubectl_bin: str,
    kubeconfig_path: Path,
    kubectl_environ: dict[str, str],
    kube_api: KubeApiServer,
) -> None:
    out = run(kubectl(kubectl_bin, kubeconfig_path, "delete", "ns", "dev"), kubectl_environ)
    assert 'namespace "dev" deleted' in out.stdout
    assert "dev" not in kube_api.namespaces()
    assert kube_api.pods("dev") == []
    [delete] = kube_api.log.matching("DELETE")
    assert delete.path == "/api/v1/namespaces/dev"


def test_kubectl_create_namespace_sends_protobuf(
    kubectl_bin: str,
    kubeconfig_path: Path,
    kubectl_environ: dict[str, str],
    kube_api: KubeApiServer,
) -> None:
    out = run(kubectl(kubectl_bin, kubeconfig_path, "create", "ns", "x"), kubectl_environ)
    assert "namespace/x created" in out.stdout
    assert "x" in kube_api.namespaces()
    [create] = kube_api.log.matching("POST", "/api/v1/namespaces")
    # kubectl's typed client sends protobuf even though discovery never offered it.
    assert create.header("Content-Type") == "application/vnd.kubernetes.protobuf"

    again = subprocess.run(
        kubectl(kubectl_bin, kubeconfig_path, "create", "ns", "x"),
        env=kubectl_environ,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert again.returncode != 0 and "AlreadyExists" in again.stderr


def test_kubectl_watch_is_streamed(
    kubectl_bin: str,
    kubeconfig_path: Path,
    kubectl_environ: dict[str, str],
    kube_api: KubeApiServer,
) -> None:
    cmd = kubectl(kubectl_bin, kubeconfig_path, "get", "pods", "-n", "default", "-w")
    with subprocess.Popen(
        [*cmd, "--request-timeout=3s"],
        env=kubectl_environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        killer = threading.Timer(15, proc.kill)
        killer.start()
        try:
            assert proc.stdout is not None and proc.stderr is not None
            lines = [(time.monotonic(), line) for line in proc.stdout]
            errors = proc.stderr.read()
            proc.wait()
        finally:
            killer.cancel()
    assert proc.returncode == 0, errors
    pods = kube_api.pods("default")
    # header + one line per pod from the list, then the MODIFIED event from the watch
    assert len(lines) == 2 + len(pods), lines
    assert lines[-1][0] - lines[-2][0] > 0.5, "the watch event should arrive ~1 s after the list"
    [watch] = [r for r in kube_api.requests if r.query.get("watch") == ["true"]]
    assert watch.query["timeout"] == ["3s"]


def test_raw_watch_sends_added_then_a_later_event(
    pki: ThrowawayPki, kube_api: KubeApiServer
) -> None:
    conn = http.client.HTTPSConnection(
        "127.0.0.1", kube_api.port, context=client_ssl_context(pki.ca, pki.client), timeout=10
    )
    started = time.monotonic()
    conn.request("GET", "/api/v1/namespaces/default/pods?watch=1&timeoutSeconds=2")
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.getheader("Transfer-Encoding") == "chunked"
    events = timed_lines(resp, limit=10)
    ended = time.monotonic()
    conn.close()
    kinds = [json.loads(line)["type"] for _, line in events]
    assert kinds == ["ADDED"] * len(kube_api.pods("default")) + ["MODIFIED"]
    assert events[0][0] - started < 0.5
    assert 0.7 < events[-1][0] - events[0][0] < 1.8
    assert 1.8 < ended - started < 3.5, "the stream should end at timeoutSeconds"


def test_kube_tls_rejects_missing_and_foreign_client_certs(
    pki: ThrowawayPki, kube_api: KubeApiServer
) -> None:
    def get(ctx: ssl.SSLContext) -> int:
        conn = http.client.HTTPSConnection("127.0.0.1", kube_api.port, context=ctx, timeout=5)
        try:
            conn.request("GET", "/api/v1/namespaces")
            return conn.getresponse().status
        finally:
            conn.close()

    with pytest.raises((ssl.SSLError, ConnectionError)):
        get(client_ssl_context(pki.ca))  # no client certificate
    with pytest.raises((ssl.SSLError, ConnectionError)):
        get(client_ssl_context(pki.ca, pki.server))  # wrong CA (and wrong usage)
    outsider = make_client_cert(pki.client_ca, "intruder", "developers")
    assert get(client_ssl_context(pki.ca, outsider)) == 403
    assert get(client_ssl_context(pki.ca, pki.client)) == 200
    assert [r.client_cn for r in kube_api.requests] == ["intruder", "kube-admin"]
    assert len(kube_api.tls_failures) == 2


def test_kube_optional_client_cert_answers_401(pki: ThrowawayPki) -> None:
    with KubeApiServer(pki, require_client_cert=False) as server:
        req = urllib.request.Request(f"{server.url}/api/v1/namespaces")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, context=client_ssl_context(pki.ca), timeout=5)
        assert err.value.code == 401
        with err.value:
            assert json.loads(err.value.read())["reason"] == "Unauthorized"
        assert [r.client_cn for r in server.requests] == [None]


def test_kube_aggregated_discovery_only_gets_406(
    pki: ThrowawayPki, kube_api: KubeApiServer
) -> None:
    ctx = client_ssl_context(pki.ca, pki.client)
    aggregated = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    req = urllib.request.Request(f"{kube_api.url}/apis", headers={"Accept": aggregated})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, context=ctx, timeout=5)
    err.value.close()
    assert err.value.code == 406
    req = urllib.request.Request(
        f"{kube_api.url}/apis", headers={"Accept": f"{aggregated},application/json"}
    )
    with urllib.request.urlopen(req, context=ctx, timeout=5) as resp:
        assert json.loads(resp.read())["kind"] == "APIGroupList"


# ------------------------------------------------------------------------------- git


def test_git_clone_push_and_delete_branch(
    git_bin: str, git_server: GitHttpServer, git_environ: dict[str, str], tmp_path: Path
) -> None:
    assert set(git_server.branches()) == {"main", "feature-x"}
    work = tmp_path / "clone"
    run([git_bin, "clone", "--quiet", git_server.repo_url, str(work)], git_environ)
    assert (work / "README.md").exists()
    assert git_server.log.matching("GET", "/repo.git/info/refs")[0].query["service"] == [
        "git-upload-pack"
    ]

    (work / "change.txt").write_text("pushed through e2e\n")
    run([git_bin, "add", "change.txt"], git_environ, cwd=work)
    run([git_bin, "commit", "--quiet", "-m", "e2e change"], git_environ, cwd=work)
    run([git_bin, "push", "--quiet", "origin", "main"], git_environ, cwd=work)
    head = run([git_bin, "rev-parse", "HEAD"], git_environ, cwd=work).stdout.strip()
    assert git_server.branches()["main"] == head

    git_server.log.clear()
    run([git_bin, "push", "--quiet", "origin", "--delete", "feature-x"], git_environ, cwd=work)
    assert set(git_server.branches()) == {"main"}
    [push] = git_server.log.matching("POST", "/repo.git/git-receive-pack")
    assert b"refs/heads/feature-x" in push.body
    assert push.body[4:44] != b"0" * 40 and push.body[45:85] == b"0" * 40  # old -> zero id


def test_git_large_push_arrives_chunked(
    git_bin: str, git_server: GitHttpServer, git_environ: dict[str, str], tmp_path: Path
) -> None:
    work = tmp_path / "clone"
    run([git_bin, "clone", "--quiet", git_server.repo_url, str(work)], git_environ)
    (work / "blob.bin").write_bytes(os.urandom(1_500_000))  # > http.postBuffer (1 MiB)
    run([git_bin, "add", "blob.bin"], git_environ, cwd=work)
    run([git_bin, "commit", "--quiet", "-m", "big"], git_environ, cwd=work)
    run([git_bin, "push", "--quiet", "origin", "main"], git_environ, cwd=work)
    pushes = git_server.log.matching("POST", "/repo.git/git-receive-pack")
    assert any(p.header("Transfer-Encoding") == "chunked" for p in pushes)
    assert git_server.git("cat-file", "-s", "main:blob.bin").strip() == "1500000"


def test_git_backend_inflates_gzip_request_bodies(git_server: GitHttpServer) -> None:
    def pkt(line: str) -> bytes:
        return f"{len(line) + 4:04x}{line}".encode()

    # protocol v2 ls-refs, gzip-compressed as git does for large upload-pack requests
    body = (
        pkt("command=ls-refs\n") + b"0001" + pkt("peel\n") + pkt("ref-prefix refs/heads/") + b"0000"
    )
    req = urllib.request.Request(
        f"{git_server.repo_url}/git-upload-pack",
        data=gzip.compress(body),
        headers={
            "Content-Type": "application/x-git-upload-pack-request",
            "Content-Encoding": "gzip",
            "Git-Protocol": "version=2",
        },
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.headers["Content-Type"] == "application/x-git-upload-pack-result"
        answer = resp.read()
    assert b"refs/heads/main" in answer and b"refs/heads/feature-x" in answer


# ------------------------------------------------------------------------------ moto


def test_boto3_cloudformation_lifecycle(
    moto_server: MotoServer, aws_environ: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in aws_environ.items():
        if key.startswith("AWS_"):
            monkeypatch.setenv(key, value)
    cfn = boto3.session.Session().client("cloudformation", endpoint_url=moto_server.url)
    cfn.create_stack(StackName="e2e-boto3", TemplateBody=STACK_TEMPLATE)
    [stack] = cfn.describe_stacks(StackName="e2e-boto3")["Stacks"]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    cfn.delete_stack(StackName="e2e-boto3")
    statuses = {s["StackName"]: s["StackStatus"] for s in cfn.list_stacks()["StackSummaries"]}
    assert statuses == {"e2e-boto3": "DELETE_COMPLETE"}
    actions = [_form(r).get("Action") for r in moto_server.requests]
    assert actions == ["CreateStack", "DescribeStacks", "DeleteStack", "ListStacks"]


def _form(request: RecordedRequest) -> dict[str, str]:
    """CloudFormation uses the query protocol: the action is in the form-encoded body."""
    return dict(parse_qsl(request.body.decode()))


def test_aws_cli_cloudformation_lifecycle(
    aws_bin: str, moto_server: MotoServer, aws_environ: dict[str, str], tmp_path: Path
) -> None:
    template = tmp_path / "stack.json"
    template.write_text(STACK_TEMPLATE)
    aws = [aws_bin, "--endpoint-url", moto_server.url, "--output", "json", "cloudformation"]
    run(
        [*aws, "create-stack", "--stack-name", "e2e-cli", "--template-body", template.as_uri()],
        aws_environ,
    )
    described = json.loads(
        run([*aws, "describe-stacks", "--stack-name", "e2e-cli"], aws_environ).stdout
    )
    assert described["Stacks"][0]["StackStatus"] == "CREATE_COMPLETE"
    run([*aws, "delete-stack", "--stack-name", "e2e-cli"], aws_environ)
    gone = subprocess.run(
        [*aws, "describe-stacks", "--stack-name", "e2e-cli"],
        env=aws_environ,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert gone.returncode != 0 and "does not exist" in gone.stderr
    assert all("aws-cli/" in (r.header("User-Agent") or "") for r in moto_server.requests)


# ------------------------------------------------------------------------------ echo


def test_echo_reports_the_request(echo_server: EchoServer) -> None:
    req = urllib.request.Request(
        f"{echo_server.url}/some/path?q=1",
        data=b"x" * 1234,
        method="PUT",
        headers={"X-Agent": "e2e"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        echoed = json.loads(resp.read())
    assert echoed["method"] == "PUT"
    assert echoed["target"] == "/some/path?q=1"
    assert echoed["body_length"] == 1234
    assert ["X-Agent", "e2e"] in echoed["headers"]
    [seen] = echo_server.requests
    assert seen.header("x-agent") == "e2e" and seen.body == b"x" * 1234


def test_echo_decodes_chunked_request_bodies(echo_server: EchoServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", echo_server.port, timeout=5)
    conn.request("POST", "/upload", body=iter([b"a" * 3000, b"b" * 5]), encode_chunked=True)
    resp = conn.getresponse()
    echoed = json.loads(resp.read())
    conn.close()
    assert echoed["body_length"] == 3005
    assert echo_server.requests[0].header("Transfer-Encoding") == "chunked"


def test_echo_status_path(echo_server: EchoServer) -> None:
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{echo_server.url}/status/503", timeout=5)
    err.value.close()
    assert err.value.code == 503


def test_sse_streams_events_half_a_second_apart(echo_server: EchoServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", echo_server.port, timeout=5)
    started = time.monotonic()
    conn.request("GET", "/sse")
    resp = conn.getresponse()
    assert resp.getheader("Content-Type") == "text/event-stream"
    data = [(t, line) for t, line in timed_lines(resp, limit=9) if line.startswith(b"data:")]
    conn.close()
    assert len(data) == 3
    assert data[0][0] - started < 0.3, "first event must not wait for the last"
    assert 0.8 < data[-1][0] - data[0][0] < 1.6


def test_slow_path_delays_the_answer(echo_server: EchoServer) -> None:
    started = time.monotonic()
    with urllib.request.urlopen(f"{echo_server.url}/slow?seconds=0.6", timeout=5) as resp:
        assert resp.status == 200
    assert 0.55 < time.monotonic() - started < 2


def test_tls_echo_verifies_and_reports_client_cn(
    pki: ThrowawayPki, tls_echo_server: EchoServer
) -> None:
    for identity, cn in ((None, None), (pki.client, "kube-admin")):
        ctx = client_ssl_context(pki.ca, identity)
        with urllib.request.urlopen(f"{tls_echo_server.url}/x", context=ctx, timeout=5) as resp:
            echoed = json.loads(resp.read())
        assert echoed["tls"] is True and echoed["client_cn"] == cn
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{tls_echo_server.url}/x", timeout=5)  # system CAs: untrusted


def test_stop_ends_open_streams_promptly(pki: ThrowawayPki) -> None:
    server = KubeApiServer(pki, watch_seconds=30).start()
    conn = http.client.HTTPSConnection(
        "127.0.0.1", server.port, context=client_ssl_context(pki.ca, pki.client), timeout=10
    )
    conn.request("GET", "/api/v1/namespaces?watch=true")
    resp = conn.getresponse()
    resp.readline()
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 2
    conn.close()
