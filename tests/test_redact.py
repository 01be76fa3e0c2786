"""Redaction removes real-looking credentials and keeps everything else readable."""

from __future__ import annotations

import json
import os
import random
import re
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guardproxy import redact as redact_module
from guardproxy.action import Action, Actor, Provider, RequestSummary, Resource, Verb
from guardproxy.context import Context, SessionInfo
from guardproxy.redact import (
    REDACTED,
    _redact_bare_keys,
    is_secret_field,
    redact_body,
    redact_context_json,
    redact_headers,
    redact_json_text,
    redact_model_json,
    redact_text,
    redact_url,
    redact_value,
)

# Real-looking, but not real: the shapes the providers issue.
AWS_KEY_ID = "AKIAQX3EXAMPLE7KEYID"
AWS_TEMP_KEY_ID = "ASIAZ4EXAMPLE2TEMPID"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEK3Y"
SESSION_TOKEN = "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQDexampleToken0123456789"
SIGNATURE = "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
GITHUB_TOKEN = "ghp_R2d2C3p0x9Lk4Mn7Pq1Rs5Tu8Vw0Xy3Za6Bc"
GITHUB_PAT = "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJ"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIn0."
    "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
DB_PASSWORD = "npg_s3cr3tP4ssw0rd"
NEON_URL = f"postgresql://neondb_owner:{DB_PASSWORD}@ep-cool-darkness-123456.us-east-2.aws.neon.tech/neondb?sslmode=require"
PRIVATE_KEY = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEowIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF8PbnGy0AHB7MhgHcTz6sE2I2yPB\n"
    "aFDrBz9vFqU4yY3PEXAMPLEKEYMATERIALxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n"
    "-----END RSA PRIVATE KEY-----"
)
SIGV4 = (
    f"AWS4-HMAC-SHA256 Credential={AWS_KEY_ID}/20250301/us-east-1/s3/aws4_request, "
    f"SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={SIGNATURE}"
)

# What credential brokering handles: the real tokens the guard swaps in, and the session's
# own stand-ins (valid only at the guard, still credentials there)
GCP_ACCESS_TOKEN = "ya29.a0AfB_byC8EXAMPLEgcpAccessTokenREALREAL-0123456789_abcdef"
TFC_TOKEN = "Ab3dEf6hIj9kLm.atlasv1.EXAMPLEterraformCloudTokenREALREALREALREALREALREALREALREAL01234"
STS_TOKEN = "FwoGZXIvYXdzEBAaDEXAMPLEREALstsTokenABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/abc="
SESSION_KEY_ID = "GPAKQ2W3E4R5T6Y7U2I3"
PLACEHOLDER = "gpb_github_abcdefghijklmnopqrstuvwxyz234567"

SECRETS = (
    GCP_ACCESS_TOKEN,
    TFC_TOKEN,
    STS_TOKEN,
    SESSION_KEY_ID,
    PLACEHOLDER,
    AWS_KEY_ID,
    AWS_TEMP_KEY_ID,
    AWS_SECRET,
    SESSION_TOKEN,
    SIGNATURE,
    GITHUB_TOKEN,
    GITHUB_PAT,
    JWT,
    DB_PASSWORD,
    "MIIEowIBAAKCAQEA0Z3VS5JJcds3xfn",
)


def assert_clean(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret[:12]}… leaked in {text!r}"


def test_headers_lose_credential_values_and_keep_the_rest() -> None:
    headers = [
        ("Host", "bucket.s3.amazonaws.com"),
        ("Authorization", SIGV4),
        ("X-Amz-Security-Token", SESSION_TOKEN),
        (
            "X-Amz-Content-Sha256",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ),
        ("X-Amz-Date", "20250301T120000Z"),
        ("Cookie", "session=abc123; theme=dark"),
        ("Set-Cookie", "sid=31d4d96e407aad42; Secure"),
        ("Proxy-Authorization", "Basic Z3VhcmQ6czNjcjN0UGFzcw=="),
        ("Neon-Connection-String", NEON_URL),
        ("X-Api-Key", "k-9f8e7d6c5b4a"),
        ("PRIVATE-TOKEN", "glpat-xxxxxxxxxxxxxxxxxxxx"),
        ("X-Session-Secret", "anything"),
        ("User-Agent", f"aws-cli/2.15 token {GITHUB_TOKEN}"),
        ("Content-Type", "application/json"),
    ]
    redacted = dict(redact_headers(headers))
    assert [name for name, _ in redact_headers(headers)] == [name for name, _ in headers]
    for name in (
        "Authorization",
        "X-Amz-Security-Token",
        "Cookie",
        "Set-Cookie",
        "Proxy-Authorization",
        "Neon-Connection-String",
        "X-Api-Key",
        "PRIVATE-TOKEN",
        "X-Session-Secret",
    ):
        assert redacted[name] == REDACTED, name
    assert redacted["Host"] == "bucket.s3.amazonaws.com"
    assert redacted["X-Amz-Content-Sha256"].startswith("e3b0c442")
    assert redacted["X-Amz-Date"] == "20250301T120000Z"
    assert redacted["Content-Type"] == "application/json"
    assert redacted["User-Agent"].startswith("aws-cli/2.15")
    assert_clean(json.dumps(redacted))


def test_presigned_url_loses_signature_credential_and_token() -> None:
    url = (
        "https://bucket.s3.us-east-1.amazonaws.com/reports/q1.csv?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        f"&X-Amz-Credential={AWS_TEMP_KEY_ID}%2F20250301%2Fus-east-1%2Fs3%2Faws4_request"
        "&X-Amz-Date=20250301T120000Z&X-Amz-Expires=3600"
        f"&X-Amz-Security-Token={SESSION_TOKEN.replace('/', '%2F')}"
        f"&X-Amz-SignedHeaders=host&X-Amz-Signature={SIGNATURE}"
    )
    redacted = redact_url(url)
    assert_clean(redacted)
    assert redacted.startswith("https://bucket.s3.us-east-1.amazonaws.com/reports/q1.csv?")
    assert "X-Amz-Expires=3600" in redacted
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in redacted
    assert f"X-Amz-Signature={REDACTED}" in redacted


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        ("https://api.example.com/v1?access_token=ya29.a0AfH6SMBx1234&page=2", "page=2"),
        ("https://x.blob.core.windows.net/c/b?sv=2022-11-02&sig=AbC%2Bdef123%3D&se=2025", "sv="),
        ("https://maps.example.com/?key=AIzaSyD-1234567890abcdefghijklmnopqrstu&q=x", "q=x"),
        ("https://h/login?user=bob&password=hunter2hunter2", "user=bob"),
        ("https://h/?token=abcdef123456", "https://h/?"),
    ],
)
def test_sensitive_query_parameters(url: str, kept: str) -> None:
    redacted = redact_url(url)
    assert kept in redacted
    for secret in ("ya29.a0AfH6SMBx1234", "AbC%2Bdef123%3D", "AIzaSyD-1234567890", "hunter2"):
        assert secret not in redacted
    assert "abcdef123456" not in redacted


def test_url_userinfo_password() -> None:
    redacted = redact_url(NEON_URL)
    assert DB_PASSWORD not in redacted
    assert "neondb_owner" in redacted and "sslmode=require" in redacted


def test_json_body_fields_by_name_and_shape() -> None:
    body = json.dumps(
        {
            "username": "admin",
            "password": "Tr0ub4dor&3",
            "MasterUserPassword": "Sup3rS3cret!",
            "config": {"client_secret": "cs-123", "api_key": "xyz", "region": "eu-west-1"},
            "credentials": {"user": "u", "pass": "p"},
            "ConnectionString": "Server=db;User Id=sa;Password=Passw0rd!;",
            "note": f"use {GITHUB_TOKEN} to push",
            "items": [{"token": "tok-777"}, {"name": "keep-me"}],
        }
    ).encode()
    redacted = redact_body(body, "application/json; charset=utf-8")
    for secret in ("Tr0ub4dor&3", "Sup3rS3cret!", "cs-123", "Passw0rd!", GITHUB_TOKEN, "tok-777"):
        assert secret not in redacted
    parsed = json.loads(redacted)
    assert parsed["username"] == "admin"
    assert parsed["config"]["region"] == "eu-west-1"
    assert parsed["items"][1]["name"] == "keep-me"
    assert parsed["password"] == REDACTED


def test_form_and_xml_bodies() -> None:
    form = redact_body(
        b"Action=CreateUser&UserName=bob&Password=Hunter2Hunter2&Version=2010-05-08",
        "application/x-www-form-urlencoded",
    )
    assert "Hunter2Hunter2" not in form and "UserName=bob" in form
    xml = redact_body(
        b"<CreateDBInstance><DBInstanceIdentifier>prod-db</DBInstanceIdentifier>"
        b"<MasterUserPassword>Xml$ecret99</MasterUserPassword>"
        b"<ns:SecretAccessKey>" + AWS_SECRET.encode() + b"</ns:SecretAccessKey></CreateDBInstance>",
        "application/xml",
    )
    assert "Xml$ecret99" not in xml and AWS_SECRET not in xml
    assert "<DBInstanceIdentifier>prod-db</DBInstanceIdentifier>" in xml


def test_body_limits_and_binary() -> None:
    assert redact_body(b"\xff\xfe\x00binary", "application/octet-stream").startswith("[")
    long = redact_body(b"a" * 10_000, "text/plain", limit=100)
    assert long.startswith("a" * 100) and "more characters" in long
    # the cut happens after redaction: a secret straddling the limit is not half kept
    cut = redact_body(("x " * 40 + GITHUB_TOKEN).encode(), "text/plain", limit=90)
    assert "ghp_R2d2" not in cut


@pytest.mark.parametrize(
    "text",
    [
        f"Authorization: Bearer {JWT}",
        f"Authorization: token {GITHUB_TOKEN}",
        f"git push https://x-access-token:{GITHUB_TOKEN}@github.com/o/r.git",
        f"export GITHUB_TOKEN={GITHUB_PAT}",
        f"aws_access_key_id = {AWS_KEY_ID}\naws_secret_access_key = {AWS_SECRET}",
        f"AWS_SECRET_ACCESS_KEY={AWS_SECRET} aws s3 ls",
        f"the key is {AWS_SECRET}.",
        f"psql '{NEON_URL}'",
        f"Neon-Connection-String: {NEON_URL}",
        "host=db.internal user=app password=" + DB_PASSWORD + " dbname=prod",
        PRIVATE_KEY,
        f"sigv4: {SIGV4}",
        f'{{"SessionToken": "{SESSION_TOKEN}"}}',
        f"curl -H 'Authorization: Bearer {GCP_ACCESS_TOKEN}' https://compute.googleapis.com",
        f"the access token {GCP_ACCESS_TOKEN} expired",
        f"credentials app.terraform.io {{ token = {TFC_TOKEN} }}",
        f"aws_session_token = {STS_TOKEN}",
        f"token {STS_TOKEN} in prose",
        f"AWS4-HMAC-SHA256 Credential={SESSION_KEY_ID}/20250301/us-east-1/s3/aws4_request",
        f"git credential fill: password={PLACEHOLDER}",
        f"the session's token {PLACEHOLDER} was refused",
    ],
)
def test_free_text_patterns(text: str) -> None:
    redacted = redact_text(text)
    assert_clean(redacted)
    assert REDACTED in redacted


def test_prose_and_identifiers_are_kept() -> None:
    for text in (
        "the token expired, ask the user to log in again",
        "commit 3f786850e387550fdab836ed7e6dc881de23001b pushed",  # a git SHA is hex
        "aws cloudformation DeleteStack prod-calc",
        "k8s apps delete deployments payments/api",
        "x-amz-content-sha256 UNSIGNED-PAYLOAD",
    ):
        assert redact_text(text) == text


def test_values_by_name_or_by_shape_only() -> None:
    value = {"resource": {"key": "aws/123/stack/prod"}, "password": "p4ss", "note": GITHUB_TOKEN}
    assert redact_value(value)["resource"]["key"] == REDACTED
    shape_only = redact_value(value, by_name=False)
    assert shape_only["resource"]["key"] == "aws/123/stack/prod"
    assert shape_only["note"] == REDACTED
    assert is_secret_field("password") and is_secret_field("authorization")
    assert not is_secret_field("session") and not is_secret_field("decision")


# The lookaround regex bare keys were found with before the translate-and-find scan:
# the scan must find exactly what it found.
_BARE_KEY_REGEX = re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")


def _regex_bare_keys(text: str) -> str:
    def shaped(match: re.Match[str]) -> str:
        key = match.group(0)
        mixed = any(c.isupper() for c in key) and any(c.islower() for c in key)
        return REDACTED if mixed and any(c.isdigit() for c in key) else key

    return _BARE_KEY_REGEX.sub(shaped, text)


def test_bare_key_scan_finds_what_the_regex_found() -> None:
    rng = random.Random(7)
    pieces = [AWS_SECRET, AWS_SECRET[:39], AWS_SECRET + "Z", "=", " ", '"', "é", "/+", "ab", "0"]
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 8)))
        assert redact_text(text) == _regex_bare_keys(redact_text(text)), text
        assert _redact_bare_keys(text) == _regex_bare_keys(text), text


def test_model_json_loses_credentials_in_values_and_stays_the_model() -> None:
    action = Action(
        provider=Provider.GITHUB,
        operation="get",
        verb=Verb.READ,
        resource=Resource(type="repo", name="o/r"),
        request=RequestSummary(method="GET", host="api.github.com", path=f"/x?t={GITHUB_TOKEN}"),
        actor=Actor(user_agent=f'curl "{JWT}"'),
    )
    text = action.model_dump_json()
    redacted = redact_model_json(text)
    assert_clean(redacted)
    parsed = Action.model_validate_json(redacted)
    assert parsed.resource == action.resource and parsed.request.host == "api.github.com"
    clean = Action(provider=Provider.K8S, operation="get", verb=Verb.READ)
    assert redact_model_json(clean.model_dump_json()) == clean.model_dump_json()  # byte for byte


def test_context_json_is_redacted_part_by_part() -> None:
    session = SessionInfo(id="s-1", name="n", labels=[f"token={GITHUB_TOKEN}", "team=sre"])
    context = Context(now=datetime(2026, 11, 26, tzinfo=UTC), session=session)
    assert context.json_parts().join() == context.model_dump_json()
    redacted = redact_context_json(context.json_parts())
    assert_clean(redacted)
    assert redacted == redact_json_text(context.model_dump_json())
    assert Context.model_validate_json(redacted).session.labels[1] == "team=sre"
    plain = Context(now=datetime(2026, 11, 26, tzinfo=UTC), session=SessionInfo(id="s-2"))
    assert redact_context_json(plain.json_parts()) == plain.model_dump_json()


# -- the fast paths of redact_text give what the rules give


def _by_the_rules(text: str) -> str:
    """``redact_text`` without its fast paths: each rule gated by its own triggers only."""
    if "PRIVATE KEY-----" in text:
        text = redact_module._redact_private_keys(text)
    lowered = text.lower()
    for triggers, pattern, replacement in redact_module._TEXT_RULES:
        if any(trigger in lowered for trigger in triggers):
            text = pattern.sub(replacement, text)
    if any(word in lowered for word in redact_module._SECRET_NAME_WORDS):
        text = redact_module._redact_named_values(text, text.lower())
    return redact_module._redact_bare_keys(text)


_PIECES = [
    "Bearer abc123def456", "token ", "password=hunter2", "AKIAABCDEFGHIJKLMNOP",
    "ghp_" + "a1" * 18, "-----BEGIN RSA PRIVATE KEY-----xx-----END RSA PRIVATE KEY-----",
    "eyJhbGciOi.eyJzdWIiOi.sig", "postgres://u:p@h/db", "aB3" * 14, "=", " ", '"secret": "x"',
    "Credential=AKIA/2025", "sk-" + "x" * 25, "a" * 40, "{", "}", "ya29." + "b" * 30, "ya20.",
    "IQoJb3JpZ2lu" + "c" * 30, "iqojb0jpz0lu", "x.atlasv1." + "d" * 45, '"total":31,', "gh{s_",
    '{"at":"2026-12-07T23:16:15Z","summary":"aws sqs create q","outcome":"allow"}', "İ", "Σ",
]  # fmt: skip


@settings(max_examples=int(os.environ.get("GUARDPROXY_HYPOTHESIS_EXAMPLES", "300")), deadline=None)
@given(st.lists(st.one_of(st.sampled_from(_PIECES), st.text(max_size=40)), max_size=60))
def test_redact_text_gives_what_its_rules_give(parts: list[str]) -> None:
    """Short texts are remembered, long ones are cut at ``{`` with digits zeroed to
    look for triggers piece by piece: the same result as every rule checked in full."""
    text = "".join(parts)
    assert redact_text(text) == _by_the_rules(text)
    assert redact_text(text) == _by_the_rules(text)  # remembered: still the same
