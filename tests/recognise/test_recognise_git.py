"""git smart HTTP: pushes from hand-built pkt-lines and packfiles."""

from __future__ import annotations

import hashlib
import zlib

import pytest
from recognise_support import ZERO, http, pkt

from guardproxy.action import Action, Confidence, Environment, Provider, Verb
from guardproxy.recognise import RecogniseSettings, recognise
from guardproxy.recognise.git_pack import commit_parents, is_fast_forward

CAPS = b"report-status-v2 side-band-64k quiet object-format=sha1 agent=git/2.39.5"
PUSH_PATH = "/acme/api.git/git-receive-pack"
OLD = "1" * 40


def commit(parent: str | None, message: str) -> tuple[str, bytes]:
    """(id, content) of a commit object."""
    lines = [f"tree {'4b825dc642cb6eb9a060e54bf8d69288fbee4904'}"]
    if parent:
        lines.append(f"parent {parent}")
    lines += [
        "author A <a@example.com> 0 +0000",
        "committer A <a@example.com> 0 +0000",
        "",
        message,
    ]
    content = "\n".join(lines).encode()
    return hashlib.sha1(b"commit %d\x00" % len(content) + content).hexdigest(), content


def _header(kind: int, size: int) -> bytes:
    out = bytearray()
    byte = (kind << 4) | (size & 0x0F)
    size >>= 4
    while size:
        out.append(byte | 0x80)
        byte = size & 0x7F
        size >>= 7
    out.append(byte)
    return bytes(out)


def _ofs(offset: int) -> bytes:
    out = [offset & 0x7F]
    offset >>= 7
    while offset:
        offset -= 1
        out.insert(0, 0x80 | (offset & 0x7F))
        offset >>= 7
    return bytes(out)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def pack(*objects: bytes, delta_last: bool = False) -> bytes:
    """A version-2 pack of commit objects; optionally the last as an OFS_DELTA."""
    body = bytearray(b"PACK" + (2).to_bytes(4, "big") + len(objects).to_bytes(4, "big"))
    offsets: list[int] = []
    for index, content in enumerate(objects):
        offsets.append(len(body))
        if delta_last and index == len(objects) - 1 and index > 0:
            base = objects[index - 1]
            delta = _varint(len(base)) + _varint(len(content))
            for start in range(0, len(content), 127):
                chunk = content[start : start + 127]
                delta += bytes([len(chunk)]) + chunk
            body += _header(6, len(delta)) + _ofs(offsets[-1] - offsets[-2]) + zlib.compress(delta)
        else:
            body += _header(1, len(content)) + zlib.compress(content)
    return bytes(body) + hashlib.sha1(bytes(body)).digest()


def push(*commands: tuple[str, str, str], pack_bytes: bytes = b"", caps: bytes = CAPS) -> bytes:
    lines = b""
    for index, (old, new, ref) in enumerate(commands):
        line = f"{old} {new} {ref}".encode()
        lines += pkt(line + (b"\x00" + caps if index == 0 else b"") + b"\n")
    return lines + b"0000" + pack_bytes


def send(body: bytes, settings: RecogniseSettings | None = None, path: str = PUSH_PATH) -> Action:
    request = http(
        "POST",
        path,
        host="github.com",
        port=443,
        headers={
            "Content-Type": "application/x-git-receive-pack-request",
            "User-Agent": "git/2.39.5",
            "Authorization": "Basic c2VjcmV0",
        },
        body=body,
    )
    return recognise(request, settings or RecogniseSettings())


def test_create_branch() -> None:
    new, content = commit(None, "first")
    action = send(push((ZERO, new, "refs/heads/main"), pack_bytes=pack(content)))
    assert (action.provider, action.service, action.operation) == (Provider.GIT, "git", "push")
    assert (action.verb, action.risk_tags, action.confidence) == (Verb.CREATE, [], Confidence.EXACT)
    assert (action.resource.type, action.resource.name) == ("git:ref", "refs/heads/main")
    assert action.scope.repository == "acme/api"
    assert action.resource.key == "git:github.com:acme/api:git:ref/refs/heads/main"
    assert action.actor.tool == "git"
    assert action.environment is Environment.UNKNOWN  # no name heuristic for git


def test_delete_branch() -> None:
    action = send(push(("31f6" + "a" * 36, ZERO, "refs/heads/feature-x")))
    assert (action.verb, action.resource.name, action.risk_tags) == (
        Verb.DELETE,
        "refs/heads/feature-x",
        ["branch-delete"],
    )


def test_fast_forward_proven_by_the_pack() -> None:
    mid, mid_content = commit(OLD, "one")
    new, new_content = commit(mid, "two")
    action = send(push((OLD, new, "refs/heads/main"), pack_bytes=pack(mid_content, new_content)))
    assert (action.verb, action.risk_tags) == (Verb.UPDATE, [])


def test_fast_forward_through_a_delta_commit() -> None:
    mid, mid_content = commit(OLD, "one")
    new, new_content = commit(mid, "two, stored as a delta of one")
    body = push(
        (OLD, new, "refs/heads/main"), pack_bytes=pack(mid_content, new_content, delta_last=True)
    )
    assert send(body).risk_tags == []


def test_rewrite_is_a_possible_force_push() -> None:
    other, other_content = commit("2" * 40, "rewritten history")
    action = send(push((OLD, other, "refs/heads/main"), pack_bytes=pack(other_content)))
    assert (action.verb, action.risk_tags) == (Verb.UPDATE, ["possible-force-push"])


def test_update_without_a_pack_is_a_possible_force_push() -> None:
    """A rewind (or moving to a commit the server has) sends no pack to prove anything."""
    action = send(push((OLD, "3" * 40, "refs/heads/main")))
    assert action.risk_tags == ["possible-force-push"]


def test_one_action_for_the_most_dangerous_update() -> None:
    created, content = commit(None, "new")
    body = push(
        (ZERO, created, "refs/heads/topic"),
        (OLD, "3" * 40, "refs/heads/feature"),
        ("4" * 40, ZERO, "refs/heads/old-a"),
        ("5" * 40, ZERO, "refs/heads/main"),
        pack_bytes=pack(content),
    )
    action = send(body)
    assert (action.verb, action.resource.name) == (Verb.DELETE, "refs/heads/main")
    assert action.risk_tags == ["branch-delete", "possible-force-push", "bulk"]


def test_tag_delete_is_a_delete_without_branch_tag() -> None:
    action = send(push(("6" * 40, ZERO, "refs/tags/v1.0")))
    assert (action.verb, action.resource.name, action.risk_tags) == (
        Verb.DELETE,
        "refs/tags/v1.0",
        [],
    )


def test_push_options_section_before_the_pack() -> None:
    new, content = commit(OLD, "ff")
    commands = pkt(f"{OLD} {new} refs/heads/main".encode() + b"\x00" + CAPS + b" push-options\n")
    body = commands + b"0000" + pkt(b"ci.skip\n") + b"0000" + pack(content)
    assert send(body).risk_tags == []


def test_sha256_repository() -> None:
    caps = b"report-status object-format=sha256"
    old, new = "a" * 64, "b" * 64
    action = send(push((old, "0" * 64, "refs/heads/gone"), caps=caps))
    assert action.risk_tags == ["branch-delete"]
    assert send(push((old, new, "refs/heads/main"), caps=caps)).risk_tags == ["possible-force-push"]


def test_repository_environment_from_configuration() -> None:
    settings = RecogniseSettings(environments={"git:repo:acme/api": "prod"})
    action = send(push(("7" * 40, ZERO, "refs/heads/x")), settings)
    assert action.environment is Environment.PROD


@pytest.mark.parametrize(
    ("method", "path", "operation"),
    [
        ("GET", "/acme/api.git/info/refs?service=git-receive-pack", "discover"),
        ("GET", "/acme/api/info/refs?service=git-upload-pack", "discover"),
        ("POST", "/acme/api.git/git-upload-pack", "fetch"),
    ],
)
def test_fetch_and_discovery_are_reads(method: str, path: str, operation: str) -> None:
    action = recognise(http(method, path, host="github.com", port=443), RecogniseSettings())
    assert (action.provider, action.operation, action.verb) == (Provider.GIT, operation, Verb.READ)
    assert action.scope.repository == "acme/api"
    assert action.request.path == path.split("?", maxsplit=1)[0]


def test_malformed_push_fails_closed() -> None:
    action = send(b"zzzznot a pkt-line")
    assert (action.provider, action.verb, action.confidence) == (
        Provider.GIT,
        Verb.UNKNOWN,
        Confidence.UNKNOWN,
    )
    assert action.actor.tool == "git"
    assert action.request.path == PUSH_PATH


def test_empty_command_list_is_unclassified() -> None:
    action = send(b"0000")
    assert (action.operation, action.verb) == ("push", Verb.UNKNOWN)


def test_pack_walk_directly() -> None:
    mid, mid_content = commit(OLD, "one")
    new, new_content = commit(mid, "two")
    parents = commit_parents(pack(mid_content, new_content))
    assert parents == {mid: (OLD,), new: (mid,)}
    assert is_fast_forward(parents, OLD, new)
    assert not is_fast_forward(parents, "9" * 40, new)
    assert is_fast_forward({}, new, new)
