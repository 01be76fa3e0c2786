"""git smart HTTP: pushes from hand-built pkt-lines and packfiles."""

from __future__ import annotations

import gzip
import hashlib
import zlib
from collections.abc import Callable

import brotli
import pytest
from backports import zstd
from recognise_support import ZERO, http, pkt

from guardproxy.action import Action, Confidence, Environment, Provider, Verb
from guardproxy.recognise import RecogniseSettings, recognise
from guardproxy.recognise.providers.git.pack import commit_parents, is_fast_forward
from guardproxy.recognise.providers.git.receive import feature_value
from guardproxy.recognise.providers.git.recogniser import MAX_DECODED, MAX_UPDATES, parse_push

CAPS = b"report-status-v2 side-band-64k quiet object-format=sha1 agent=git/2.39.5"
PUSH_PATH = "/acme/api.git/git-receive-pack"
OLD = "1" * 40
SETTINGS = RecogniseSettings()


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


def test_every_update_is_read_the_most_dangerous_first() -> None:
    created, content = commit(None, "new")
    body = push(
        (ZERO, created, "refs/heads/topic"),
        (OLD, "3" * 40, "refs/heads/feature"),
        ("4" * 40, ZERO, "refs/heads/old-a"),
        ("5" * 40, ZERO, "refs/heads/main"),
        pack_bytes=pack(content),
    )
    action = send(body)
    assert [(r.verb, r.resource.name, r.risk_tags) for r in action.all_readings()] == [
        (Verb.DELETE, "refs/heads/main", ["branch-delete", "bulk"]),  # long-lived first
        (Verb.UPDATE, "refs/heads/feature", ["possible-force-push"]),  # then in push order
        (Verb.DELETE, "refs/heads/old-a", ["branch-delete", "bulk"]),
        (Verb.CREATE, "refs/heads/topic", []),
    ]
    assert action.confidence is Confidence.EXACT
    assert {r.resource.key for r in action.readings} == {
        f"git:github.com:acme/api:git:ref/{ref}"
        for ref in ("refs/heads/old-a", "refs/heads/feature", "refs/heads/topic")
    }


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


# ---------------------------------------------------------------- receive-pack's reading
# Each case below follows git/git builtin/receive-pack.c (read_head_info, queue_command,
# queue_commands_from_cert), pkt-line.c (packet_read_with_status) and connect.c
# (parse_feature_value); test_git_receive_differential.py checks the same against a
# real receive-pack.


def reads(action: Action) -> list[tuple[Verb, str]]:
    return [(r.verb, r.resource.name) for r in action.all_readings()]


def unknown(action: Action) -> bool:
    return action.operation == "push" and action.verb is Verb.UNKNOWN


@pytest.mark.parametrize("case", [str.upper, lambda s: s[:20].upper() + s[20:]])
def test_ids_in_upper_case_are_read(case: Callable[[str], str]) -> None:
    """get_oid_hex takes either case (hex-ll.c hexval_table): a delete sent in upper
    case is a delete, and it must not hide behind a lower-case create."""
    body = push(
        (ZERO, "a" * 40, "refs/heads/harmless"),
        (case("ab" * 20), ZERO, "refs/heads/main"),
        pack_bytes=pack(commit(None, "x")[1]),
    )
    action = send(body)
    assert reads(action) == [
        (Verb.DELETE, "refs/heads/main"),
        (Verb.CREATE, "refs/heads/harmless"),
    ]


def test_capabilities_on_a_later_line_are_read() -> None:
    """receive-pack reads a capability list after a NUL on any command line."""
    old, new = "a" * 64, "b" * 64
    body = (
        pkt(f"{old} {'0' * 64} refs/heads/gone\n".encode())
        + pkt(f"{old} {new} refs/heads/main\x00report-status object-format=sha256\n".encode())
        + b"0000"
    )
    action = send(body)
    assert reads(action) == [(Verb.UPDATE, "refs/heads/main"), (Verb.DELETE, "refs/heads/gone")]


@pytest.mark.parametrize(
    "features",
    [
        b"object-format=sha256",  # a SHA-1 command in a SHA-256 request
        b"object-format",  # no value: xstrncmpz(name, "", 0) is not 0
        b"object-format=sha1x",
        b"object-format=SHA1",
    ],
)
def test_an_object_format_receive_pack_refuses_is_unknown(features: bytes) -> None:
    body = pkt(f"{OLD} {ZERO} refs/heads/x".encode() + b"\x00" + features + b"\n") + b"0000"
    assert unknown(send(body))


def test_feature_value_follows_parse_feature_value() -> None:
    assert feature_value(b"report-status object-format=sha1 agent=x", b"object-format") == b"sha1"
    assert feature_value(b"xobject-format=sha256", b"object-format") is None
    assert feature_value(b"object-format=sha256 object-format=sha1", b"object-format") == b"sha256"
    assert feature_value(b"push-options", b"push-options") == b""
    assert feature_value(b"quiet\tpush-options\r", b"push-options") == b""
    assert feature_value(b"push-optionsx push-options=1", b"push-options") == b"1"
    assert feature_value(b"object-format=sha1\ragent", b"object-format") == b"sha1\ragent"


def test_the_ref_name_is_the_rest_of_the_line() -> None:
    """queue_command takes everything after the second space, up to a NUL."""
    body = pkt(f"{OLD} {ZERO} refs/heads/a b\x00quiet\n".encode()) + b"0000"
    assert reads(send(body)) == [(Verb.DELETE, "refs/heads/a b")]


@pytest.mark.parametrize(
    "line",
    [
        f"{OLD}  {ZERO} refs/heads/main",  # two spaces
        f" {OLD} {ZERO} refs/heads/main",  # a leading space
        f"{OLD[:-1]} {ZERO} refs/heads/main",  # 39 digits
        f"{OLD} {ZERO[:-1]}g refs/heads/main",  # not hex
        f"{OLD}\t{ZERO} refs/heads/main",
    ],
)
def test_a_command_receive_pack_dies_on_makes_the_push_unknown(line: str) -> None:
    body = pkt(f"{ZERO} {'a' * 40} refs/heads/ok\n".encode()) + pkt(line.encode() + b"\n")
    action = send(body + b"0000")
    assert unknown(action)
    assert action.confidence is Confidence.UNKNOWN
    assert action.risk_tags == ["unreadable:push-body"]


@pytest.mark.parametrize(
    "framing",
    [
        b"+01a",  # int(..., 16) takes a sign, packet_length does not
        b" 01a",
        b"0x1a",
        b"1_2a",
        b"0003",  # lengths 3 is invalid (0, 1, 2 are flush, delim, response-end)
        b"fff4",  # a 65520-byte payload does not fit receive-pack's 65520-byte buffer
        b"ffff",
    ],
)
def test_a_length_receive_pack_dies_on_makes_the_push_unknown(framing: bytes) -> None:
    body = pkt(f"{OLD} {ZERO} refs/heads/x\n".encode()) + framing + b"x" * 70000
    assert unknown(send(body))


def test_lengths_in_upper_case_hex_are_read() -> None:
    line = f"{OLD} {ZERO} refs/heads/abcdefgh\n".encode()
    body = f"{len(line) + 4:04X}".encode() + line
    assert body[:4] == b"006A"
    assert reads(send(body + b"0000")) == [(Verb.DELETE, "refs/heads/abcdefgh")]


def test_the_longest_packet_is_read() -> None:
    ref = "refs/heads/" + "r" * (65519 - 83 - 11)
    line = f"{OLD} {ZERO} {ref}\n".encode()
    assert pkt(line)[:4] == b"fff3"  # the payload fills receive-pack's buffer but one byte
    action = send(pkt(line) + b"0000")
    assert action.verb is Verb.DELETE and action.truncated


@pytest.mark.parametrize("end", [b"0001", b"0002"])
def test_a_delim_or_response_end_ends_the_command_list(end: bytes) -> None:
    body = pkt(f"{OLD} {ZERO} refs/heads/x\n".encode()) + end
    body += pkt(f"{OLD} {ZERO} refs/heads/not-a-command\n".encode()) + b"0000"
    assert reads(send(body)) == [(Verb.DELETE, "refs/heads/x")]


@pytest.mark.parametrize(
    "body",
    [
        pkt(f"{OLD} {ZERO} refs/heads/x\n".encode()),  # no flush: receive-pack hangs up
        pkt(f"{OLD} {ZERO} refs/heads/x\n".encode())[:-5],
        pkt(b"ERR stop\n") + b"0000",
        b"",
    ],
)
def test_a_truncated_or_failed_push_is_unknown(body: bytes) -> None:
    assert unknown(send(body))


def test_shallow_lines_are_not_commands() -> None:
    body = pkt(f"shallow {'c' * 40}".encode()) + pkt(f"{OLD} {ZERO} refs/heads/x\n".encode())
    assert reads(send(body + b"0000")) == [(Verb.DELETE, "refs/heads/x")]
    assert unknown(send(pkt(b"shallow nothex") + b"0000"))


def _certificate(*commands: str, signature: bool = True) -> bytes:
    text = "certificate version 0.1\npusher A <a@example.com> 0 +0000\nnonce 1-2\n\n"
    text += "".join(f"{c}\n" for c in commands)
    if signature:
        text += "-----BEGIN PGP SIGNATURE-----\n\nabc\n-----END PGP SIGNATURE-----\n"
    return text.encode()


def test_commands_in_a_push_certificate_are_read() -> None:
    """Certificate commands are one per line of the certificate text, whatever the
    packets: two in one packet are two commands. Unsigned commands before the
    certificate are executed too (queue_commands_from_cert's check never fires)."""
    cert = _certificate(f"{OLD} {ZERO} refs/heads/main", f"{ZERO} {'b' * 40} refs/heads/new")
    body = pkt(f"{'c' * 40} {ZERO} refs/heads/unsigned\x00report-status\n".encode())
    body += pkt(b"push-cert\x00report-status\n") + pkt(cert) + pkt(b"push-cert-end\n") + b"0000"
    assert reads(send(body)) == [
        (Verb.DELETE, "refs/heads/main"),
        (Verb.DELETE, "refs/heads/unsigned"),
        (Verb.CREATE, "refs/heads/new"),
    ]


def test_a_certificate_ended_by_a_flush_ends_the_list() -> None:
    cert = _certificate(f"{OLD} {ZERO} refs/heads/main", signature=False)
    body = pkt(b"push-cert\n") + pkt(cert) + b"0000"
    assert reads(send(body)) == [(Verb.DELETE, "refs/heads/main")]


def test_a_certificate_without_an_empty_line_is_unknown() -> None:
    body = pkt(b"push-cert\n") + pkt(f"{OLD} {ZERO} refs/heads/main\n".encode())
    assert unknown(send(body + pkt(b"push-cert-end\n") + b"0000"))


def test_a_ref_named_twice_is_ambiguous() -> None:
    body = push((OLD, ZERO, "refs/heads/main"), (ZERO, "b" * 40, "refs/heads/main"))
    action = send(body)
    assert action.confidence is Confidence.AMBIGUOUS
    assert [(r.verb, r.risk_tags) for r in action.all_readings()] == [
        (Verb.DELETE, ["branch-delete", "ambiguous:duplicate-ref"]),
        # deleted and created again in one push: a rewrite
        (Verb.CREATE, ["possible-force-push", "ambiguous:duplicate-ref"]),
    ]


def test_push_options_are_found_only_when_asked_for() -> None:
    mid, content = commit(OLD, "ff")
    line = f"{OLD} {mid} refs/heads/main".encode()
    options = pkt(b"ci.skip\n") + b"0000"
    asked = pkt(line + b"\x00report-status push-options\n") + b"0000" + options + pack(content)
    assert send(asked).risk_tags == []
    # not asked for: the section is where receive-pack reads the pack, which fails
    not_asked = pkt(line + b"\x00report-status\n") + b"0000" + options + pack(content)
    assert send(not_asked).risk_tags == ["possible-force-push"]


def test_too_many_updates_are_unknown() -> None:
    body = push(*((OLD, ZERO, f"refs/tags/t{n}") for n in range(MAX_UPDATES + 1)))
    action = send(body)
    assert unknown(action) and action.risk_tags == ["unreadable:too-many-ref-updates"]
    assert send(push(*((OLD, ZERO, f"refs/tags/t{n}") for n in range(MAX_UPDATES)))).classified


def test_parse_push_keeps_its_shape() -> None:
    """gate/responses.py answers a held push with one `ng` line per ref it parses."""
    updates, capabilities, pack_bytes = parse_push(
        push((OLD.upper(), ZERO, "refs/heads/x"), pack_bytes=b"PACKxyz")
    )
    assert [(u.old, u.new, u.ref) for u in updates] == [(OLD, ZERO, "refs/heads/x")]
    assert "side-band-64k" in capabilities
    assert pack_bytes == b"PACKxyz"
    with pytest.raises(ValueError, match="expected old/new/ref"):
        parse_push(pkt(b"nonsense\n") + b"0000")


# -------------------------------------------------------------------- encoded pushes


def send_encoded(body: bytes, encoding: str) -> Action:
    request = http(
        "POST",
        PUSH_PATH,
        host="github.com",
        port=443,
        headers={
            "Content-Type": "application/x-git-receive-pack-request",
            "Content-Encoding": encoding,
            "User-Agent": "JGit/6.10",
        },
        body=body,
    )
    return recognise(request, RecogniseSettings())


DELETE_MAIN = push(("ab" * 20, ZERO, "refs/heads/main"))


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [
        ("gzip", gzip.compress),
        ("x-gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("br", brotli.compress),
        ("zstd", zstd.compress),
        ("gzip, br", lambda b: brotli.compress(gzip.compress(b))),
    ],
)
def test_an_encoded_push_is_decoded(encoding: str, encode: Callable[[bytes], bytes]) -> None:
    action = send_encoded(encode(DELETE_MAIN), encoding)
    assert reads(action) == [(Verb.DELETE, "refs/heads/main")]
    assert action.confidence is Confidence.EXACT


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        ("gzip", gzip.compress(DELETE_MAIN)[:-9]),  # truncated
        ("gzip", gzip.compress(DELETE_MAIN[:20]) + gzip.compress(DELETE_MAIN[20:])),  # 2 members
        ("compress", b"\x1f\x9d" + DELETE_MAIN),  # LZW: no decoder here
        ("br", b"\xff" + DELETE_MAIN),
        ("gzip", gzip.compress(b"\x00" * (MAX_DECODED + 1))),  # over the limit
    ],
)
def test_a_push_that_does_not_decode_is_unknown(encoding: str, body: bytes) -> None:
    action = send_encoded(body, encoding)
    assert unknown(action)
    assert action.risk_tags == ["unreadable:push-body"]


def test_a_push_sent_as_is_under_an_encoding_is_read_as_sent() -> None:
    """http-backend inflates only `gzip`/`x-gzip` and hands receive-pack anything else
    as it came: a raw push labelled `br` is read as it is, and marked ambiguous."""
    action = send_encoded(DELETE_MAIN, "br")
    assert reads(action) == [(Verb.DELETE, "refs/heads/main")]
    assert action.confidence is Confidence.AMBIGUOUS
    assert "ambiguous:content-encoding" in action.risk_tags


# ------------------------------------------------------------------------ endpoints


def test_receive_pack_with_any_method_but_a_bodiless_get_is_a_push() -> None:
    action = recognise(http("PUT", PUSH_PATH, host="github.com", body=DELETE_MAIN), SETTINGS)
    assert reads(action) == [(Verb.DELETE, "refs/heads/main")]
    action = recognise(http("GET", PUSH_PATH, host="github.com"), SETTINGS)
    assert (action.operation, action.verb) == ("discover", Verb.READ)


def test_a_percent_encoded_path_is_the_path_the_server_routes() -> None:
    path = "/acme/api.git/git-receive%2Dpack"
    action = recognise(http("POST", path, host="github.com", body=DELETE_MAIN), SETTINGS)
    assert action.provider is Provider.GIT
    assert reads(action) == [(Verb.DELETE, "refs/heads/main")]
    assert action.scope.repository == "acme/api"


def test_upload_pack_naming_receive_pack_is_read_as_a_push_too() -> None:
    path = "/acme/api.git/git-upload-pack?service=git-receive-pack"
    action = recognise(http("POST", path, host="github.com", body=DELETE_MAIN), SETTINGS)
    assert reads(action) == [(Verb.DELETE, "refs/heads/main")]
    assert action.confidence is Confidence.AMBIGUOUS
    assert "ambiguous:service" in action.risk_tags
    fetch = pkt(b"want " + b"a" * 40 + b"\n") + b"0000"
    action = recognise(http("POST", path, host="github.com", body=fetch), SETTINGS)
    assert action.verb is Verb.UNKNOWN


def test_upload_archive_is_a_read() -> None:
    action = recognise(http("POST", "/acme/api.git/git-upload-archive", host="h"), SETTINGS)
    assert (action.provider, action.operation, action.verb) == (Provider.GIT, "archive", Verb.READ)


def test_info_refs_other_than_get_is_unknown() -> None:
    path = "/acme/api.git/info/refs?service=git-receive-pack"
    action = recognise(http("POST", path, host="github.com", body=DELETE_MAIN), SETTINGS)
    assert (action.provider, action.verb) == (Provider.GIT, Verb.UNKNOWN)


def test_info_refs_naming_two_services_is_an_ambiguous_read() -> None:
    path = "/acme/api.git/info/refs?service=git-upload-pack&service=git-receive-pack"
    action = recognise(http("GET", path, host="github.com"), SETTINGS)
    assert (action.verb, action.confidence) == (Verb.READ, Confidence.AMBIGUOUS)
    assert action.risk_tags == ["ambiguous:duplicate-parameter"]
