"""pydantic's validation errors turned into problems an author can act on (see
:mod:`guardproxy.policy.loader`): each at its file:line, with the rule it is in and a
did-you-mean for an unknown key; used for policy documents and test files alike.
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any

from pydantic import BaseModel

from guardproxy.policy.yamlsource import Document, Problem

# ---------------------------------------------------------------------------
# Turning pydantic's errors into problems an author can act on.


def validation_problem(model: type[BaseModel], doc: Document, item: Any) -> Problem:
    """One pydantic error as a problem at its file:line, with a did-you-mean for an
    unknown key (policy documents and test files alike)."""
    loc: tuple[str | int, ...] = tuple(item["loc"])
    where = doc.position(loc)
    rule = _rule_at(doc, loc)
    field_name = str(loc[-1]) if loc else "document"
    kind = item["type"]
    if kind == "missing":
        return Problem(where, f"missing required field `{field_name}`", "", rule)
    if kind == "extra_forbidden":
        allowed = _fields_at(model, loc[:-1])
        close = difflib.get_close_matches(field_name, allowed, n=1)
        hint = f"did you mean `{close[0]}`?" if close else f"allowed: {', '.join(allowed)}"
        return Problem(where, f"unknown field `{field_name}`", hint, rule)
    message = str(item["msg"]).removeprefix("Value error, ")
    path = ".".join(str(p) for p in loc)
    return Problem(where, f"`{path}`: {message}", "", rule)


def _rule_at(doc: Document, loc: tuple[str | int, ...]) -> str:
    if len(loc) >= 3 and loc[:2] == ("spec", "rules") and isinstance(loc[2], int):
        try:
            rule = doc.data["spec"]["rules"][loc[2]]
            name = doc.data["metadata"]["name"]
        except (KeyError, IndexError, TypeError):
            return ""
        if isinstance(rule, dict) and isinstance(rule.get("id"), str):
            return f"{name}/{rule['id']}"
    return ""


def _fields_at(model: type[BaseModel], loc: tuple[str | int, ...]) -> list[str]:
    """The camelCase keys allowed at ``loc`` inside ``model``."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        found = next((f for n, f in current.model_fields.items() if (f.alias or n) == part), None)
        if found is None:
            return []
        current = _unwrap(found.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or n for n, f in current.model_fields.items()]
    return []


def _unwrap(annotation: Any) -> Any:
    while True:
        origin = typing.get_origin(annotation)
        if origin in (typing.Union, types.UnionType):
            options = [a for a in typing.get_args(annotation) if a is not type(None)]
            annotation = options[0]
        elif origin in (list, typing.Annotated):
            annotation = typing.get_args(annotation)[0]
        else:
            return annotation
