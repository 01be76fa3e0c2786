"""Kubernetes readings, property and differential tests (hypothesis).

* **Differential, against Go itself**: generated request targets (escapes of every
  kind, ``%2F``, dot and empty segments, ``;`` and bad escapes in the query) go through
  a small Go program using ``net/url`` exactly as kube-apiserver does
  (``k8s_go_oracle/main.go``); the decoded path, its segments and the query values must
  equal what the recogniser's port reads. Go comes from Debian's ``golang-go``
  (``.ci/run`` installs it); without it the test skips unless
  ``GUARDPROXY_REQUIRE_GO=1``.
* **Differential, path against action**: a target's reading on the path Go decodes
  (an independent oracle written here from url.go) must be the same action as that of
  the plainly escaped decoded path, and dot or empty segments must add the cleaned
  path's reading.
* **Round trip**: each reading of a generated request, written back canonically
  (path segments escaped, the option values it used, a JSON body with its facts), is
  read again as the same action.
* **Ambiguity**: a repeated body key or a repeated option with different values always
  makes the action ambiguous.

``GUARDPROXY_HYPOTHESIS_EXAMPLES`` raises the number of examples (a few seconds by default).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guardproxy.action import Action, Confidence, Verb
from guardproxy.recognise import HttpRequest, RecogniseSettings, recognise
from guardproxy.recognise.providers.k8s.body import Purpose
from guardproxy.recognise.providers.k8s.recogniser import Reading, request_readings
from guardproxy.recognise.providers.k8s.url import GoUrlError, parse_query, parse_target, split_path

EXAMPLES = int(os.environ.get("GUARDPROXY_HYPOTHESIS_EXAMPLES", "150"))
HOST, PORT = "k8s.internal", 6443
SETTINGS = RecogniseSettings(kubernetes_hosts=(f"{HOST}:{PORT}",))
ORACLE = Path(__file__).with_name("k8s_go_oracle") / "main.go"
CASE = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------------- generation

WORDS = [
    "api", "apis", "v1", "apps", "namespaces", "prod", "dev", "sandbox", "pods", "deployments",
    "configmaps", "persistentvolumeclaims", "exec", "attach", "scale", "eviction", "finalize",
    "status", "watch", "proxy", "web", "api-0", "..", ".", "", "rbac.authorization.k8s.io",
]  # fmt: skip
PCHARS = "abcdefghijklmnopqrstuvwxyzAZ0129-._~!$&'()*+,;=:@"


@st.composite
def escaped(draw: st.DrawFn, text: str, extra: str = "") -> str:
    """``text`` with some characters percent-escaped (either hex case), some ``/``
    written as ``%2F``."""
    out = []
    for char in text:
        if char.isascii() and char.isalnum() and draw(st.integers(0, 5)) != 0:
            out.append(char)
            continue
        if char in PCHARS + extra and draw(st.booleans()):
            out.append(char)
            continue
        hexed = "".join(f"%{b:02X}" for b in char.encode())
        out.append(hexed.lower() if draw(st.booleans()) else hexed)
    return "".join(out)


segment_text = st.one_of(
    st.sampled_from(WORDS),
    st.text(alphabet=PCHARS + "/é", max_size=6),
)


@st.composite
def raw_paths(draw: st.DrawFn) -> str:
    segments = draw(st.lists(segment_text, min_size=0, max_size=8))
    path = "/" + "/".join(draw(escaped(s)) for s in segments)
    if draw(st.integers(0, 9)) == 0:
        path = "/" + path
    if draw(st.integers(0, 9)) == 0:
        path += "/"
    if draw(st.integers(0, 14)) == 0:
        path += draw(st.sampled_from(["%zz", "%4", "%", "%G0"]))
    return path


OPTION_KEYS = ["dryRun", "gracePeriodSeconds", "watch", "fieldSelector", "command", "x"]
OPTION_VALUES = ["All", "", "0", "00", "+0", "30", "-1", "true", "false", "FALSE",
                 "metadata.name=web", "metadata.name==api-0,a=b", "all", "1"]  # fmt: skip


@st.composite
def raw_queries(draw: st.DrawFn) -> str:
    pairs = draw(
        st.lists(st.tuples(st.sampled_from(OPTION_KEYS), st.sampled_from(OPTION_VALUES)),
                 max_size=5)
    )  # fmt: skip
    parts = [f"{draw(escaped(k))}={draw(escaped(v, '=,'))}" for k, v in pairs]
    if draw(st.integers(0, 9)) == 0:
        parts.append(draw(st.sampled_from(["dryRun=All;x=1", "a=%zz", "=x", "k", "", "#f"])))
    return "&".join(parts)


@st.composite
def targets(draw: st.DrawFn) -> str:
    query = draw(raw_queries())
    return draw(raw_paths()) + (f"?{query}" if query or draw(st.booleans()) else "")


# ----------------------------------------------------------------- the Go oracle


@pytest.fixture(scope="module")
def go_oracle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    go = shutil.which("go")
    if go is None:
        if os.environ.get("GUARDPROXY_REQUIRE_GO") == "1":
            pytest.fail("go is not installed (apt-get install golang-go)")
        pytest.skip("go is not installed (apt-get install golang-go)")
    work = tmp_path_factory.mktemp("go-oracle")
    binary = work / "oracle"
    env = {
        **os.environ,
        "GOCACHE": str(work / "cache"),
        "GOPATH": str(work / "gopath"),
        "GOPROXY": "off",
        "GOFLAGS": "",
        "GO111MODULE": "off",
    }
    subprocess.run(
        [go, "build", "-o", str(binary), str(ORACLE)],
        env=env, check=True, timeout=120, capture_output=True,
    )  # fmt: skip
    return binary


def run_oracle(binary: Path, raw_targets: list[str]) -> Iterator[dict[str, Any]]:
    lines = "".join(t.encode("utf-8", "surrogateescape").hex() + "\n" for t in raw_targets)
    done = subprocess.run(
        [str(binary)], input=lines, capture_output=True, text=True, check=True, timeout=60
    )
    for line in done.stdout.splitlines():
        yield json.loads(line)


def text(hexed: str) -> str:
    return bytes.fromhex(hexed).decode("utf-8", "replace")


@settings(
    max_examples=max(5, EXAMPLES // 10), deadline=None, suppress_health_check=list(HealthCheck)
)
@given(st.lists(targets(), min_size=20, max_size=30))
def test_the_target_is_read_as_go_net_url_reads_it(go_oracle: Path, batch: list[str]) -> None:
    for raw, expected in zip(batch, run_oracle(go_oracle, batch), strict=True):
        try:
            target = parse_target(raw)
        except GoUrlError:
            assert "error" in expected, (raw, expected)
            continue
        assert "error" not in expected, (raw, expected)
        assert target.path == text(expected["path"]), raw
        assert split_path(target.path) == [text(p) for p in expected["parts"]], raw
        query = {text(k): [text(v) for v in vs] for k, vs in expected["query"].items()}
        assert parse_query(target.raw_query) == query, raw


# -------------------------------------------------- path reading against the action


def go_path_oracle(raw_path: str) -> str | None:
    """url.go ``unescape(s, encodePath)`` written again: every % must lead two hex
    digits; each %XX is that byte; nothing else changes (``+`` stays)."""
    data = raw_path.encode("utf-8", "surrogateescape")
    if re.search(rb"%(?![0-9A-Fa-f]{2})", data):
        return None
    decoded = re.sub(rb"%([0-9A-Fa-f]{2})", lambda m: bytes([int(m.group(1), 16)]), data)
    return decoded.decode("utf-8", "replace")


def go_clean_oracle(path: str) -> str:
    """path.Clean for a rooted path (posixpath.normpath keeps a leading ``//``)."""
    stack: list[str] = []
    for element in path.split("/"):
        if element == "..":
            if stack:
                stack.pop()
        elif element not in ("", "."):
            stack.append(element)
    return "/" + "/".join(stack)


def plainly(path: str) -> str:
    """The decoded path written with every segment escaped, nothing left to decode twice."""
    return "/".join(quote(segment, safe="") for segment in path.split("/"))


def comparable(action: Action) -> dict[str, Any]:
    """An action without what differs between two spellings of one reading: the raw
    request summary, ambiguity marks and further readings."""
    dumped = action.model_dump(mode="json", exclude={"request", "readings", "confidence"})
    dumped["risk_tags"] = [t for t in dumped["risk_tags"] if not t.startswith("ambiguous:")]
    return dumped


def readings_on(request: HttpRequest, path: str) -> list[dict[str, Any]]:
    found, _ = request_readings(request)
    return [comparable(action) for reading, action in found if reading.path == path]


def k8s_request(
    method: str, target: str, body: bytes = b"", headers: tuple[tuple[str, str], ...] = ()
) -> HttpRequest:
    return HttpRequest(method, "https", HOST, PORT, target, headers, body)


@CASE
@given(st.sampled_from(["GET", "DELETE", "POST", "PATCH", "PUT"]), raw_paths())
def test_the_reading_on_the_decoded_path_is_that_of_the_plain_path(
    method: str, raw_path: str
) -> None:
    request = k8s_request(method, raw_path)
    decoded = go_path_oracle(raw_path)
    if decoded is None:  # url.ParseRequestURI fails: the API server answers 400
        assert request_readings(request)[0] == []
        action = recognise(request, SETTINGS)
        assert (action.verb, action.confidence) == (Verb.UNKNOWN, Confidence.UNKNOWN)
        return
    literal = readings_on(request, decoded)
    assert literal, (raw_path, decoded)
    assert literal == readings_on(k8s_request(method, plainly(decoded)), decoded)
    found, why = request_readings(request)
    if "//" in decoded or re.search(r"(^|/)\.\.?(/|$)", decoded):
        cleaned = go_clean_oracle(decoded)
        actions = [comparable(a) for _, a in found]
        assert all(a in actions for a in readings_on(k8s_request(method, cleaned), cleaned))
        assert "path-normalisation" in why
    action = recognise(request, SETTINGS)
    severity = [Verb.READ, Verb.UNKNOWN, Verb.CREATE, Verb.UPDATE, Verb.EXECUTE,
                Verb.PERMISSION, Verb.DELETE, Verb.DESTROY]  # fmt: skip
    assert all(severity.index(action.verb) >= severity.index(r.verb) for r in action.all_readings())


# --------------------------------------------------------------------- round trip

SCALAR = {"watch", "fieldSelector", "gracePeriodSeconds",
          "ignoreStoreReadErrorWithClusterBreakingPotential"}  # fmt: skip


def json_body(reading: Reading) -> tuple[bytes, str]:
    """The reading's facts as a canonical JSON body of its purpose."""
    facts = reading.facts
    if reading.unreadable:
        return b"{", "application/json"
    delete_options: dict[str, Any] = {}
    if facts.grace_period is not None:
        delete_options["gracePeriodSeconds"] = facts.grace_period
    if facts.dry_run:
        delete_options["dryRun"] = ["All"]
    if facts.unsafe_delete:
        delete_options["ignoreStoreReadErrorWithClusterBreakingPotential"] = True
    if reading.purpose is Purpose.DELETE_OPTIONS:
        return json.dumps(delete_options).encode(), "application/json"
    doc: dict[str, Any] = {}
    meta: dict[str, Any] = {}
    if facts.name:
        meta["name"] = facts.name
    if facts.namespace:
        meta["namespace"] = facts.namespace
    if facts.finalizers_removed:
        meta["finalizers"] = None
    if meta:
        doc["metadata"] = meta
    if facts.replicas is not None:
        doc["spec"] = {"replicas": facts.replicas}
    if reading.purpose is Purpose.PATCH:
        return json.dumps(doc).encode(), "application/merge-patch+json"
    if delete_options:
        doc["deleteOptions"] = delete_options
    return json.dumps(doc).encode(), "application/json"


def written_back(reading: Reading) -> HttpRequest:
    """The reading as one unambiguous request: escaped segments, one value for each
    scalar option (the one the reading used), every dryRun value, a canonical body."""
    pairs = []
    for key, values in reading.query.items():
        for value in values[:1] if key in SCALAR else values:
            pairs.append(f"{quote(key, safe='')}={quote(value, safe='')}")
    target = plainly(reading.path) + ("?" + "&".join(pairs) if pairs else "")
    if reading.purpose is None or not reading.body:
        return k8s_request(reading.method, target)
    body, content_type = json_body(reading)
    return k8s_request(reading.method, target, body, (("content-type", content_type),))


DOCUMENTS = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2, 5), st.sampled_from(
        ["All", "web", "prod", "0", ""]), st.just(0.0)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(
            ["metadata", "name", "namespace", "spec", "replicas", "dryRun", "finalizers",
             "gracePeriodSeconds", "deleteOptions", "op", "path", "value", "from"]),
            inner, max_size=4),
    ),
    max_leaves=12,
)  # fmt: skip
PATCH_OPS: st.SearchStrategy[list[dict[str, Any]]] = st.lists(
    st.fixed_dictionaries(
        {
            "op": st.sampled_from(["add", "replace", "remove", "copy", "move", "test"]),
            "path": st.sampled_from(
                ["/spec/replicas", "/spec", "/metadata/finalizers", "/metadata/finalizers/0",
                 "/status/replicas", "/metadata/finalizers/-"]),
            "value": st.one_of(st.integers(0, 3), st.none(), st.just([]), st.just({"replicas": 0})),
            "from": st.sampled_from(["/status/replicas", "/spec", "/spec/replicas"]),
        }
    ),
    max_size=4,
)  # fmt: skip
CONTENT_TYPES = ["application/json", "application/yaml", "application/merge-patch+json",
                 "application/strategic-merge-patch+json", "application/json-patch+json",
                 "application/apply-patch+yaml", "text/plain", ""]  # fmt: skip


@st.composite
def requests(draw: st.DrawFn) -> HttpRequest:
    method = draw(st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE"]))
    path = draw(st.sampled_from([
        "/api/v1/namespaces/prod", "/api/v1/namespaces/dev/pods", "/api/v1/namespaces",
        "/api/v1/namespaces/prod/pods/api-0", "/api/v1/namespaces/prod/pods/api-0/eviction",
        "/apis/apps/v1/namespaces/prod/deployments/web",
        "/apis/apps/v1/namespaces/prod/deployments/web/scale",
        "/api/v1/namespaces/stuck/finalize", "/api/v1/namespaces/prod/pods/api-0/exec",
        "/api/v1/namespaces/dev/../prod", "/apis/apps/v1/namespaces/prod/deployments",
    ]))  # fmt: skip
    target = draw(escaped(path, "/")) + "?" + draw(raw_queries())
    headers = []
    content_type = draw(st.sampled_from(CONTENT_TYPES))
    if content_type:
        headers.append(("content-type", content_type))
    if draw(st.integers(0, 9)) == 0:
        headers.append(("x-http-method-override", draw(st.sampled_from(["DELETE", "get"]))))
    shape = draw(st.integers(0, 3))
    body: bytes
    if shape == 0:
        body = b""
    elif shape == 1:
        body = json.dumps(draw(PATCH_OPS)).encode()
    elif content_type.endswith("yaml") and draw(st.booleans()):
        body = json.dumps(draw(DOCUMENTS)).encode()  # JSON is YAML
    else:
        body = json.dumps(draw(DOCUMENTS)).encode()
    return k8s_request(method, target, body, tuple(headers))


@CASE
@given(requests())
def test_each_reading_written_back_is_read_as_the_same_action(request: HttpRequest) -> None:
    found, _ = request_readings(request)
    for reading, action in found:
        again = written_back(reading)
        expected = comparable(action)
        assert expected in readings_on(again, reading.path), (reading, again)
        if not re.search(r"//|(^|/)\.\.?(/|$)", reading.path):
            reread, why = request_readings(again)
            assert not why and len(reread) == 1, (reading, again, why)
            assert comparable(reread[0][1]) == expected


# ---------------------------------------------------------------------- ambiguity

READ_KEYS = ["metadata", "name", "spec", "replicas", "dryRun", "gracePeriodSeconds"]


@st.composite
def duplicated(draw: st.DrawFn) -> bytes:
    """A JSON object text with one of the keys the recogniser reads given twice."""
    key = draw(st.sampled_from(READ_KEYS))
    first = json.dumps(draw(DOCUMENTS))
    second = json.dumps(draw(DOCUMENTS))
    inner = f'{{"{key}": {first}, "{key}": {second}}}'
    text = draw(st.sampled_from([inner, f'{{"metadata": {inner}}}', f'{{"spec": {inner}}}']))
    return text.encode()


@CASE
@given(
    st.sampled_from([
        ("DELETE", "/api/v1/namespaces/prod", "application/json"),
        ("PUT", "/apis/apps/v1/namespaces/prod/deployments/web", "application/json"),
        ("POST", "/api/v1/namespaces", "application/json"),
        ("PATCH", "/apis/apps/v1/namespaces/prod/deployments/web", "application/merge-patch+json"),
        ("PATCH", "/apis/apps/v1/namespaces/prod/deployments/web", "application/apply-patch+yaml"),
    ]),
    duplicated(),
)  # fmt: skip
def test_a_repeated_body_key_makes_the_action_ambiguous(
    where: tuple[str, str, str], body: bytes
) -> None:
    method, path, content_type = where
    action = recognise(k8s_request(method, path, body, (("content-type", content_type),)), SETTINGS)
    assert action.confidence is Confidence.AMBIGUOUS
    assert "ambiguous:duplicate-key" in action.risk_tags


@CASE
@given(
    st.sampled_from(["gracePeriodSeconds", "watch", "fieldSelector"]),
    st.lists(st.sampled_from(OPTION_VALUES), min_size=2, max_size=4, unique=True),
    st.sampled_from(["/api/v1/namespaces/prod/pods/api-0", "/api/v1/namespaces/prod/pods"]),
)
def test_a_repeated_option_with_different_values_makes_the_action_ambiguous(
    key: str, values: list[str], path: str
) -> None:
    target = path + "?" + "&".join(f"{key}={quote(v, safe='')}" for v in values)
    for method in ("GET", "DELETE"):
        action = recognise(k8s_request(method, target), SETTINGS)
        assert action.confidence is Confidence.AMBIGUOUS, target
        assert "ambiguous:repeated-parameter" in action.risk_tags
