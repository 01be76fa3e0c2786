"""A real agent CLI under ``guardproxy run --enforce``: Claude Code, installed from npm.

Claude Code (``@anthropic-ai/claude-code``, pinned; ``GUARDPROXY_CLAUDE_CODE_VERSION``
picks another) runs ``claude -p hello`` in the sandbox with an API key and
``ANTHROPIC_BASE_URL=http://api.anthropic.com:PORT``: its own API host by name, on the
port of a fake Messages API on this machine's loopback (the test's /etc/hosts gives
the name 127.0.0.1 to the guard; the sandbox resolves it through guardproxy). No model
is reachable: the fake streams one short answer. The guard is ``--upstream-allow
loopback``, so whatever else Claude Code tries to reach is refused before it is even
looked up; nothing leaves this machine.

Asserted: Claude Code prints the fake's answer; every request the fake API received
arrived through the guard, as a decision of this session on ``api.anthropic.com``
allowed by the shipped ``agent-traffic/allow-model-apis``; any other host Claude Code
tried is a decision too and its connection was refused. (Claude Code also calls its
host on port 443 for telemetry and bootstrap whatever the base URL: those are decided
like the rest, and the guard's connection goes to this machine's loopback.)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ._http import BaseHandler, UpstreamServer
from .enforce import (
    GuardUser,
    enforced_command,
    in_test_namespace,
    make_guard_user,
    require_enforce,
    write_hosts,
)
from .guard_fixtures import describe

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

CLAUDE_CODE_VERSION = os.environ.get("GUARDPROXY_CLAUDE_CODE_VERSION", "2.1.112")
"""The last release whose npm package is Node code (later ones ship a native binary)."""
INSTALL_TIMEOUT = 300.0
API_HOST = "api.anthropic.com"
ANSWER = "hello from the fake Messages API"


class _MessagesHandler(BaseHandler):
    """POST /v1/messages: one short assistant message (streamed when asked); else 404."""

    def _dispatch(self) -> None:
        entry = self.record(self.read_body())
        if (
            self.command != "POST"
            or not entry.path.startswith("/v1/messages")
            or ("count_tokens" in entry.path)
        ):
            self.send_json(
                404, {"type": "error", "error": {"type": "not_found_error", "message": entry.path}}
            )
            return  # fmt: skip
        request = json.loads(entry.body or b"{}")
        message = {
            "id": "msg_guardproxy_e2e", "type": "message", "role": "assistant",
            "model": request.get("model", "claude"), "content": [], "stop_reason": None,
            "stop_sequence": None, "usage": {"input_tokens": 1, "output_tokens": 1},
        }  # fmt: skip
        if not request.get("stream"):
            message.update(content=[{"type": "text", "text": ANSWER}], stop_reason="end_turn")
            self.send_json(200, message)
            return
        text = {"type": "text_delta", "text": ANSWER}
        events = [
            ("message_start", {"type": "message_start", "message": message}),
            ("content_block_start", {"type": "content_block_start", "index": 0,
                                     "content_block": {"type": "text", "text": ""}}),
            ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": text}),
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ("message_delta", {"type": "message_delta", "usage": {"output_tokens": 5},
                               "delta": {"stop_reason": "end_turn", "stop_sequence": None}}),
            ("message_stop", {"type": "message_stop"}),
        ]  # fmt: skip
        stream = "".join(f"event: {e}\ndata: {json.dumps(d)}\n\n" for e, d in events)
        self.send_bytes(200, stream.encode(), "text/event-stream")

    do_GET = do_HEAD = do_POST = _dispatch  # noqa: N815


class FakeMessagesApi(UpstreamServer):
    def __init__(self) -> None:
        super().__init__(_MessagesHandler)


@pytest.fixture(scope="module")
def guard_user() -> Iterator[GuardUser]:
    yield from make_guard_user()


@pytest.fixture(scope="module")
def claude_code(request: pytest.FixtureRequest) -> Path:
    """``claude`` from npm, installed once into pytest's cache (bounded in time)."""
    require_enforce()
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        pytest.skip("Node.js and npm are not installed")
    prefix = request.config.cache.mkdir(f"claude-code-{CLAUDE_CODE_VERSION}")
    claude = prefix / "node_modules" / ".bin" / "claude"
    if not claude.exists():
        done = subprocess.run(
            [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund",
             "--omit=optional", "--loglevel=error",
             f"@anthropic-ai/claude-code@{CLAUDE_CODE_VERSION}"],
            capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False,
        )  # fmt: skip
        if done.returncode != 0 or not claude.exists():
            if os.environ.get("CI"):
                raise AssertionError(f"npm could not install Claude Code: {done.stderr[-2000:]}")
            pytest.skip(f"npm could not install Claude Code: {done.stderr.strip()[-300:]}")
    return claude


@pytest.fixture
def messages_api() -> Iterator[FakeMessagesApi]:
    with FakeMessagesApi() as api:
        yield api
    assert not api.handler_errors, api.handler_errors


@pytest.mark.parametrize("mode", ["root", "rootless"])
def test_claude_code_reaches_only_the_guard(
    mode: str,
    claude_code: Path,
    messages_api: FakeMessagesApi,
    guard_user: GuardUser,
    tmp_path: Path,
) -> None:
    tmp_path.chmod(0o755)  # the guard user's way to its data directory (root mode)
    home = tmp_path / "home"
    work = tmp_path / "project"
    for directory in (home, work):
        directory.mkdir()
    data_dir = tmp_path / "data"
    options = ["--upstream-allow", "loopback"]
    if mode == "root":
        options += ["--guard-user", guard_user.name]
    argv = enforced_command(data_dir, [str(claude_code), "-p", "hello"], *options, mode=mode)
    argv = in_test_namespace(
        argv, hosts=write_hosts(tmp_path / "hosts"),
        guard=guard_user if mode == "root" else None,
        reachable=[tmp_path, claude_code.parents[2]],
    )  # fmt: skip
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GUARDPROXY_", "ANTHROPIC_", "CLAUDE_"))}  # fmt: skip
    env.pop("KUBECONFIG", None)
    env.update(
        HOME=str(home),
        ANTHROPIC_API_KEY="sk-ant-api03-guardproxy-e2e-not-a-key",
        ANTHROPIC_BASE_URL=f"http://{API_HOST}:{messages_api.port}",
        DISABLE_AUTOUPDATER="1",
    )
    proc = subprocess.run(
        argv, env=env, cwd=work, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    assert ANSWER in proc.stdout, describe(proc)

    arrived = messages_api.requests
    assert [r for r in arrived if r.method == "POST" and r.path == "/v1/messages"], arrived
    [session] = set(re.findall(r"session (s-[0-9a-f]+)", proc.stderr))
    decided = _decided(data_dir)
    assert {session_id for session_id, *_ in decided} == {session}, decided
    to_api = [d for d in decided if d[1] == API_HOST]
    # every request the fake received was decided first (Claude Code's other calls to
    # its host, telemetry on port 443, are decided too and go to loopback's 443)
    assert len([d for d in to_api if d[2] == messages_api.port]) >= len(arrived), decided
    assert all(outcome == "allow" and "agent-traffic/allow-model-apis" in rules
               for *_, outcome, rules in to_api), to_api  # fmt: skip
    refused = set(re.findall(r'"event": "upstream.refused", "host": "([^"]+)"', proc.stderr))
    others = {host for _, host, *_ in decided} - {API_HOST}
    assert others <= refused, (others, refused)  # anything else: refused, never looked up


def _decided(data_dir: Path) -> list[tuple[str, str, int, str, tuple[str, ...]]]:
    """(session, host, port, outcome, determining rules) of every stored decision."""
    from guardproxy.store import open_store  # noqa: PLC0415

    store = open_store(str(data_dir / "guardproxy.db"))
    try:
        records = store.list_decisions(limit=10_000)
    finally:
        store.close()
    found = []
    for record in records:
        action = json.loads(record.action_json)
        rules = tuple(json.loads(record.decision_json).get("determining_rules") or ())
        request = action.get("request") or {}
        found.append((record.session_id, str(request.get("host", "")),
                      int(request.get("port", 0)), record.outcome, rules))  # fmt: skip
    return found
