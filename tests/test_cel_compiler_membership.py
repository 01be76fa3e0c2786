"""``in`` with a string celpy made itself (``"a" + "b"``, ``"abc"[1]``: a plain Python
``str``, ``PyStr`` in compiled code) on the compiled fast path, against cel-python's
interpreter: celpy compares such a string with a list's items or a map's keys by str
equality, as it does a ``StringType``. The shipped ``common`` bundle's low-risk deletes
read ``variables.operationKey in params.lowRiskDeletes`` this way."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_cel_compiler import FIXED_INPUTS, SETTINGS, check, expressions, inputs

from guardproxy.action import Action
from guardproxy.context import Context
from guardproxy.policy.model import Limits

MEMBERSHIP = [
    "('a' + 'b') in {'ab': 1}", "('a' + 'b') in {'x': 1}", "('a' + 'b') in {}",
    "('a' + 'b') in ['ab', 'c']", "('a' + 'b') in ['x', 'c']", "('a' + 'b') in ['x', 1]",
    "('a' + 'b') in [1, 'ab']", "('a' + 'b') in []", "'abc'[1] in ['b']",
    "'abc'[1] in {'b': true}", "('a' + 'b') in dyn({'ab': 1})", "('a' + 'b') in dyn(['ab'])",
    "('a' + 'b') in params.mixed", "('prod-db' + '-1') in params.names",
    "(action.service + ':' + action.operation) in params.names",
    "(action.resource.name + '') in params.names", "(action.resource.name + '') in params.nested",
    "(action.operation + action.service) in {'deleteapps': 1, '': 2}",
    "variables.name in params.names", "variables.name in {'prod-db-1-x': 1}",
    "(action.provider + ':' + action.service) in ['aws:s3', 'k8s:apps', ':']",
    "!((action.provider + ':' + action.operation) in {'aws:DeleteStack': 'x'})",
]  # fmt: skip


def test_membership_expressions_compile() -> None:
    for source in MEMBERSHIP:
        pair = expressions(source, False)
        assert pair is not None and pair[0].compiled is not None, source


@pytest.mark.parametrize("source", MEMBERSHIP)
def test_membership_agrees_on_fixed_inputs(source: str) -> None:
    for action, context, limit in FIXED_INPUTS:
        check(source, action, context, limit)
        check(source, action, context, limit, runtime_params=True)


@given(source=st.sampled_from(MEMBERSHIP), cases=inputs, runtime_params=st.booleans())
@SETTINGS
def test_membership_agrees(
    source: str, cases: list[tuple[Action, Context, Limits]], runtime_params: bool
) -> None:
    for action, context, limit in cases:
        check(source, action, context, limit, runtime_params)
