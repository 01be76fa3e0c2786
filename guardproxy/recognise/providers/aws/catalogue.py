"""AWS's destructive operations: every operation of every botocore model that
``verbs.classify`` calls a delete, destroy or permission change.

Built from the model index rather than requests: the recogniser's action for an
operation is exactly this (service, operation, verb from ``verbs.classify``, resource
type from the model), which the AWS sweep test checks request by request.
"""

from __future__ import annotations

from collections.abc import Iterator

from guardproxy.action import Action, Confidence, Provider, Resource
from guardproxy.recognise.examples import DESTRUCTIVE_VERBS, NAME
from guardproxy.recognise.providers.aws.index import shared_index
from guardproxy.recognise.providers.aws.verbs import classify
from guardproxy.recognise.registry import Example

__all__ = ["destructive"]


def destructive() -> Iterator[Example]:
    """One example per destructive operation, labelled ``aws:<service>:<operation>``."""
    index = shared_index()
    for name in index.names:
        model = index.model(name)
        if model is None:
            continue
        for op in model.ops.values():
            verb = classify(model.name, op.name, model.resource_nouns)
            if verb not in DESTRUCTIVE_VERBS:
                continue
            action = Action(
                provider=Provider.AWS,
                service=model.name,
                operation=op.name,
                verb=verb,
                resource=Resource(type=f"aws:{model.name}:{op.resource}", name=NAME),
                confidence=Confidence.EXACT,
            )
            yield Example(f"aws:{model.name}:{op.name}", action=action)
