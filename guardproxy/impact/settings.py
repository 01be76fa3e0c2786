"""The ``impact:`` section of the configuration: how long and how far a preview may go,
and how long a safety step may take. Light on purpose (pydantic only): the
configuration imports it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ImpactSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(True, description="Gather impact previews for new holds.")
    timeout_seconds: float = Field(
        5.0, gt=0, le=60, description="A preview's bound: after it, 'impact unknown: timed out'."
    )
    max_calls: int = Field(25, ge=1, le=500, description="Upstream calls one preview may make.")
    workers: int = Field(2, ge=1, le=16, description="Previews gathered at once.")
    queue: int = Field(64, ge=1, le=10_000, description="Previews waiting at most.")
    step_timeout_seconds: float = Field(
        900.0,
        gt=0,
        le=7200,
        description="A safety step's bound (an RDS snapshot of a large database takes "
        "minutes); after it the step failed and nothing is released.",
    )
    step_max_calls: int = Field(2000, ge=1, le=100_000)
