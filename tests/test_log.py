"""Logs are JSON lines when not on a terminal, readable lines on one."""

from __future__ import annotations

import errno
import io
import json
import logging
import time
from datetime import UTC, datetime, timedelta

import structlog

from guardproxy.log import configure_logging, dropped_lines, flush_logs


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


class _FullDisk(io.StringIO):
    """A log destination that refuses writes while ``full`` (EFBIG, as under RLIMIT_FSIZE)."""

    full = True

    def write(self, text: str) -> int:
        if self.full:
            raise OSError(errno.EFBIG, "File too large")
        return super().write(text)


def test_a_failing_destination_drops_and_counts_lines_and_never_raises() -> None:
    stream = _FullDisk()
    configure_logging(stream=stream, json=True)
    before = dropped_lines()
    logger = structlog.get_logger("t")
    logger.error("decision.not_recorded", error="disk full")  # would raise into the gate
    logger.bind(decision="d-1").info("decision", outcome="deny")
    assert dropped_lines() == before + 2
    stream.full = False  # space again: lines flow again, nothing was buffered
    logger.info("store.back")
    assert [json.loads(line)["event"] for line in stream.getvalue().splitlines()] == ["store.back"]


def test_a_failing_processor_drops_the_line() -> None:
    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("cannot render")

    stream = io.StringIO()
    configure_logging(stream=stream, json=True)
    before = dropped_lines()
    structlog.get_logger("t").warning("odd.value", value=Unprintable())
    assert dropped_lines() == before + 1
    assert stream.getvalue() == ""


def test_standard_library_handlers_fail_quietly() -> None:
    configure_logging(stream=io.StringIO())
    assert logging.raiseExceptions is False


def _events(stream: io.StringIO) -> list[str]:
    return [json.loads(line)["event"] for line in stream.getvalue().splitlines()]


def test_background_lines_are_written_by_the_writer_thread_in_order() -> None:
    stream = io.StringIO()
    configure_logging(stream=stream, json=True, background=True)
    try:
        logger = structlog.get_logger("t")
        for n in range(5):
            logger.bind(decision=f"d-{n}").info("decision", outcome="allow")
        deadline = time.monotonic() + 10
        while len(_events(stream)) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        decisions = [json.loads(line)["decision"] for line in stream.getvalue().splitlines()]
        assert decisions == [f"d-{n}" for n in range(5)]
    finally:
        configure_logging(stream=io.StringIO())


def test_a_warning_is_written_at_once_after_every_line_queued_before_it() -> None:
    stream = io.StringIO()
    configure_logging(stream=stream, json=True, background=True)
    try:
        logger = structlog.get_logger("t")
        logger.info("first")
        logger.info("second")
        logger.warning("store.failed")  # returns once written, after the queued lines
        assert _events(stream)[:3] == ["first", "second", "store.failed"]
        logger.info("last")
        flush_logs()  # what the process's exit does
        assert _events(stream) == ["first", "second", "store.failed", "last"]
    finally:
        configure_logging(stream=io.StringIO())


def test_background_lines_are_redacted_and_keep_the_callers_exception_and_time() -> None:
    stream = io.StringIO()
    configure_logging(stream=stream, json=True, background=True)
    try:
        token = "ghp_R2d2C3p0x9Lk4Mn7Pq1Rs5Tu8Vw0Xy3Za6Bc"
        before = datetime.now(UTC)
        try:
            raise RuntimeError("connect failed: postgres://app:Sup3rS3cret@db/prod")
        except RuntimeError:
            structlog.get_logger("t").info("retrying", header=f"Bearer {token}", exc_info=True)
        time.sleep(0.2)  # written by the thread, after the handler is gone
        flush_logs()
        record = json.loads(stream.getvalue())
        assert token not in stream.getvalue() and "Sup3rS3cret" not in stream.getvalue()
        assert "connect failed" in record["exception"]
        stamped = datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00"))
        assert before <= stamped <= before + timedelta(seconds=0.2)
    finally:
        configure_logging(stream=io.StringIO())


def test_a_background_line_that_cannot_be_rendered_is_dropped_and_the_writer_goes_on() -> None:
    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("cannot render")

    stream = io.StringIO()
    configure_logging(stream=stream, json=True, background=True)
    try:
        before = dropped_lines()
        logger = structlog.get_logger("t")
        logger.info("odd.value", value=Unprintable())
        logger.info("next")
        flush_logs()
        assert dropped_lines() == before + 1
        assert _events(stream) == ["next"]
    finally:
        configure_logging(stream=io.StringIO())
