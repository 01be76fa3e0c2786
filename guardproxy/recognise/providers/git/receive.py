"""How ``git receive-pack`` reads a push request body: pkt-lines, commands, certificate.

There is no Python implementation of receive-pack, so this follows git's own source
(git/git, read at commit 1a3e64c6, August 2026) function by function; each function
below names the C function it transcribes. Where receive-pack would die, this raises
:class:`ReceivePackError`: receive-pack reads every command before it executes any
(``cmd_receive_pack`` calls ``read_head_info`` first), so a body it dies on changes
no ref, and a recogniser may read it as anything but must never read it as less.

What the body does not say, the reader is told or tries every way:

* the repository's hash algorithm: ``parse_oid_hex`` uses the repository's, and the
  client's ``object-format`` capability only makes receive-pack die when it differs,
  so :func:`read_push` reads with SHA-1 and with SHA-256 (at most one of them reads
  any command: a SHA-1 command has a space where a SHA-256 one has its 41st digit);
* whether the server advertises push options (``receive.advertisePushOptions``): only
  then does receive-pack read a push-options section before the pack, so
  :func:`pack_and_options` looks for the pack both ways.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

LARGE_PACKET_MAX = 65520
"""pkt-line.h: receive-pack's reader buffer (``packet_buffer``); a longer packet dies."""

MAX_PACKETS = 100_000
"""The most packets read before giving up; receive-pack has no such limit, so a body
with more cannot be read here and is unknown (fail closed)."""

FLUSH, DELIM, RESPONSE_END, NORMAL = "flush", "delim", "response-end", "normal"

HASH_HEX_LENGTH = {"sha1": 40, "sha256": 64}

# hex-ll.c hexval_table: 0-9, a-f and A-F, nothing else (not a sign, space or "0x")
_HEX_RUN = {size: re.compile(rb"[0-9a-fA-F]{%d}" % size) for size in (4, 40, 64)}
_SPACE = frozenset(b" \t\n\r")  # ctype.c sane_ctype: GIT_SPACE is 9, 10, 13 and 32
_VALUE_END = frozenset(b" \t\n")  # connect.c parse_feature_value: strcspn(value, " \t\n")
_SIGNATURE_STARTS = (  # gpg-interface.c gpg_format[].sigs
    b"-----BEGIN PGP SIGNATURE-----",
    b"-----BEGIN PGP MESSAGE-----",
    b"-----BEGIN SIGNED MESSAGE-----",
    b"-----BEGIN SSH SIGNATURE-----",
)


class ReceivePackError(ValueError):
    """receive-pack would die reading this body (it then updates no ref)."""


class PushLimitError(ValueError):
    """The body is over what this reader handles (``MAX_PACKETS``): unknown, not read."""


@dataclass(frozen=True, slots=True)
class RefUpdate:
    """One command: ids in lower case (receive-pack parses them to binary, so the case
    the client chose means nothing), the ref name as sent."""

    old: str
    new: str
    ref: str

    @property
    def deletes(self) -> bool:
        return not self.new.strip("0")  # the null id

    @property
    def creates(self) -> bool:
        return not self.old.strip("0")


@dataclass(frozen=True, slots=True)
class PushCommands:
    """What ``read_head_info`` collected, and where the reader stopped."""

    hash_algo: str
    updates: tuple[RefUpdate, ...]
    feature_lists: tuple[bytes, ...]
    """Every capability list sent (after a NUL, on any command line)."""
    shallow: tuple[str, ...]
    signed: bool
    """A push certificate was sent (its commands are in ``updates``)."""
    end: int
    """Offset just after the packet that ended the command list."""

    def requests(self, feature: bytes) -> bool:
        """Whether any line asked for ``feature`` (receive-pack reads each list)."""
        return any(feature_value(f, feature) is not None for f in self.feature_lists)


class PacketReader:
    """``packet_reader_read`` over a byte string, as receive-pack sets it up
    (``packet_reader_init(&reader, 0, NULL, 0, PACKET_READ_CHOMP_NEWLINE |
    PACKET_READ_DIE_ON_ERR_PACKET)``: no sideband, no gentle end of file)."""

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos
        self.packets = 0

    def read(self, *, chomp: bool = True) -> tuple[str, bytes]:
        """pkt-line.c ``packet_read_with_status``: (status, payload)."""
        self.packets += 1
        if self.packets > MAX_PACKETS:
            raise PushLimitError(f"more than {MAX_PACKETS} pkt-lines")
        head = self.data[self.pos : self.pos + 4]
        if len(head) < 4:  # get_packet_data without PACKET_READ_GENTLE_ON_EOF
            raise ReceivePackError("the remote end hung up unexpectedly")
        # packet_length: four hexval() digits, either case; any other byte is negative
        if _HEX_RUN[4].fullmatch(head) is None:
            raise ReceivePackError(f"protocol error: bad line length character: {head!r}")
        length = int(head, 16)
        self.pos += 4
        if length == 0:
            return FLUSH, b""
        if length == 1:
            return DELIM, b""
        if length == 2:
            return RESPONSE_END, b""
        if length < 4:
            raise ReceivePackError(f"protocol error: bad line length {length}")
        length -= 4
        if length >= LARGE_PACKET_MAX:  # (unsigned)len >= size, size = sizeof(packet_buffer)
            raise ReceivePackError(f"protocol error: bad line length {length}")
        payload = self.data[self.pos : self.pos + length]
        if len(payload) < length:
            raise ReceivePackError("the remote end hung up unexpectedly")
        self.pos += length
        if chomp and payload.endswith(b"\n"):  # PACKET_READ_CHOMP_NEWLINE, no sideband
            payload = payload[:-1]
        if payload.startswith(b"ERR "):  # PACKET_READ_DIE_ON_ERR_PACKET
            raise ReceivePackError("remote error")
        return NORMAL, payload


def _c_string(data: bytes) -> bytes:
    """What C sees of a NUL-terminated buffer: everything before the first NUL."""
    return data.split(b"\x00", 1)[0]


def feature_value(feature_list: bytes, feature: bytes) -> bytes | None:
    """connect.c ``parse_feature_value``: the value of ``feature`` (``b""`` when it has
    none), or None. The first occurrence that starts the list or follows a space and
    ends the list, a space or ``=`` wins; the value ends at a space, tab or newline."""
    start = 0
    while start < len(feature_list):
        found = feature_list.find(feature, start)
        if found < 0:
            return None
        if found == start or feature_list[found - 1] in _SPACE:
            at = found + len(feature)
            if at == len(feature_list) or feature_list[at] in _SPACE:
                return b""
            if feature_list[at] == ord("="):
                end = at + 1
                while end < len(feature_list) and feature_list[end] not in _VALUE_END:
                    end += 1
                return feature_list[at + 1 : end]
        start = found + 1
    return None


def _oid(line: bytes, at: int, hex_length: int) -> str | None:
    """hex.c ``get_oid_hex``: ``hex_length`` hex digits of either case at ``at``."""
    digits = line[at : at + hex_length]
    if _HEX_RUN[hex_length].fullmatch(digits) is None:
        return None
    return digits.decode("ascii").lower()


def _ref_name(raw: bytes) -> str:
    # Ref names are bytes; a backslash is not allowed in one (refs.c
    # check_refname_format), so the escapes never collide with a valid name.
    return raw.decode("utf-8", "backslashreplace")


def queue_command(line: bytes, hash_algo: str) -> RefUpdate:
    """builtin/receive-pack.c ``queue_command``: ``<old> SP <new> SP <ref>``, exactly one
    space each, the ref name being the rest of the line (spaces and all)."""
    size = HASH_HEX_LENGTH[hash_algo]
    old = _oid(line, 0, size)
    new = _oid(line, size + 1, size)
    if (
        old is None
        or line[size : size + 1] != b" "
        or new is None
        or line[2 * size + 1 : 2 * size + 2] != b" "
    ):
        raise ReceivePackError("protocol error: expected old/new/ref")
    return RefUpdate(old, new, _ref_name(line[2 * size + 2 :]))


def parse_signed_buffer(buffer: bytes) -> int:
    """gpg-interface.c ``parse_signed_buffer``: where the last line that starts a
    signature begins (the length when none does)."""
    match = size = len(buffer)
    pos = 0
    while pos < size:
        if buffer.startswith(_SIGNATURE_STARTS, pos):
            match = pos
        eol = buffer.find(b"\n", pos)
        pos = eol + 1 if eol >= 0 else size
    return match


def queue_commands_from_cert(cert: bytes, hash_algo: str) -> list[RefUpdate]:
    """builtin/receive-pack.c ``queue_commands_from_cert``: one command per line between
    the certificate's first empty line and its signature. (Its "both push certificate
    and unsigned commands" check tests ``*tail``, which is always NULL there, so
    unsigned commands before or after a certificate are executed too.)"""
    begin = cert.find(b"\n\n")
    if begin < 0:
        raise ReceivePackError("malformed push certificate")
    begin += 2
    end = parse_signed_buffer(cert)
    updates: list[RefUpdate] = []
    while begin < end:
        eol = cert.find(b"\n", begin, end)
        updates.append(queue_command(cert[begin : eol if eol >= 0 else end], hash_algo))
        begin = eol + 1 if eol >= 0 else end
    return updates


def read_head_info(data: bytes, hash_algo: str) -> PushCommands:
    """builtin/receive-pack.c ``read_head_info`` for a repository using ``hash_algo``."""
    reader = PacketReader(data)
    updates: list[RefUpdate] = []
    feature_lists: list[bytes] = []
    shallow: list[str] = []
    cert = bytearray()
    size = HASH_HEX_LENGTH[hash_algo]
    while True:
        status, line = reader.read()
        if status != NORMAL:  # flush, delim or response-end all end the list
            break
        if len(line) > 8 and line.startswith(b"shallow "):
            oid = _oid(_c_string(line), 8, size)
            if oid is None:
                raise ReceivePackError("protocol error: expected shallow sha")
            shallow.append(oid)
            continue
        text = _c_string(line)  # linelen = strlen(reader->line)
        if len(text) < len(line):
            features = _c_string(line[len(text) + 1 :])
            feature_lists.append(features)
            # xstrncmpz(the_hash_algo->name, hash, len): the value must be the name
            wanted = feature_value(features, b"object-format")
            if (b"sha1" if wanted is None else wanted) != hash_algo.encode():
                raise ReceivePackError("unsupported object format")
        if text == b"push-cert":
            # the certificate's packets are read without chomping their newlines
            ended_list = False
            while True:
                status, cert_line = reader.read(chomp=False)
                if status == FLUSH:
                    ended_list = True
                    break
                if status != NORMAL:
                    raise ReceivePackError("protocol error: got an unexpected packet")
                cert_text = _c_string(cert_line)
                if cert_text == b"push-cert-end\n":
                    break
                cert += cert_text  # strbuf_addstr: up to the first NUL
            if ended_list:
                break
            continue
        updates.append(queue_command(text, hash_algo))
    if cert:
        updates += queue_commands_from_cert(bytes(cert), hash_algo)
    return PushCommands(
        hash_algo=hash_algo,
        updates=tuple(updates),
        feature_lists=tuple(feature_lists),
        shallow=tuple(shallow),
        signed=bool(cert),
        end=reader.pos,
    )


def read_push(data: bytes) -> PushCommands:
    """The commands of a push body, for a repository of whichever hash algorithm reads
    them (SHA-1 first; raises :class:`ReceivePackError` when neither does).

    Both read only when there is no command at all (a SHA-1 command line has a space
    where a SHA-256 one needs its 41st hex digit), and then nothing is updated.
    """
    errors: list[ReceivePackError] = []
    for hash_algo in HASH_HEX_LENGTH:
        try:
            return read_head_info(data, hash_algo)
        except ReceivePackError as exc:
            errors.append(exc)
    raise errors[0]


def read_push_options(data: bytes, pos: int) -> tuple[list[bytes], int]:
    """builtin/receive-pack.c ``read_push_options``: lines up to the next non-normal
    packet, and the offset after it."""
    reader = PacketReader(data, pos)
    options: list[bytes] = []
    while True:
        status, line = reader.read()
        if status != NORMAL:
            return options, reader.pos
        options.append(_c_string(line))


def pack_and_options(data: bytes, push: PushCommands) -> tuple[bytes, list[bytes]]:
    """(the pack receive-pack unpacks, the push options it reads), ``b""`` for no pack.

    receive-pack reads a push-options section only when the client asks for it *and*
    the server advertises it (``advertise_push_options``), which the request does not
    tell; either way its ``unpack`` needs the pack signature first, so the reading
    whose remainder starts with ``PACK`` is the one a server that unpacks used.
    """
    rest = data[push.end :]
    if rest.startswith(b"PACK") or not push.requests(b"push-options"):
        return (rest if rest.startswith(b"PACK") else b""), []
    try:
        options, after = read_push_options(data, push.end)
    except (ReceivePackError, PushLimitError):
        return b"", []
    pack = data[after:]
    return (pack if pack.startswith(b"PACK") else b""), options
