"""Names learned from responses: the server's ids mapped to the names people gave them.

``TerminateInstances`` carries only ``i-0abc…``; the name (``web-1``) and the
environment tag (``environment=prod``) were in the ``RunInstances`` or
``DescribeInstances`` response the proxy already passed to the client. Without
them, a destroy of a production instance keys and reads like an anonymous id.

How it works:

* before a recognised read or create that a parser is registered for is
  forwarded, :func:`learner_for` gives the response a :class:`ResponseLearner`: a
  mitmproxy stream callable that passes every chunk through unchanged and keeps a
  copy up to :data:`LEARN_LIMIT` bytes (a bigger response is not learned from);
* when the response ends it is parsed (inline when small, else in a worker thread:
  the client already has the body either way) and ids with names or environment
  tags go into a bounded LRU :class:`NameCache`;
* :func:`resolve` rewrites an action that names only a learned id, before the
  context is computed and the policy evaluated: resource name, identity key (by
  name, so a terminate and a later run of ``web-1`` compare equal) and
  environment. The rewritten action is what is evaluated and recorded, so a
  replay sees the resolution and decides the same.

Environment from tags: an ``env``/``environment`` tag (any case) names it; a tag
never makes an action *less* guarded than recognition already found it (a dev tag
does not downgrade an account configured as prod), but it does resolve
``unknown``. Without a tag the name heuristic applies (``prod-web`` → prod).

The cache lives in memory only: after a restart, ids resolve again once a
``Describe*`` response passes (persisting it needs a store table; not done).
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import structlog

from guardproxy.action import Action, Environment, Resource
from guardproxy.recognise.naming import environment_from_names
from guardproxy.recognise.providers import PROVIDERS

log = structlog.get_logger(__name__)

LEARN_LIMIT = 1024 * 1024
"""Bytes of one response kept for learning; a longer response is passed on unlearned."""
INLINE_PARSE_LIMIT = 64 * 1024
"""Responses up to this size are parsed on the spot, larger ones in a worker thread."""
ENVIRONMENT_TAGS = frozenset({"env", "environment", "stage"})
_SEVERITY = {Environment.PROD: 3, Environment.UNKNOWN: 3, Environment.STAGING: 2}


@dataclass(frozen=True, slots=True)
class LearnedName:
    name: str
    environment: Environment
    source: str
    """The operation it was learned from, e.g. ``ec2:RunInstances``."""


class NameCache:
    """Learned names by id key, least recently used first out; thread-safe."""

    def __init__(self, limit: int = 100_000) -> None:
        self._limit = limit
        self._names: OrderedDict[str, LearnedName] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._names)

    def learn(self, key: str, learned: LearnedName) -> None:
        with self._lock:
            self._names[key] = learned
            self._names.move_to_end(key)
            while len(self._names) > self._limit:
                self._names.popitem(last=False)

    def get(self, key: str) -> LearnedName | None:
        with self._lock:
            found = self._names.get(key)
            if found is not None:
                self._names.move_to_end(key)
            return found


Parser = Callable[[bytes], list[tuple[str, dict[str, str]]]]
"""A response body -> ``[(id, tags)]`` (``ResponseNames.parse``)."""
KeyOf = Callable[[str], str]
"""An id -> where its learned name is kept, in the scope of the action that named it."""


def _learned(tags: dict[str, str], source: str) -> LearnedName:
    name = tags.get("Name", "")
    environment = Environment.UNKNOWN
    for key, value in tags.items():
        if key.lower() in ENVIRONMENT_TAGS:
            environment = environment_from_names([value])
            if environment is Environment.UNKNOWN:
                try:
                    environment = Environment(value.strip().lower())
                except ValueError:
                    environment = Environment.UNKNOWN
            break
    return LearnedName(name=name, environment=environment, source=source)


def learn(cache: NameCache, parser: Parser, body: bytes, key_of: KeyOf, source: str) -> int:
    """Parse ``body`` and remember what it names; returns how many ids were learned."""
    learned = 0
    for ident, tags in parser(body):
        found = _learned(tags, source)
        if found.name or found.environment is not Environment.UNKNOWN:
            cache.learn(key_of(ident), found)
            learned += 1
    return learned


class ResponseLearner:
    """A mitmproxy response stream callable: chunks pass untouched, a bounded copy is
    kept, and the complete body is learned from when the stream ends."""

    def __init__(self, cache: NameCache, parser: Parser, key_of: KeyOf, source: str) -> None:
        self._cache = cache
        self._parser = parser
        self._key_of = key_of
        self._source = source
        self._body: bytearray | None = bytearray()

    def __call__(self, chunk: bytes) -> bytes:
        if not chunk:
            self._finish()
        elif self._body is not None:
            if len(self._body) + len(chunk) > LEARN_LIMIT:
                self._body = None
            else:
                self._body += chunk
        return chunk

    def _finish(self) -> None:
        body, self._body = self._body, None
        if not body:
            return
        data = bytes(body)
        if len(data) <= INLINE_PARSE_LIMIT:
            self._learn(data)
            return
        try:
            asyncio.get_running_loop().run_in_executor(None, self._learn, data)
        except RuntimeError:  # no event loop (a direct caller): learn here
            self._learn(data)

    def _learn(self, body: bytes) -> None:
        try:
            count = learn(self._cache, self._parser, body, self._key_of, self._source)
        except Exception as error:  # learning is best effort; the response went through
            log.warning("names.not_learned", source=self._source, error=repr(error))
            return
        if count:
            log.debug("names.learned", source=self._source, ids=count)


def learner_for(action: Action, cache: NameCache) -> ResponseLearner | None:
    """A learner for the response to ``action``, if its operation names ids we track
    (the provider's ``ResponseNames``, guardproxy/recognise/registry.py)."""
    module = PROVIDERS.get(action.provider)
    operation = (action.service, action.operation)
    for names in module.names if module is not None else ():
        if operation in names.operations:
            scope = action.scope
            source = f"{action.service}:{action.operation}"
            return ResponseLearner(cache, names.parse, partial(names.id_key, scope), source)
    return None


def resolve(action: Action, cache: NameCache) -> Action:
    """``action`` with a learned name and environment for the id it names, if any."""
    resource = action.resource
    if resource.name:
        return action
    module = PROVIDERS.get(action.provider)
    names = next(
        (
            n
            for n in (module.names if module is not None else ())
            if n.resource_type == resource.type
        ),
        None,
    )
    if names is None or not resource.id.startswith(names.id_prefix):
        return action
    learned = cache.get(names.id_key(action.scope, resource.id))
    if learned is None:
        return action
    name = learned.name
    environment = action.environment
    if learned.environment is not Environment.UNKNOWN:
        if environment is Environment.UNKNOWN or _SEVERITY.get(
            learned.environment, 1
        ) > _SEVERITY.get(environment, 1):
            environment = learned.environment
    elif environment is Environment.UNKNOWN and name:
        environment = environment_from_names([name])
    key = names.name_key(action.scope, name) if name else resource.key
    return action.model_copy(
        update={
            "resource": Resource(type=resource.type, id=resource.id, name=name, key=key),
            "environment": environment,
        }
    )
