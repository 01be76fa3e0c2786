"""The policy file format: ``apiVersion: guardproxy.dev/v1`` documents.

Shaped like Kubernetes ValidatingAdmissionPolicy: a structured ``match`` that is
indexed and needs no CEL, then optional CEL ``matchConditions`` and a ``condition``.
Field names in files are camelCase; these models are the single source of truth
for the shipped JSON Schema.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from guardproxy.action import Environment, Provider, Verb

API_VERSION = "guardproxy.dev/v1"

_DURATION = re.compile(r"^(\d+)(s|m|h|d)$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_NAME = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"


def duration_seconds(text: str) -> int:
    """Parse ``45s``, ``15m``, ``2h``, ``1d`` into seconds."""
    found = _DURATION.match(text)
    if not found:
        raise ValueError(f"{text!r} is not a duration; write e.g. 45s, 15m, 2h or 1d")
    return int(found.group(1)) * _UNIT_SECONDS[found.group(2)]


def _check_duration(text: str) -> str:
    if duration_seconds(text) <= 0:
        raise ValueError("a duration must be positive")
    return text


def _check_grant(text: str) -> str:
    if text == "once":
        return text
    scope, _, ttl = text.partition(":")
    if scope != "session" or not ttl:
        raise ValueError(f"{text!r} is not a grant; write `once` or `session:<duration>`")
    _check_duration(ttl)
    return text


Duration = Annotated[str, AfterValidator(_check_duration)]
Grant = Annotated[str, AfterValidator(_check_grant)]
SignalName = Literal[
    "recreate",
    "environment_rebuild",
    "protection_removed_earlier",
    "destructive_budget_exceeded",
    "history_unavailable",
]
"""The boolean fields of the context's `signals` a `match` may name."""


class Outcome(StrEnum):
    """What happens to a request, from most to least permissive."""

    ALLOW = "allow"
    HOLD = "hold"
    DENY = "deny"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {Outcome.ALLOW: 0, Outcome.HOLD: 1, Outcome.DENY: 2}


class Mode(StrEnum):
    ENFORCE = "enforce"
    AUDIT = "audit"


class FailurePolicy(StrEnum):
    FAIL = "Fail"
    IGNORE = "Ignore"


class _Doc(BaseModel):
    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True
    )


class Match(_Doc):
    """Structured pre-filter: keys are ANDed, values in a list are ORed, globs allowed.

    An omitted key matches anything; rules are indexed on providers and verbs.
    """

    providers: list[Provider] | None = None
    services: list[str] | None = Field(None, description="Globs on `action.service`.")
    operations: list[str] | None = Field(None, description="Globs on `action.operation`.")
    verbs: list[Verb] | None = None
    environments: list[Environment] | None = None
    resource_types: list[str] | None = Field(None, description="Globs on `action.resource.type`.")
    resource_names: list[str] | None = Field(
        None, description="Globs on `action.resource.name` (or its id when it has no name)."
    )
    risk_tags: list[str] | None = Field(
        None, description="Globs; matches when any of the action's risk tags matches one."
    )
    hosts: list[str] | None = Field(None, description="Globs on the real destination host.")
    agents: list[str] | None = Field(None, description="Globs on `session.agent`.")
    signals: list[SignalName] | None = Field(
        None, description="Sequence signals; matches when any listed one is set (no CEL needed)."
    )
    dry_run: bool | None = Field(
        None, description="true: only dry-run requests; false: only requests that persist."
    )


class NamedExpression(_Doc):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$")
    expression: str


ONCALL_PREFIX = "oncall:"
"""An approval group ``oncall:<schedule>`` is whoever is on call in that schedule at the
moment of their verdict (schedules are named in guardproxy's configuration)."""
_SCHEDULE_NAME = re.compile(_NAME)


def _check_groups(groups: list[str]) -> list[str]:
    for group in groups:
        if group.startswith(ONCALL_PREFIX) and not _SCHEDULE_NAME.match(
            group.removeprefix(ONCALL_PREFIX)
        ):
            raise ValueError(
                f"{group!r} is not an on-call group; write oncall:<schedule>, the schedule "
                "named in lower-case letters, digits and - (e.g. oncall:platform-primary)"
            )
    return groups


def _check_page(page: str) -> str:
    if not page.startswith(ONCALL_PREFIX):
        raise ValueError(
            f"page {page!r} must name an on-call schedule: oncall:<schedule>, one of the groups"
        )
    _check_groups([page])
    return page


Groups = Annotated[list[str], AfterValidator(_check_groups)]


class Approval(_Doc):
    """Who must approve a held action, and what an approval grants."""

    groups: Groups = Field(
        min_length=1,
        description="Groups whose members may approve; `oncall:<schedule>` is whoever is "
        "on call in that schedule when they give their verdict.",
    )
    quorum: int = Field(1, ge=1, le=10, description="Distinct people who must approve.")
    required_groups: Groups = Field(
        default_factory=list, description="At least one approval must come from each."
    )
    page: Annotated[str, AfterValidator(_check_page)] | None = Field(
        None,
        description="`oncall:<schedule>` (one of the groups): page whoever is on call there "
        "when the hold is made, resolve the page when it is decided or expires; with "
        "`onTimeout: escalate`, the schedule's next level is paged half-way to the time-out.",
    )
    prevent_self_approval: bool = Field(
        True, description="The user who started the session cannot approve its holds."
    )
    timeout: Duration = Field("30m", description="After this the hold is denied.")
    on_timeout: Literal["deny", "escalate"] = Field(
        "deny", description="Both deny; `escalate` also sends an escalation notice."
    )
    grant: Grant = Field(
        "once",
        description="`once`: the approved request passes once; `session:<duration>`: "
        "identical requests of the session pass for that long.",
    )

    @model_validator(mode="after")
    def _page_among_groups(self) -> Approval:
        if self.page is not None and self.page not in self.groups:
            raise ValueError(
                f"page {self.page} is not among the approval groups, so the people it pages "
                f"could not approve; add {self.page} to groups"
            )
        return self


class Rule(_Doc):
    id: str = Field(pattern=_NAME, description="Unique within the set; cited as `set/id`.")
    description: str = ""
    match: Match = Field(default_factory=Match)
    match_conditions: list[NamedExpression] = Field(default_factory=list)
    condition: str | None = Field(None, description="CEL returning bool; omitted means true.")
    decision: Outcome
    message: str | None = Field(None, description="Told to the agent; required for deny/hold.")
    message_expression: str | None = Field(
        None, description="CEL string; falls back to `message` on error, empty or multi-line."
    )
    approval: Approval | None = None
    mode: Mode | None = Field(None, description="Defaults to the set's `defaults.mode`.")
    mode_locked: bool = Field(False, description="Bundle mode overrides cannot change it.")
    failure_policy: FailurePolicy = Field(
        FailurePolicy.FAIL,
        description="Fail: a deny/hold rule whose CEL errors fires. Ignore: it does not.",
    )
    exceptions: Literal["allowed", "forbidden"] = "allowed"
    labels: dict[str, str] = Field(default_factory=dict)


class SetDefaults(_Doc):
    mode: Mode = Mode.ENFORCE


class Metadata(_Doc):
    name: str = Field(pattern=_NAME)
    description: str = ""
    owner: str = ""
    labels: dict[str, str] = Field(default_factory=dict)


class PolicySetSpec(_Doc):
    defaults: SetDefaults = Field(default_factory=SetDefaults)
    params: dict[str, Any] = Field(
        default_factory=dict, description="Static data, read as `params.<name>`."
    )
    variables: list[NamedExpression] = Field(
        default_factory=list, description="Read as `variables.<name>`; may use earlier ones."
    )
    rules: list[Rule] = Field(min_length=1)


class PolicySet(_Doc):
    api_version: Literal["guardproxy.dev/v1"]
    kind: Literal["PolicySet"]
    metadata: Metadata
    spec: PolicySetSpec


class PolicyExceptionSpec(_Doc):
    rules: list[str] = Field(min_length=1, description="Exact rule ids, `set/id`.")
    match: Match = Field(default_factory=Match)
    condition: str | None = None
    expires: datetime = Field(description="Required: every exception ends.")
    reason: str = Field(min_length=1)

    @model_validator(mode="after")
    def _expires_has_zone(self) -> PolicyExceptionSpec:
        if self.expires.tzinfo is None:
            raise ValueError("`expires` needs a time zone, e.g. 2026-12-31T00:00:00Z")
        return self


class PolicyException(_Doc):
    api_version: Literal["guardproxy.dev/v1"]
    kind: Literal["PolicyException"]
    metadata: Metadata
    spec: PolicyExceptionSpec


class ModeOverride(_Doc):
    """Run matching rules in another mode, e.g. audit-only in dev while trialled."""

    environments: list[Environment] | None = None
    providers: list[Provider] | None = None
    mode: Mode


class Limits(_Doc):
    """Caps applied to what CEL sees; agent-controlled sizes must not stall evaluation."""

    max_list_items: int = Field(64, ge=1, le=10_000)
    max_string_bytes: int = Field(1024, ge=16, le=1_048_576)


class BundleSpec(_Doc):
    default_decision: Outcome = Field(description="Applies when no enforce-mode rule fires.")
    unclassified: Literal["deny", "hold"] = Field(
        "deny", description="Default for actions no recogniser could classify; never allow."
    )
    default_approval: Approval | None = Field(
        None, description="Approval for holds that come from a default, not a rule."
    )
    mode_overrides: list[ModeOverride] = Field(default_factory=list)
    limits: Limits = Field(default_factory=Limits)


class BundleConfig(_Doc):
    api_version: Literal["guardproxy.dev/v1"]
    kind: Literal["BundleConfig"]
    metadata: Metadata
    spec: BundleSpec


PolicyDocument = Annotated[PolicySet | PolicyException | BundleConfig, Field(discriminator="kind")]
KINDS = ("PolicySet", "PolicyException", "BundleConfig")
