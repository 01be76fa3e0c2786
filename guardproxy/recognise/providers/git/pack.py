"""Reading commits out of a pushed git packfile, to prove a ref update fast-forwards.

A force push looks exactly like a normal push on the wire (``old new ref``); the only
evidence available to a proxy is the pack the client sends. If walking the parents of
``new`` through the commits *in the pack* reaches ``old``, the update is a fast-forward.
If it does not (a rewrite), or there is no pack (a rewind, or a commit the server
already has), it may be a force push.

Only what that walk needs is implemented: the pack object headers, zlib streams, and
delta resolution for commits. Work is bounded (decompressed bytes, objects, walk
length) so a hostile pack costs little; running out of budget just means "unproven".
"""

from __future__ import annotations

import hashlib
import zlib
from collections import deque
from dataclasses import dataclass

_COMMIT, _TREE, _BLOB, _TAG, _OFS_DELTA, _REF_DELTA = 1, 2, 3, 4, 6, 7
_CHUNK = 1 << 16

MAX_INFLATE = 512 * 1024 * 1024
MAX_OBJECTS = 2_000_000
MAX_WALK = 100_000


class PackError(ValueError):
    """The pack cannot be read (truncated, corrupt, over budget)."""


@dataclass(slots=True)
class _Entry:
    kind: int  # final object type once deltas are resolved (0 when unknown)
    data: bytes | None  # object content, kept only for commits


def _inflate(pack: memoryview, pos: int, keep: bool, budget: list[int]) -> tuple[bytes, int]:
    """Inflate the zlib stream at ``pos``; return (content if ``keep``, end position)."""
    inflater = zlib.decompressobj()
    out: list[bytes] = []
    while not inflater.eof:
        if pos >= len(pack):
            raise PackError("truncated zlib stream")
        chunk = pack[pos : pos + _CHUNK]
        try:
            data = inflater.decompress(chunk, _CHUNK)
            while True:
                budget[0] -= len(data)
                if budget[0] < 0:
                    raise PackError("inflate budget exhausted")
                if keep:
                    out.append(data)
                if not inflater.unconsumed_tail or inflater.eof:
                    break
                data = inflater.decompress(inflater.unconsumed_tail, _CHUNK)
        except zlib.error as exc:
            raise PackError(str(exc)) from exc
        consumed = len(chunk) - len(inflater.unused_data) - len(inflater.unconsumed_tail)
        pos += consumed
    return b"".join(out), pos


def _apply_delta(base: bytes, delta: bytes) -> bytes:
    def size(pos: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            if pos >= len(delta):
                raise PackError("truncated delta")
            byte = delta[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value, pos

    _src, pos = size(0)
    target, pos = size(pos)
    out = bytearray()
    while pos < len(delta):
        op = delta[pos]
        pos += 1
        if op & 0x80:
            offset = length = 0
            for i in range(4):
                if op & (1 << i):
                    offset |= delta[pos] << (8 * i)
                    pos += 1
            for i in range(3):
                if op & (1 << (4 + i)):
                    length |= delta[pos] << (8 * i)
                    pos += 1
            length = length or 0x10000
            if offset + length > len(base):
                raise PackError("delta copies past its base")
            out += base[offset : offset + length]
        elif op:
            out += delta[pos : pos + op]
            pos += op
        else:
            raise PackError("reserved delta opcode")
    if len(out) != target:
        raise PackError("delta size mismatch")
    return bytes(out)


def _parents(commit: bytes) -> tuple[str, ...]:
    parents: list[str] = []
    for line in commit.split(b"\n"):
        if not line:
            break
        if line.startswith(b"parent "):
            parents.append(line[7:].decode("ascii", "replace").strip())
    return tuple(parents)


def commit_parents(pack: bytes, object_format: str = "sha1") -> dict[str, tuple[str, ...]]:
    """Map commit id -> parent ids for every commit in ``pack`` (raises PackError,
    also for a pack that ends inside an object header or a delta)."""
    try:
        return _commit_parents(pack, object_format)
    except IndexError as exc:
        raise PackError("truncated pack") from exc


def _commit_parents(pack: bytes, object_format: str) -> dict[str, tuple[str, ...]]:
    view = memoryview(pack)
    if len(pack) < 12 or pack[:4] != b"PACK":
        raise PackError("not a pack")
    count = int.from_bytes(pack[8:12], "big")
    if count > MAX_OBJECTS:
        raise PackError("too many objects")
    id_len = 32 if object_format == "sha256" else 20
    budget = [MAX_INFLATE]
    entries: dict[int, _Entry] = {}
    commits_by_id: dict[str, bytes] = {}
    pos = 12
    for _ in range(count):
        start = pos
        if pos >= len(pack):
            raise PackError("truncated pack")
        byte = pack[pos]
        pos += 1
        kind = (byte >> 4) & 7
        while byte & 0x80:
            if pos >= len(pack):
                raise PackError("truncated header")
            byte = pack[pos]
            pos += 1
        base: _Entry | None = None
        if kind == _OFS_DELTA:
            byte = pack[pos]
            pos += 1
            offset = byte & 0x7F
            while byte & 0x80:
                byte = pack[pos]
                pos += 1
                offset = ((offset + 1) << 7) | (byte & 0x7F)
            base = entries.get(start - offset)
        elif kind == _REF_DELTA:
            base_id = pack[pos : pos + id_len].hex()
            pos += id_len
            data = commits_by_id.get(base_id)
            base = _Entry(_COMMIT, data) if data is not None else None
        is_delta = kind in (_OFS_DELTA, _REF_DELTA)
        final_kind = (base.kind if base is not None else 0) if is_delta else kind
        keep = final_kind == _COMMIT
        content, pos = _inflate(view, pos, keep, budget)
        if keep and is_delta and base is not None and base.data is not None:
            content = _apply_delta(base.data, content)
        entry = _Entry(final_kind, content if keep else None)
        entries[start] = entry
        if keep:
            header = b"commit %d\x00" % len(content)
            digest = hashlib.sha256 if object_format == "sha256" else hashlib.sha1
            commits_by_id[digest(header + content).hexdigest()] = content
    return {cid: _parents(data) for cid, data in commits_by_id.items()}


def is_fast_forward(parents: dict[str, tuple[str, ...]], old: str, new: str) -> bool:
    """Whether ``old`` is an ancestor of ``new`` through the commits in ``parents``."""
    if old == new:
        return True
    seen = {new}
    queue = deque([new])
    while queue and len(seen) <= MAX_WALK:
        commit = queue.popleft()
        for parent in parents.get(commit, ()):
            if parent == old:
                return True
            if parent not in seen:
                seen.add(parent)
                queue.append(parent)
    return False
