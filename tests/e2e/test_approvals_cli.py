"""The on-call CLI for real: `guardproxy approvers`, `holds`, `approve`, `deny` as
subprocesses against a running guardproxy, each approver with their own token."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .guard_fixtures import describe, guardproxy_cli, run_client
from .servers import EchoServer
from .test_approvals import Guard


@pytest.fixture
def guard(tmp_path: Path, echo_server: EchoServer) -> Iterator[Guard]:
    running = Guard(tmp_path, echo_server, hold_window=0.3)
    yield running
    running.background.stop()


def cli(guard: Guard, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GUARDPROXY_")}
    clean["XDG_CONFIG_HOME"] = str(guard.tmp_path / "config")  # no stray approver-token file
    clean.update(env)
    data_dir = str(guard.service.config.data_dir)
    return run_client([*guardproxy_cli(), *args, "--data-dir", data_dir], clean, timeout=60)


def test_approvers_are_managed_on_the_host_and_approve_with_their_own_token(
    guard: Guard,
) -> None:
    added = cli(guard, "approvers", "add", "grace", "--group", "senior", "--json")
    assert added.returncode == 0, describe(added)
    token = json.loads(added.stdout)["token"]
    assert json.loads(added.stdout)["groups"] == ["senior"]
    again = cli(guard, "approvers", "add", "grace", "--group", "senior")
    assert again.returncode == 1 and "exists" in again.stderr

    listed = cli(guard, "approvers", "list", "--json")
    names = [a["name"] for a in json.loads(listed.stdout)["approvers"]]
    assert "grace" in names and "token" not in listed.stdout
    assert token not in (guard.service.config.data_dir / "guardproxy.db").read_bytes().decode(
        errors="replace"
    )

    hold_id = guard.held("quorum-cm")
    pending = cli(guard, "holds", GUARDPROXY_APPROVER_TOKEN=token)
    assert pending.returncode == 0, describe(pending)
    assert hold_id in pending.stdout and "0 of 2 approvals" in pending.stdout

    # the token can also live in ~/.config/guardproxy/approver-token
    token_file = guard.tmp_path / "config" / "guardproxy" / "approver-token"
    token_file.parent.mkdir(parents=True)
    token_file.write_text(token + "\n")
    approved = cli(guard, "approve", hold_id, "--reason", "ticket 42")
    assert approved.returncode == 0, describe(approved)
    assert (
        "approval recorded; 1 of 2 approvals; needs 1 more approval from senior or sre-oncall, "
        "including one from sre-oncall (rule approvals/hold-quorum); the hold stays pending"
    ) in approved.stdout, describe(approved)

    as_json = cli(guard, "holds", "--json", GUARDPROXY_APPROVER_TOKEN=token)
    [hold] = json.loads(as_json.stdout)["holds"]
    assert hold["progress"]["approvers"] == ["grace"]

    no_reason = cli(guard, "deny", hold_id, "--reason", " ", "--json")
    assert no_reason.returncode == 1 and "a reason is required" in no_reason.stderr

    removed = cli(guard, "approvers", "remove", "grace")
    assert removed.returncode == 0, describe(removed)
    refused = cli(guard, "holds")
    assert refused.returncode == 1 and "unknown token" in refused.stderr


def test_approve_without_a_token_says_where_to_put_one(guard: Guard) -> None:
    result = cli(guard, "approve", "h-aaaaaaaaaa", "--reason", "x")
    assert result.returncode == 1
    assert "no approver token" in result.stderr and "GUARDPROXY_APPROVER_TOKEN" in result.stderr
    admin = guard.service.config.control_token_file.read_text().strip()
    as_admin = cli(guard, "holds", "--token", admin)
    assert as_admin.returncode == 1 and "verdicts need a person" in as_admin.stderr
