"""Ids learned from real EC2 responses (moto's) resolve later id-only calls to names."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from recognise_support import capture

from guardproxy.action import Action, Environment
from guardproxy.context import Context, SessionInfo
from guardproxy.policy import Outcome, evaluate
from guardproxy.recognise import RecogniseSettings, recognise
from guardproxy.recognise.providers.aws.responses import ec2_instances, instance_key
from guardproxy.server import load_policies
from guardproxy.session.names import (
    LEARN_LIMIT,
    LearnedName,
    NameCache,
    ResponseLearner,
    learner_for,
    resolve,
)

POLICIES = Path(__file__).resolve().parents[2] / "policies"
NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)


def _tags(**tags: str) -> list[dict[str, Any]]:
    return [{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]


@pytest.fixture(scope="module")
def bodies() -> Iterator[dict[str, bytes]]:
    """Raw RunInstances and DescribeInstances responses as moto writes them."""
    found: dict[str, bytes] = {}

    def keep(**kwargs: Any) -> None:
        found[kwargs["operation_model"].name] = kwargs["response_dict"]["body"]

    with mock_aws():
        client: Any = boto3.client(
            "ec2", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y"
        )
        client.meta.events.register("before-parse.ec2.*", keep)
        client.run_instances(
            ImageId="ami-12c6146b",
            MinCount=1,
            MaxCount=1,
            TagSpecifications=_tags(Name="web-1", environment="prod"),
        )
        found["first"] = found["RunInstances"]
        client.run_instances(
            ImageId="ami-12c6146b", MinCount=1, MaxCount=1, TagSpecifications=_tags(Env="dev")
        )
        client.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)
        client.describe_instances()
        yield found


def ids(body: bytes) -> dict[str, dict[str, str]]:
    return dict(ec2_instances(body))


def terminate(instance_id: str) -> Action:
    request = capture("ec2").call("TerminateInstances", {"InstanceIds": [instance_id]})
    return recognise(request, RecogniseSettings())


def run_instances() -> Action:
    request = capture("ec2").call(
        "RunInstances", {"ImageId": "ami-1", "MinCount": 1, "MaxCount": 1}
    )
    return recognise(request, RecogniseSettings())


def learned_from(body: bytes, chunk: int = 97) -> tuple[NameCache, bytes]:
    """Stream ``body`` through a learner as mitmproxy would; returns what the client got."""
    cache = NameCache()
    learner = learner_for(run_instances(), cache)
    assert isinstance(learner, ResponseLearner)
    sent = b"".join(learner(body[i : i + chunk]) for i in range(0, len(body), chunk))
    sent += learner(b"")
    return cache, sent


def test_instances_and_tags_are_read_from_real_responses(bodies: dict[str, bytes]) -> None:
    [(first, tags)] = ec2_instances(bodies["first"])
    assert first.startswith("i-") and tags == {"Name": "web-1", "environment": "prod"}
    described = ids(bodies["DescribeInstances"])
    assert len(described) == 3 and described[first] == tags
    assert {"Env": "dev"} in described.values() and {} in described.values()
    assert ec2_instances(b"<not xml") == []
    assert ec2_instances(b'<!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>') == []


def test_the_learner_passes_the_response_through_and_learns_at_the_end(
    bodies: dict[str, bytes],
) -> None:
    cache, sent = learned_from(bodies["first"])
    assert sent == bodies["first"]
    [(instance, _)] = ec2_instances(bodies["first"])
    assert cache.get(instance_key("us-east-1", instance)) == LearnedName(
        "web-1", Environment.PROD, "ec2:RunInstances"
    )


def test_a_response_over_the_limit_is_passed_on_unlearned(bodies: dict[str, bytes]) -> None:
    padded = bodies["first"] + b" " * LEARN_LIMIT
    cache, sent = learned_from(padded, chunk=65536)
    assert sent == padded and len(cache) == 0


def test_only_operations_with_a_parser_get_a_learner() -> None:
    assert learner_for(terminate("i-0abc"), NameCache()) is None
    request = capture("sqs").call("ListQueues", {})
    assert learner_for(recognise(request, RecogniseSettings()), NameCache()) is None


def test_a_terminate_by_id_resolves_to_the_name_and_is_held_in_prod(
    bodies: dict[str, bytes],
) -> None:
    cache, _ = learned_from(bodies["DescribeInstances"])
    web = next(i for i, tags in ids(bodies["DescribeInstances"]).items() if tags.get("Name"))
    before = terminate(web)
    assert before.resource.name == "" and before.environment is Environment.UNKNOWN
    action = resolve(before, cache)
    assert (action.resource.id, action.resource.name) == (web, "web-1")
    assert action.resource.key == "aws::us-east-1:aws:ec2:instance/web-1"
    assert action.environment is Environment.PROD
    decision = evaluate(load_policies(POLICIES), action, Context(now=NOW, session=SessionInfo()))
    assert decision.outcome is Outcome.HOLD
    assert "web-1" in decision.message and "environment prod" in decision.message
    # the resolution is in the recorded action: a replay decides the same
    replayed = Action.model_validate_json(action.model_dump_json())
    context = Context(now=NOW, session=SessionInfo())
    assert evaluate(load_policies(POLICIES), replayed, context) == decision


def test_environment_tags_resolve_unknown_but_never_lower_a_known_environment(
    bodies: dict[str, bytes],
) -> None:
    cache, _ = learned_from(bodies["DescribeInstances"])
    dev = next(i for i, tags in ids(bodies["DescribeInstances"]).items() if "Env" in tags)
    resolved = resolve(terminate(dev), cache)
    assert resolved.environment is Environment.DEV and resolved.resource.name == ""
    configured_prod = terminate(dev).model_copy(update={"environment": Environment.PROD})
    assert resolve(configured_prod, cache).environment is Environment.PROD
    untagged = next(i for i, tags in ids(bodies["DescribeInstances"]).items() if not tags)
    assert resolve(terminate(untagged), cache) == terminate(untagged)  # nothing learned


def test_the_cache_is_bounded() -> None:
    cache = NameCache(limit=3)
    for i in range(5):
        cache.learn(f"k{i}", LearnedName(f"n{i}", Environment.UNKNOWN, "test"))
    assert len(cache) == 3 and cache.get("k0") is None and cache.get("k4") is not None
