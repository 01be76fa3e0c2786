"""On-call routing and Slack as configured (``oncall:`` and ``slack:`` in the config file).

A policy names a schedule in an approval group (``oncall:platform-primary``) and may page
it (``page: oncall:platform-primary``); the configuration says where each schedule's
on-call comes from (the local rotation file, PagerDuty or Opsgenie), how it is paged, and
which schedule is its next level. A name the configuration does not list is a rotation of
that name in the rotation file. Secrets are never in the file: each is read from a file or
an environment variable named here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "SCHEDULE_NAME",
    "OnCallSettings",
    "OpsgeniePagerSettings",
    "OpsgenieResponder",
    "OpsgenieSettings",
    "OpsgenieSourceSettings",
    "PagerDutyPagerSettings",
    "PagerDutySettings",
    "PagerDutySourceSettings",
    "PagerSettings",
    "RotationSourceSettings",
    "ScheduleSettings",
    "SlackSettings",
    "SourceSettings",
]

SCHEDULE_NAME = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
"""As in policies' ``oncall:<schedule>``."""
_ENV = r"^[A-Za-z_][A-Za-z0-9_]*$"
_HTTP_URL = r"^https?://[^\s/]+(/\S*)?$"


class _Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _Secret(_Settings):
    """A secret from a file or an environment variable, exactly one of them."""

    @model_validator(mode="after")
    def _one_source(self) -> _Secret:
        for prefix in self._secret_names():
            given = [
                name
                for name in (f"{prefix}_file", f"{prefix}_env")
                if getattr(self, name) is not None
            ]
            if len(given) != 1:
                raise ValueError(
                    f"give {prefix}_file (a file holding it) or {prefix}_env (an environment "
                    "variable holding it), exactly one"
                )
        return self

    def _secret_names(self) -> tuple[str, ...]:
        return ()


# ------------------------------------------------------------------ sources


class RotationSourceSettings(_Settings):
    """Who is on call from the local rotation file (oncall.rotations)."""

    kind: Literal["rotation"] = "rotation"
    rotation: str | None = Field(
        None,
        pattern=SCHEDULE_NAME,
        description="The rotation's name in the file (default: the schedule's name).",
    )


class PagerDutySourceSettings(_Settings):
    """Who is on call from PagerDuty's REST API (``GET /oncalls``): a schedule, or one
    level of an escalation policy."""

    kind: Literal["pagerduty"]
    schedule_id: str | None = Field(None, pattern=r"^[A-Za-z0-9]+$")
    escalation_policy_id: str | None = Field(None, pattern=r"^[A-Za-z0-9]+$")
    escalation_level: int = Field(
        1, ge=1, le=20, description="With escalation_policy_id: the level whose on-calls count."
    )

    @model_validator(mode="after")
    def _one_target(self) -> PagerDutySourceSettings:
        if (self.schedule_id is None) == (self.escalation_policy_id is None):
            raise ValueError("give schedule_id or escalation_policy_id, exactly one")
        return self


class OpsgenieSourceSettings(_Settings):
    """Who is on call from Opsgenie (``GET /v2/schedules/{id}/on-calls``)."""

    kind: Literal["opsgenie"]
    schedule: str = Field(min_length=1, max_length=200)
    identifier_type: Literal["id", "name"] = Field(
        "name", description="Whether `schedule` is the schedule's name or its id."
    )


SourceSettings = Annotated[
    RotationSourceSettings | PagerDutySourceSettings | OpsgenieSourceSettings,
    Field(discriminator="kind"),
]


# ------------------------------------------------------------------- pagers


class PagerDutyPagerSettings(_Secret):
    """Page through PagerDuty's Events API v2: a trigger per page (dedup key: the hold
    id), a resolve when the hold is decided or expires."""

    kind: Literal["pagerduty"]
    routing_key_file: Path | None = None
    routing_key_env: str | None = Field(None, pattern=_ENV)
    severity: Literal["critical", "error", "warning", "info"] = "error"

    def _secret_names(self) -> tuple[str, ...]:
        return ("routing_key",)


class OpsgenieResponder(_Settings):
    type: Literal["schedule", "team", "user", "escalation"]
    name: str | None = None
    id: str | None = None
    username: str | None = None

    @model_validator(mode="after")
    def _identified(self) -> OpsgenieResponder:
        given = [k for k in ("name", "id", "username") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("a responder is named by one of name, id or username")
        if self.username is not None and self.type != "user":
            raise ValueError("username names a user responder only")
        return self


class OpsgeniePagerSettings(_Settings):
    """Page through an Opsgenie alert (alias: the hold id) to these responders; the alert
    is closed when the hold is decided or expires (oncall.opsgenie has the API key)."""

    kind: Literal["opsgenie"]
    responders: list[OpsgenieResponder] = Field(min_length=1)
    priority: Literal["P1", "P2", "P3", "P4", "P5"] = "P2"


PagerSettings = Annotated[
    PagerDutyPagerSettings | OpsgeniePagerSettings, Field(discriminator="kind")
]


# ---------------------------------------------------------------- schedules


class ScheduleSettings(_Settings):
    """One schedule a policy can name as ``oncall:<name>``."""

    source: SourceSettings = Field(
        default_factory=RotationSourceSettings,
        description="Where its on-call comes from (default: the rotation file).",
    )
    pager: PagerSettings | None = Field(
        None, description="How a policy's `page:` reaches whoever is on call."
    )
    escalate_to: str | None = Field(
        None,
        pattern=SCHEDULE_NAME,
        description="The next level: paged when a hold escalates half-way to its time-out, "
        "whose on-call may then decide it too.",
    )


class PagerDutySettings(_Settings):
    api_url: str = Field("https://api.pagerduty.com", pattern=_HTTP_URL)
    events_url: str = Field("https://events.pagerduty.com", pattern=_HTTP_URL)
    token_file: Path | None = Field(None, description="A REST API token (read-only suffices).")
    token_env: str | None = Field(None, pattern=_ENV)


class OpsgenieSettings(_Secret):
    api_url: str = Field(
        "https://api.opsgenie.com",
        pattern=_HTTP_URL,
        description="https://api.eu.opsgenie.com for the EU instance.",
    )
    api_key_file: Path | None = None
    api_key_env: str | None = Field(None, pattern=_ENV)

    def _secret_names(self) -> tuple[str, ...]:
        return ("api_key",)


class OnCallSettings(_Settings):
    """``oncall:`` in the config file."""

    rotations: Path | None = Field(
        None, description="The local rotation file (YAML): rotations by name."
    )
    schedules: dict[Annotated[str, Field(pattern=SCHEDULE_NAME)], ScheduleSettings] = Field(
        default_factory=dict
    )
    pagerduty: PagerDutySettings | None = None
    opsgenie: OpsgenieSettings | None = None
    cache_seconds: float = Field(
        60.0, ge=0, le=3600, description="How long who is on call is reused before asking again."
    )
    stale_seconds: float = Field(
        3600.0,
        ge=0,
        le=7 * 86400,
        description="How long the last answer is used, shown as stale, while a schedule's "
        "service cannot be reached; after that nobody is on call there.",
    )
    timeout_seconds: float = Field(5.0, gt=0, le=60, description="Per request to a service.")
    max_attempts: int = Field(5, ge=1, le=20, description="Tries per page, first included.")

    @model_validator(mode="after")
    def _services_given(self) -> OnCallSettings:
        for name, schedule in self.schedules.items():
            if schedule.source.kind == "pagerduty" and (
                self.pagerduty is None
                or (self.pagerduty.token_file is None) == (self.pagerduty.token_env is None)
            ):
                raise ValueError(
                    f"schedule {name} reads PagerDuty: give oncall.pagerduty.token_file or "
                    "token_env (a REST API token), exactly one"
                )
            uses_opsgenie = schedule.source.kind == "opsgenie" or (
                schedule.pager is not None and schedule.pager.kind == "opsgenie"
            )
            if uses_opsgenie and self.opsgenie is None:
                raise ValueError(
                    f"schedule {name} uses Opsgenie: add oncall.opsgenie with api_key_file or "
                    "api_key_env"
                )
            if schedule.escalate_to == name:
                raise ValueError(f"schedule {name} escalates to itself")
        return self

    def configured(self) -> bool:
        return self.rotations is not None or bool(self.schedules)


class SlackSettings(_Secret):
    """``slack:`` in the config file: a Slack app that posts each hold with Approve and
    Deny buttons to ``channel`` and updates the message as approvals come in. Its
    interactivity request URL is this guardproxy's ``--chat-listen`` address."""

    channel: str = Field(
        pattern=r"^[A-Z0-9]{6,}$", description="The channel's id (C…), where holds are posted."
    )
    bot_token_file: Path | None = None
    bot_token_env: str | None = Field(None, pattern=_ENV)
    signing_secret_file: Path | None = None
    signing_secret_env: str | None = Field(None, pattern=_ENV)
    api_url: str = Field("https://slack.com/api", pattern=_HTTP_URL)
    timeout_seconds: float = Field(5.0, gt=0, le=60)
    max_attempts: int = Field(5, ge=1, le=20)

    def _secret_names(self) -> tuple[str, ...]:
        return ("bot_token", "signing_secret")
