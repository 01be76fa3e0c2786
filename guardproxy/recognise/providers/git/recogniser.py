"""The git smart-HTTP recogniser: pushes, fetches and ref discovery -> Actions.

A push (``POST …/git-receive-pack``) is read the way ``git receive-pack`` reads it
(:mod:`.receive`, transcribed from git's source): pkt-lines, ``<old> <new> <ref>``
commands with ids in either case, capabilities after a NUL on any line, ``shallow``
lines, push certificates (their commands count), push options. A zero new id deletes
the ref, a zero old id creates it. Receive-pack has no protocol v2: it ignores a
request for v2 and speaks v0 (``cmd_receive_pack``: "push support for protocol v2 has
not been implemented yet"), so the body is read the same whatever ``Git-Protocol``
says. A body receive-pack would die on changes nothing, but the guard cannot tell a
die from its own misreading, so such a push is unknown (fail closed), never read as
fewer updates.

The body is read as sent and, when it carries codings, decoded (``decode_body``):
git's ``http-backend`` inflates only a ``Content-Encoding`` of exactly ``gzip`` or
``x-gzip`` (``http-backend.c run_service``) and hands anything else to receive-pack
as it came, other servers decode more. Every reading that parses counts; a push no
reading parses is unknown. (git itself never compresses a push: ``remote-curl.c
push_git`` leaves ``gzip_request`` off; fetch negotiation is what it gzips.)

Every ref update is an action: the most dangerous one is the action (a delete or an
unproven update before a plain update before a create; among equals, a branch that
looks long-lived — main, master, release*, prod* — first), the others are its
``readings``, each with its own risk tags, so the engine decides every update. Force
pushes are not marked on the wire (``--force`` is a client-side decision), so an update
is tagged ``possible-force-push`` unless the pushed pack itself proves it a fast-forward
(``pack``), and so is a create of a ref the same push deletes (together they
rewrite it). More than one deleted ref adds ``bulk`` to each delete; a ref named by
more than one command makes the push ambiguous (receive-pack's order of execution
differs between versions).
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from guardproxy.action import Action, Confidence, Provider, Resource, Scope, Verb
from guardproxy.hosts import canonical_host
from guardproxy.recognise.common import (
    UnreadableBodyError,
    actor_of,
    body_codings,
    cap,
    decode_body,
    resource_key,
    summary_of,
)
from guardproxy.recognise.providers.git.pack import PackError, commit_parents, is_fast_forward
from guardproxy.recognise.providers.git.receive import (
    PushCommands,
    PushLimitError,
    ReceivePackError,
    RefUpdate,
    pack_and_options,
    read_push,
)
from guardproxy.recognise.request import HttpRequest

__all__ = [
    "RefUpdate",
    "is_git_request",
    "parse_push",
    "parse_push_request",
    "recognise_git",
    "repository_of",
]

_LONG_LIVED = re.compile(r"^refs/heads/(main|master|trunk|develop|release.*|prod.*|stable.*)$")
_SUFFIXES = ("/git-receive-pack", "/git-upload-pack", "/git-upload-archive", "/info/refs")
_READ_METHODS = ("GET", "HEAD")

MAX_UPDATES = 1000
"""More ref updates than this in one push are not read one by one: the push is unknown."""

MAX_DECODED = 16 * 1024 * 1024
"""A push body after removing its codings: above the proxy's default 10 MiB body limit,
with room for what gzip still shrinks in a pack (packs are compressed already)."""


def _path(request: HttpRequest) -> str:
    """The path as the server routes it: percent-decoded (a web server decodes the
    path it hands ``git http-backend`` as ``PATH_INFO``)."""
    return unquote(request.path_only)


def is_git_request(request: HttpRequest) -> bool:
    """Smart-HTTP endpoints: receive-pack, upload-pack, upload-archive, and
    ``info/refs?service=git-*``."""
    path = _path(request)
    if path.endswith(_SUFFIXES[:-1]):
        return True
    if path.endswith("/info/refs"):
        return any(v.startswith("git-") for v in request.query_values.get("service", ()))
    return False


def repository_of(path: str) -> str:
    """``owner/repo`` from a smart-HTTP path (``/owner/repo.git/git-receive-pack``)."""
    for suffix in _SUFFIXES:
        if path.endswith(suffix):
            path = path[: -len(suffix)]
            break
    return path.strip("/").removesuffix(".git")


def parse_push(body: bytes) -> tuple[list[RefUpdate], set[str], bytes]:
    """(ref updates, capability words, pack bytes) of an uncompressed receive-pack
    body; raises ValueError when receive-pack would not read it."""
    push = read_push(body)
    words = (word for features in push.feature_lists for word in features.split())
    capabilities = {word.decode("ascii", "replace") for word in words}
    pack, _options = pack_and_options(body, push)
    return list(push.updates), capabilities, pack


def parse_push_request(request: HttpRequest) -> tuple[list[RefUpdate], set[str]]:
    """(ref updates, capability words) of every reading of a push request, decoded as
    the recogniser decodes it; raises ValueError when no reading parses."""
    read, _tags = _readings(request)
    updates: list[RefUpdate] = []
    capabilities: set[str] = set()
    for body, _push in read:
        found, words, _pack = parse_push(body)
        updates += [u for u in found if u not in updates]
        capabilities |= words
    return updates, capabilities


def _unproven(updates: tuple[RefUpdate, ...], pack: bytes, hash_algo: str) -> set[RefUpdate]:
    """Updates (neither create nor delete) the pack does not prove to be fast-forwards."""
    plain = [u for u in updates if not u.creates and not u.deletes]
    if not plain:
        return set()
    parents: dict[str, tuple[str, ...]] = {}
    if pack:
        try:
            parents = commit_parents(pack, hash_algo)
        except PackError:
            parents = {}
    return {u for u in plain if not is_fast_forward(parents, u.old, u.new)}


def _danger(update: RefUpdate, risky: bool, position: int) -> tuple[int, ...]:
    if update.deletes or risky:
        level = 3
    elif update.creates:
        level = 0
    else:
        level = 1
    return (
        level,
        1 if _LONG_LIVED.match(update.ref) else 0,
        1 if update.ref.startswith("refs/heads/") else 0,
        -position,
    )


def _action(request: HttpRequest, **fields: object) -> Action:
    """An Action for ``request`` with the fields every git action shares."""
    base: dict[str, object] = {
        "provider": Provider.GIT,
        "service": "git",
        "scope": Scope(repository=repository_of(_path(request))),
        "actor": actor_of(request),
        "request": summary_of(request),
        "confidence": Confidence.EXACT,
    }
    base.update(fields)
    return Action.model_validate(base)


def _unknown(request: HttpRequest, operation: str, *tags: str) -> Action:
    return _action(
        request,
        operation=operation,
        verb=Verb.UNKNOWN,
        confidence=Confidence.UNKNOWN,
        risk_tags=list(tags),
    )


def _readings(request: HttpRequest) -> tuple[list[tuple[bytes, PushCommands]], list[str]]:
    """Every way the body reads as a push: as sent, and decoded when it has codings.

    Returns the readings that parse and the ambiguity tags; raises ReceivePackError,
    UnreadableBodyError or PushLimitError (why the last reading failed) when none parses.
    """
    bodies: list[bytes] = [request.body]
    failure: Exception = ReceivePackError("the push body is empty")
    encoded = bool(body_codings(request))
    if encoded:
        try:
            bodies.append(decode_body(request, MAX_DECODED))
        except UnreadableBodyError as exc:
            failure = exc
    read: list[tuple[bytes, PushCommands]] = []
    as_sent = False
    for index, body in enumerate(bodies):
        try:
            read.append((body, read_push(body)))
        except (ReceivePackError, PushLimitError) as exc:
            failure = exc
        else:
            as_sent = as_sent or index == 0
    if not read:
        raise failure
    # A body that reads as a push as sent although it says it is encoded: a server
    # that does not decode (http-backend for anything but gzip) runs it as sent.
    tags = ["ambiguous:content-encoding"] if encoded and as_sent else []
    return read, tags


def _push(request: HttpRequest) -> Action:
    try:
        read, push_tags = _readings(request)
    except PushLimitError:
        return _unknown(request, "push", "unreadable:too-many-pkt-lines")
    except (ReceivePackError, UnreadableBodyError):
        return _unknown(request, "push", "unreadable:push-body")
    updates: list[RefUpdate] = []
    unproven: set[RefUpdate] = set()
    for body, push in read:
        pack, _options = pack_and_options(body, push)
        unproven |= _unproven(push.updates, pack, push.hash_algo)
        updates += [u for u in push.updates if u not in updates]
    if not updates:
        return _unknown(request, "push", *push_tags)
    if len(updates) > MAX_UPDATES:
        return _unknown(request, "push", "unreadable:too-many-ref-updates")
    deleted = {u.ref for u in updates if u.deletes}
    refs = [u.ref for u in updates]
    if len(set(refs)) < len(refs):
        push_tags.append("ambiguous:duplicate-ref")
    rewritten = {u for u in updates if not u.deletes and u.creates and u.ref in deleted}
    risky = unproven | rewritten
    order = sorted(
        range(len(updates)), key=lambda i: _danger(updates[i], updates[i] in risky, i), reverse=True
    )
    bulk = len(deleted) > 1
    base = _action(
        request,
        operation="push",
        confidence=Confidence.AMBIGUOUS if push_tags else Confidence.EXACT,
    )
    scope = (canonical_host(request.host), base.scope.repository)
    actions = [_update_action(base, scope, updates[i], updates[i] in risky, bulk, push_tags)
               for i in order]  # fmt: skip
    return actions[0].model_copy(update={"readings": actions[1:]})


def _update_action(
    base: Action,
    scope: tuple[str, str],
    update: RefUpdate,
    risky: bool,
    bulk: bool,
    push_tags: list[str],
) -> Action:
    """``base`` (the push's shared fields) for one ref update."""
    tags: list[str] = []
    if update.deletes and update.ref.startswith("refs/heads/"):
        tags.append("branch-delete")
    if risky and not update.deletes:
        tags.append("possible-force-push")
    if bulk and update.deletes:
        tags.append("bulk")
    tags += push_tags
    verb = Verb.DELETE if update.deletes else Verb.CREATE if update.creates else Verb.UPDATE
    name, truncated = cap(update.ref)
    key = resource_key("git", scope, "git:ref", name)
    resource = Resource(type="git:ref", name=name, key=key)
    fields = {"verb": verb, "resource": resource, "risk_tags": tags, "truncated": truncated}
    return base.model_copy(update=fields)


def _service_conflict(request: HttpRequest, service: str) -> bool:
    """A ``service`` query parameter naming another service than the path: git sends
    none on a POST, and a server routing by it would run that service."""
    return any(v != service for v in request.query_values.get("service", ()))


def _as_push_too(pushed: Action) -> Action:
    """A request to another service's path that names receive-pack: the push reading
    and each of its updates marked ambiguous (the read it also is adds nothing)."""

    def mark(action: Action) -> Action:
        confidence = action.confidence
        if confidence is not Confidence.UNKNOWN:
            confidence = Confidence.AMBIGUOUS
        tags = [*action.risk_tags, "ambiguous:service"]
        return action.model_copy(update={"risk_tags": tags, "confidence": confidence})

    return pushed.each_reading(mark)


def recognise_git(request: HttpRequest) -> Action:
    """The Action for a git smart-HTTP request.

    receive-pack runs for any request to its path that is not a bodiless GET or HEAD
    (``git http-backend`` answers 405 to other methods, but another server may not
    check); upload-pack and upload-archive only read, unless the query names another
    service (then the body is read as a push too). ``info/refs`` is the ref
    advertisement, a read for GET and HEAD whatever ``service`` says (http-backend
    takes the last ``service`` value, ``get_parameters``); any other method there is
    no git request and is unknown.
    """
    path = _path(request)
    method = request.method.upper()
    bodiless_read = method in _READ_METHODS and not request.body
    if path.endswith("/git-receive-pack"):
        if bodiless_read:
            return _action(request, operation="discover", verb=Verb.READ)
        return _push(request)
    if path.endswith(("/git-upload-pack", "/git-upload-archive")):
        service = "git-upload-pack" if path.endswith("/git-upload-pack") else "git-upload-archive"
        operation = "fetch" if service == "git-upload-pack" else "archive"
        if _service_conflict(request, service) and not bodiless_read:
            return _as_push_too(_push(request))
        return _action(request, operation=operation, verb=Verb.READ)
    if method not in _READ_METHODS:
        return _unknown(request, "discover")
    values = request.query_values.get("service", [])
    if len(set(values)) > 1:
        return _action(
            request,
            operation="discover",
            verb=Verb.READ,
            confidence=Confidence.AMBIGUOUS,
            risk_tags=["ambiguous:duplicate-parameter"],
        )
    return _action(request, operation="discover", verb=Verb.READ)
