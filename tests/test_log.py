"""Logs are JSON lines when not on a terminal, readable lines on one."""

from __future__ import annotations

import io
import json

import structlog

from guardproxy.log import configure_logging


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_json_lines_when_not_a_terminal() -> None:
    stream = io.StringIO()
    configure_logging(stream=stream)
    structlog.get_logger("t").info("decision.made", outcome="hold", rule="k8s/x")
    record = json.loads(stream.getvalue())
    assert record["event"] == "decision.made"
    assert record["outcome"] == "hold"
    assert record["level"] == "info"
    assert record["timestamp"].endswith("Z")


def test_readable_lines_on_a_terminal() -> None:
    stream = _Terminal()
    configure_logging(stream=stream)
    structlog.get_logger("t").warning("bundle.refused", path="policies")
    line = stream.getvalue()
    assert "bundle.refused" in line
    assert "path" in line
    assert not line.lstrip().startswith("{")


def test_level_filters() -> None:
    stream = io.StringIO()
    configure_logging(stream=stream, level="warning")
    structlog.get_logger("t").info("quiet")
    assert stream.getvalue() == ""


def test_credentials_never_reach_a_log_line() -> None:
    stream = io.StringIO()
    configure_logging(stream=stream, json=True)
    token = "ghp_R2d2C3p0x9Lk4Mn7Pq1Rs5Tu8Vw0Xy3Za6Bc"
    structlog.get_logger("t").error(
        f"upstream refused Authorization: Bearer {token}",
        password="hunter2-hunter2",
        headers={"Authorization": "AWS4-HMAC-SHA256 Credential=AKIAQX3EXAMPLE7KEYID/x"},
        url="https://neondb_owner:npg_s3cr3tP4ss@ep-x.neon.tech/db",
        session="s-1",
        count=3,
    )
    line = stream.getvalue()
    for secret in (token, "hunter2-hunter2", "AKIAQX3EXAMPLE7KEYID", "npg_s3cr3tP4ss"):
        assert secret not in line
    record = json.loads(line)
    assert record["session"] == "s-1" and record["count"] == 3
    assert record["url"].startswith("https://neondb_owner:[REDACTED]@ep-x.neon.tech")


def test_exception_text_is_redacted_too() -> None:
    stream = io.StringIO()
    configure_logging(stream=stream, json=True)
    try:
        raise RuntimeError("connect failed: postgres://app:Sup3rS3cret@db/prod")
    except RuntimeError:
        structlog.get_logger("t").exception("store.failed")
    assert "Sup3rS3cret" not in stream.getvalue()
    assert "connect failed" in stream.getvalue()
