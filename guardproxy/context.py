"""What the policy sees besides the action: time and the session.

All of it is computed *before* evaluation and recorded with the decision, so the
engine never reads a clock or a store and a recorded decision replays exactly.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field


class SessionInfo(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field("", description="Session id; `anonymous:<client>` without a credential.")
    name: str = ""
    user: str = Field("", description="Who started the session.")
    agent: str = Field("", description="Agent it looks like: claude-code, codex, cursor...")
    labels: list[str] = Field(default_factory=list)
    anonymous: bool = Field(True, description="No session credential was presented.")


class Context(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    now: datetime = Field(
        default_factory=lambda: datetime(1970, 1, 1, tzinfo=UTC),
        description="Decision time, fixed before evaluation (CEL: `now`).",
    )
    session: SessionInfo = Field(default_factory=SessionInfo)
