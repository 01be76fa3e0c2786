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
