"""The normalised action: what every intercepted request becomes.

Policies read exactly this model (as ``action`` in CEL) and nothing else about the
request, so everything a rule may depend on is declared here.  Recognisers fill it;
fields they cannot determine keep their neutral defaults (empty string, ``unknown``).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class Provider(StrEnum):
    AWS = "aws"
    K8S = "k8s"
    GCP = "gcp"
    AZURE = "azure"
    GITHUB = "github"
    GIT = "git"
    TFC = "tfc"
    DOCKER = "docker"
    SQL = "sql"
    UNKNOWN = "unknown"


class Verb(StrEnum):
    """The class of an operation, from harmless to catastrophic."""

    READ = "read"
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    DESTROY = "destroy"
    PERMISSION = "permission"
    EXECUTE = "execute"
    UNKNOWN = "unknown"


class Environment(StrEnum):
    PROD = "prod"
    STAGING = "staging"
    DEV = "dev"
    UNKNOWN = "unknown"


class Confidence(StrEnum):
    """How sure the recogniser is of ``operation`` and ``verb``."""

    EXACT = "exact"
    AMBIGUOUS = "ambiguous"
    HEURISTIC = "heuristic"
    UNKNOWN = "unknown"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Resource(_Frozen):
    type: str = Field("", description="Provider-qualified type, e.g. `aws:cloudformation:stack`.")
    id: str = Field("", description="Provider id, e.g. an instance id or ARN.")
    name: str = Field("", description="User-facing name, e.g. the stack or namespace name.")
    key: str = Field(
        "",
        description="Stable identity key: provider, scope, type and name, so a delete and a "
        "later create of the same thing compare equal.",
    )


class Scope(_Frozen):
    account: str = Field("", description="AWS account id.")
    project: str = Field("", description="GCP project or Terraform Cloud organisation.")
    subscription: str = Field("", description="Azure subscription id.")
    resource_group: str = Field("", description="Azure resource group.")
    cluster: str = Field("", description="Kubernetes API server host.")
    namespace: str = Field("", description="Kubernetes namespace.")
    region: str = Field("", description="Region or location.")
    repository: str = Field("", description="`owner/repo` for GitHub and git.")


class Actor(_Frozen):
    session_id: str = ""
    tool: str = Field("", description="Tool that sent the request: kubectl, terraform, boto3...")
    user_agent: str = ""


class RequestSummary(_Frozen):
    """What may be kept of the raw request: no header values, no body."""

    method: str = ""
    host: str = ""
    port: int = 0
    path: str = Field("", description="Path without the query string.")
    header_names: list[str] = Field(default_factory=list, description="Lower-cased names.")
    body_bytes: int = 0


class Action(_Frozen):
    __slots__ = ("_json",)
    """``canonical_json``'s cache: a slot outside the fields, which copies never carry."""

    provider: Provider = Provider.UNKNOWN
    service: str = Field("", description="Service or API group: `cloudformation`, `apps`, ...")
    operation: str = Field("", description="Provider-native operation: `DeleteStack`, `delete`.")
    verb: Verb = Verb.UNKNOWN
    resource: Resource = Field(default_factory=Resource)
    scope: Scope = Field(default_factory=Scope)
    environment: Environment = Environment.UNKNOWN
    risk_tags: list[str] = Field(
        default_factory=list,
        description="Dangers seen in the parameters: skip-final-snapshot, force, bulk, ...",
    )
    actor: Actor = Field(default_factory=Actor)
    request: RequestSummary = Field(default_factory=RequestSummary)
    confidence: Confidence = Confidence.UNKNOWN
    dry_run: bool = Field(False, description="The provider was asked not to persist anything.")
    truncated: bool = Field(False, description="Lists or strings were cut to the input limits.")
    readings: list[Action] = Field(
        default_factory=list,
        description="Further actions the same request may perform: the other readings of an "
        "ambiguous request (a field given twice, values that disagree, two protocols that "
        "both parse it) and the other statements or operations of a request that performs "
        "several. The engine decides this action and every reading, and the strictest "
        "outcome applies. Readings have no readings of their own.",
    )

    def canonical_json(self) -> str:
        """``model_dump_json()``, computed once per action (it is frozen): the input
        hash and the decision record both serialise it."""
        try:  # the slot itself: a miss through pydantic's __getattr__ costs microseconds
            return _CACHED_JSON.__get__(self)  # type: ignore[no-any-return]
        except AttributeError:
            pass
        text = _SERIALIZE(self).decode()
        object.__setattr__(self, "_json", text)
        return text

    @property
    def classified(self) -> bool:
        """Whether a recogniser named the operation; unclassified actions fail closed."""
        return self.verb is not Verb.UNKNOWN

    @property
    def ambiguous(self) -> bool:
        """Whether the request has more than one reading (see ``readings``)."""
        return bool(self.readings)

    def all_readings(self) -> list[Action]:
        """This action and its readings, each without readings of its own: what the
        engine decides one by one."""
        if not self.readings:
            return [self]
        return [self.model_copy(update={"readings": []}), *self.readings]

    def each_reading(self, change: Callable[[Action], Action]) -> Action:
        """``change`` applied to this action and to each of its readings (environment,
        names and the actor are resolved for every reading alike)."""
        changed = change(self)
        if not self.readings:
            return changed
        return changed.model_copy(update={"readings": [change(r) for r in self.readings]})

    def summary(self) -> str:
        """One line for people: `aws cloudformation DeleteStack prod-calc`."""
        if not self.operation:
            request = f"{self.request.method} {self.request.host}{self.request.path}".strip()
            return f"{self.provider} request {request}".strip()
        target = self.resource.name or self.resource.id
        return " ".join(p for p in (self.provider, self.service, self.operation, target) if p)


_CACHED_JSON = Action.__dict__["_json"]
_SERIALIZE = Action.__pydantic_serializer__.to_json
"""``model_dump_json`` without its wrapper (defaults only, so the same bytes)."""
