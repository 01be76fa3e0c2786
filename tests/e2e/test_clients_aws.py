"""The AWS CLI and boto3 through guardproxy, against moto.

A CloudFormation stack named ``prod-calc`` is prod by its name.  Creating it is
allowed; deleting it is held (two rules: the prod-teardown rule of ``aws`` and the
prod-destroy rule of ``common``).  What is asserted is what happened at moto (which
requests arrived, whether the stack exists) and in guardproxy's store, not only what
the client printed.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from mypy_boto3_cloudformation import CloudFormationClient

from .guard_fixtures import (
    HOLD_ID,
    Guard,
    GuardSession,
    StartGuard,
    describe,
    hold_id_in,
    run_client,
)
from .servers import MotoServer, RecordedRequest

pytestmark = pytest.mark.slow

STACK = "prod-calc"
TEMPLATE = json.dumps(
    {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Resources": {"Queue": {"Type": "AWS::SQS::Queue", "Properties": {}}},
    }
)
HELD_RULES = ("aws/hold-prod-environment-teardown", "common/hold-prod-destroy")


def _action(request: RecordedRequest) -> str:
    """CloudFormation speaks the query protocol: the action is in the form body."""
    return dict(parse_qsl(request.body.decode(errors="replace"))).get("Action", "")


def moto_actions(moto: MotoServer, action: str) -> list[RecordedRequest]:
    """The requests for ``action`` that reached moto."""
    return [r for r in moto.requests if _action(r) == action]


def direct_cfn(moto: MotoServer) -> CloudFormationClient:
    """A client straight to moto (no proxy): the upstream's truth for assertions."""
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    return session.client("cloudformation", endpoint_url=moto.url, config=Config(proxies={}))


def stack_status(moto: MotoServer, name: str = STACK) -> str | None:
    """The stack's status at moto, or None if moto says it does not exist."""
    try:
        stacks = direct_cfn(moto).describe_stacks(StackName=name)["Stacks"]
    except ClientError as error:
        assert "does not exist" in str(error), error
        return None
    return stacks[0]["StackStatus"]


class AwsCli:
    """The real ``aws`` command, its proxy variables pointing at a guard session."""

    def __init__(self, aws_bin: str, moto: MotoServer, env: dict[str, str], tmp: Path) -> None:
        self.base = [aws_bin, "--endpoint-url", moto.url, "--output", "json", "cloudformation"]
        self.env = env
        self.template = tmp / "stack.json"
        self.template.write_text(TEMPLATE)

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_client([*self.base, *args], self.env, timeout=60)

    def command(self, *args: str) -> list[str]:
        return [*self.base, *args]

    def create(self) -> subprocess.CompletedProcess[str]:
        return self(
            "create-stack", "--stack-name", STACK, "--template-body", self.template.as_uri()
        )

    def delete(self) -> subprocess.CompletedProcess[str]:
        return self("delete-stack", "--stack-name", STACK)


@pytest.fixture
def guard(start_guard: StartGuard) -> Guard:
    return start_guard(hold_window_seconds=2)


@pytest.fixture
def guarded_session(guard: Guard) -> GuardSession:
    return guard.session("aws-e2e")


@pytest.fixture
def aws(
    aws_bin: str,
    moto_server: MotoServer,
    aws_environ: dict[str, str],
    guarded_session: GuardSession,
    tmp_path: Path,
) -> AwsCli:
    return AwsCli(aws_bin, moto_server, {**aws_environ, **guarded_session.proxy_env()}, tmp_path)


def assert_held(proc: subprocess.CompletedProcess[str]) -> str:
    """The CLI failed with guardproxy's hold message; returns the hold id."""
    assert proc.returncode != 0, describe(proc)
    assert "An error occurred (AccessDenied) when calling the DeleteStack operation" in (
        proc.stderr
    ), describe(proc)
    assert "guardproxy:" in proc.stderr and "held for human approval" in proc.stderr, describe(proc)
    assert "prod-calc" in proc.stderr
    return hold_id_in(proc.stderr)


def test_aws_cli_delete_is_held_and_an_approval_releases_it_once(
    aws: AwsCli, guard: Guard, moto_server: MotoServer, guarded_session: GuardSession
) -> None:
    created = aws.create()
    assert created.returncode == 0, describe(created)
    assert stack_status(moto_server) == "CREATE_COMPLETE"

    held = aws.delete()
    hold_id = assert_held(held)
    # exactly one attempt reached the proxy, none reached moto, the stack is intact
    deletes = [d for d in guard.decisions() if d.operation == "DeleteStack"]
    assert [(d.outcome, d.hold_id) for d in deletes] == [("hold", hold_id)]
    assert moto_actions(moto_server, "DeleteStack") == []
    assert stack_status(moto_server) == "CREATE_COMPLETE"
    hold = guard.hold(hold_id)
    assert hold["state"] == "pending" and hold["session"] == guarded_session.id
    assert set(hold["rules"]) == set(HELD_RULES)

    # a prod teardown needs two seniors: each approves with their own token
    for name, said in (
        ("alice", "needs 1 more approval from senior (rule aws/hold-prod-environment-teardown)"),
        ("bob", "approved by alice, bob"),
    ):
        approved = guard.cli(
            "approve", hold_id, "--reason", "planned teardown",
            env={"GUARDPROXY_APPROVER_TOKEN": guard.approver(name).token},
        )  # fmt: skip
        assert approved.returncode == 0, describe(approved)
        assert said in approved.stdout, describe(approved)

    released = aws.delete()  # the very same command
    assert released.returncode == 0, describe(released)
    assert len(moto_actions(moto_server, "DeleteStack")) == 1
    assert stack_status(moto_server) is None
    assert guard.hold(hold_id)["state"] == "released"

    again = aws.delete()  # an approval releases one request, not the next one
    second_hold = assert_held(again)
    assert second_hold != hold_id
    assert len(moto_actions(moto_server, "DeleteStack")) == 1

    log = [(d.operation, d.outcome, d.hold_id) for d in guard.decisions()]
    assert log == [
        ("CreateStack", "allow", None),
        ("DeleteStack", "hold", hold_id),
        ("DeleteStack", "allow", hold_id),
        ("DeleteStack", "hold", second_hold),
    ]
    stored = guard.decisions()
    assert {d.session_id for d in stored} == {guarded_session.id}
    assert all(d.environment == "prod" and d.resource_name == STACK for d in stored)
    assert [d.upstream_status for d in stored if d.outcome == "allow"] == [200, 200]
    assert [d.upstream_status for d in stored if d.outcome == "hold"] == [None, None]


def test_aws_cli_denied_hold_keeps_the_stack_and_retries_get_the_denial(
    aws: AwsCli, guard: Guard, moto_server: MotoServer
) -> None:
    assert aws.create().returncode == 0
    hold_id = assert_held(aws.delete())

    denied = guard.cli(
        "deny", hold_id, "--reason", "change freeze",
        env={"GUARDPROXY_APPROVER_TOKEN": guard.approver("bob").token},
    )  # fmt: skip
    assert denied.returncode == 0, describe(denied)
    assert "denied by bob: change freeze" in denied.stdout, describe(denied)

    messages = []
    for _ in range(2):
        retry = aws.delete()
        assert retry.returncode != 0, describe(retry)
        assert "(AccessDenied)" in retry.stderr, describe(retry)
        assert f"a human denied this request (hold {hold_id}) by bob: change freeze" in (
            retry.stderr
        ), describe(retry)
        assert "held for human approval" not in retry.stderr
        messages.append(retry.stderr.strip())
    assert messages[0] == messages[1]
    assert moto_actions(moto_server, "DeleteStack") == []
    assert stack_status(moto_server) == "CREATE_COMPLETE"
    assert guard.hold(hold_id)["state"] == "denied"
    outcomes = [(d.outcome, d.hold_id) for d in guard.decisions() if d.operation == "DeleteStack"]
    assert outcomes == [("hold", hold_id), ("deny", hold_id), ("deny", hold_id)]


def test_aws_cli_delete_is_released_live_when_approved_within_the_window(
    aws_bin: str,
    start_guard: StartGuard,
    moto_server: MotoServer,
    aws_environ: dict[str, str],
    tmp_path: Path,
) -> None:
    window = 5.0
    guard = start_guard(hold_window_seconds=window)
    session = guard.session("aws-live")
    direct_cfn(moto_server).create_stack(StackName=STACK, TemplateBody=TEMPLATE)
    aws = AwsCli(aws_bin, moto_server, {**aws_environ, **session.proxy_env()}, tmp_path)

    with subprocess.Popen(
        aws.command("delete-stack", "--stack-name", STACK),
        env=aws.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            hold = guard.wait_for_pending_hold(timeout=20)  # the request is waiting live
            time.sleep(1.0)
            assert proc.poll() is None, "the held request was answered before the approval"
            assert stack_status(moto_server) == "CREATE_COMPLETE"
            guard.on_call.approve(hold["id"], reason="go ahead")
            approved_at = time.monotonic()
            out, err = proc.communicate(timeout=window + 10)
            finished_at = time.monotonic()
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n{err}"
    assert finished_at - approved_at < 1.5, "released live, not after the window"
    assert stack_status(moto_server) is None
    assert len(moto_actions(moto_server, "DeleteStack")) == 1
    deletes = [(d.outcome, d.hold_id) for d in guard.decisions() if d.operation == "DeleteStack"]
    assert deletes == [("allow", hold["id"])]  # one request, held then forwarded
    assert guard.hold(hold["id"])["state"] == "released"


@pytest.fixture
def proxied_cfn(
    moto_server: MotoServer, guarded_session: GuardSession
) -> Iterator[CloudFormationClient]:
    """boto3 in this process, through the guard session (botocore's own proxy setting)."""
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    config = Config(
        proxies={"http": guarded_session.proxy_url, "https": guarded_session.proxy_url},
        retries={"mode": "standard", "max_attempts": 3},
    )
    client = session.client("cloudformation", endpoint_url=moto_server.url, config=config)
    yield client
    client.close()


def test_boto3_delete_is_held_with_native_error_then_approved(
    proxied_cfn: CloudFormationClient,
    guard: Guard,
    moto_server: MotoServer,
    guarded_session: GuardSession,
) -> None:
    proxied_cfn.create_stack(StackName=STACK, TemplateBody=TEMPLATE)
    assert stack_status(moto_server) == "CREATE_COMPLETE"
    [seen] = proxied_cfn.describe_stacks(StackName=STACK)["Stacks"]  # reads pass
    assert seen["StackName"] == STACK

    with pytest.raises(ClientError) as raised:
        proxied_cfn.delete_stack(StackName=STACK)
    error = raised.value.response
    assert error["Error"]["Code"] == "AccessDenied"
    assert "held for human approval" in error["Error"]["Message"]
    hold_id = hold_id_in(error["Error"]["Message"])
    meta = error["ResponseMetadata"]
    assert meta["HTTPStatusCode"] == 403
    assert meta["HTTPHeaders"]["x-guardproxy-decision"] == "hold"
    assert meta["HTTPHeaders"]["x-guardproxy-id"] == hold_id
    assert meta.get("RetryAttempts", 0) == 0, "a hold must not be retried by the SDK"
    assert moto_actions(moto_server, "DeleteStack") == []
    assert stack_status(moto_server) == "CREATE_COMPLETE"

    resolved = guard.on_call.approve(hold_id, reason="ok")
    assert resolved["state"] == "approved" and resolved["resolved_by"] == "alice, bob"
    proxied_cfn.delete_stack(StackName=STACK)
    assert stack_status(moto_server) is None
    assert len(moto_actions(moto_server, "DeleteStack")) == 1

    stored = guard.decisions()
    assert [(d.operation, d.outcome) for d in stored] == [
        ("CreateStack", "allow"),
        ("DescribeStacks", "allow"),
        ("DeleteStack", "hold"),
        ("DeleteStack", "allow"),
    ]
    assert all(d.session_id == guarded_session.id for d in stored)
    delete = stored[2]
    assert (delete.verb, delete.environment, delete.resource_type) == (
        "destroy",
        "prod",
        "aws:cloudformation:stack",
    )
    assert set(delete.rules) == set(HELD_RULES)
    assert HOLD_ID.fullmatch(delete.hold_id or "")
