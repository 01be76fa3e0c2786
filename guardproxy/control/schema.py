"""The control API's bodies and answers as pydantic models, and its OpenAPI document.

Every route is listed once as an :class:`Endpoint`; the document is generated from
that list and the models, and a test checks that every route the server answers is
in it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema


class ResolveBody(BaseModel):
    """An approver's verdict; who gives it comes from the token, never from the body."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(max_length=1000, description="Why; required, kept in the audit trail.")


class ErrorOut(BaseModel):
    error: str = Field(description="What is wrong.")
    hint: str = Field("", description="What to do about it.")


class RuleProgressOut(BaseModel):
    rule: str = Field(description="The hold rule (empty: the bundle's default requirement).")
    groups: list[str]
    quorum: int
    approvers: list[str] = Field(description="Distinct people counted toward this rule.")
    missing_groups: list[str] = Field(description="Its required groups nobody approved for.")
    more: int = Field(description="People it still needs at least (0 once met).")
    met: bool
    needs: str = Field(description="What it still needs, for people (empty once met).")


class ProgressOut(BaseModel):
    approvers: list[str] = Field(description="Distinct people whose approval counts.")
    quorum: int = Field(description="The largest single rule's quorum.")
    missing_groups: list[str] = Field(
        description="Groups an approval is still needed from (of each unmet rule: its missing "
        "required groups, else any of its groups)."
    )
    met: bool
    needs: str = Field("", description="Everything still needed, rule by rule (empty once met).")
    requirements: list[RuleProgressOut] = Field(
        default_factory=list, description="Each hold rule's requirement; all must be met."
    )
    text: str = Field(
        description="For people: `1 of 2 approvals; needs 1 more approval from senior (rule x)`."
    )


class ApprovalOut(BaseModel):
    approver: str
    groups: list[str]
    verdict: Literal["approve", "deny"]
    reason: str
    at: str


class OnCallPageOut(BaseModel):
    level: int = Field(description="1 when held; the next level when it escalated.")
    schedule: str
    pager: str = Field(description="pagerduty, opsgenie, or none (no pager configured).")
    triggered_at: str | None = Field(
        description="When the pager took it (None: not yet, or it failed)."
    )
    resolved_at: str | None
    error: str


class OnCallLevelOut(BaseModel):
    schedule: str
    kind: str = Field(description="rotation, pagerduty, opsgenie (none: not configured).")
    source: str
    people: list[str] = Field(description="Who the source has on call, in its own terms.")
    as_of: str
    until: str | None = Field(description="The end of a shift in it, if known.")
    stale: bool = Field(description="The source failed; this is its last answer.")
    error: str


class OnCallOut(BaseModel):
    group: str = Field(description="`oncall:<schedule>` as the policy names it.")
    schedule: str
    approvers: list[str] = Field(description="Approvers on call in it now: they may decide.")
    unlinked: list[str] = Field(description="On call but linked to no approver.")
    stale: bool
    summary: str = Field(description="For people: who, from where, stale or not.")
    levels: list[OnCallLevelOut] = Field(
        description="The schedule, then each escalation level the hold reached."
    )
    paged: bool = Field(description="Whether a page for this group was taken by a pager.")
    paged_text: str
    pages: list[OnCallPageOut]


class HoldOut(BaseModel):
    id: str
    state: Literal["pending", "approved", "denied", "expired", "released"]
    summary: str
    session: str
    created_at: str
    expires_at: str
    message: str
    rules: list[str] = Field(description="The determining rules.")
    approval: dict[str, Any] | None = Field(description="The policy's approval requirement.")
    progress: ProgressOut
    grant: str = Field(description="`once` or `session:<seconds>`.")
    resolved_by: str | None
    resolved_at: str | None
    reason: str | None
    action: dict[str, Any]
    session_ended: bool = Field(
        False, description="The session that made the request has ended: nothing waits live."
    )
    session_ended_at: str | None = None
    release: str = Field(
        "",
        description="What approval lets through (pending) or still will (approved): which "
        "request, in which session or new session of the same user and directory, until when.",
    )
    oncall: list[OnCallOut] = Field(
        default_factory=list,
        description="A pending hold's on-call groups: who is on call in each now, and "
        "whether they were paged.",
    )


class HoldDetailOut(HoldOut):
    request: dict[str, Any] = Field(
        description="What would be sent, redacted: method, url, headers, body."
    )
    session_info: dict[str, Any] = Field(description="The session as registered.")
    history: dict[str, Any] = Field(
        description="The session's counts and recent actions as the policy saw them (empty "
        "when no rule reads history)."
    )
    recent: list[dict[str, Any]] = Field(
        description="The session's latest actions up to the hold, oldest first (session log)."
    )
    signals: dict[str, Any] = Field(description="Sequence signals at decision time.")
    resource: dict[str, Any] = Field(description="The resource's history at decision time.")
    approvals: list[ApprovalOut] = Field(description="Verdicts so far, oldest first.")


class HoldsOut(BaseModel):
    holds: list[HoldOut]


class ResolveOut(BaseModel):
    hold: HoldDetailOut
    outcome: str = Field(description="What happened and what is still needed, for people.")


class DecisionOut(BaseModel):
    id: str
    at: str
    session: str
    outcome: str
    hold_id: str | None
    upstream_status: int | None
    summary: str
    provider: str
    rules: list[str]
    message: str


class DecisionsOut(BaseModel):
    decisions: list[DecisionOut]


class WhoamiOut(BaseModel):
    kind: Literal["admin", "approver"]
    name: str
    groups: list[str]


@dataclass(frozen=True)
class Endpoint:
    """One documented operation."""

    method: Literal["get", "post"]
    path: str
    """OpenAPI form: ``/v1/holds/{hold_id}``."""
    summary: str
    auth: Literal["none", "admin", "approver", "any"]
    response: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    query: tuple[tuple[str, str], ...] = ()
    errors: tuple[int, ...] = field(default=())
    media_type: str = "application/json"
    """What a 200 carries: JSON, or the console's HTML/assets and its event stream."""


_AUTH_TEXT = {
    "none": "No token.",
    "admin": "The admin token (data directory). An approver token is refused.",
    "approver": "An approver's own token (guardproxy approvers add). The admin token is refused.",
    "any": "The admin token or an approver's token.",
}
_STATUS_TEXT = {
    401: "No or unknown token",
    403: "Not allowed for this token or person",
    404: "No such thing",
    409: "The hold can no longer be decided, or this person already approved it",
    422: "The body or a parameter is invalid",
    503: "The store failed",
}


def openapi_document(endpoints: list[Endpoint], version: str) -> dict[str, Any]:
    models = {m for e in endpoints for m in (e.response, e.body) if m is not None}
    models.add(ErrorOut)
    refs, schema = models_json_schema(
        [(m, "serialization") for m in sorted(models, key=lambda m: m.__name__)],
        ref_template="#/components/schemas/{model}",
    )
    ref_of = {model: refs[(model, "serialization")]["$ref"] for model in models}
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        operation: dict[str, Any] = {
            "summary": endpoint.summary,
            "description": _AUTH_TEXT[endpoint.auth],
            "security": [] if endpoint.auth == "none" else [{"bearer": []}],
            "parameters": [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                for name in _path_names(endpoint.path)
            ]
            + [
                {
                    "name": name,
                    "in": "query",
                    "required": False,
                    "description": text,
                    "schema": {"type": "string"},
                }
                for name, text in endpoint.query
            ],
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {
                        endpoint.media_type: {
                            "schema": {"$ref": ref_of[endpoint.response]}
                            if endpoint.response
                            else {"type": "object"}
                            if endpoint.media_type == "application/json"
                            else {"type": "string"}
                        }
                    },
                }
            },
        }
        if endpoint.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": ref_of[endpoint.body]}}},
            }
        for status in endpoint.errors:
            operation["responses"][str(status)] = {
                "description": _STATUS_TEXT[status],
                "content": {"application/json": {"schema": {"$ref": ref_of[ErrorOut]}}},
            }
        paths.setdefault(endpoint.path, {})[endpoint.method] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "guardproxy control API", "version": version},
        "paths": paths,
        "components": {
            "schemas": schema.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _path_names(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]
