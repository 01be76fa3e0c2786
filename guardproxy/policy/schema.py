"""JSON Schemas for tooling: editors autocomplete policy files, tools read actions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, TypeAdapter

from guardproxy.action import Action
from guardproxy.context import Context
from guardproxy.policy.decision import Decision
from guardproxy.policy.model import BundleConfig, PolicyException, PolicySet
from guardproxy.policy.testing import PolicyTest

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"

_PolicyFile = Annotated[
    PolicySet | PolicyException | BundleConfig | PolicyTest, Field(discriminator="kind")
]


def schemas() -> dict[str, dict[str, Any]]:
    """Every published schema by file name."""
    policy = TypeAdapter(_PolicyFile).json_schema(by_alias=True)
    policy["title"] = "guardproxy policy file (guardproxy.dev/v1)"
    return {
        "policy.schema.json": policy,
        "action.schema.json": Action.model_json_schema(),
        "context.schema.json": Context.model_json_schema(),
        "decision.schema.json": Decision.model_json_schema(),
    }


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in schemas().items():
        path = directory / name
        path.write_text(render(schema), encoding="utf-8")
        written.append(path)
    return written
