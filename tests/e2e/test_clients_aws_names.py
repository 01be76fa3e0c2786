"""A terminate by instance id, through the guard, resolved to the name learned from
the RunInstances response that went through it (boto3 against moto)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from .guard_fixtures import Guard, GuardSession, StartGuard, hold_id_in
from .servers import MotoServer

pytestmark = pytest.mark.slow


def _ec2(moto: MotoServer, proxy: str | None = None) -> Any:
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    proxies = {"http": proxy, "https": proxy} if proxy else {}
    config = Config(proxies=proxies, retries={"mode": "standard", "max_attempts": 3})
    return session.client("ec2", endpoint_url=moto.url, config=config)


def _terminates(moto: MotoServer) -> int:
    return sum(
        dict(parse_qsl(r.body.decode(errors="replace"))).get("Action") == "TerminateInstances"
        for r in moto.requests
    )


def _state(moto: MotoServer, instance_id: str) -> str:
    described = _ec2(moto).describe_instances(InstanceIds=[instance_id])
    return str(described["Reservations"][0]["Instances"][0]["State"]["Name"])


@pytest.fixture
def guard(start_guard: StartGuard) -> Guard:
    return start_guard(hold_window_seconds=1)


@pytest.fixture
def proxied_ec2(moto_server: MotoServer, guard: Guard) -> Iterator[tuple[Any, GuardSession]]:
    session = guard.session("names-e2e")
    client = _ec2(moto_server, session.proxy_url)
    yield client, session
    client.close()


def test_terminate_by_id_is_held_with_the_learned_name(
    proxied_ec2: tuple[Any, GuardSession], guard: Guard, moto_server: MotoServer
) -> None:
    ec2, _ = proxied_ec2
    tags = [{"Key": "Name", "Value": "web-1"}, {"Key": "environment", "Value": "prod"}]
    ran = ec2.run_instances(
        ImageId="ami-12c6146b",
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
    )
    instance = ran["Instances"][0]["InstanceId"]

    with pytest.raises(ClientError) as raised:
        ec2.terminate_instances(InstanceIds=[instance])
    message = raised.value.response["Error"]["Message"]
    assert "held for human approval" in message
    assert "web-1" in message and "environment prod" in message, message
    assert _terminates(moto_server) == 0
    assert _state(moto_server, instance) == "running"

    stored = [d for d in guard.decisions() if d.operation == "TerminateInstances"]
    assert [(d.outcome, d.environment) for d in stored] == [("hold", "prod")]
    guard.on_call.approve(hold_id_in(message), reason="planned")
    ec2.terminate_instances(InstanceIds=[instance])
    assert _terminates(moto_server) == 1
    assert _state(moto_server, instance) in ("shutting-down", "terminated")
