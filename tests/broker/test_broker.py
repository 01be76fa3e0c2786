"""The broker's decisions before any policy: whose credential a request carries, where a
real credential may go, what a re-authenticated request looks like (guardproxy/broker).
"""

from __future__ import annotations

import base64
import json
import os
import stat
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from guardproxy.broker import AuthError, Broker, BrokersConfig, CredentialError, Grant, LocalAnswer
from guardproxy.broker.kube import ExecPlugin
from guardproxy.broker.session_keys import SessionKeys, load_or_create_key
from guardproxy.recognise.request import HttpRequest

KEY = b"k" * 32
REAL_GITHUB = "ghp_REALgithubToken000000000000000000000000"


@pytest.fixture
def aws_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """botocore reads the guard's own environment: a user with a default and a prod profile."""
    credentials = tmp_path / "credentials"
    credentials.write_text(
        "[default]\naws_access_key_id = AKIAREALDEFAULT00001\naws_secret_access_key = "
        "REALdefaultSecret\naws_session_token = REALtoken\n[prod-admin]\naws_access_key_id = "
        "AKIAREALPROD00000001\naws_secret_access_key = REALprodSecret\n"
    )
    config = tmp_path / "config"
    config.write_text("[default]\nregion = us-east-1\n")
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return tmp_path


def make_broker(config: dict[str, object], environ: dict[str, str] | None = None) -> Broker:
    broker = Broker(BrokersConfig.model_validate(config), KEY, environ or {})
    broker.check()
    return broker


def signed(session: str, profile: str, url: str, *, broker_key: bytes = KEY) -> HttpRequest:
    key = SessionKeys(broker_key).aws(session, profile)
    aws = AWSRequest("GET", url)
    SigV4Auth(Credentials(key.access_key_id, key.secret_access_key), "ec2", "us-east-1").add_auth(
        aws
    )
    prepared = aws.prepare()
    scheme, _, rest = prepared.url.partition("://")
    host, _, path = rest.partition("/")
    headers = [("host", host), *((k.lower(), v) for k, v in prepared.headers.items())]
    name, _, port = host.partition(":")
    return HttpRequest("GET", scheme, name, int(port or 443), "/" + path, tuple(headers),
                       b"", host)  # fmt: skip


def request(url: str, *, authorization: list[str] = (), method: str = "GET",  # type: ignore[assignment]
            body: bytes = b"") -> HttpRequest:  # fmt: skip
    scheme, _, rest = url.partition("://")
    host, _, path = rest.partition("/")
    name, _, port = host.partition(":")
    headers = [("host", host)] + [("authorization", a) for a in authorization]
    return HttpRequest(method, scheme, name, int(port or (443 if scheme == "https" else 80)),
                       "/" + path, tuple(headers), body, host)  # fmt: skip


NOW = datetime.now(UTC)


def test_session_credentials_are_derived_distinct_and_shaped(tmp_path: Path) -> None:
    key = load_or_create_key(tmp_path)
    assert load_or_create_key(tmp_path) == key
    assert stat.S_IMODE((tmp_path / "broker-key").stat().st_mode) == 0o600
    keys = SessionKeys(key)
    a, b = keys.aws("s-1", "default"), keys.aws("s-2", "default")
    assert a.access_key_id.startswith("GPAK") and len(a.access_key_id) == 20
    assert len(a.secret_access_key) == 40
    assert a != b and keys.aws("s-1", "prod") != a and keys.aws("s-1", "default") == a
    token = keys.placeholder("s-1", "github")
    assert token.startswith("gpb_github_") and token != keys.placeholder("s-2", "github")


def test_an_aws_key_authenticates_its_own_session_only(aws_home: Path) -> None:
    broker = make_broker({"aws": {"profiles": {"default": "", "prod": "prod-admin"}}})
    url = "https://ec2.us-east-1.amazonaws.com/?Action=DescribeInstances&Version=2016-11-15"
    mine = signed("s-mine", "default", url)
    grant = broker.authenticate("s-mine", mine, NOW)
    assert isinstance(grant, Grant) and grant.provider == "aws"
    rewrite = grant.reauthenticate(mine)
    authorization = dict(rewrite.set_headers)["Authorization"]
    assert "Credential=AKIAREALDEFAULT00001/" in authorization
    assert dict(rewrite.set_headers)["X-Amz-Security-Token"] == "REALtoken"
    prod = broker.authenticate("s-mine", signed("s-mine", "prod", url), NOW)
    assert isinstance(prod, Grant)
    assert "AKIAREALPROD00000001" in dict(prod.reauthenticate(mine).set_headers)["Authorization"]
    for session in ("s-other", None):
        with pytest.raises(AuthError) as refused:
            broker.authenticate(session, mine, NOW)
        assert refused.value.code == "InvalidClientTokenId"
    forged = signed("s-mine", "default", url, broker_key=b"x" * 32)
    with pytest.raises(AuthError):
        broker.authenticate("s-mine", forged, NOW)


@pytest.mark.parametrize(
    "url",
    [
        "https://attacker.example/?Action=DescribeInstances",
        "http://ec2.us-east-1.amazonaws.com/?Action=DescribeInstances",  # clear text
        "https://amazonaws.com.attacker.example/?Action=X",
    ],
)
def test_a_session_signed_request_is_re_signed_for_aws_endpoints_only(
    aws_home: Path, url: str
) -> None:
    """Re-signing a request for another host would hand that host a request valid at AWS."""
    broker = make_broker({"aws": {}})
    with pytest.raises(AuthError) as refused:
        broker.authenticate("s-1", signed("s-1", "default", url), NOW)
    assert refused.value.code == "AccessDenied"


def test_a_configured_endpoint_is_re_signed_over_http_too(aws_home: Path) -> None:
    broker = make_broker({"aws": {"hosts": ["127.0.0.1:4566"]}})
    grant = broker.authenticate("s-1", signed("s-1", "default", "http://127.0.0.1:4566/?A=1"), NOW)
    assert isinstance(grant, Grant)


def test_an_unresolvable_source_names_itself(aws_home: Path) -> None:
    with pytest.raises(CredentialError, match=r"brokers\.aws\.profiles\.prod: AWS profile 'nope'"):
        make_broker({"aws": {"profiles": {"default": "", "prod": "nope"}}})
    with pytest.raises(CredentialError, match=r"brokers\.github: GitHub token from \$MY_TOKEN"):
        make_broker({"github": {"token": "env:MY_TOKEN"}})
    with pytest.raises(CredentialError, match=r"brokers\.github: .*gh is not installed"):
        make_broker({"github": {}}, {"PATH": "/nonexistent"})


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def github_broker() -> Broker:
    return make_broker({"github": {"hosts": ["github.com", "git.corp:8443"]}},
                       {"GH_TOKEN": REAL_GITHUB})  # fmt: skip


def test_github_placeholders_are_swapped_in_every_form_git_and_the_api_use() -> None:
    broker = github_broker()
    token = SessionKeys(KEY).placeholder("s-1", "github")
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    as_user = base64.b64encode(f"{token}:x-oauth-basic".encode()).decode()
    cases = {
        f"Bearer {token}": f"Bearer {REAL_GITHUB}",
        f"token {token}": f"token {REAL_GITHUB}",
        f"Basic {basic}": "Basic " + b64(f"x-access-token:{REAL_GITHUB}"),
        f"Basic {as_user}": "Basic " + b64(f"{REAL_GITHUB}:x-oauth-basic"),
    }  # fmt: skip
    for sent, expected in cases.items():
        for url in ("https://api.github.com/user", "https://github.com/o/r.git/info/refs",
                    "http://git.corp:8443/api/v3/user"):  # fmt: skip
            req = request(url, authorization=[sent])
            grant = broker.authenticate("s-1", req, NOW)
            assert isinstance(grant, Grant), (sent, url)
            assert grant.reauthenticate(req).set_headers == (("Authorization", expected),)


@pytest.mark.parametrize(
    ("session", "url", "code"),
    [
        ("s-2", "https://api.github.com/user", "Unauthorized"),  # another session's
        (None, "https://api.github.com/user", "Unauthorized"),  # no session at all
        ("s-1", "https://attacker.example/collect", "AccessDenied"),  # exfiltration
        ("s-1", "http://api.github.com/user", "AccessDenied"),  # clear text
        ("s-1", "https://git.corp:9999/api/v3/user", "AccessDenied"),  # another port
    ],
)
def test_a_github_placeholder_is_refused_out_of_its_session_or_hosts(
    session: str | None, url: str, code: str
) -> None:
    broker = github_broker()
    token = SessionKeys(KEY).placeholder("s-1", "github")
    with pytest.raises(AuthError) as refused:
        broker.authenticate(session, request(url, authorization=[f"Bearer {token}"]), NOW)
    assert refused.value.code == code


def test_requests_without_session_credentials_pass_as_they_came() -> None:
    broker = github_broker()
    for authorization in ([], [f"Bearer {REAL_GITHUB}"], ["Basic dXNlcjpwYXNz"]):
        plain = request("https://api.github.com/user", authorization=authorization)
        assert broker.authenticate("s-1", plain, NOW) is None


def test_doubled_or_hidden_placeholders_are_refused() -> None:
    broker = github_broker()
    token = SessionKeys(KEY).placeholder("s-1", "github")
    for authorization in ([f"Bearer {token}", f"token {token}"], [f"Bearer x{token}"]):
        with pytest.raises(AuthError):
            broker.authenticate("s-1", request("https://api.github.com/user",
                                               authorization=authorization), NOW)  # fmt: skip


def test_the_instance_metadata_service_is_unreachable_while_clouds_are_brokered(
    aws_home: Path,
) -> None:
    probe = request("http://169.254.169.254/latest/meta-data/iam/security-credentials/")
    with pytest.raises(AuthError, match="instance metadata"):
        make_broker({"aws": {}}).authenticate("s-1", probe, NOW)
    assert github_broker().authenticate("s-1", probe, NOW) is None


def test_the_session_adc_refresh_is_answered_by_the_guard(tmp_path: Path) -> None:
    adc = tmp_path / "adc.json"
    adc.write_text(json.dumps({"type": "authorized_user", "client_id": "c", "client_secret": "s",
                               "refresh_token": "REALrefresh"}))  # fmt: skip
    broker = make_broker({"gcp": {"credentials": f"file:{adc}"}})
    keys = SessionKeys(KEY)
    form = f"grant_type=refresh_token&refresh_token={keys.placeholder('s-1', 'gcp', 'refresh')}"
    refresh = request("https://oauth2.googleapis.com/token", method="POST", body=form.encode())
    answer = broker.authenticate("s-1", refresh, NOW)
    assert isinstance(answer, LocalAnswer) and answer.status == 200
    assert json.loads(answer.body)["access_token"] == keys.placeholder("s-1", "gcp")
    with pytest.raises(AuthError):
        broker.authenticate("s-2", refresh, NOW)
    real = request("https://oauth2.googleapis.com/token", method="POST",
                   body=b"grant_type=refresh_token&refresh_token=REALrefresh")  # fmt: skip
    assert broker.authenticate("s-1", real, NOW) is None


def kubeconfig(tmp_path: Path, users: list[dict[str, object]]) -> Path:
    path = tmp_path / "kubeconfig"
    clusters = [{"name": "a", "cluster": {"server": "https://10.0.0.1:6443"}},
                {"name": "b", "cluster": {"server": "https://10.0.0.1:7443"}}]  # fmt: skip
    contexts = [{"name": u["name"], "context": {"cluster": c, "user": u["name"]}}
                for u, c in zip(users, ["a", "b", "b"], strict=False)]  # fmt: skip
    path.write_text(yaml.safe_dump({"clusters": clusters, "users": users, "contexts": contexts}))
    return path


def test_kubernetes_users_are_brokered_per_mode_and_cluster(tmp_path: Path) -> None:
    (tmp_path / "client.pem").write_text("CERT")
    (tmp_path / "client.key").write_text("KEY")
    users: list[dict[str, object]] = [
        {"name": "cert", "user": {"client-certificate": "client.pem", "client-key": "client.key"}},
        {"name": "token", "user": {"token": "REALkubeToken"}},
        {"name": "oidc", "user": {"auth-provider": {"name": "oidc"}}},
    ]
    path = kubeconfig(tmp_path, users)
    certificates_only = make_broker({})
    offer = certificates_only.register_session("s-1", [path])["kubernetes"]
    assert set(offer["users"]) == {"cert"}
    assert set(offer["not_brokered"]) == {"token", "oidc"}
    everything = make_broker({"kubernetes": {}})
    offer = everything.register_session("s-1", [path])["kubernetes"]
    assert set(offer["users"]) == {"cert", "token"}
    cert_request = request("https://10.0.0.1:6443/api/v1/namespaces",
                           authorization=[f"Bearer {offer['users']['cert']}"])  # fmt: skip
    grant = everything.authenticate("s-1", cert_request, NOW)
    assert isinstance(grant, Grant)
    rewrite = grant.reauthenticate(cert_request)
    assert rewrite.remove_headers == ("Authorization",)
    assert rewrite.client_certificate == (b"CERT", b"KEY")  # relative to the kubeconfig
    token_request = request("https://10.0.0.1:7443/api", authorization=[
        f"Bearer {offer['users']['token']}"])  # fmt: skip
    grant = everything.authenticate("s-1", token_request, NOW)
    assert isinstance(grant, Grant)
    assert grant.reauthenticate(token_request).set_headers == (
        ("Authorization", "Bearer REALkubeToken"),
    )
    elsewhere = request("https://10.0.0.1:6443/api", authorization=[
        f"Bearer {offer['users']['token']}"])  # fmt: skip
    with pytest.raises(AuthError, match="that user's clusters only"):
        everything.authenticate("s-1", elsewhere, NOW)
    everything.end_session("s-1")
    with pytest.raises(AuthError):
        everything.authenticate("s-1", token_request, NOW)


PLUGIN = """#!{python}
import json, sys
from pathlib import Path
runs = Path({runs!r})
runs.write_text(runs.read_text() + "x" if runs.exists() else "x")
print(json.dumps({{"apiVersion": "client.authentication.k8s.io/v1beta1", "kind": "ExecCredential",
                  "status": {{"token": "REALexec" + str(len(runs.read_text())),
                             "expirationTimestamp": "2030-01-01T00:00:00Z"}}}}))
"""


def test_an_exec_plugin_runs_once_until_its_token_expires(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    script = tmp_path / "plugin"
    script.write_text(PLUGIN.format(python=sys.executable, runs=str(runs)))
    script.chmod(0o755)
    now = [1_800_000_000.0]  # 2027: before the token's expiry
    plugin = ExecPlugin("u", {"command": str(script), "apiVersion":
                              "client.authentication.k8s.io/v1beta1"}, None, timeout=10,
                        default_ttl=60, clock=lambda: now[0])  # fmt: skip
    plugin.check()
    assert plugin.needs_io()
    assert plugin.get().token == "REALexec1" and plugin.get().token == "REALexec1"
    assert not plugin.needs_io()
    now[0] = 1_893_456_000.0  # 2030-01-01: expired
    assert plugin.needs_io() and plugin.get().token == "REALexec2"
    assert "KUBERNETES_EXEC_INFO" in plugin._env


def test_a_failing_exec_plugin_is_one_line_without_the_credential(tmp_path: Path) -> None:
    script = tmp_path / "plugin"
    script.write_text("#!/bin/sh\necho 'error: token REALsecretToken123 expired' >&2\nexit 3\n")
    script.chmod(0o755)
    spec = {"command": str(script), "apiVersion": "client.authentication.k8s.io/v1"}
    plugin = ExecPlugin("u", spec, None, timeout=10, default_ttl=60)
    with pytest.raises(CredentialError) as failed:
        plugin.get()
    assert "REALsecretToken123" not in str(failed.value) and "\n" not in str(failed.value)
    assert "kubeconfig user 'u': exec plugin" in str(failed.value)


def test_a_user_whose_credential_cannot_be_brokered_is_left_and_listed(tmp_path: Path) -> None:
    """A stale context (a plugin since uninstalled, a certificate file gone) must not stop
    the session: that user stays as it is and `run` names it."""
    users: list[dict[str, object]] = [
        {"name": "gone-plugin", "user": {"exec": {
            "command": "no-such-plugin", "apiVersion": "client.authentication.k8s.io/v1"}}},
        {"name": "gone-file", "user": {"client-certificate": "missing.pem",
                                       "client-key": "missing.key"}},
        {"name": "fine", "user": {"token": "REALkubeToken"}},
    ]  # fmt: skip
    offer = make_broker({"kubernetes": {}}).register_session("s-1", [kubeconfig(tmp_path, users)])[
        "kubernetes"
    ]
    assert set(offer["users"]) == {"fine"}
    assert "no-such-plugin is not on the guard's PATH" in offer["not_brokered"]["gone-plugin"]
    assert "cannot read" in offer["not_brokered"]["gone-file"]
