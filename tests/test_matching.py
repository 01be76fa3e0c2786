"""The structured ``match``: the closures the engine selects candidates with
(``Matcher.indexed``) against ``Matcher.mismatch``, the reference, on generated match
blocks and actions (globs with and without wildcards, literal names)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guardproxy.action import Action, Actor, Environment, Provider, RequestSummary, Resource, Verb
from guardproxy.context import Context, SessionInfo, Signals
from guardproxy.policy.matching import Matcher
from guardproxy.policy.model import Match

EXAMPLES = int(os.environ.get("GUARDPROXY_HYPOTHESIS_EXAMPLES", "300"))
NAMES = ["logs", "ec2", "DeleteStack", "prod-db-1", "api.example.com", "claude-code", "",
         "a?c", "abc", "bc", "a[b]c", "x*", "xy", "Ab", "ab", "a.b", "a\\b", "-", "ab\n",
         "a]c"]  # fmt: skip
GLOBS = [*NAMES, "*", "?", "prod-*", "*-1", "a?c", "[ab]c", "[!a]*", "*.example.com", "[", "]",
         "x?", "?b"]  # fmt: skip
values = st.sampled_from(NAMES)
patterns = st.one_of(st.none(), st.lists(st.sampled_from(GLOBS), max_size=3))


@st.composite
def matches(draw: st.DrawFn) -> Match:
    return Match.model_validate({
        "environments": draw(st.one_of(st.none(), st.lists(st.sampled_from(list(Environment)),
                                                           min_size=1))),
        "services": draw(patterns), "operations": draw(patterns),
        "resourceTypes": draw(patterns), "resourceNames": draw(patterns),
        "riskTags": draw(patterns), "hosts": draw(patterns), "agents": draw(patterns),
        "signals": draw(st.one_of(st.none(), st.just(["recreate"]))),
        "dryRun": draw(st.one_of(st.none(), st.booleans())),
    })  # fmt: skip


@st.composite
def inputs(draw: st.DrawFn) -> tuple[Action, Context]:
    action = Action(
        provider=Provider.AWS, verb=Verb.READ, environment=draw(st.sampled_from(list(Environment))),
        service=draw(values), operation=draw(values),
        resource=Resource(type=draw(values), name=draw(values), id=draw(values)),
        risk_tags=draw(st.lists(values, max_size=3)), dry_run=draw(st.booleans()),
        actor=Actor(tool=draw(values)), request=RequestSummary(host=draw(values).upper()),
    )  # fmt: skip
    context = Context(session=SessionInfo(agent=draw(values)),
                      signals=Signals(recreate=draw(st.booleans())))  # fmt: skip
    return action, context


@given(match=matches(), given_input=inputs())
@settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 500)
def test_indexed_closure_agrees_with_mismatch(
    match: Match, given_input: tuple[Action, Context]
) -> None:
    matcher = Matcher.compile(match)
    action, context = given_input
    expected = matcher.mismatch(action, context) is None
    assert (matcher.indexed is None or matcher.indexed(action, context)) == expected


@pytest.mark.parametrize(
    ("globs", "value", "expected"),
    [
        (["a?c"], "abc", True),
        (["a?c"], "a?c", True),
        (["[ab]c"], "bc", True),
        (["[!a]c"], "bc", True),
        (["[!a]c"], "ac", False),
        (["prod-*"], "prod-x", True),
        (["logs"], "logs", True),
        (["logs"], "Logs", False),
        (["logs"], "logs\n", False),
        (["a.b"], "axb", False),
        (["a.b", "ec2"], "ec2", True),
        (["ec2", "x*"], "xyz", True),
    ],
)
def test_service_globs_with_and_without_wildcards(
    globs: list[str], value: str, expected: bool
) -> None:
    matcher = Matcher.compile(Match(services=globs))
    action = Action(service=value)
    assert matcher.indexed is not None
    assert matcher.indexed(action, Context()) is expected
    assert (matcher.mismatch(action, Context()) is None) is expected


@given(match=matches(), given_input=inputs())
@settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 500)
def test_static_and_dynamic_closures_together_agree_with_mismatch(
    match: Match, given_input: tuple[Action, Context]
) -> None:
    """The engine keeps ``static``'s verdict per kind of action and checks ``dynamic``
    per action: together they must be the reference, and ``static`` must read nothing
    but the fields the engine keys its plans on (another action of the same kind gets
    the same verdict)."""
    matcher = Matcher.compile(match)
    action, context = given_input
    expected = matcher.mismatch(action, context) is None
    static = matcher.static is None or matcher.static(action)
    dynamic = matcher.dynamic is None or matcher.dynamic(action, context)
    assert (static and dynamic) == expected
    same_kind = Action(
        provider=action.provider, verb=action.verb, environment=action.environment,
        service=action.service, operation=action.operation,
        resource=Resource(type=action.resource.type), dry_run=action.dry_run,
    )  # fmt: skip
    assert (matcher.static is None or matcher.static(same_kind)) == static
