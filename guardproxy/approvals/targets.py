"""Notification targets as configured (``notifications:`` in the config file, the
``--notify-*`` flags of ``serve``): where hold events go and how hard to try.

A target's ``kind`` names a registered :class:`~guardproxy.approvals.channels.Channel`;
the channel says whether the target must name a signing secret.
"""

from __future__ import annotations

from pathlib import Path
from typing import get_args
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from guardproxy.approvals.channels import channel
from guardproxy.approvals.events import HoldEventKind

__all__ = ["NotificationTarget"]


class NotificationTarget(BaseModel):
    """Where hold events are sent: a signed JSON webhook or a Slack incoming webhook."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str = Field(
        "webhook",
        description="The channel: webhook (signed JSON) or slack (a Slack incoming webhook).",
    )
    url: str = Field(
        pattern=r"^https?://[^\s/]+(/\S*)?$",
        repr=False,  # a Slack webhook URL is itself a secret
        description="http(s) URL that receives a POST per event.",
    )
    secret_file: Path | None = Field(
        None, description="File holding the HMAC signing secret (webhook)."
    )
    secret_env: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Environment variable holding the HMAC signing secret (webhook).",
    )
    events: list[HoldEventKind] = Field(
        default_factory=lambda: list(get_args(HoldEventKind)),
        description="Which hold events to send (default: all).",
    )
    max_attempts: int = Field(6, ge=1, le=20, description="Tries per event, first included.")
    backoff_seconds: float = Field(
        1.0, gt=0, le=60, description="Longest wait before the first retry; doubles per retry."
    )
    max_backoff_seconds: float = Field(60.0, gt=0, le=3600)
    timeout_seconds: float = Field(10.0, gt=0, le=120, description="Per attempt.")

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        channel(kind)  # UnknownChannelError (a ValueError) names the known kinds
        return kind

    @model_validator(mode="after")
    def _one_secret_source(self) -> NotificationTarget:
        if self.secret_file is not None and self.secret_env is not None:
            raise ValueError("give secret_file or secret_env, not both")
        if channel(self.kind).signed and self.secret_file is None and self.secret_env is None:
            raise ValueError(
                f"a {self.kind} is signed: give secret_file (a file with the shared secret) "
                "or secret_env (the name of an environment variable holding it)"
            )
        return self

    def label(self) -> str:
        """How logs name the target: kind, scheme and host only (the path may be a secret)."""
        parts = urlsplit(self.url)
        return f"{self.kind} {parts.scheme}://{parts.netloc}"
