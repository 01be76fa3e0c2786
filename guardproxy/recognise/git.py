"""The git smart-HTTP recogniser: pushes, fetches and ref discovery -> Actions.

A push (``POST …/git-receive-pack``) starts with a pkt-line command list, one
``<old-id> <new-id> <refname>`` per ref (capabilities after a NUL on the first), then
the packfile. A zero ``new-id`` deletes the ref, a zero ``old-id`` creates it.

Force pushes are not marked on the wire (``--force`` is a client-side decision), so an
update is tagged ``possible-force-push`` unless the pushed pack itself proves it a
fast-forward (``git_pack``): an update whose pack does not lead back to the old id —
a rewrite, a rewind, or moving a branch to a commit the server already has — is
*possibly* forced, and policies decide whether that is worth a hold (the shipped ones
hold it only for protected branches).

One push may update several refs but the recogniser returns one Action: the most
dangerous update (a delete or an unproven update before a plain update before a
create; among equals, a branch that looks long-lived — main, master, release*,
prod* — first), with the risk tags of *all* updates, so a tag is never lost because
another ref was chosen. More than one deleted ref adds ``bulk``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from guardproxy.action import Action, Confidence, Provider, Resource, Scope, Verb
from guardproxy.recognise.common import actor_of, cap, decoded_body, resource_key, summary_of
from guardproxy.recognise.git_pack import PackError, commit_parents, is_fast_forward
from guardproxy.recognise.request import HttpRequest

_COMMAND = re.compile(rb"^([0-9a-f]{40}|[0-9a-f]{64}) ([0-9a-f]{40}|[0-9a-f]{64}) (\S+)")
_LONG_LIVED = re.compile(r"^refs/heads/(main|master|trunk|develop|release.*|prod.*|stable.*)$")
_SUFFIXES = ("/git-receive-pack", "/git-upload-pack", "/info/refs")
MAX_PKT_LINES = 100_000
MAX_DECODED = 512 * 1024 * 1024  # a compressed push body is inflated at most this far


class PktError(ValueError):
    """The body is not a well-formed pkt-line stream."""


@dataclass(frozen=True, slots=True)
class RefUpdate:
    old: str
    new: str
    ref: str

    @property
    def deletes(self) -> bool:
        return set(self.new) == {"0"}

    @property
    def creates(self) -> bool:
        return set(self.old) == {"0"}


def is_git_request(request: HttpRequest) -> bool:
    """Smart-HTTP endpoints: receive-pack, upload-pack, and info/refs?service=git-*."""
    path = request.path_only
    if path.endswith(("/git-receive-pack", "/git-upload-pack")):
        return True
    if path.endswith("/info/refs"):
        return any(k == "service" and v.startswith("git-") for k, v in request.query)
    return False


def repository_of(path: str) -> str:
    """``owner/repo`` from a smart-HTTP path (``/owner/repo.git/git-receive-pack``)."""
    for suffix in _SUFFIXES:
        if path.endswith(suffix):
            path = path[: -len(suffix)]
            break
    return path.strip("/").removesuffix(".git")


def pkt_lines(data: bytes, start: int = 0) -> tuple[list[bytes], int]:
    """Payloads up to the next flush-pkt, and the offset just after it."""
    lines: list[bytes] = []
    pos = start
    while True:
        if len(lines) > MAX_PKT_LINES:
            raise PktError("too many pkt-lines")
        head = data[pos : pos + 4]
        if len(head) < 4:
            raise PktError("truncated pkt-line")
        try:
            length = int(head, 16)
        except ValueError as exc:
            raise PktError("bad pkt-line length") from exc
        if length in (0, 1, 2):  # flush, delim, response-end
            return lines, pos + 4
        if length < 4 or pos + length > len(data):
            raise PktError("bad pkt-line length")
        lines.append(data[pos + 4 : pos + length])
        pos += length


def parse_push(body: bytes) -> tuple[list[RefUpdate], set[str], bytes]:
    """(ref updates, capabilities, pack bytes) of a receive-pack request body."""
    lines, pos = pkt_lines(body)
    updates: list[RefUpdate] = []
    capabilities: set[str] = set()
    for index, line in enumerate(lines):
        command, _, caps = line.partition(b"\x00")
        if index == 0 and caps:
            capabilities = set(caps.decode("ascii", "replace").split())
        match = _COMMAND.match(command.strip())
        if match:
            old, new, ref = (g.decode("ascii", "replace") for g in match.groups())
            updates.append(RefUpdate(old, new, ref))
    if "push-options" in capabilities:
        _options, pos = pkt_lines(body, pos)
    return updates, capabilities, body[pos:]


def _object_format(capabilities: set[str]) -> str:
    for capability in capabilities:
        if capability.startswith("object-format="):
            return capability.split("=", 1)[1]
    return "sha1"


def _unproven(updates: list[RefUpdate], pack: bytes, object_format: str) -> set[RefUpdate]:
    """Updates (neither create nor delete) the pack does not prove to be fast-forwards."""
    plain = [u for u in updates if not u.creates and not u.deletes]
    if not plain:
        return set()
    parents: dict[str, tuple[str, ...]] = {}
    if pack.startswith(b"PACK"):
        try:
            parents = commit_parents(pack, object_format)
        except PackError:
            parents = {}
    return {u for u in plain if not is_fast_forward(parents, u.old, u.new)}


def _danger(update: RefUpdate, unproven: set[RefUpdate], position: int) -> tuple[int, ...]:
    if update.deletes or update in unproven:
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
        "scope": Scope(repository=repository_of(request.path_only)),
        "actor": actor_of(request),
        "request": summary_of(request),
        "confidence": Confidence.EXACT,
    }
    base.update(fields)
    return Action.model_validate(base)


def _push(request: HttpRequest) -> Action:
    encoding = request.header("content-encoding").strip().lower()
    body = request.body if encoding in ("", "identity") else decoded_body(request, MAX_DECODED)
    if body is None:
        raise PktError("push body could not be decoded")
    updates, capabilities, pack = parse_push(body)
    if not updates:
        return _action(request, operation="push", verb=Verb.UNKNOWN, confidence=Confidence.UNKNOWN)
    unproven = _unproven(updates, pack, _object_format(capabilities))
    chosen = max(enumerate(updates), key=lambda item: _danger(item[1], unproven, item[0]))[1]
    tags: list[str] = []
    if any(u.deletes and u.ref.startswith("refs/heads/") for u in updates):
        tags.append("branch-delete")
    if unproven:
        tags.append("possible-force-push")
    if sum(1 for u in updates if u.deletes) > 1:
        tags.append("bulk")
    verb = Verb.DELETE if chosen.deletes else Verb.CREATE if chosen.creates else Verb.UPDATE
    name, truncated = cap(chosen.ref)
    repository = repository_of(request.path_only)
    key = resource_key("git", (request.host.lower(), repository), "git:ref", name)
    return _action(
        request,
        operation="push",
        verb=verb,
        resource=Resource(type="git:ref", name=name, key=key),
        risk_tags=tags,
        truncated=truncated,
    )


def recognise_git(request: HttpRequest) -> Action:
    """The Action for a git smart-HTTP request."""
    path = request.path_only
    if path.endswith("/git-receive-pack") and request.method.upper() == "POST":
        return _push(request)
    operation = "fetch" if path.endswith("/git-upload-pack") else "discover"
    return _action(request, operation=operation, verb=Verb.READ)
