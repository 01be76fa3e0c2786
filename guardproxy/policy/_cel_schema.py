"""The input schema CEL expressions are checked against (see :mod:`guardproxy.policy.cel`):
the pydantic models of the action and the context turned into a tree of fields, their CEL
types for the type checker, and the input paths that hold lists, maps or models, which
the compiler uses for its fast paths.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

from pydantic import BaseModel

from guardproxy.action import Action
from guardproxy.context import History, ResourceHistory, SessionInfo, Signals
from guardproxy.policy import typecheck
from guardproxy.policy.typecheck import CelType

# ---------------------------------------------------------------------------
# The input schema that expressions are checked against.


@dataclass(frozen=True)
class Leaf:
    """A field with no sub-fields that CEL can name."""

    kind: str  # string | int | bool | list | map | timestamp | any
    choices: tuple[str, ...] = ()
    element: SchemaNode | None = field(default=None, compare=False, hash=False)
    """A list's element, when known."""


SchemaNode = Leaf | dict[str, "SchemaNode"]
ANY = Leaf("any")


def _leaf_for(annotation: Any, seen: frozenset[type] = frozenset()) -> SchemaNode:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _leaf_for(options[0], seen) if len(options) == 1 else ANY
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return ANY if annotation in seen else model_schema(annotation, seen)
        if issubclass(annotation, Enum):
            return Leaf("string", tuple(str(m.value) for m in annotation))
        if issubclass(annotation, bool):
            return Leaf("bool")
        if issubclass(annotation, int):
            return Leaf("int")
        if issubclass(annotation, str):
            return Leaf("string")
        if issubclass(annotation, datetime):
            return Leaf("timestamp")
    if origin is list:
        arguments = typing.get_args(annotation)
        return Leaf("list", element=_leaf_for(arguments[0], seen) if arguments else None)
    if origin is dict:
        return Leaf("map")
    return ANY


def model_schema(
    model: type[BaseModel], seen: frozenset[type] = frozenset()
) -> dict[str, SchemaNode]:
    inner = seen | {model}  # a model inside itself (Action.readings) is left untyped
    return {name: _leaf_for(info.annotation, inner) for name, info in model.model_fields.items()}


ROOT_SCHEMA: dict[str, SchemaNode] = {
    "action": model_schema(Action),
    "session": model_schema(SessionInfo),
    "history": model_schema(History),
    "resource": model_schema(ResourceHistory),
    "signals": model_schema(Signals),
    "now": Leaf("timestamp"),
}
ROOTS = (*ROOT_SCHEMA, "params", "variables")


def _cel_type(node: SchemaNode) -> CelType:
    """The CEL type a schema node has in the activation: the models' JSON, so a
    datetime inside them is a string (only the root ``now`` is a timestamp)."""
    if isinstance(node, dict):
        return typecheck.object_of({name: _cel_type(child) for name, child in node.items()})
    if node.kind == "list":
        return typecheck.list_of(_cel_type(node.element) if node.element else typecheck.DYN)
    if node.kind == "map":
        return typecheck.map_of(typecheck.STRING, typecheck.DYN)
    return _LEAF_TYPES.get(node.kind, typecheck.DYN)


_LEAF_TYPES = {"string": typecheck.STRING, "int": typecheck.INT, "bool": typecheck.BOOL,
               "timestamp": typecheck.STRING}  # fmt: skip
ROOT_TYPES: dict[str, CelType] = {
    root: typecheck.TIMESTAMP if root == "now" else _cel_type(node)
    for root, node in ROOT_SCHEMA.items()
}
# a reading is an Action (without readings of its own): the schema stops at the
# recursion, the type can refer to itself
assert ROOT_TYPES["action"].fields is not None
typing.cast(dict[str, CelType], ROOT_TYPES["action"].fields)["readings"] = typecheck.list_of(
    ROOT_TYPES["action"]
)


def _shapes(model: type[BaseModel], prefix: tuple[str, ...]) -> dict[tuple[str, ...], str]:
    """Input paths whose value is always a list or a map (a nested model): a field
    annotated so, never optional. A macro over one of them cannot fail to iterate."""
    found: dict[tuple[str, ...], str] = {}
    for name, info in model.model_fields.items():
        annotation, path = info.annotation, (*prefix, name)
        if typing.get_origin(annotation) is list:
            found[path] = "list"
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found[path] = "map"
            if annotation is not model:
                found.update(_shapes(annotation, path))
    return found


def _models(model: type[BaseModel], path: tuple[str, ...]) -> dict[tuple[str, ...], type]:
    found: dict[tuple[str, ...], type] = {path: model}
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found.update(_models(annotation, (*path, name)))
    return found


INPUT_MODELS = _models(Action, ("action",))
"""The model at each path of the action, which compiled code reads in place."""
INPUT_SHAPES: dict[tuple[str, ...], str] = {
    path: shape
    for root, model in (("action", Action), ("session", SessionInfo), ("history", History),
                        ("resource", ResourceHistory), ("signals", Signals))
    for path, shape in _shapes(model, (root,)).items()
}  # fmt: skip
