"""Per-request latency of guardproxy's workloads, side by side with plain mitmproxy.

What it measures
    One client sends sequential requests, one keep-alive HTTP/1.1 connection per
    workload and scenario, for four workloads:

    * ``k8s-read``: Kubernetes reads (``GET /api/v1/namespaces/default/pods/x`` with a
      kubectl User-Agent and a bearer token) to an upstream declared as a Kubernetes API
      server (``--kube-host``): recognised as a k8s read, allowed (``common/allow-reads``);
    * ``aws-read``: ``DescribeStacks`` of ``prod-calc``, a CloudFormation query-protocol
      form POST signed with botocore's SigV4Auth: the guard recognises AWS by the
      signature (any endpoint, loopback too); a read of a prod stack, allowed;
    * ``aws-write``: ``CreateQueue`` of ``dev-bench-queue``, SQS query protocol, signed the
      same way: a dev change the shipped bundle allows (no rule holds it), so every one
      is recorded durably before it is forwarded, and the bundle's sequence rules read
      the session's history for it;
    * ``k8s-read-https``: the Kubernetes read over HTTPS with interception: the client
      sends ``CONNECT`` and trusts the proxy's CA, the proxy verifies the loopback TLS
      upstream against the benchmark's own CA (``--upstream-ca`` for guardproxy,
      ``ssl_verify_upstream_trusted_ca`` for mitmdump).

    and three scenarios:

    * ``direct``: straight to the upstream;
    * ``mitmproxy``: through ``mitmdump`` with no addon of ours
      (``-q --set connection_strategy=lazy``);
    * ``guardproxy``: through ``guardproxy serve`` with the shipped policies.

    The upstream is a small asyncio HTTP/1.1 keep-alive server in its own process,
    listening three times (Kubernetes, AWS, Kubernetes over TLS): a GET gets a fixed
    JSON pod, a form POST a small ``<ActionResponse>`` XML document. Each proxy runs in
    its own process; one mitmdump and one guardproxy serve every workload. Through a
    proxy the client sends absolute-form requests for plain HTTP (as ``http_proxy``
    clients do) and tunnels with ``CONNECT`` for HTTPS.

    Each request is timed with ``time.perf_counter_ns`` from sending to having read the
    whole body (the garbage collector is off while timing). A pass opens every
    connection, warms each up, then sends ``--requests`` timed requests per workload and
    scenario in ``--blocks`` interleaved rounds (for each block: every workload, and
    within it direct, mitmproxy, guardproxy), so a burst of background load lands on all
    scenarios alike. There are ``--passes`` passes; each scenario is reported by its
    best pass (lowest median). Reported per workload: p50/p90/p99/max and mean in
    microseconds, requests per second, and the proxy process's CPU time per request
    (from /proc; a proxy serves only one connection at a time, so it is that workload's).
    The guardproxy/mitmproxy ratios are compared with the issue's targets (reads
    <= 1.05, allowed writes <= 1.20) and marked PASS or MISS. The ratio that is robust to
    a noisy machine is the paired one: the ratio of the two proxies' median latencies in
    each interleaved block, median and quartiles over all blocks; the verdict uses it.
    After the run, guardproxy's store is read back to show that every workload was
    recognised and decided as intended.

    ``--profile`` additionally samples the guardproxy process during one more pass of
    one workload (``--profile-workload``, default ``aws-write``) with py-spy ``--gil``
    (whichever thread holds the GIL: the event loop, the workers that recognise and
    decide, the decision recorder) and prints the functions with the most samples,
    guardproxy's own first. py-spy must be on PATH or given with ``--py-spy``; without
    it, cProfile of the event-loop thread is used instead (it does not see worker
    threads).

How to run (from the repository root)
    .venv/bin/python bench/proxy_bench.py                   # table for people
    .venv/bin/python bench/proxy_bench.py --json            # machine-readable
    .venv/bin/python bench/proxy_bench.py --requests 5000 --passes 5
    .venv/bin/python bench/proxy_bench.py --workload aws-write --workload k8s-read
    .venv/bin/python bench/proxy_bench.py --profile [--py-spy /path/to/py-spy]
    .venv/bin/python bench/proxy_bench.py --sqlite-synchronous full   # power-cut durability

Everything listens on 127.0.0.1 only; every child process has a startup timeout and
is stopped (terminate, then kill) when the benchmark ends, whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import gc
import http.client
import ipaddress
import json
import math
import os
import platform
import pstats
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qsl, urlencode

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from guardproxy.store import open_store

REPO_ROOT = Path(__file__).resolve().parents[1]
POLICIES = REPO_ROOT / "policies"
VENV_BIN = Path(sys.executable).parent
LOOPBACK = "127.0.0.1"

DEFAULT_REQUESTS = 2000
DEFAULT_PASSES = 3
DEFAULT_BLOCKS = 10
WARMUP = 200
STARTUP_TIMEOUT = 30.0
REQUEST_TIMEOUT = 10.0
UPSTREAM_LIFETIME = 3600.0
TARGET_RATIOS = {"read": 1.05, "write": 1.20}  # issue 17, targets 1 and 2
PROFILE_TOP = 25

K8S_PATH = "/api/v1/namespaces/default/pods/x"
K8S_HEADERS = {
    "User-Agent": "kubectl/v1.32.4 (linux/amd64) kubernetes/59526cd",
    "Authorization": "Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6ImJlbmNoIn0.e30.c2lnbmF0dXJl",
    "Accept": "application/json, */*",
}
POD = {
    "kind": "Pod",
    "apiVersion": "v1",
    "metadata": {
        "name": "x",
        "namespace": "default",
        "uid": "3f0c1c52-8b0e-4a53-9d59-2b6a8e1f0a11",
        "resourceVersion": "1001",
        "labels": {"app": "x"},
    },
    "spec": {"containers": [{"name": "main", "image": "registry.example/app:1.0"}]},
    "status": {"phase": "Running", "podIP": "10.0.0.7"},
}
POD_BODY = json.dumps(POD).encode()
PATH, HEADERS = K8S_PATH, K8S_HEADERS  # the names audit_bench.py reads
AWS_CREDENTIALS = Credentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
AWS_REGION = "us-east-1"
AWS_USER_AGENT = "aws-cli/2.22.0 md/Botocore#2.0.0 ua/2.0 os/linux#6.8 md/arch#x86_64"


class BenchError(Exception):
    """A problem that stops the benchmark, with a message for the person running it."""


# ---------------------------------------------------------------------------
# The workloads.


@dataclass(frozen=True)
class Workload:
    name: str
    kind: str  # "read" or "write": which target applies
    tls: bool
    expected_kind: str  # "provider verb outcome" in guardproxy's store
    aws_service: str = ""  # signed with SigV4 for this service; else a Kubernetes GET
    aws_params: tuple[tuple[str, str], ...] = ()

    @property
    def target_ratio(self) -> float:
        return TARGET_RATIOS[self.kind]

    def describe(self) -> str:
        if not self.aws_service:
            scheme = "https" if self.tls else "http"
            return f"GET {scheme}://…{K8S_PATH} (kubectl headers, bearer token)"
        params = dict(self.aws_params)
        name = params.get("StackName") or params.get("QueueName")
        return f"POST {self.aws_service} {params['Action']} {name} (SigV4, query protocol)"


WORKLOADS = (
    Workload("k8s-read", "read", False, "k8s read allow"),
    Workload(
        "aws-read",
        "read",
        False,
        "aws read allow",
        "cloudformation",
        (("Action", "DescribeStacks"), ("Version", "2010-05-15"), ("StackName", "prod-calc")),
    ),
    Workload(
        "aws-write",
        "write",
        False,
        "aws create allow",
        "sqs",
        (("Action", "CreateQueue"), ("Version", "2012-11-05"), ("QueueName", "dev-bench-queue")),
    ),
    Workload("k8s-read-https", "read", True, "k8s read allow"),
)
WORKLOAD_NAMES = tuple(w.name for w in WORKLOADS)


def aws_response(action: str) -> bytes:
    """A query-protocol answer of the shape AWS gives (the guard learns nothing from it)."""
    return (
        f'<{action}Response xmlns="https://bench.invalid/doc/"><{action}Result/>'
        f"<ResponseMetadata><RequestId>00000000-0000-0000-0000-000000000000</RequestId>"
        f"</ResponseMetadata></{action}Response>"
    ).encode()


@dataclass(frozen=True)
class RequestSpec:
    """One workload's request to one upstream port, as the client sends it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes | None
    expected: bytes


def request_spec(workload: Workload, upstream_port: int) -> RequestSpec:
    """The workload's request; an AWS one is signed once (for the upstream's host:port)."""
    if not workload.aws_service:
        return RequestSpec("GET", K8S_PATH, dict(K8S_HEADERS), None, POD_BODY)
    body = urlencode(workload.aws_params)
    request = AWSRequest(
        method="POST",
        url=f"http://{LOOPBACK}:{upstream_port}/",
        data=body,
        headers={
            "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
            "User-Agent": AWS_USER_AGENT,
        },
    )
    SigV4Auth(AWS_CREDENTIALS, workload.aws_service, AWS_REGION).add_auth(request)
    headers = {name: str(value) for name, value in request.headers.items()}
    action = dict(workload.aws_params)["Action"]
    return RequestSpec("POST", "/", headers, body.encode(), aws_response(action))


# ---------------------------------------------------------------------------
# A throwaway CA and the upstream's certificate (ECDSA P-256, the extensions strict
# verifiers want), for the HTTPS workload.


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    server_cert: Path
    server_key: Path


def _certificate(
    subject: str, issuer: x509.Name | None, key: ec.EllipticCurvePrivateKey,
    signer: ec.EllipticCurvePrivateKey, ca: bool,
) -> x509.Certificate:  # fmt: skip
    now = datetime.datetime.now(datetime.UTC)
    usage = x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False
        )
        .add_extension(usage, critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        ).add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(LOOPBACK))]),
            critical=False,
        )
    return builder.sign(signer, hashes.SHA256())


def write_tls_files(directory: Path) -> TlsFiles:
    ca_key, server_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ca = _certificate("proxy_bench CA", None, ca_key, ca_key, ca=True)
    server = _certificate(LOOPBACK, ca.subject, server_key, ca_key, ca=False)
    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server-key.pem")
    files.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.server_cert.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    files.server_key.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    files.server_key.chmod(0o600)
    return files


# ---------------------------------------------------------------------------
# The upstream: its own process (``--serve-upstream``), HTTP/1.1 keep-alive, plain and TLS.


class _UpstreamProtocol(asyncio.Protocol):
    """Answers a GET with the JSON pod, a form POST with ``<ActionResponse>``; keeps the
    connection open."""

    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head, rest = self.buffer[:end], self.buffer[end + 4 :]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip() or b"0")
            if len(rest) < length:
                return
            request_body, self.buffer = rest[:length], rest[length:]
            if head.startswith(b"POST "):
                action = dict(parse_qsl(request_body.decode(errors="replace"))).get("Action", "")
                body, content_type = aws_response(action), b"text/xml"
            else:
                body, content_type = POD_BODY, b"application/json"
            assert self.transport is not None
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s"
                % (content_type, len(body), body)
            )


async def _serve_upstream(lifetime: float, cert: str, key: str) -> None:
    loop = asyncio.get_running_loop()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    servers = [
        await loop.create_server(_UpstreamProtocol, LOOPBACK, 0),  # Kubernetes
        await loop.create_server(_UpstreamProtocol, LOOPBACK, 0),  # AWS
        await loop.create_server(_UpstreamProtocol, LOOPBACK, 0, ssl=context),  # HTTPS
    ]
    print("READY", *(s.sockets[0].getsockname()[1] for s in servers), flush=True)
    stdin_closed = asyncio.Event()
    # the parent holds our stdin: when it goes away (even killed), we stop too
    loop.add_reader(sys.stdin.fileno(), stdin_closed.set)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stdin_closed.wait(), timeout=lifetime)
    for server in servers:
        server.close()


# ---------------------------------------------------------------------------
# Child processes: start with a readiness check, always stop.


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far (Linux /proc; 0 elsewhere)."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Children:
    """Every child process the benchmark started; stop_all() ends each of them."""

    def __init__(self, workdir: Path, serve_options: Sequence[str] = ()) -> None:
        self.workdir = workdir
        self.children: list[Child] = []
        self.serve_options = list(serve_options)  # more options for guardproxy serve

    def start(self, name: str, cmd: Sequence[str], stdout: int | IO[bytes] | None = None) -> Child:
        log = self.workdir / f"{name}.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                list(cmd),
                stdin=subprocess.PIPE,
                stdout=stdout if stdout is not None else sink,
                stderr=sink,
                cwd=self.workdir,
                env={k: v for k, v in os.environ.items() if "proxy" not in k.lower()},
            )
        child = Child(name, process, log)
        self.children.append(child)
        return child

    def stop(self, child: Child, timeout: float = 10.0) -> None:
        process = child.process
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def stop_all(self) -> None:
        for child in reversed(self.children):
            with contextlib.suppress(Exception):
                self.stop(child)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def wait_listening(child: Child, port: int, timeout: float = STARTUP_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.process.poll() is not None:
            raise BenchError(
                f"{child.name} exited with {child.process.returncode} before listening:\n"
                f"{child.tail()}"
            )
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), 0.2):
            return
        time.sleep(0.05)
    raise BenchError(f"{child.name} did not listen on port {port} within {timeout} s")


@dataclass(frozen=True)
class Upstream:
    """The upstream's three listeners: a Kubernetes API server (declared as one to
    guardproxy), an AWS endpoint (not declared: recognised by the signature) and the
    Kubernetes API server over TLS."""

    kube_port: int
    aws_port: int
    tls_port: int
    tls: TlsFiles

    def port(self, workload: Workload) -> int:
        if workload.tls:
            return self.tls_port
        return self.aws_port if workload.aws_service else self.kube_port


def start_upstream(children: Children) -> Upstream:
    tls = write_tls_files(children.workdir)
    child = children.start(
        "upstream",
        [sys.executable, __file__, "--serve-upstream", str(UPSTREAM_LIFETIME),
         str(tls.server_cert), str(tls.server_key)],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    assert child.process.stdout is not None
    deadline = time.monotonic() + STARTUP_TIMEOUT
    os.set_blocking(child.process.stdout.fileno(), False)
    buffered = b""
    while time.monotonic() < deadline:
        if child.process.poll() is not None:
            raise BenchError(f"the upstream exited early:\n{child.tail()}")
        chunk = child.process.stdout.read()
        buffered += chunk or b""
        if b"\n" in buffered:
            line = buffered.split(b"\n", 1)[0].decode()
            words = line.split()
            if len(words) != 4 or words[0] != "READY":
                raise BenchError(f"unexpected upstream output {line!r}")
            return Upstream(int(words[1]), int(words[2]), int(words[3]), tls)
        time.sleep(0.02)
    raise BenchError(f"the upstream did not start within {STARTUP_TIMEOUT} s")


def tool(name: str) -> str:
    path = VENV_BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        raise BenchError(f"{name} not found next to {sys.executable} nor on PATH")
    return found


@dataclass(frozen=True)
class Proxy:
    child: Child
    port: int
    ca_cert: Path  # what a client trusts for intercepted HTTPS


def start_mitmdump(children: Children, upstream: Upstream) -> Proxy:
    port = free_port()
    confdir = children.workdir / "mitmproxy"
    cmd = [tool("mitmdump"), "-q", "--listen-host", LOOPBACK, "--listen-port", str(port),
           "--set", "connection_strategy=lazy", "--set", f"confdir={confdir}",
           "--set", f"ssl_verify_upstream_trusted_ca={upstream.tls.ca_cert}"]  # fmt: skip
    child = children.start("mitmdump", cmd)
    wait_listening(child, port)
    return Proxy(child, port, confdir / "mitmproxy-ca-cert.pem")


def guardproxy_command(
    data_dir: Path, port: int, control: int, upstream: Upstream | int
) -> list[str]:
    """``guardproxy serve`` for ``upstream`` (a bare port: a Kubernetes API server only)."""
    command = ["serve", "--data-dir", str(data_dir), "--policies", str(POLICIES),
               "--listen", f"{LOOPBACK}:{port}", "--control", f"{LOOPBACK}:{control}"]  # fmt: skip
    if isinstance(upstream, int):
        return [*command, "--kube-host", f"{LOOPBACK}:{upstream}"]
    return [*command, "--kube-host", f"{LOOPBACK}:{upstream.kube_port}",
            "--kube-host", f"{LOOPBACK}:{upstream.tls_port}",
            "--upstream-ca", str(upstream.tls.ca_cert)]  # fmt: skip


def start_guardproxy(
    children: Children, upstream: Upstream, name: str = "guardproxy", cprofile: Path | None = None
) -> tuple[Proxy, Path]:
    port, control = free_port(), free_port()
    data_dir = children.workdir / f"{name}-data"
    args = [*guardproxy_command(data_dir, port, control, upstream), *children.serve_options]
    if cprofile is not None:
        cmd = [sys.executable, "-m", "cProfile", "-o", str(cprofile), "-m", "guardproxy", *args]
    else:
        cmd = [tool("guardproxy"), *args]
    child = children.start(name, cmd)
    wait_listening(child, port)
    return Proxy(child, port, data_dir / "ca" / "mitmproxy-ca-cert.pem"), data_dir


# ---------------------------------------------------------------------------
# The client and the statistics.


@dataclass
class PassResult:
    scenario: str
    latencies_ns: list[int]
    wall_seconds: float
    proxy_cpu_seconds: float | None

    @property
    def p50_us(self) -> float:
        return percentile(self.latencies_ns, 50) / 1000


@dataclass
class Stats:
    scenario: str
    requests: int
    p50_us: float
    p90_us: float
    p99_us: float
    max_us: float
    mean_us: float
    requests_per_second: float
    proxy_cpu_us_per_request: float | None
    pass_p50_us: list[float] = field(default_factory=list)
    pass_mean_us: list[float] = field(default_factory=list)


def percentile(values: Sequence[int], q: float) -> float:
    return percentile_f([float(v) for v in values], q)


def percentile_f(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarise(passes: list[PassResult]) -> Stats:
    best = min(passes, key=lambda p: p.p50_us)
    lat = best.latencies_ns
    cpu = best.proxy_cpu_seconds
    return Stats(
        scenario=best.scenario,
        requests=len(lat),
        p50_us=percentile(lat, 50) / 1000,
        p90_us=percentile(lat, 90) / 1000,
        p99_us=percentile(lat, 99) / 1000,
        max_us=max(lat) / 1000,
        mean_us=sum(lat) / len(lat) / 1000,
        requests_per_second=len(lat) / best.wall_seconds,
        proxy_cpu_us_per_request=cpu / len(lat) * 1e6 if cpu is not None else None,
        pass_p50_us=[round(p.p50_us, 1) for p in passes],
        pass_mean_us=[round(sum(p.latencies_ns) / len(p.latencies_ns) / 1000, 1) for p in passes],
    )


@dataclass(frozen=True)
class Target:
    """One workload through one scenario: where the client connects, what it sends."""

    workload: Workload
    scenario: str
    upstream: Upstream
    proxy: Proxy | None  # None: direct


@contextlib.contextmanager
def gc_disabled() -> Iterator[None]:
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _connection(target: Target) -> tuple[http.client.HTTPConnection, str]:
    """A keep-alive connection for ``target`` and the request target to send on it."""
    upstream_port = target.upstream.port(target.workload)
    spec_path = request_spec(target.workload, upstream_port).path
    if not target.workload.tls:
        if target.proxy is None:
            return http.client.HTTPConnection(LOOPBACK, upstream_port, timeout=REQUEST_TIMEOUT), (
                spec_path
            )
        return (
            http.client.HTTPConnection(LOOPBACK, target.proxy.port, timeout=REQUEST_TIMEOUT),
            f"http://{LOOPBACK}:{upstream_port}{spec_path}",
        )
    trusted = target.proxy.ca_cert if target.proxy else target.upstream.tls.ca_cert
    context = ssl.create_default_context(cafile=str(trusted))
    if target.proxy is None:
        return http.client.HTTPSConnection(
            LOOPBACK, upstream_port, timeout=REQUEST_TIMEOUT, context=context
        ), spec_path
    conn = http.client.HTTPSConnection(
        LOOPBACK, target.proxy.port, timeout=REQUEST_TIMEOUT, context=context
    )
    conn.set_tunnel(LOOPBACK, upstream_port)
    return conn, spec_path


class Client:
    """One keep-alive connection to a target's first hop; every answer is checked."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.spec = request_spec(target.workload, target.upstream.port(target.workload))
        self.conn, self.url = _connection(target)

    def one(self) -> None:
        spec = self.spec
        self.conn.request(spec.method, self.url, body=spec.body, headers=spec.headers)
        response = self.conn.getresponse()
        body = response.read()
        if response.status != 200 or body != spec.expected:
            raise BenchError(
                f"{self.target.workload.name} via {self.target.scenario}: HTTP "
                f"{response.status} {response.reason}: {body[:300]!r}"
            )

    def timed(self, requests: int) -> tuple[list[int], float, float | None]:
        """(latencies in ns, wall seconds, proxy CPU seconds) of ``requests`` requests."""
        proxy = self.target.proxy.child if self.target.proxy else None
        cpu_before = proxy.cpu_seconds() if proxy is not None else None
        latencies: list[int] = []
        clock = time.perf_counter_ns
        with gc_disabled():
            started = clock()
            for _ in range(requests):
                t0 = clock()
                self.one()
                latencies.append(clock() - t0)
            wall = (clock() - started) / 1e9
        cpu = proxy.cpu_seconds() - cpu_before if proxy and cpu_before is not None else None
        return latencies, wall, cpu

    def close(self) -> None:
        self.conn.close()


def run_pass(target: Target, requests: int, warmup: int) -> PassResult:
    """One keep-alive connection: ``warmup`` untimed requests, then ``requests`` timed."""
    client = Client(target)
    try:
        for _ in range(warmup):
            client.one()
        latencies, wall, cpu = client.timed(requests)
    finally:
        client.close()
    return PassResult(target.scenario, latencies, wall, cpu)


Results = dict[str, dict[str, PassResult]]  # workload -> scenario -> its pass
BlockMedians = dict[str, dict[str, float]]  # workload -> scenario -> median ns in one block


def run_interleaved_pass(
    targets: Sequence[Target], requests: int, warmup: int, blocks: int
) -> tuple[Results, list[BlockMedians]]:
    """One pass of every target, each on its own keep-alive connection, in ``blocks``
    rounds of ``requests / blocks`` requests per target (every workload in turn, and
    within it every scenario: A1, B1, C1, A2, B2, C2, ..., A1, ...), so a burst of
    background load lands on all of them alike. Returns each target's pass and the
    median latency of every target in every block (for paired ratios)."""
    clients = [Client(t) for t in targets]
    results: Results = {}
    for t in targets:
        results.setdefault(t.workload.name, {})[t.scenario] = PassResult(
            t.scenario, [], 0.0, 0.0 if t.proxy else None
        )
    block_medians: list[BlockMedians] = []
    try:
        for client in clients:
            for _ in range(warmup):
                client.one()
        sizes = [requests // blocks + (1 if i < requests % blocks else 0) for i in range(blocks)]
        for size in sizes:
            medians: BlockMedians = {}
            for client in clients:
                latencies, wall, cpu = client.timed(size)
                workload, scenario = client.target.workload.name, client.target.scenario
                result = results[workload][scenario]
                result.latencies_ns.extend(latencies)
                result.wall_seconds += wall
                if cpu is not None and result.proxy_cpu_seconds is not None:
                    result.proxy_cpu_seconds += cpu
                medians.setdefault(workload, {})[scenario] = percentile(latencies, 50)
            block_medians.append(medians)
    finally:
        for client in clients:
            client.close()
    return results, block_medians


def guardproxy_record(data_dir: Path) -> dict[str, Any]:
    """What guardproxy stored about the benchmark's requests (after it stopped)."""
    store = open_store(str(data_dir / "guardproxy.db"))
    try:
        records = store.list_decisions(limit=1_000_000)
    finally:
        store.close()
    kinds: Counter[str] = Counter()
    for record in records:
        action = json.loads(record.action_json)
        kinds[f"{action['provider']} {action['verb']} {record.outcome}"] += 1
    return {"decisions": len(records), "by_kind": dict(kinds)}


# ---------------------------------------------------------------------------
# Profiling.


GUARDPROXY_SOURCE = str(REPO_ROOT / "guardproxy") + "/"


@dataclass(frozen=True)
class Frame:
    name: str  # "Class.function (short/path.py)"
    ours: bool  # guardproxy's own code


def _frame(text: str) -> Frame:
    """A py-spy raw frame, ``function (/full/path/file.py:line)``, shortened."""
    function, _, where = text.rpartition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    ours = path.startswith(GUARDPROXY_SOURCE)
    if ours:
        path = "guardproxy/" + path[len(GUARDPROXY_SOURCE) :]
        # `guardproxy serve` itself (main, cmd_serve, _serve) is the root every event-loop
        # sample sits under, not work guardproxy adds per request
        ours = not path.startswith("guardproxy/cli/")
    else:
        for marker in ("/site-packages/", "/lib/python3.12/", "/lib/python3/"):
            if marker in path:
                path = path.split(marker, 1)[1]
                break
    return Frame(f"{function} ({path})", ours)


def _percent(counter: Counter[str], total: int, top: int) -> list[tuple[str, float]]:
    return [(name, round(100 * count / total, 1)) for name, count in counter.most_common(top)]


def analyse_py_spy(raw: str) -> dict[str, Any]:
    """Where the GIL-holding samples went.

    * ``guardproxy_entry_points``: the outermost guardproxy frame that library code called
      (an addon hook, a worker-thread function, the recorder thread), inclusive: the cost
      of each piece guardproxy adds to mitmproxy;
    * ``guardproxy_inclusive``: every guardproxy function, inclusive (except the CLI
      frames every event-loop sample sits under);
    * ``top_self``: every function by its own samples.
    """
    entries: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = ours_total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [
            _frame(f)
            for f in stack.split(";")
            if " (" in f and not f.startswith(("thread (", "process "))
        ]
        if not frames:
            continue
        total += count
        own[frames[-1].name] += count
        for name in {f.name for f in frames if f.ours}:
            inclusive[name] += count
        entry = next(
            (f for before, f in pairwise(frames) if f.ours and not before.ours),
            None,
        )
        if entry is not None:
            entries[entry.name] += count
            ours_total += count
    if not total:
        raise BenchError("py-spy recorded no samples")
    return {
        "samples": total,
        "guardproxy_share": round(100 * ours_total / total, 1),
        "guardproxy_entry_points": _percent(entries, total, PROFILE_TOP),
        "guardproxy_inclusive": _percent(inclusive, total, PROFILE_TOP),
        "top_self": _percent(own, total, PROFILE_TOP),
    }


def profile_with_py_spy(
    py_spy: str,
    children: Children,
    upstream: Upstream,
    workload: Workload,
    requests: int,
    keep: Path | None = None,
    scenario: str = "guardproxy",
) -> dict[str, Any]:
    if scenario == "mitmproxy":
        proxy = start_mitmdump(children, upstream)
    else:
        proxy, _ = start_guardproxy(children, upstream, name="guardproxy-profiled")
    out = children.workdir / "py-spy.txt"
    target = Target(workload, scenario, upstream, proxy)
    run_pass(target, 0, WARMUP)
    sampler = subprocess.Popen(
        [py_spy, "record", "--pid", str(proxy.child.process.pid), "--rate", "1000", "--format",
         "raw", "--output", str(out), "--gil", "--full-filenames"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        time.sleep(1.0)
        run_pass(target, requests, 0)
    finally:
        sampler.send_signal(signal.SIGINT)
        try:
            _, err = sampler.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            sampler.kill()
            _, err = sampler.communicate()
        children.stop(proxy.child)
    if not out.exists():
        raise BenchError(f"py-spy wrote no profile: {err.decode(errors='replace')[-500:]}")
    if keep is not None:
        shutil.copyfile(out, keep)
    return {
        "tool": f"py-spy --gil (whichever thread holds the GIL, 1000 Hz), {workload.name}"
        f" through {scenario}",
        **analyse_py_spy(out.read_text(errors="replace")),
    }


def profile_with_cprofile(
    children: Children, upstream: Upstream, workload: Workload, requests: int
) -> dict[str, Any]:
    output = children.workdir / "guardproxy.prof"
    proxy, _ = start_guardproxy(children, upstream, name="guardproxy-cprofile", cprofile=output)
    target = Target(workload, "guardproxy", upstream, proxy)
    run_pass(target, requests, WARMUP)
    children.stop(proxy.child)
    if not output.exists():
        raise BenchError("cProfile wrote no profile (did guardproxy exit cleanly?)")
    stats = pstats.Stats(str(output))
    rows: list[tuple[str, float, float]] = []
    for (path, line, name), entry in stats.stats.items():  # type: ignore[attr-defined]
        _, _, own_time, cumulative, _ = entry
        rows.append((f"{name} ({path.rsplit('/', 2)[-2:]!s}:{line})", own_time, cumulative))
    ours = [r for r in rows if "guardproxy" in r[0]]
    return {
        "tool": f"cProfile (event-loop thread only: worker threads are not seen), {workload.name}",
        "guardproxy_cumulative_s": [
            (n, round(c, 3)) for n, _, c in sorted(ours, key=lambda r: -r[2])[:PROFILE_TOP]
        ],
        "top_self_s": [(n, round(s, 3)) for n, s, _ in sorted(rows, key=lambda r: -r[1])[:15]],
    }


# ---------------------------------------------------------------------------
# Orchestration and output.

SCENARIOS = ("direct", "mitmproxy", "guardproxy")


def workload_result(
    workload: Workload, passes: dict[str, list[PassResult]], blocks: list[BlockMedians]
) -> dict[str, Any]:
    stats = {name: summarise(result) for name, result in passes.items()}
    guard, mitm = stats["guardproxy"], stats["mitmproxy"]
    ratios = {"mean": guard.mean_us / mitm.mean_us, "p50": guard.p50_us / mitm.p50_us}
    paired = sorted(b[workload.name]["guardproxy"] / b[workload.name]["mitmproxy"] for b in blocks)
    paired_median = percentile_f(paired, 50)
    return {
        "request": workload.describe(),
        "kind": workload.kind,
        "target_ratio": workload.target_ratio,
        "scenarios": {name: asdict(s) for name, s in stats.items()},
        "ratios": {k: round(v, 3) for k, v in ratios.items()},
        "paired_block_p50_ratio": {
            "blocks": len(paired),
            "median": round(paired_median, 3),
            "p25": round(percentile_f(paired, 25), 3),
            "p75": round(percentile_f(paired, 75), 3),
        },
        "verdict": "PASS" if paired_median <= workload.target_ratio else "MISS",
        "extra_us_over_mitmproxy_p50": round(guard.p50_us - mitm.p50_us, 1),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    if not (POLICIES / "bundle.yaml").exists():
        raise BenchError(f"no policy bundle at {POLICIES}")
    workloads = [w for w in WORKLOADS if w.name in args.workload]
    load_before = list(os.getloadavg())
    workdir = Path(tempfile.mkdtemp(prefix="guardproxy-bench-"))
    children = Children(workdir, ["--sqlite-synchronous", args.sqlite_synchronous])
    try:
        upstream = start_upstream(children)
        mitm = start_mitmdump(children, upstream)
        guard, guard_data = start_guardproxy(children, upstream)
        proxies: dict[str, Proxy | None] = {"direct": None, "mitmproxy": mitm, "guardproxy": guard}
        targets = [Target(w, s, upstream, proxies[s]) for w in workloads for s in SCENARIOS]
        passes: dict[str, dict[str, list[PassResult]]] = {
            w.name: {s: [] for s in SCENARIOS} for w in workloads
        }
        blocks: list[BlockMedians] = []
        for _ in range(args.passes):
            results, block_medians = run_interleaved_pass(
                targets, args.requests, args.warmup, args.blocks
            )
            for workload, by_scenario in results.items():
                for scenario, result in by_scenario.items():
                    passes[workload][scenario].append(result)
            blocks.extend(block_medians)
        children.stop(guard.child)  # flushes the decision log
        record = guardproxy_record(guard_data)
        profile = None
        if args.profile:
            profiled = next(w for w in WORKLOADS if w.name == args.profile_workload)
            py_spy = args.py_spy or shutil.which("py-spy")
            if py_spy:
                profile = profile_with_py_spy(
                    py_spy, children, upstream, profiled, args.requests, args.profile_output,
                    args.profile_scenario,
                )  # fmt: skip
            else:
                profile = profile_with_cprofile(children, upstream, profiled, args.requests)
    finally:
        children.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    expected: Counter[str] = Counter()
    for w in workloads:
        expected[w.expected_kind] += args.passes * (args.requests + args.warmup)
    missing = {k: n for k, n in expected.items() if record["by_kind"].get(k, 0) < n}
    return {
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": list(os.getloadavg()),
        },
        "run": {
            "requests_per_pass": args.requests,
            "passes": args.passes,
            "blocks_per_pass": args.blocks,
            "warmup": args.warmup,
            "connection": "one keep-alive HTTP/1.1 connection per workload and scenario",
            "sqlite_synchronous": args.sqlite_synchronous,
        },
        "workloads": {w.name: workload_result(w, passes[w.name], blocks) for w in workloads},
        "guardproxy_record": {**record, "expected_at_least": dict(expected), "short": missing},
        "profile": profile,
    }


def render(result: dict[str, Any]) -> str:
    run_info, machine = result["run"], result["machine"]
    lines = [
        "guardproxy vs plain mitmproxy, keep-alive HTTP/1.1 on loopback (one client, "
        f"sequential; best pass of {run_info['passes']} by median, "
        f"{run_info['requests_per_pass']} requests per workload and scenario each, "
        f"{run_info['blocks_per_pass']} interleaved blocks per pass; guardproxy's SQLite "
        f"store with synchronous={run_info['sqlite_synchronous']})",
        f"machine: {machine['cpus']} CPUs, load average before "
        f"{', '.join(f'{x:.2f}' for x in machine['load_average_before'])}, after "
        f"{', '.join(f'{x:.2f}' for x in machine['load_average_after'])}",
    ]
    for name, w in result["workloads"].items():
        lines += [
            "",
            f"{name}: {w['request']}",
            f"  {'scenario':<12}{'p50 µs':>9}{'p90 µs':>9}{'p99 µs':>9}{'max µs':>9}"
            f"{'mean µs':>9}{'req/s':>9}{'proxy CPU µs/req':>18}   p50 per pass",
        ]
        for scenario, s in w["scenarios"].items():
            cpu = s["proxy_cpu_us_per_request"]
            lines.append(
                f"  {scenario:<12}{s['p50_us']:>9.0f}{s['p90_us']:>9.0f}{s['p99_us']:>9.0f}"
                f"{s['max_us']:>9.0f}{s['mean_us']:>9.0f}{s['requests_per_second']:>9.0f}"
                f"{(f'{cpu:.0f}' if cpu is not None else '-'):>18}   "
                f"{', '.join(f'{v:.0f}' for v in s['pass_p50_us'])}"
            )
        paired = w["paired_block_p50_ratio"]
        lines.append(
            f"  guardproxy/mitmproxy: per-block median ratio {paired['median']:.3f}x "
            f"(quartiles {paired['p25']:.3f}-{paired['p75']:.3f}, {paired['blocks']} blocks); "
            f"best-pass p50 {w['ratios']['p50']:.3f}x, mean {w['ratios']['mean']:.3f}x; "
            f"+{w['extra_us_over_mitmproxy_p50']:.0f} µs p50"
        )
    lines += [
        "",
        f"{'workload':<16}{'kind':<7}{'ratio':>8}{'target':>9}  verdict (per-block median)",
    ]
    for name, w in result["workloads"].items():
        lines.append(
            f"{name:<16}{w['kind']:<7}{w['paired_block_p50_ratio']['median']:>7.3f}x"
            f"{'<= ' + format(w['target_ratio'], '.2f'):>9}  {w['verdict']}"
        )
    record = result["guardproxy_record"]
    kinds = ", ".join(f"{k}: {v}" for k, v in sorted(record["by_kind"].items()))
    lines.append("")
    lines.append(f"guardproxy stored {record['decisions']} decisions ({kinds})")
    if record["short"]:
        lines.append(
            f"  FEWER THAN SENT: {record['short']} (expected {record['expected_at_least']})"
        )
    profile = result.get("profile")
    if profile:
        lines += ["", f"profile of guardproxy: {profile['tool']}"]
        if "guardproxy_inclusive" in profile:
            lines.append(
                f"  {profile['samples']} samples; {profile['guardproxy_share']}% in guardproxy "
                "code called from mitmproxy/asyncio/threads, by entry point (inclusive):"
            )
            lines += [f"  {p:5.1f}%  {n}" for n, p in profile["guardproxy_entry_points"]]
            lines.append("  guardproxy functions (inclusive):")
            lines += [f"  {p:5.1f}%  {n}" for n, p in profile["guardproxy_inclusive"]]
            lines.append("  all functions by own samples:")
            lines += [f"  {p:5.1f}%  {n}" for n, p in profile["top_self"]]
        else:
            lines.append("  guardproxy functions by cumulative seconds:")
            lines += [f"  {s:8.3f}  {n}" for n, s in profile["guardproxy_cumulative_s"]]
            lines.append("  top functions by own seconds:")
            lines += [f"  {s:8.3f}  {n}" for n, s in profile["top_self_s"]]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=DEFAULT_REQUESTS,
                        help="timed requests per pass, workload and scenario "
                             f"(default {DEFAULT_REQUESTS})")  # fmt: skip
    parser.add_argument("--passes", type=int, default=DEFAULT_PASSES,
                        help=f"passes (default {DEFAULT_PASSES})")  # fmt: skip
    parser.add_argument("--warmup", type=int, default=WARMUP, help="untimed requests first")
    parser.add_argument("--blocks", type=int, default=DEFAULT_BLOCKS,
                        help="interleaved rounds per pass (default "
                             f"{DEFAULT_BLOCKS})")  # fmt: skip
    parser.add_argument("--workload", action="append", choices=WORKLOAD_NAMES,
                        help="measure only this workload (repeatable; default all)")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--profile", action="store_true", help="also profile guardproxy")
    parser.add_argument(
        "--sqlite-synchronous",
        choices=("normal", "full"),
        default="normal",
        help="guardproxy's SQLite store: normal (the default) or full (a disk sync per change)",
    )
    parser.add_argument(
        "--profile-scenario",
        choices=("guardproxy", "mitmproxy"),
        default="guardproxy",
        help="which proxy --profile samples (py-spy only): plain mitmproxy for a side-by-side",
    )
    parser.add_argument(
        "--profile-output",
        type=Path,
        metavar="FILE",
        help="keep py-spy's raw collapsed stacks in FILE (for flame graphs)",
    )
    parser.add_argument("--profile-workload", choices=WORKLOAD_NAMES, default="aws-write",
                        help="the workload --profile samples (default aws-write)")  # fmt: skip
    parser.add_argument("--py-spy", metavar="PATH", help="py-spy binary for --profile")
    parser.add_argument("--serve-upstream", nargs=3, metavar=("SECONDS", "CERT", "KEY"),
                        help=argparse.SUPPRESS)  # fmt: skip
    args = parser.parse_args(argv)
    args.workload = args.workload or list(WORKLOAD_NAMES)
    if args.requests < 1 or args.passes < 1 or args.warmup < 0:
        parser.error("--requests and --passes must be positive, --warmup not negative")
    if not 1 <= args.blocks <= args.requests:
        parser.error("--blocks must be between 1 and --requests")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_upstream is not None:
        lifetime, cert, key = args.serve_upstream
        asyncio.run(_serve_upstream(float(lifetime), cert, key))
        return 0
    try:
        result = run(args)
    except BenchError as error:
        print(f"proxy_bench: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
