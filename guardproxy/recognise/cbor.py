"""A minimal CBOR (RFC 8949) decoder for Smithy RPC v2 request bodies.

Only what request bodies use: integers, strings, arrays, maps, tags (skipped),
booleans, null and floats, with definite or indefinite lengths. Bounded in depth and
item count so a hostile body cannot make it recurse or loop without limit; anything
malformed raises :class:`CborError` and the caller carries on without parameters.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

MAX_DEPTH = 32
MAX_ITEMS = 100_000


class CborError(ValueError):
    """The bytes are not CBOR this decoder accepts."""


PairsHook = Callable[[list[tuple[Any, Any]]], Any]


class _Reader:
    def __init__(self, data: bytes, pairs_hook: PairsHook | None = None) -> None:
        self.data = data
        self.pos = 0
        self.items = 0
        self.pairs_hook = pairs_hook

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if n < 0 or end > len(self.data):
            raise CborError("truncated")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def head(self) -> tuple[int, int, int]:
        """(major type, additional info, argument)."""
        self.items += 1
        if self.items > MAX_ITEMS:
            raise CborError("too many items")
        byte = self.take(1)[0]
        major, info = byte >> 5, byte & 0x1F
        if info < 24:
            return major, info, info
        if info in (24, 25, 26, 27):
            size = 1 << (info - 24)
            return major, info, int.from_bytes(self.take(size), "big")
        if info == 31:
            return major, info, -1
        raise CborError("reserved additional info")

    def value(self, depth: int = 0) -> Any:
        if depth > MAX_DEPTH:
            raise CborError("nested too deeply")
        major, info, arg = self.head()
        if major == 0:
            return arg
        if major == 1:
            return -1 - arg
        if major in (2, 3):
            raw = self._string(major, arg)
            return raw if major == 2 else raw.decode("utf-8", "replace")
        if major == 4:
            return self._array(arg, depth)
        if major == 5:
            return self._map(arg, depth)
        if major == 6:
            return self.value(depth + 1)
        return self._simple(info, arg)

    def _string(self, major: int, arg: int) -> bytes:
        if arg >= 0:
            return self.take(arg)
        parts: list[bytes] = []
        while self.data[self.pos : self.pos + 1] != b"\xff":
            chunk_major, _info, chunk_len = self.head()
            if chunk_major != major or chunk_len < 0:
                raise CborError("bad indefinite string chunk")
            parts.append(self.take(chunk_len))
        self.take(1)
        return b"".join(parts)

    def _array(self, arg: int, depth: int) -> list[Any]:
        out: list[Any] = []
        if arg >= 0:
            for _ in range(arg):
                out.append(self.value(depth + 1))
            return out
        while self.data[self.pos : self.pos + 1] != b"\xff":
            out.append(self.value(depth + 1))
        self.take(1)
        return out

    def _map(self, arg: int, depth: int) -> Any:
        pairs: list[tuple[Any, Any]] = []
        while (arg >= 0 and len(pairs) < arg) or (
            arg < 0 and self.data[self.pos : self.pos + 1] != b"\xff"
        ):
            key = self.value(depth + 1)
            if isinstance(key, (list, dict)) or not _hashable(key):
                raise CborError("unhashable map key")
            pairs.append((key, self.value(depth + 1)))
        if arg < 0:
            self.take(1)
        if self.pairs_hook is not None:
            return self.pairs_hook(pairs)
        return dict(pairs)  # a repeated key: the last one, as json.loads does

    def _simple(self, info: int, arg: int) -> Any:
        if info == 20:
            return False
        if info == 21:
            return True
        if info in (22, 23):
            return None
        if info == 25:
            return _half(arg)
        if info == 26:
            return struct.unpack(">f", arg.to_bytes(4, "big"))[0]
        if info == 27:
            return struct.unpack(">d", arg.to_bytes(8, "big"))[0]
        if info == 31:
            raise CborError("unexpected break")
        return arg


def _half(bits: int) -> float:
    exponent = (bits >> 10) & 0x1F
    mantissa = bits & 0x3FF
    if exponent == 0:
        value = mantissa * 2.0**-24
    elif exponent == 31:
        value = float("inf") if mantissa == 0 else float("nan")
    else:
        value = (mantissa + 1024) * 2.0 ** (exponent - 25)
    return -value if bits & 0x8000 else value


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def loads(data: bytes, *, pairs_hook: PairsHook | None = None) -> Any:
    """Decode one CBOR data item from ``data``.

    ``pairs_hook``, like ``json.loads``'s ``object_pairs_hook``, receives each map as
    its list of (key, value) pairs in wire order (repeated keys included) and returns
    what stands for the map.
    """
    if not data:
        raise CborError("empty")
    return _Reader(data, pairs_hook).value()
