"""How a guardproxy instance is set up: addresses, data directory, limits, site knowledge."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from guardproxy.approvals.settings import OnCallSettings, SlackSettings
from guardproxy.approvals.targets import NotificationTarget
from guardproxy.broker.settings import BrokersConfig
from guardproxy.impact.settings import ImpactSettings

LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


def _host_port(value: str) -> str:
    _, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not HOST:PORT")
    return value


def is_loopback(address: str) -> bool:
    return address.rpartition(":")[0].strip("[]") in LOOPBACK_HOSTS


HostPort = Annotated[str, AfterValidator(_host_port)]


def split_host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


class ReverseListener(BaseModel):
    """A loopback port that forwards to one upstream, for clients that will not use
    a proxy for it (Go tools never proxy loopback addresses, e.g. terraform to LocalStack)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    port: int = Field(ge=0, le=65535)
    upstream: str = Field(pattern=r"^https?://[^/]+/?$", description="http(s)://host:port")


def _sandbox_address(value: str) -> str:
    address = ipaddress.ip_address(value)
    if address.version != 4 or address.is_loopback or address.is_unspecified:
        raise ValueError(f"{value!r}: a sandbox network address is a unicast IPv4 address")
    return value


SandboxAddress = Annotated[str, AfterValidator(_sandbox_address)]


class SandboxNetwork(BaseModel):
    """A root-mode enforced session's network, set by ``guardproxy run --enforce`` when
    it runs as root: the guard listens on the host end of the session's veth pair
    (its proxy, transparent and DNS listeners), and connections from the sandbox's one
    address belong to the session."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    address: SandboxAddress = Field(description="the host end's address: listeners bind here")
    client: SandboxAddress = Field(description="the sandbox's address")


class ProxyConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    data_dir: Path
    policies: Path = Path("policies")
    shadow_policies: Path | None = Field(
        None,
        description="A candidate bundle decided and recorded beside the enforced one, "
        "never enforced (shadow rollout; compare with `guardproxy replay --shadow`).",
    )
    listen: HostPort = "127.0.0.1:8080"
    control: HostPort = "127.0.0.1:8081"
    metrics_listen: HostPort | None = Field(
        None, description="Also serve /metrics, /healthz and /readyz (no token) here."
    )
    allow_remote_listen: bool = Field(
        False,
        description="Listen beyond loopback: only in a container or host whose network "
        "keeps agents away from the control port (see docker/).",
    )
    watch_policies_seconds: float = Field(
        0, ge=0, description="Reload the policy bundle when its files change (0: never)."
    )
    store: str = Field(
        "",
        description="Database URL: sqlite:///path.db, or postgresql://... for replicas "
        "sharing one database; default: SQLite in the data directory.",
    )
    sqlite_synchronous: Literal["normal", "full"] = Field(
        "normal",
        description="The SQLite store's synchronous level when the store is the data "
        "directory's: normal (a record survives a kill -9 of any process) or full (it also "
        "survives a power cut: one disk sync per recorded change).",
    )
    audit_key: Path | None = Field(
        None,
        description="The Ed25519 key that signs audit checkpoints, kept outside the database "
        "(created 0600 if missing); default: audit-key in the data directory.",
    )
    audit_checkpoint_seconds: float = Field(
        10.0,
        gt=0,
        description="How often a checkpoint binds every audit chain's head, signed (across "
        "replicas: one per interval).",
    )
    reads_on_store_failure: Literal["allow", "deny"] = Field(
        "allow",
        description="Reads the policy allows while the store is unreachable: `allow` forwards "
        "them (recorded in the background, lost if the store stays down), `deny` records "
        "every read before forwarding it, so a lost store stops reads too. Requests that "
        "can change state are never forwarded unrecorded.",
    )
    hold_window_seconds: float = Field(
        20.0, gt=0, le=600, description="How long a held request waits live for approval."
    )
    max_body_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    passthrough_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts tunnelled without interception (exact, or `*.example.com`).",
    )
    upstream_ca_files: list[Path] = Field(
        default_factory=list, description="Extra CAs to trust for upstream TLS (private APIs)."
    )
    reverse: list[ReverseListener] = Field(default_factory=list)
    environments: dict[str, str] = Field(
        default_factory=dict,
        description="Selector -> environment, e.g. aws:account:1111: prod, github:acme: prod, "
        "git:git.corp/platform: prod, docker:10.0.0.5: prod (README, Environments).",
    )
    kubernetes_hosts: list[str] = Field(default_factory=list)
    tcp_timeout_seconds: int = Field(600, ge=1)
    upstream_allow: Literal["any", "loopback"] = Field(
        "any",
        description="`loopback`: connect to this machine only (loopback addresses, "
        "localhost, names /etc/hosts maps to loopback), refusing anything else before it "
        "is looked up: for machines and tests where nothing may leave.",
    )
    sandbox_network: SandboxNetwork | None = Field(
        None, description="Set by `run --enforce` as root; not a setting to write."
    )
    allow_anonymous: bool = Field(True, description="Serve clients without a session credential.")
    destructive_budget: int = Field(
        10,
        ge=1,
        description="Forwarded deletes and destroys per session in 10 minutes before the "
        "`destructive_budget_exceeded` signal is set.",
    )

    notifications: list[NotificationTarget] = Field(
        default_factory=list, description="Webhooks told about holds (held, approved, expired…)."
    )
    console_url: str = Field(
        "",
        pattern=r"^(https?://\S+)?$",
        description="The console's address as approvers reach it, for links in notifications; "
        "default: http://127.0.0.1:<control port>/console.",
    )
    oncall: OnCallSettings = Field(
        default_factory=OnCallSettings,
        description="On-call schedules policies name as `oncall:<schedule>`: the local rotation "
        "file, PagerDuty or Opsgenie, how each is paged and its next level (README, On-call "
        "routing).",
    )
    slack: SlackSettings | None = Field(
        None,
        description="A Slack app posting holds with Approve and Deny buttons to a channel; its "
        "interactivity requests arrive on chat_listen.",
    )
    chat_listen: HostPort | None = Field(
        None,
        description="Serve Slack's interactivity callback (POST /slack/interactions, nothing "
        "else) here, for the team's ingress to forward to; off by default.",
    )

    @model_validator(mode="after")
    def _chat_needs_both(self) -> ProxyConfig:
        if self.slack is not None and self.chat_listen is None:
            raise ValueError(
                "slack needs chat_listen (--chat-listen HOST:PORT): the address its Approve and "
                "Deny buttons call back"
            )
        if self.chat_listen is not None and self.slack is None:
            raise ValueError("chat_listen serves Slack's callback: configure slack too")
        return self

    brokers: BrokersConfig = Field(
        default_factory=BrokersConfig,
        description="Providers whose real credentials the guard holds for sessions "
        "(README, Credential brokering); Kubernetes client certificates always are.",
    )
    impact: ImpactSettings = Field(
        default_factory=ImpactSettings,
        description="Impact previews of held actions and safety steps before release "
        "(README, On-call): their time and call bounds.",
    )

    @model_validator(mode="after")
    def _loopback_unless_allowed(self) -> ProxyConfig:
        if not self.allow_remote_listen:
            for name in ("listen", "control", "metrics_listen", "chat_listen"):
                address = getattr(self, name)
                if address is not None and not is_loopback(address):
                    raise ValueError(
                        f"{name} {address!r}: guardproxy listens on loopback only; "
                        "set allow_remote_listen (--allow-remote-listen) only where the "
                        "network keeps agents away from the control port"
                    )
        return self

    @property
    def store_url(self) -> str:
        if self.store:
            return self.store
        default = f"sqlite:///{(self.data_dir / 'guardproxy.db').resolve()}"
        return default if self.sqlite_synchronous == "normal" else f"{default}?synchronous=full"

    @property
    def audit_key_file(self) -> Path:
        return self.audit_key or self.data_dir / "audit-key"

    @property
    def ca_dir(self) -> Path:
        return self.data_dir / "ca"

    @property
    def client_certs_dir(self) -> Path:
        """`<host>.pem` client certificates the proxy presents upstream (mTLS)."""
        return self.data_dir / "client-certs"

    @property
    def upstream_trust_dir(self) -> Path:
        """Extra CAs (`*.pem`) trusted for upstream TLS, e.g. learned from a kubeconfig."""
        return self.data_dir / "upstream-trust"

    @property
    def control_token_file(self) -> Path:
        return self.data_dir / "control-token"

    @property
    def runtime_file(self) -> Path:
        """Where a running `serve` says which ports it uses, for the CLI to find it."""
        return self.data_dir / "runtime.json"
