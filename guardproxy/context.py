"""What the policy sees besides the action: time, the session and its history.

All of it is computed *before* evaluation and recorded with the decision, so the
engine never reads a clock or a store and a recorded decision replays exactly,
whatever has happened in the session since (policy notes §3.1 principle 6).

Field names are snake_case and every count is a plain field (no string-keyed maps),
so CEL reads them as ``history.m10.verb.delete`` or ``signals.recreate``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, create_model

from guardproxy.action import Environment, Provider, Verb


class _Frozen(BaseModel):
    """A frozen part of the context that serialises itself once.

    The decision's input hash covers the whole context on every request, and most
    of it (the session, the recent actions, a resource's history) is the same
    objects from one request to the next. ``canonical_json`` is exactly
    ``model_dump_json()`` (a test holds them equal), assembled from the parts'
    own cached JSON, so the hash stays the one a replay computes from the record.
    The cache lives in a slot, outside the fields: equality, dumps and copies
    never see it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    __slots__ = ("_json",)
    _composite: ClassVar[bool] = False
    """Has model-valued fields: assemble the JSON from theirs instead of dumping all."""

    def canonical_json(self) -> str:
        """``model_dump_json()``, computed once per instance (the model is frozen)."""
        try:  # the slot itself: a miss through pydantic's __getattr__ costs microseconds
            return _CACHED_JSON.__get__(self)  # type: ignore[no-any-return]
        except AttributeError:
            pass
        if self._composite:
            fields = self.__dict__
            text = (
                "{"
                + ",".join(f'"{name}":{_json(fields[name])}' for name in type(self).model_fields)
                + "}"
            )
        else:
            text = self.model_dump_json()
        object.__setattr__(self, "_json", text)
        return text


_CACHED_JSON = _Frozen.__dict__["_json"]


def with_canonical_json[M: _Frozen](model: M, text: str) -> M:
    """``model``, remembering ``text`` as its JSON: for builders that wrote that text
    themselves and parsed the model from it (``model_validate_json(text)``), so the
    two cannot differ unless the text was not compact JSON in field order — which
    the history tests compare against ``model_dump_json()``."""
    object.__setattr__(model, "_json", text)
    return model


_new = object.__new__
_set = object.__setattr__
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__


def built[M: BaseModel](model: type[M], fields: dict[str, Any]) -> M:
    """``model(**fields)`` without validating, for a value of every field (in the
    model's order) that is already of its field's type: what pydantic's validator
    stores (the values, each field set, no extras, no private values), in a fraction
    of the time. For the hot path's own values (window counts, the contexts and
    decisions built from them); the history's tests compare the two."""
    instance = _new(model)
    _set(instance, "__dict__", fields)
    _set_fields_set(instance, set(fields))
    _set_extra(instance, None)
    _set_private(instance, None)
    return instance


def _json(value: Any) -> str:
    if isinstance(value, _Frozen):
        return value.canonical_json()
    if isinstance(value, list):
        return "[" + ",".join(_json(item) for item in value) + "]"
    return pydantic_core.to_json(value).decode()


class SessionInfo(_Frozen):
    id: str = Field("", description="Session id; `anonymous:<client>` without a credential.")
    name: str = ""
    user: str = Field("", description="Who started the session.")
    agent: str = Field("", description="Agent it looks like: claude-code, codex, cursor...")
    labels: list[str] = Field(default_factory=list)
    anonymous: bool = Field(True, description="No session credential was presented.")


class VerbCounts(_Frozen):
    read: int = 0
    create: int = 0
    update: int = 0
    delete: int = 0
    destroy: int = 0
    permission: int = 0
    execute: int = 0
    unknown: int = 0


if TYPE_CHECKING:

    class ProviderCounts(_Frozen):
        """One count per provider (its name in :class:`Provider`), in the enum's order."""

        def __getattr__(self, provider: str) -> int: ...

else:
    ProviderCounts = create_model(
        "ProviderCounts",
        __base__=_Frozen,
        __module__=__name__,
        **{provider.value: (int, 0) for provider in Provider},
    )
    # One count per provider, generated from Provider, whose order is the JSON's field
    # order (input hashes depend on it): a provider added there is counted here. No
    # docstring: the context schema describes it as it always has.


class EnvironmentCounts(_Frozen):
    prod: int = 0
    staging: int = 0
    dev: int = 0
    unknown: int = 0


class Counts(_Frozen):
    """Actions of the session in one window, before the current one."""

    total: int = 0
    destructive: int = Field(0, description="Forwarded delete- and destroy-class actions.")
    verb: VerbCounts = Field(default_factory=VerbCounts)
    provider: ProviderCounts = Field(default_factory=ProviderCounts)
    environment: EnvironmentCounts = Field(default_factory=EnvironmentCounts)


class RecentAction(_Frozen):
    at: datetime
    summary: str = ""
    verb: Verb = Verb.UNKNOWN
    provider: Provider = Provider.UNKNOWN
    environment: Environment = Environment.UNKNOWN
    resource_key: str = ""
    outcome: str = Field("", description="allow, hold or deny: what the gate did with it.")


class History(_Frozen):
    """The session's activity over sliding windows: 1 minute, 10 minutes, 1 hour, all."""

    _composite: ClassVar[bool] = True

    m1: Counts = Field(default_factory=Counts)
    m10: Counts = Field(default_factory=Counts)
    h1: Counts = Field(default_factory=Counts)
    session: Counts = Field(default_factory=Counts)
    recent: list[RecentAction] = Field(
        default_factory=list, description="The last actions of the session, newest last."
    )


class ResourceEvent(_Frozen):
    at: datetime
    session_id: str = ""
    operation: str = ""
    verb: Verb = Verb.UNKNOWN
    protection_removed: bool = False


class ResourceHistory(_Frozen):
    """What happened to the current action's resource key, in any session (forwarded only)."""

    key: str = ""
    deleted: bool = Field(False, description="A delete or destroy of this key was forwarded.")
    deleted_at: datetime | None = None
    deleted_by_session: str = ""
    deleted_in_session: bool = Field(False, description="The last delete was in this session.")
    deleted_by: str = Field("", description="The action that deleted it, as a summary.")
    protection_removed: bool = Field(False, description="Its protection was removed earlier.")
    events: list[ResourceEvent] = Field(default_factory=list, description="Newest last.")


class Signals(_Frozen):
    """Sequence signals about the current action, for rules and approvers."""

    recreate: bool = Field(False, description="Creates a key deleted within the window.")
    recreate_of: str = Field("", description="The earlier delete: what, when, which session.")
    environment_rebuild: bool = Field(
        False,
        description="Several recreates in the window, or creates in a destroyed "
        "environment-level container (stack, namespace, resource group, project, workspace).",
    )
    protection_removed_earlier: bool = False
    destructive_budget_exceeded: bool = Field(
        False, description="Destructive actions in the session's 10-minute window >= budget."
    )
    history_unavailable: bool = Field(
        False, description="History could not be computed; rules should treat it as unsafe."
    )
    description: str = Field("", description="The sequence seen, for people.")


_NO_SESSION = SessionInfo()
_NO_HISTORY = History()
_NO_RESOURCE = ResourceHistory()
_NO_SIGNALS = Signals()
"""One instance of each part a context leaves out, shared (the models are frozen): a
history-free context (the proxy's path for verbs no rule reads history for) builds no
count models, and the JSON of these parts is computed once, not per request."""


class Context(_Frozen):
    now: datetime = Field(
        default_factory=lambda: datetime(1970, 1, 1, tzinfo=UTC),
        description="Decision time, fixed before evaluation (CEL: `now`).",
    )
    session: SessionInfo = Field(default_factory=lambda: _NO_SESSION)
    history: History = Field(default_factory=lambda: _NO_HISTORY)
    resource: ResourceHistory = Field(default_factory=lambda: _NO_RESOURCE)
    signals: Signals = Field(default_factory=lambda: _NO_SIGNALS)

    def canonical_json(self) -> str:
        """``model_dump_json()``, from the parts' cached JSON.

        ``now`` and ``session`` come first; a history-free context (every read on the
        proxy's path) shares the default history, resource and signals, whose joined
        JSON is kept once, so its JSON costs one datetime dump and a concatenation.
        """
        try:
            return _CACHED_JSON.__get__(self)  # type: ignore[no-any-return]
        except AttributeError:
            pass
        history, resource, signals = self.history, self.resource, self.signals
        if history is _NO_HISTORY and resource is _NO_RESOURCE and signals is _NO_SIGNALS:
            tail = _NO_HISTORY_TAIL
        else:
            tail = _tail(
                history.canonical_json(), resource.canonical_json(), signals.canonical_json()
            )
        text = _head(pydantic_core.to_json(self.now).decode(), self.session.canonical_json()) + tail
        object.__setattr__(self, "_json", text)
        return text

    def json_parts(self) -> ContextParts:
        """The canonical JSON in its parts, each a JSON value of its own: the decision
        recorder ships these to its writer, which redacts them part by part and
        remembers the parts that repeat from one request to the next."""
        return ContextParts(
            pydantic_core.to_json(self.now).decode(),
            self.session.canonical_json(),
            self.history.canonical_json(),
            self.resource.canonical_json(),
            self.signals.canonical_json(),
        )


class ContextParts(NamedTuple):
    """A context's canonical JSON, cut at its fields (see :meth:`Context.json_parts`)."""

    now: str
    session: str
    history: str
    resource: str
    signals: str

    def join(self, part: Callable[[str], str] = str) -> str:
        """The context's canonical JSON, each part's JSON passed through ``part``
        (``join()`` is ``Context.canonical_json()``)."""
        return _head(self.now, part(self.session)) + _tail(
            part(self.history), part(self.resource), part(self.signals)
        )


def _head(now: str, session: str) -> str:
    """The context's JSON up to its session, from each field's JSON."""
    return f'{{"now":{now},"session":{session}'


def _tail(history: str, resource: str, signals: str) -> str:
    """The context's JSON after the session: its last three fields and the closing brace."""
    return f',"history":{history},"resource":{resource},"signals":{signals}}}'


_NO_HISTORY_TAIL = _tail(
    _NO_HISTORY.canonical_json(), _NO_RESOURCE.canonical_json(), _NO_SIGNALS.canonical_json()
)
