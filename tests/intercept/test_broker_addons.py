"""BrokerAuth and BrokerSign in mitmproxy's own test style (tests/intercept/test_addons.py's
harness): flows read by mitmproxy's parser, hooks fired in the chain's order.

The order is the point: BrokerAuth before the decision (a bad session credential is
answered there), BrokerSign after it (a request the decision answered, a hold or a
denial, is never authenticated for real; one let through is, and only then).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from mitmproxy import connection, http, tls
from mitmproxy.proxy import context
from mitmproxy.test import tflow
from OpenSSL import SSL

from guardproxy.broker import Broker, BrokersConfig, CredentialError, Grant, Rewrite
from guardproxy.broker.session_keys import SessionKeys
from guardproxy.context import SessionInfo
from guardproxy.intercept.broker import GRANT, BrokerAuth, BrokerSign
from guardproxy.intercept.failsafe import request_hook
from guardproxy.intercept.flows import SESSION

from .test_addons import FAILSAFE, SETTINGS, Proxy, flow_of

KEY = b"k" * 32
REAL = "ghp_REALgithubToken000000000000000000000000"
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.fixture
def proxy() -> Iterator[Callable[..., Proxy]]:
    made: list[Proxy] = []

    def make(*addons: object) -> Proxy:
        made.append(Proxy(*addons))
        return made[-1]

    yield make
    for each in made:
        each.close()


class Decision:
    """Stands where Guard stands: answers (a hold, a denial) or lets the request go."""

    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.failsafe = FAILSAFE
        self.seen: list[str] = []

    @request_hook
    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:  # as Guard: an answered request is not decided
            return
        self.seen.append(flow.request.headers.get("Authorization", ""))
        if self.answer:
            flow.response = http.Response.make(403, b"held", {"X-Guardproxy-Decision": "hold"})


def broker() -> Broker:
    made = Broker(BrokersConfig.model_validate({"github": {}}), KEY, {"GH_TOKEN": REAL})
    made.check()
    return made


def github_flow(session: str = "s-1", token: str | None = None) -> http.HTTPFlow:
    token = token or SessionKeys(KEY).placeholder(session, "github")
    flow = flow_of(f"GET https://api.github.com/repos/o/r HTTP/1.1\nHost: api.github.com\n"
                   f"Authorization: token {token}\n")  # fmt: skip
    flow.metadata[SESSION] = SessionInfo(id=session, anonymous=False)
    return flow


def chain(proxy: Callable[..., Proxy], decision: Decision) -> Proxy:
    clock = lambda: NOW  # noqa: E731
    return proxy(BrokerAuth(broker(), SETTINGS, clock=clock, failsafe=FAILSAFE), decision,
                 BrokerSign(SETTINGS, failsafe=FAILSAFE))  # fmt: skip


def test_a_request_let_through_is_authenticated_for_real_after_the_decision(
    proxy: Callable[..., Proxy],
) -> None:
    decision = Decision(answer=False)
    flow = github_flow()
    assert chain(proxy, decision).send(flow).forwarded
    assert decision.seen == [f"token {SessionKeys(KEY).placeholder('s-1', 'github')}"]
    assert flow.request.headers["Authorization"] == f"token {REAL}"


def test_a_held_or_denied_request_is_never_authenticated_for_real(
    proxy: Callable[..., Proxy],
) -> None:
    flow = github_flow()
    sent = chain(proxy, Decision(answer=True)).send(flow)
    assert not sent.forwarded
    assert REAL not in flow.request.headers["Authorization"]


def test_a_bad_session_credential_is_answered_before_the_decision(
    proxy: Callable[..., Proxy],
) -> None:
    decision = Decision(answer=False)
    flow = github_flow(token=SessionKeys(KEY).placeholder("s-2", "github"))  # another session's
    assert not chain(proxy, decision).send(flow).forwarded
    assert decision.seen == [], "the decision saw a request the broker had refused"
    assert flow.response is not None and flow.response.status_code == 403
    assert b"not this session's" in (flow.response.content or b"")
    assert flow.response.headers["X-Guardproxy-Id"] == "broker"


def granted(flow: http.HTTPFlow, reauthenticate: Callable[[Any], Rewrite]) -> None:
    flow.metadata[GRANT] = Grant("github", reauthenticate, lambda: False)


@pytest.mark.parametrize("failure", [CredentialError("gh failed"), RuntimeError("a bug")])
def test_a_failure_to_authenticate_for_real_refuses_the_request(
    proxy: Callable[..., Proxy], failure: Exception
) -> None:
    def fail(_: Any) -> Rewrite:
        raise failure

    flow = github_flow()
    granted(flow, fail)
    assert not proxy(BrokerSign(SETTINGS, failsafe=FAILSAFE)).send(flow).forwarded
    assert flow.response is not None and flow.response.status_code == 403


def certificate(name: str) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW.replace(year=2020)).not_valid_after(NOW.replace(year=2040))
            .sign(key, hashes.SHA256()))  # fmt: skip
    return cert.public_bytes(serialization.Encoding.PEM), key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )  # fmt: skip


def always(rewrite: Rewrite) -> Callable[[Any], Rewrite]:
    return lambda _: rewrite


def presented(sign: BrokerSign, client: connection.Client, address: tuple[str, int]) -> str:
    """The certificate BrokerSign puts on the upstream TLS connection client -> address."""
    server = connection.Server(address=address)
    data = tls.TlsData(server, context.Context(client, None))  # type: ignore[arg-type]
    data.ssl_conn = SSL.Connection(SSL.Context(SSL.TLS_CLIENT_METHOD))
    sign.tls_start_server(data)
    found = data.ssl_conn.get_certificate()
    if found is None:
        return ""
    return str(found.to_cryptography().subject.rfc4514_string())


def test_a_client_certificate_is_presented_on_that_client_s_connection_to_that_server(
    proxy: Callable[..., Proxy],
) -> None:
    sign = BrokerSign(SETTINGS, failsafe=FAILSAFE)
    driver = proxy(sign)
    first, second = object(), object()
    a, b = certificate("user-a"), certificate("user-b")
    flows = []
    for binding, pair, port in ((first, a, 6443), (second, b, 7443)):
        flow = flow_of(f"GET https://10.0.0.1:{port}/api HTTP/1.1\nHost: 10.0.0.1:{port}\n")
        rewrite = Rewrite(remove_headers=("Authorization",), client_certificate=pair)
        flow.metadata[GRANT] = Grant("kubernetes", always(rewrite), lambda: False, binding=binding)
        assert driver.send(flow).forwarded
        flows.append(flow)
    client = flows[0].client_conn
    assert presented(sign, client, ("10.0.0.1", 6443)) == "CN=user-a"
    assert presented(sign, flows[1].client_conn, ("10.0.0.1", 7443)) == "CN=user-b"
    assert presented(sign, tflow.tclient_conn(), ("10.0.0.1", 6443)) == ""  # another client
    # another user's credential on a connection that presents user-a's: refused
    other = flow_of("GET https://10.0.0.1:6443/api HTTP/1.1\nHost: 10.0.0.1:6443\n", client)
    other.metadata[GRANT] = Grant(
        "kubernetes", always(Rewrite(client_certificate=b)), lambda: False, binding=second
    )
    assert not driver.send(other).forwarded
    driver.disconnect(client)
    assert presented(sign, client, ("10.0.0.1", 6443)) == ""
