"""Approvals and one-shot sessions: what an approval lets through, and for whom.

A one-shot ``guardproxy run -- aws cloudformation delete-stack …`` is held, waits out
the live window and exits, ending its session; on-call approves afterwards.  The
identical request, run again by the same user from the same working directory within
the approval's lifetime (or in the session resumed with ``--resume``), passes once;
any other user, directory, request or a second run is held.  Real processes
throughout: the guard, ``guardproxy run`` attached to it, the aws CLI against moto,
``guardproxy holds`` / ``approve`` with the approvers' own tokens.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from e2e.conftest import _moto_session  # noqa: F401 - moto_server's session fixture
from e2e.guard_fixtures import (
    POLICIES,
    Guard,
    StartGuard,
    describe,
    guardproxy_cli,
    hold_id_in,
    run_client,
)
from e2e.servers import MotoServer, aws_env
from e2e.test_clients_aws import STACK, TEMPLATE, direct_cfn, moto_actions, stack_status

pytestmark = pytest.mark.slow


class OneShot:
    """``guardproxy run --proxy … -- aws cloudformation delete-stack`` as a user would type it."""

    def __init__(
        self, guard: Guard, aws_bin: str, moto: MotoServer, tmp_path: Path, *, embedded: bool
    ) -> None:
        """``embedded``: each run starts its own guard on the same data directory (the
        guard under test plays the long-running ``serve``), else it attaches to it."""
        self.guard = guard
        self.embedded = embedded
        self.moto = moto
        self.aws = [aws_bin, "--endpoint-url", moto.url, "--output", "json", "cloudformation"]
        self.env = aws_env(tmp_path / "aws-home")
        self.env = {k: v for k, v in self.env.items() if not k.startswith("GUARDPROXY_")}
        self.env.pop("KUBECONFIG", None)
        self.env["HOME"] = str(tmp_path / "home")
        self.env["LOGNAME"] = self.env["USER"] = "carol"

    def run(
        self, cwd: Path, *aws_args: str, user: str = "carol", resume: str = ""
    ) -> subprocess.CompletedProcess[str]:
        cwd.mkdir(parents=True, exist_ok=True)
        resuming = ["--resume", resume] if resume else []
        if self.embedded:
            guard = ["--policies", str(POLICIES), "--hold-window", "0.5"]
        else:
            guard = ["--proxy", f"http://127.0.0.1:{self.guard.proxy_port}"]
        command = [
            *guardproxy_cli(), "run", *guard, "--data-dir", str(self.guard.data_dir),
            *resuming, "--", *self.aws, *(aws_args or ("delete-stack", "--stack-name", STACK)),
        ]  # fmt: skip
        env = {**self.env, "LOGNAME": user, "USER": user}
        return run_client(command, env, cwd=cwd, timeout=90)

    def cli(self, *args: str, who: str = "alice") -> subprocess.CompletedProcess[str]:
        token = self.guard.approver(who).token
        result = self.guard.cli(*args, env={"GUARDPROXY_APPROVER_TOKEN": token})
        assert result.returncode == 0, describe(result)
        return result

    def holds(self) -> list[dict[str, Any]]:
        listed: list[dict[str, Any]] = json.loads(
            self.cli("holds", "--state", "all", "--json").stdout
        )["holds"]
        return listed


def _held(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0, describe(proc)
    assert "held for human approval" in proc.stderr, describe(proc)
    return hold_id_in(proc.stderr)


def _session_of(proc: subprocess.CompletedProcess[str]) -> str:
    banner = next(line for line in proc.stderr.splitlines() if "is guarded by" in line)
    return banner.split("session ", 1)[1].split()[0]


@pytest.fixture(params=["attached", "embedded"])
def one_shot(
    request: pytest.FixtureRequest,
    start_guard: StartGuard,
    aws_bin: str,
    moto_server: MotoServer,
    tmp_path: Path,
) -> OneShot:
    guard = start_guard(hold_window_seconds=0.5)
    direct_cfn(moto_server).create_stack(StackName=STACK, TemplateBody=TEMPLATE)
    assert stack_status(moto_server) == "CREATE_COMPLETE"
    embedded = request.param == "embedded"
    return OneShot(guard, aws_bin, moto_server, tmp_path, embedded=embedded)


def test_a_one_shot_run_approved_after_it_ended_passes_once_from_the_same_directory(
    one_shot: OneShot, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    first = one_shot.run(repo)
    hold_id = _held(first)
    session = _session_of(first)
    # the agent is told what will happen: this session, or carol from this directory
    assert (
        f"if this session has ended by then, when carol runs it again from {repo} within "
        "30 min of the approval"
    ) in first.stderr, describe(first)

    # on call sees that the session has ended and what approving will do
    [hold] = one_shot.holds()
    assert hold["id"] == hold_id and hold["session"] == session and hold["session_ended"]
    assert hold["release"] == (
        f"session {session} has ended; once approved, the same request passes once when "
        f"carol runs it again from {repo} within 30 min of the approval, or in "
        f"`guardproxy run --resume {session}`"
    )
    listing = one_shot.cli("holds").stdout
    assert f"session {session} (ended)" in listing and hold["release"] in listing

    # two rules hold a prod teardown: a senior alone leaves one rule unmet, and says so
    alice = one_shot.cli("approve", hold_id, "--reason", "planned teardown", who="alice")
    assert (
        "1 approval, 1 of 2 rule requirements met; needs 1 more approval from senior "
        "(rule aws/hold-prod-environment-teardown); the hold stays pending"
    ) in alice.stdout, describe(alice)
    bob = one_shot.cli("approve", hold_id, "--reason", "second senior", who="bob")
    assert f"approved by alice, bob; session {session} has ended; the same request passes " in (
        bob.stdout
    ), describe(bob)
    assert f"when carol runs it again from {repo} until " in bob.stdout, describe(bob)

    # the same user elsewhere, another user here, another request here: held, not released
    elsewhere = one_shot.run(tmp_path / "elsewhere")
    assert _held(elsewhere) != hold_id
    mallory = one_shot.run(repo, user="mallory")
    assert _held(mallory) != hold_id
    other = one_shot.run(repo, "delete-stack", "--stack-name", "prod-other")
    assert _held(other) != hold_id
    assert moto_actions(one_shot.moto, "DeleteStack") == []
    assert stack_status(one_shot.moto) == "CREATE_COMPLETE"

    second = one_shot.run(repo)  # carol, from the repository, the very same command
    assert second.returncode == 0, describe(second)
    assert len(moto_actions(one_shot.moto, "DeleteStack")) == 1
    assert stack_status(one_shot.moto) is None
    released = next(h for h in one_shot.holds() if h["id"] == hold_id)
    assert released["state"] == "released" and released["release"] == ""

    third = one_shot.run(repo)  # once means once
    assert _held(third) != hold_id
    assert len(moto_actions(one_shot.moto, "DeleteStack")) == 1

    decisions = [d for d in one_shot.guard.decisions() if d.operation == "DeleteStack"]
    passed = [d for d in decisions if d.outcome == "allow"]
    assert [(d.hold_id, d.session_id) for d in passed] == [(hold_id, _session_of(second))]
    assert _session_of(second) != session


def test_a_new_run_joins_the_pending_hold_of_an_ended_one_instead_of_opening_another(
    one_shot: OneShot, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    hold_id = _held(one_shot.run(repo))
    assert _held(one_shot.run(repo)) == hold_id  # still pending: joined, not duplicated
    assert [h["id"] for h in one_shot.holds()] == [hold_id]


def test_an_approval_passes_in_the_explicitly_resumed_session_from_anywhere(
    one_shot: OneShot, tmp_path: Path
) -> None:
    first = one_shot.run(tmp_path / "repo")
    hold_id, session = _held(first), _session_of(first)
    one_shot.cli("approve", hold_id, "--reason", "ok", who="alice")
    one_shot.cli("approve", hold_id, "--reason", "ok", who="bob")

    refused = one_shot.run(tmp_path / "repo", user="mallory", resume=session)
    assert refused.returncode == 2, describe(refused)
    assert f"session {session} was started by carol; mallory cannot resume it" in refused.stderr
    resumed = one_shot.run(tmp_path / "somewhere-else", resume=session)
    assert resumed.returncode == 0, describe(resumed)
    assert f"session {session} is resumed and guarded by" in resumed.stderr
    assert stack_status(one_shot.moto) is None
    [passed] = [d for d in one_shot.guard.decisions() if d.outcome == "allow"]
    assert (passed.session_id, passed.hold_id) == (session, hold_id)


def test_a_running_session_cannot_be_taken_over_with_resume(
    one_shot: OneShot, tmp_path: Path
) -> None:
    live = one_shot.guard.control().call("POST", "/v1/sessions", {"user": "carol", "cwd": "/r"})
    proc = one_shot.run(tmp_path / "repo", resume=live["id"])
    assert proc.returncode == 2, describe(proc)
    assert f"session {live['id']} is still running" in proc.stderr, describe(proc)
    assert stack_status(one_shot.moto) == "CREATE_COMPLETE"
