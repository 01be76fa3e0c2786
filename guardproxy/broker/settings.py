"""The ``brokers:`` section of the configuration: which providers' credentials the guard
holds for a session, and where it finds the real ones.

Light on purpose (pydantic only): ``guardproxy.config`` imports it, and the CLI's
client commands load the configuration without the brokers' machinery.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

PROVIDERS = ("aws", "kubernetes", "github", "gcp", "azure", "terraform")
Provider = Literal["aws", "kubernetes", "github", "gcp", "azure", "terraform"]

AWS_HOSTS = ("*.amazonaws.com", "*.amazonaws.com.cn", "*.api.aws", "*.on.aws")
"""Where a session's AWS requests may be re-signed with the real credentials: a request
signed by the session for any other host is refused (re-signing it would hand that host
a request valid at AWS)."""


def _token_source(value: str) -> str:
    kind, sep, rest = value.partition(":")
    if value in ("auto", "az") or (sep and kind in ("env", "file", "command") and rest):
        return value
    raise ValueError(
        f"{value!r} is not a token source; write auto, env:NAME, file:PATH or command:CMD"
    )


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AwsBroker(_Section):
    profiles: dict[str, str] = Field(
        default_factory=lambda: {"default": ""},
        description="Session profile -> your profile whose credentials sign the session's "
        "requests ('' : botocore's default chain: AWS_PROFILE, the environment, SSO, role, "
        "instance). E.g. {default: dev, prod: prod-admin}: the prod role only via the guard.",
    )
    hosts: list[str] = Field(
        default_factory=list,
        description="More endpoints (host or host:port, `*.` globs) to re-sign for, beside "
        "AWS's own (*.amazonaws.com, *.api.aws, *.on.aws): LocalStack, a VPC endpoint.",
    )

    @field_validator("profiles")
    @classmethod
    def _some_profile(cls, value: dict[str, str]) -> dict[str, str]:
        if not value:
            raise ValueError("name at least one session profile, e.g. {default: ''}")
        for name in value:
            if not name or any(c in name for c in "[]\n\r"):
                raise ValueError(f"{name!r} is not a profile name")
        return value


class KubernetesBroker(_Section):
    kubeconfig: list[Path] = Field(
        default_factory=list,
        description="Kubeconfig files the guard reads for sessions that register none "
        "(default: $KUBECONFIG, else ~/.kube/config of the guard's user).",
    )
    exec_timeout_seconds: float = Field(30.0, gt=0, le=600)
    token_cache_seconds: float = Field(
        300.0,
        gt=0,
        description="How long an exec plugin's token without an expiry is reused.",
    )


class GithubBroker(_Section):
    hosts: list[str] = Field(
        default_factory=lambda: ["github.com"],
        description="GitHub hosts (github.com stands for its API and upload hosts too; a "
        "GitHub Enterprise host covers its /api/v3 and git paths).",
    )
    token: str = Field(
        "auto",
        description="auto ($GH_TOKEN, $GITHUB_TOKEN, then `gh auth token`), env:NAME, "
        "file:PATH or command:CMD",
    )

    _check = field_validator("token")(_token_source)


class GcpBroker(_Section):
    credentials: str = Field(
        "adc",
        description="adc (google-auth's Application Default Credentials) or file:PATH "
        "(a service-account or authorized-user JSON file)",
    )
    scopes: list[str] = Field(
        default_factory=lambda: ["https://www.googleapis.com/auth/cloud-platform"]
    )
    hosts: list[str] = Field(
        default_factory=lambda: ["*.googleapis.com"],
        description="Where the session's placeholder token is swapped for a real one.",
    )
    token_hosts: list[str] = Field(
        default_factory=lambda: [
            "oauth2.googleapis.com",
            "www.googleapis.com",
            "accounts.google.com",
        ],
        description="OAuth token endpoints the guard answers itself for the session's "
        "placeholder refresh token (the session's ADC file).",
    )

    @field_validator("credentials")
    @classmethod
    def _source(cls, value: str) -> str:
        if value == "adc" or (value.startswith("file:") and len(value) > 5):
            return value
        raise ValueError(f"{value!r}: write adc or file:PATH")


class AzureBroker(_Section):
    token: str = Field(
        "az", description="az (`az account get-access-token`), env:NAME, file:PATH, command:CMD"
    )
    hosts: list[str] = Field(default_factory=lambda: ["management.azure.com"])
    resource: str = Field("https://management.azure.com/", description="the token's audience")

    _check = field_validator("token")(_token_source)


class TerraformBroker(_Section):
    hosts: list[str] = Field(default_factory=lambda: ["app.terraform.io"])
    token: str = Field(
        "auto",
        description="auto ($TF_TOKEN_<host>, then ~/.terraform.d/credentials.tfrc.json), "
        "env:NAME, file:PATH or command:CMD",
    )

    _check = field_validator("token")(_token_source)


class BrokersConfig(_Section):
    """Which providers are brokered; absent ones pass through as they come."""

    aws: AwsBroker | None = None
    kubernetes: KubernetesBroker | None = None
    github: GithubBroker | None = None
    gcp: GcpBroker | None = None
    azure: AzureBroker | None = None
    terraform: TerraformBroker | None = None

    def enabled(self) -> list[str]:
        return [name for name in PROVIDERS if getattr(self, name) is not None]

    def with_defaults(self, providers: list[str]) -> BrokersConfig:
        """This configuration plus ``providers`` (``--broker NAME``) with their defaults."""
        sections = {
            "aws": AwsBroker,
            "kubernetes": KubernetesBroker,
            "github": GithubBroker,
            "gcp": GcpBroker,
            "azure": AzureBroker,
            "terraform": TerraformBroker,
        }
        updates = {p: sections[p]() for p in providers if getattr(self, p) is None}
        return self.model_copy(update=updates)


__all__ = [
    "AWS_HOSTS",
    "PROVIDERS",
    "AwsBroker",
    "AzureBroker",
    "BrokersConfig",
    "GcpBroker",
    "GithubBroker",
    "KubernetesBroker",
    "Provider",
    "TerraformBroker",
]
