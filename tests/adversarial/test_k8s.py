"""Kubernetes requests the old reader let through: end to end through the real proxy.

The upstream is the e2e fake API server over mutual TLS (``tests/e2e/kube.py``); the
guard presents the kube-admin client certificate for it, as ``guardproxy run`` sets up
for kubectl. Each request is sent byte for byte (``http.client`` through a CONNECT
tunnel, so no client cleans the path) through a guard with the shipped policies, and
must be held or denied without ever reaching the API server. A few requests that must
pass (real dry runs, a read) show the upstream log works.

What the old reader got wrong, each against kube-apiserver's own behaviour:

* delete options came from the query even when a body was sent; the API server reads
  the body then and ignores the query (``handlers/delete.go``), so ``?dryRun=All``
  beside any ``DeleteOptions`` body is a real delete;
* the path was read raw; the API server routes on the decoded path, so ``%65xec`` and
  ``api-0%2Fexec`` open a shell, and ``..`` / ``%2e%2e`` / ``%2F..%2F`` segments mean
  another namespace to any proxy that cleans them;
* ``gracePeriodSeconds`` was compared to ``"0"`` as a string (``00``, ``+0`` are 0 to
  ``strconv.ParseInt``), and an options body with a byte that is not UTF-8 was not read
  at all (Go's decoder takes it);
* an eviction's own ``deleteOptions`` were not read;
* YAML was read by PyYAML's rules, not go-yaml v2's: ``0e0`` is a number, only the first
  document counts, a ``<<`` merge overrides the keys before it;
* a JSON patch was read up to its first operation on ``/spec/replicas``, not applied;
* a repeated key in a typed object merges in Go (the first ``spec`` keeps its
  ``replicas``), where Python kept only the last;
* emptying ``metadata.finalizers`` (forcing a stuck deletion through) was not seen.
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from e2e.guard_fixtures import Guard, guard_starter
from e2e.kube import KubeApiServer, KubeStore, _seed
from e2e.pki import ThrowawayPki

from guardproxy.action import Action, Confidence, Environment, Verb
from guardproxy.intercept.proxy import CA_CERT
from guardproxy.recognise import HttpRequest, RecogniseSettings, recognise

pytestmark = pytest.mark.slow

JSON = "application/json"
YAML = "application/yaml"
PROTOBUF = "application/vnd.kubernetes.protobuf"
APPLY = "application/apply-patch+yaml"
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
DEPLOYMENT = "/apis/apps/v1/namespaces/prod/deployments/web"
OPTIONS = b'{"kind":"DeleteOptions","apiVersion":"v1","propagationPolicy":"Background"}'


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def pb_bytes(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def pb_varint(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def protobuf_delete_options(grace: int | None = None) -> bytes:
    """``k8s\\x00`` + runtime.Unknown{typeMeta: meta.k8s.io/v1 DeleteOptions, raw}."""
    raw = pb_bytes(4, b"Background") + (pb_varint(1, grace) if grace is not None else b"")
    type_meta = pb_bytes(1, b"meta.k8s.io/v1") + pb_bytes(2, b"DeleteOptions")
    return b"k8s\x00" + pb_bytes(1, type_meta) + pb_bytes(2, raw)


@dataclass(frozen=True)
class Case:
    method: str
    target: str
    body: bytes = b""
    content_type: str = JSON


def case(method: str, target: str, body: Any = b"", content_type: str = JSON) -> Case:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Case(method, target, raw, content_type)


BYPASSES = {
    # delete options: the body's, never the query's, when a body is sent
    "dry-run-query-empty-body-object": case("DELETE", "/api/v1/namespaces/prod?dryRun=All", b"{}"),
    "dry-run-query-delete-options": case("DELETE", "/api/v1/namespaces/prod?dryRun=All", OPTIONS),
    "dry-run-query-yaml-options": case(
        "DELETE", "/api/v1/namespaces/prod?dryRun=All", b"kind: DeleteOptions\n", YAML
    ),
    "dry-run-query-protobuf-options": case(
        "DELETE", "/api/v1/namespaces/prod?dryRun=All", protobuf_delete_options(), PROTOBUF
    ),
    "deletecollection-dry-run-query-with-body": case(
        "DELETE", "/api/v1/namespaces/prod/pods?dryRun=All", b"{}"
    ),
    # the decoded path, and what a cleaning proxy makes of dot segments
    "dot-segments": case("DELETE", "/api/v1/namespaces/dev/../prod"),
    "escaped-dot-segments": case("DELETE", "/api/v1/namespaces/dev/%2e%2e/prod"),
    "escaped-slashes-and-dots": case(
        "DELETE", "/api/v1/namespaces/dev/configmaps/x%2F..%2F..%2F..%2Fprod"
    ),
    "escaped-exec": case("GET", "/api/v1/namespaces/prod/pods/api-0/%65xec?command=sh"),
    "escaped-slash-exec": case("GET", "/api/v1/namespaces/prod/pods/api-0%2Fexec?command=sh"),
    # integers as strconv.ParseInt reads them, bodies as Go's decoder reads them
    "grace-period-00": case("DELETE", "/api/v1/namespaces/prod/pods/api-0?gracePeriodSeconds=00"),
    "grace-period-plus-0": case(
        "DELETE", "/api/v1/namespaces/prod/pods/api-0?gracePeriodSeconds=%2B0"
    ),
    "grace-period-body-not-utf8": case(
        "DELETE", "/api/v1/namespaces/prod/pods/api-0", b'{"gracePeriodSeconds":0,"x":"\xff"}'
    ),
    "eviction-grace-period-0": case(
        "POST",
        "/api/v1/namespaces/prod/pods/api-0/eviction",
        {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": "api-0", "namespace": "prod"},
            "deleteOptions": {"gracePeriodSeconds": 0},
        },
    ),
    # YAML by go-yaml v2's rules
    "yaml-float-zero": case("PATCH", DEPLOYMENT, b"spec: {replicas: 0e0}\n", APPLY),
    "yaml-first-document": case(
        "PATCH", DEPLOYMENT, b"spec: {replicas: 0}\n---\nspec: {replicas: 3}\n", APPLY
    ),
    "yaml-merge-after-key": case(
        "PATCH", DEPLOYMENT, b"spec:\n  replicas: 3\n  <<: {replicas: 0}\n", APPLY
    ),
    # patches applied, not scanned
    "json-patch-later-operation": case(
        "PATCH",
        DEPLOYMENT,
        [
            {"op": "replace", "path": "/spec/replicas", "value": 3},
            {"op": "replace", "path": "/spec/replicas", "value": 0},
        ],
        JSON_PATCH,
    ),
    "json-patch-parent": case(
        "PATCH", DEPLOYMENT, [{"op": "add", "path": "/spec", "value": {"replicas": 0}}], JSON_PATCH
    ),
    "duplicate-key-merges-into-typed-object": case(
        "PUT",
        DEPLOYMENT,
        b'{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web"},'
        b'"spec":{"replicas":0},"spec":{"paused":false}}',
    ),
    "finalizers-removed": case(
        "PATCH",
        "/api/v1/namespaces/prod/persistentvolumeclaims/data",
        {"metadata": {"finalizers": None}},
        MERGE_PATCH,
    ),
}

FORWARDED = {
    "dry-run-in-query-without-body": case("DELETE", "/api/v1/namespaces/prod?dryRun=All"),
    "dry-run-in-body": case(
        "DELETE", "/api/v1/namespaces/prod?dryRun=All", {"kind": "DeleteOptions", "dryRun": ["All"]}
    ),
    "read": case("GET", "/api/v1/namespaces/prod/pods/api-0"),
}


# ------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def kube(pki: ThrowawayPki) -> Iterator[KubeApiServer]:
    with KubeApiServer(pki) as server:
        yield server
        assert not server.handler_errors, server.handler_errors


@pytest.fixture(scope="module")
def guard(
    kube: KubeApiServer, pki: ThrowawayPki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Guard]:
    """One guard for the module: shipped policies, the fake API server as a Kubernetes
    host, its CA trusted and the kube-admin certificate presented upstream."""
    root = Path(tmp_path_factory.mktemp("guard"))
    certs = root / "guardproxy-0" / "client-certs"  # the data directory start() picks
    certs.mkdir(parents=True)
    (certs / "127.0.0.1.pem").write_bytes(pki.client.cert_pem + pki.client.key_pem)
    ca_file = root / "kube-ca.pem"
    ca_file.write_bytes(pki.ca.cert_pem)
    starter = guard_starter(root)
    start = next(starter)
    try:
        yield start(
            hold_window_seconds=0.5,
            kubernetes_hosts=[f"127.0.0.1:{kube.port}"],
            upstream_ca_files=[ca_file],
        )
    finally:
        next(starter, None)  # guard_starter's teardown: every guard stopped


@pytest.fixture
def fresh(kube: KubeApiServer) -> KubeApiServer:
    """The module's API server with its seed state back and its log empty, so a request
    that got through in one test cannot change what the next one sees."""
    kube.store = KubeStore()
    _seed(kube.store)
    kube.log.clear()
    return kube


@dataclass(frozen=True)
class Answer:
    status: int
    decision: str
    body: bytes


def send(guard: Guard, kube: KubeApiServer, sent: Case) -> Answer:
    """``sent`` through the guard in a session of its own (so no earlier request counts
    against it), the target exactly as written (http.client keeps it)."""
    proxy = urlsplit(guard.session().proxy_url)
    credentials = f"{unquote(proxy.username or '')}:{unquote(proxy.password or '')}"
    authorization = "Basic " + base64.b64encode(credentials.encode()).decode()
    context = ssl.create_default_context(cafile=str(guard.config.ca_dir / CA_CERT))
    connection = http.client.HTTPSConnection(
        "127.0.0.1", guard.proxy_port, context=context, timeout=30
    )
    connection.set_tunnel("127.0.0.1", kube.port, headers={"Proxy-Authorization": authorization})
    try:
        headers = {"Content-Type": sent.content_type, "User-Agent": "adversarial/1"}
        connection.request(sent.method, sent.target, body=sent.body or None, headers=headers)
        response = connection.getresponse()
        return Answer(
            response.status, response.getheader("X-Guardproxy-Decision") or "", response.read()
        )
    finally:
        connection.close()


def arrived(kube: KubeApiServer, sent: Case) -> list[str]:
    return [f"{r.method} {r.target}" for r in kube.requests if r.method == sent.method]


# ---------------------------------------------------------------------- end to end


@pytest.mark.parametrize("name", sorted(BYPASSES))
def test_a_bypass_is_refused_and_never_reaches_the_api_server(
    name: str, guard: Guard, fresh: KubeApiServer
) -> None:
    sent, kube = BYPASSES[name], fresh
    answer = send(guard, kube, sent)
    assert answer.status == 403, (answer, sent)
    assert answer.decision in ("hold", "deny"), answer
    assert arrived(kube, sent) == []
    assert {"prod", "dev"} <= set(kube.namespaces())
    assert set(kube.pods("prod")) == {"api-0", "api-1"}


@pytest.mark.parametrize("name", sorted(FORWARDED))
def test_real_dry_runs_and_reads_are_forwarded(
    name: str, guard: Guard, fresh: KubeApiServer
) -> None:
    sent, kube = FORWARDED[name], fresh
    answer = send(guard, kube, sent)
    assert answer.decision == "allow" or answer.status == 200, answer
    assert len(arrived(kube, sent)) == 1
    assert "prod" in kube.namespaces()


def test_the_held_namespace_delete_names_the_namespace_rule(
    guard: Guard, fresh: KubeApiServer
) -> None:
    sent = BYPASSES["dry-run-query-empty-body-object"]
    answer = send(guard, fresh, sent)
    assert answer.decision == "hold"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        held = [d for d in guard.decisions() if d.outcome == "hold" and d.resource_name == "prod"]
        if held:
            break
        time.sleep(0.1)
    assert held and "k8s/hold-prod-namespace-delete" in held[-1].rules


# ------------------------------------------------------------- the recogniser alone

SETTINGS = RecogniseSettings(kubernetes_hosts=("127.0.0.1:6443",))


def read(sent: Case, **headers: str) -> Action:
    extra = [(name.replace("_", "-"), value) for name, value in headers.items()]
    pairs = (("content-type", sent.content_type), *extra)
    request = HttpRequest(sent.method, "https", "127.0.0.1", 6443, sent.target, pairs, sent.body)
    return recognise(request, SETTINGS)


def every_reading(action: Action) -> list[Action]:
    return action.all_readings()


@pytest.mark.parametrize(
    ("name", "verb", "dry_run", "tag"),
    [
        ("dry-run-query-empty-body-object", Verb.DESTROY, False, ""),
        ("dry-run-query-delete-options", Verb.DESTROY, False, ""),
        ("dry-run-query-yaml-options", Verb.DESTROY, False, ""),
        ("dry-run-query-protobuf-options", Verb.DESTROY, False, ""),
        ("deletecollection-dry-run-query-with-body", Verb.DESTROY, False, "bulk"),
        ("escaped-exec", Verb.EXECUTE, False, ""),
        ("escaped-slash-exec", Verb.EXECUTE, False, ""),
        ("grace-period-00", Verb.DELETE, False, "force"),
        ("grace-period-plus-0", Verb.DELETE, False, "force"),
        ("grace-period-body-not-utf8", Verb.DELETE, False, "force"),
        ("eviction-grace-period-0", Verb.DELETE, False, "force"),
        ("yaml-float-zero", Verb.UPDATE, False, "scale-to-zero"),
        ("yaml-first-document", Verb.UPDATE, False, "scale-to-zero"),
        ("yaml-merge-after-key", Verb.UPDATE, False, "scale-to-zero"),
        ("json-patch-later-operation", Verb.UPDATE, False, "scale-to-zero"),
        ("json-patch-parent", Verb.UPDATE, False, "scale-to-zero"),
        ("duplicate-key-merges-into-typed-object", Verb.UPDATE, False, "scale-to-zero"),
        ("finalizers-removed", Verb.UPDATE, False, "force"),
    ],
)
def test_the_recogniser_reads_each_bypass_as_the_api_server(
    name: str, verb: Verb, dry_run: bool, tag: str
) -> None:
    action = read(BYPASSES[name])
    assert (action.verb, action.dry_run) == (verb, dry_run)
    assert action.environment is Environment.PROD
    if tag:
        assert tag in action.risk_tags


@pytest.mark.parametrize(
    "name", ["dot-segments", "escaped-dot-segments", "escaped-slashes-and-dots"]
)
def test_dot_segments_are_read_literally_and_as_a_cleaning_proxy_would(name: str) -> None:
    action = read(BYPASSES[name])
    # the cleaned path deletes namespace prod: the most dangerous reading comes first
    assert (action.verb, action.resource.type, action.resource.name) == (
        Verb.DESTROY,
        "k8s:core:namespaces",
        "prod",
    )
    assert action.confidence is Confidence.AMBIGUOUS
    assert "ambiguous:path-normalisation" in action.risk_tags
    # the API server's own reading: something in namespace dev, which it cannot route
    literal = [r for r in action.readings if r.scope.namespace == "dev"]
    assert literal and all(r.verb is Verb.DELETE for r in literal)


def test_query_dry_run_applies_without_a_body_and_body_dry_run_with_one() -> None:
    assert read(FORWARDED["dry-run-in-query-without-body"]).dry_run
    assert read(FORWARDED["dry-run-in-body"]).dry_run
    body_only = case("DELETE", "/api/v1/namespaces/prod", {"dryRun": ["All"]})
    assert read(body_only).dry_run
    # every dryRun value must be All, or the API server refuses the request
    for target in ("?dryRun=", "?dryRun=All&dryRun=", "?dryRun=all", "?dryRun=All;"):
        assert not read(case("DELETE", "/api/v1/namespaces/prod" + target)).dry_run, target
    assert read(case("DELETE", "/api/v1/namespaces/prod?dryRun=All&dryRun=All")).dry_run


def test_a_method_override_is_a_further_reading() -> None:
    """kube-apiserver ignores X-HTTP-Method-Override; a gateway in front may not."""
    action = read(case("GET", "/api/v1/namespaces/prod"), x_http_method_override="DELETE")
    assert [r.verb for r in every_reading(action)] == [Verb.DESTROY, Verb.READ]
    assert "ambiguous:method-override" in action.risk_tags


def test_an_unparseable_target_is_unknown() -> None:
    """A bad % escape: url.ParseRequestURI fails and the API server answers 400."""
    action = read(case("GET", "/api/v1/namespaces/pr%zz"))
    assert (action.verb, action.confidence) == (Verb.UNKNOWN, Confidence.UNKNOWN)


def test_an_unreadable_body_makes_the_reading_unknown() -> None:
    for sent in (
        case("DELETE", "/api/v1/namespaces/dev/pods/x", b"{not json"),
        case("PATCH", "/api/v1/namespaces/dev/pods/x", b"{}", "application/x-unknown-patch"),
        case("PATCH", "/api/v1/namespaces/dev/pods/x", b"[[[", APPLY),
        case("POST", "/api/v1/namespaces/dev/pods", b"k8s\x00\x0b", PROTOBUF),
    ):
        assert read(sent).verb is Verb.UNKNOWN, sent
