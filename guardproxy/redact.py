"""Redaction: what must never be kept or logged of a request.

Every place that keeps or prints part of a request (decision records, logs, exports,
hold snapshots) passes it through here first.  Two complementary means:

* by *name*: header names, query parameters and body fields that carry credentials
  (``Authorization``, ``X-Amz-Security-Token``, ``password``…) lose their whole value;
* by *shape*: free text is scanned for credentials whatever field they sit in
  (bearer tokens, AWS key ids and secret keys, GitHub tokens, JWTs, URLs with a
  password, connection strings, private key blocks).

Redaction is a leaf: it imports nothing of guardproxy, so every layer (the store, the
log, the gate, the audit trail) can use it without an import cycle.

Redaction errs on the side of removing too much: an over-redacted log line costs a
little context, a leaked token costs an incident.  The functions are pure and total
(they never raise on odd input), so a logging or recording path cannot fail on them.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote_plus, urlencode

REDACTED = "[REDACTED]"

_BODY_PARSE_LIMIT = 1 << 20
"""Bodies larger than this are not parsed for fields, only described."""

# -- names -------------------------------------------------------------------------

_SENSITIVE_WORDS = re.compile(
    r"pass(word|wd|phrase)?|pwd|secret|token|auth|session|cookie|credential|signature"
    r"|api[-_]?key|apikey|access[-_]?key|private[-_]?key|\bkey\b|[-_]key$|^key[-_]|^key$"
    r"|connection[-_]?string|conn[-_]?str|dsn|^sig$|[-_]sig$",
    re.IGNORECASE,
)

_KEEP_HEADERS = frozenset({"x-amz-content-sha256", "keep-alive"})
"""Header names that match the sensitive words but carry no secret."""


def is_sensitive_name(name: str) -> bool:
    """Whether a header, parameter or field called ``name`` carries a credential."""
    return bool(_SENSITIVE_WORDS.search(name.strip()))


_SECRET_FIELD = re.compile(
    r"pass(word|wd|phrase)?|secret|token|credential|authorization|cookie|api[-_]?key"
    r"|access[-_]?key|private[-_]?key|connection[-_]?string|signature",
    re.IGNORECASE,
)


def is_secret_field(name: str) -> bool:
    """A stricter :func:`is_sensitive_name` for our own log fields (``session`` is an id)."""
    return bool(_SECRET_FIELD.search(name))


def redact_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The headers with every credential-carrying value replaced (names and order kept)."""
    kept: list[tuple[str, str]] = []
    for name, value in headers:
        lowered = name.lower()
        if lowered not in _KEEP_HEADERS and is_sensitive_name(lowered):
            kept.append((name, REDACTED))
        else:
            kept.append((name, redact_text(value)))
    return kept


# -- URLs --------------------------------------------------------------------------

_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]{0,30}://)([^\s:/@?#]{0,256}):([^\s@/?#]{0,1024})@")


def redact_url(url: str) -> str:
    """The URL without credentials: userinfo passwords and sensitive query values.

    Only the values of sensitive parameters change; everything else is kept byte for
    byte, so the redacted URL still reads like the original.
    """
    base, question, rest = url.partition("?")
    base = _USERINFO.sub(rf"\1\2:{REDACTED}@", base)
    if not question:
        return redact_text(base)
    query, hash_mark, fragment = rest.partition("#")
    parts = []
    for part in query.split("&"):
        name, equals, _value = part.partition("=")
        if equals and is_sensitive_name(unquote_plus(name)):
            parts.append(f"{name}={REDACTED}")
        else:
            parts.append(redact_text(part))
    return f"{redact_text(base)}?{'&'.join(parts)}{hash_mark}{redact_text(fragment)}"


# -- free text ---------------------------------------------------------------------

_Rule = tuple[tuple[str, ...], re.Pattern[str], str | Callable[[re.Match[str]], str]]
"""(lower-case substrings one of which must be present, pattern, replacement)."""


def _is_secret_key_shaped(text: str) -> bool:
    """A bare 40-character AWS secret key (mixed case and digits; git SHAs are hex)."""
    has_upper = any(c.isupper() for c in text)
    has_lower = any(c.islower() for c in text)
    has_digit = any(c.isdigit() for c in text)
    return has_upper and has_lower and has_digit


_AWS_KEY_PREFIXES = (
    "akia", "asia", "agpa", "aida", "aroa", "anpa", "anva", "aipa", "abia", "acca",
    "gpak",  # guardproxy's brokered session keys
)  # fmt: skip

_TEXT_RULES: tuple[_Rule, ...] = (
    # SigV4: Credential=AKIA.../20250101/us-east-1/s3/aws4_request, Signature=<hex>
    (("credential=",), re.compile(r"(?i)\b(Credential=)[^\s,&]+"), rf"\1{REDACTED}"),
    (("signature=",), re.compile(r"(?i)\b(Signature=)[^\s,&]+"), rf"\1{REDACTED}"),
    # Authorization schemes with their credential
    # (the credential must hold a digit, so prose such as "token expired" is kept)
    (
        tuple(
            f"{scheme}{space}"
            for scheme in ("bearer", "basic", "token", "digest", "negotiate")
            for space in " \t\n\r"
        ),
        re.compile(
            r"(?i)\b(bearer|basic|token|digest|negotiate)(\s+)"
            r"(?=[A-Za-z._~+/=:-]{0,512}\d)[A-Za-z0-9._~+/=:-]{6,}"
        ),
        rf"\1\2{REDACTED}",
    ),
    # URLs carrying a password (postgres://user:pass@host)
    (("://",), _USERINFO, rf"\1\2:{REDACTED}@"),
    # GitHub tokens (classic prefixes and fine-grained)
    (
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
        re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{30,255}|github_pat_[A-Za-z0-9_]{20,255})"),
        REDACTED,
    ),
    # guardproxy's own: approver (gpa_), session (gps_), control (gpc_) tokens and the
    # brokered placeholders (gpb_) a session holds instead of a provider's token
    (("gpa_", "gps_", "gpc_", "gpb_"), re.compile(r"\bgp[ascb]_[A-Za-z0-9_-]{20,}"), REDACTED),
    # Google OAuth access tokens, Terraform Cloud API tokens
    (("ya29.",), re.compile(r"\bya29\.[A-Za-z0-9_.-]{20,}"), REDACTED),
    ((".atlasv1.",), re.compile(r"\b[A-Za-z0-9]{10,}\.atlasv1\.[A-Za-z0-9_-]{40,}"), REDACTED),
    # AWS STS session tokens (their base64 starts the same way whatever the region)
    (
        ("iqojb3jpz2lu", "fwogzxivyxdz", "fqogzxivyxdz"),
        re.compile(r"(?:IQoJb3JpZ2lu|FwoGZXIvYXdz|FQoGZXIvYXdz)[A-Za-z0-9+/=]{20,}"),
        REDACTED,
    ),
    # GitLab, Slack, Google API keys, OpenAI/Anthropic style keys
    (("glpat-",), re.compile(r"\bglpat-[A-Za-z0-9_-]{16,}"), REDACTED),
    (("xox",), re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"), REDACTED),
    (("aiza",), re.compile(r"\bAIza[0-9A-Za-z_-]{35}"), REDACTED),
    (("sk-",), re.compile(r"\bsk-(?:ant-)?[A-Za-z0-9_-]{20,}"), REDACTED),
    # JWTs (header.payload.signature, base64url, header starts with {" -> eyJ)
    (
        ("eyj",),
        re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"),
        REDACTED,
    ),
    # AWS access key ids
    (
        _AWS_KEY_PREFIXES,
        re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA|ABIA|ACCA|GPAK)[A-Z0-9]{16}\b"),
        REDACTED,
    ),
)

_SECRET_NAME_WORDS = (
    "password", "passwd", "pwd", "secret", "token", "credential", "apikey", "api_key",
    "api-key", "accesskey", "access_key", "access-key", "privatekey", "private_key",
    "private-key", "connectionstring", "connection_string", "connection-string",
    "authorization", "cookie",
)  # fmt: skip
_NAMED_VALUE = re.compile(
    r"""[\w.-]{0,64}(["']?)\s*[=:]\s*("(?:[^"\\]|\\.)*"|'[^']*'|[^\s"'&;,<>]+)"""
)
"""After a credential word inside a name: the rest of the name, ``=``/``:``, the value."""

_KEY_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/+"
_KEY_CHAR_TO_A = str.maketrans(dict.fromkeys(_KEY_CHARS, "a"))
_KEY_LENGTH = 40
_KEY_RUN = "a" * _KEY_LENGTH
_A_RUN = re.compile("a+")


def _redact_bare_keys(text: str) -> str:
    """Runs of exactly 40 key characters (not next to ``=``) shaped like a secret key.

    Every key character is translated to ``a`` and the runs are found with
    ``str.find`` (C speed): the equivalent lookaround regex costs ~20 ns per
    character of every record, even though almost no text holds a key.
    """
    mapped = text.translate(_KEY_CHAR_TO_A)
    start = mapped.find(_KEY_RUN)
    if start < 0:
        return text
    pieces: list[str] = []
    position = 0
    while start >= 0:  # ``start`` begins a run: the search resumes after the last one
        run = _A_RUN.match(mapped, start)
        end = run.end() if run is not None else start
        candidate = text[start:end]
        if (
            end - start == _KEY_LENGTH
            and text[start - 1 : start] != "="
            and text[end : end + 1] != "="
            and _is_secret_key_shaped(candidate)
        ):
            pieces.append(text[position:start])
            pieces.append(REDACTED)
            position = end
        start = mapped.find(_KEY_RUN, end)
    if not pieces:
        return text
    pieces.append(text[position:])
    return "".join(pieces)


def _redact_named_values(text: str, lowered: str) -> str:
    """Values of ``name: "value"`` / ``name=value`` pairs whose name holds a credential word.

    Anchored on the words (found with ``str.find`` in the lower-cased text) and matched
    forward from them, so the cost is linear; a quoted name takes only a quoted value
    (``"token_count": 5`` is kept, so JSON stays valid).
    """
    ends: set[int] = set()
    for word in _SECRET_NAME_WORDS:
        found = lowered.find(word)
        while found >= 0:
            ends.add(found + len(word))
            found = lowered.find(word, found + 1)
    pieces: list[str] = []
    position = 0
    for word_end in sorted(ends):
        if word_end < position:
            continue
        named = _NAMED_VALUE.match(text, word_end)
        if named is None:
            continue
        quote_after_name, value = named.group(1), named.group(2)
        quoted = value[0] in "\"'"
        if (quote_after_name and not quoted) or value in (REDACTED, f'"{REDACTED}"'):
            continue
        pieces.append(text[position : named.start(2)])
        pieces.append(f'"{REDACTED}"' if quoted else REDACTED)
        position = named.end(2)
    if not pieces:
        return text
    pieces.append(text[position:])
    return "".join(pieces)


_PEM_BEGIN = re.compile(r"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY-----")
_PEM_END = re.compile(r"-----END [A-Z0-9 ]{0,40}PRIVATE KEY-----")


def _redact_private_keys(text: str) -> str:
    """Whole PEM private key blocks (an unterminated one is cut to the end of the text).

    Done with searches rather than one regex so that many BEGIN lines cost linear time.
    """
    pieces: list[str] = []
    position = 0
    while (begin := _PEM_BEGIN.search(text, position)) is not None:
        end = _PEM_END.search(text, begin.end())
        pieces.append(text[position : begin.start()])
        pieces.append(f"-----BEGIN PRIVATE KEY-----{REDACTED}-----END PRIVATE KEY-----")
        if end is None:
            return "".join(pieces)
        position = end.end()
    pieces.append(text[position:])
    return "".join(pieces)


_ALL_TRIGGERS = (
    *(trigger for triggers, _, _ in _TEXT_RULES for trigger in triggers),
    *_SECRET_NAME_WORDS,
)
"""Every rule's triggers and the credential words: text holding none of them (most text)
can hold only a bare key, and is checked for that alone."""
_SHORT = 256
"""Texts up to this length (ids, summaries, log fields, which repeat) are remembered."""


def redact_text(text: str) -> str:
    """``text`` with every credential-shaped substring replaced by ``[REDACTED]``.

    Each rule runs only if its trigger substring is present: most text holds none,
    and this runs on every decision record and log line.
    """
    if len(text) <= _SHORT:
        return _redact_short(text)
    return _redact_text(text)


def _redact_text(text: str) -> str:
    lowered = text.lower()
    if len(text) > _SHORT and "PRIVATE KEY-----" not in text and not _may_trigger(lowered):
        return _redact_bare_keys(text)
    for trigger in _ALL_TRIGGERS:  # one flat loop: the rules' own checks cost 3x more
        if trigger in lowered:
            break
    else:
        if "PRIVATE KEY-----" not in text:
            return _redact_bare_keys(text)
    if "PRIVATE KEY-----" in text:
        text = _redact_private_keys(text)
        lowered = text.lower()
    for triggers, pattern, replacement in _TEXT_RULES:
        if any(trigger in lowered for trigger in triggers):
            text = pattern.sub(replacement, text)
    if any(word in lowered for word in _SECRET_NAME_WORDS):
        text = _redact_named_values(text, text.lower())
    return _redact_bare_keys(text)


_redact_short = functools.lru_cache(maxsize=4096)(_redact_text)

_DIGITS_TO_ZERO = str.maketrans(dict.fromkeys("123456789", "0"))
_ZEROED_TRIGGERS = tuple({trigger.translate(_DIGITS_TO_ZERO) for trigger in _ALL_TRIGGERS})
assert not any("{" in trigger for trigger in _ZEROED_TRIGGERS)


def _may_trigger(lowered: str) -> bool:
    """False only if no trigger occurs in ``lowered`` (a long text, lower-cased).

    A long text is mostly JSON whose objects repeat from one record to the next (a
    session's recent actions, its counts): it is cut at each ``{``, which no trigger
    holds, so every occurrence of a trigger lies inside one piece; each piece is
    checked once and remembered. Digits become ``0`` first (in the triggers too), so
    that counts changing between records leave the pieces the same; that makes a
    match here necessary, not sufficient, for a trigger: the caller then checks.
    """
    zeroed = lowered.translate(_DIGITS_TO_ZERO)
    return any(map(_piece_may_trigger, zeroed.split("{")))


@functools.lru_cache(maxsize=8192)
def _piece_may_trigger(piece: str) -> bool:
    return any(trigger in piece for trigger in _ZEROED_TRIGGERS)


# -- structured values -------------------------------------------------------------


def redact_value(value: Any, *, by_name: bool = True) -> Any:
    """A JSON-like value with sensitive fields emptied (``by_name``) and strings scanned.

    Decision inputs use ``by_name=False``: their field names are the action model's
    own (``resource.key`` is an identity, not a credential), so only the shape rules
    apply there and a recorded input stays replayable.
    """
    if isinstance(value, dict):
        return {
            key: (
                REDACTED
                if by_name and isinstance(key, str) and is_sensitive_name(key)
                else redact_value(item, by_name=by_name)
            )
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact_value(item, by_name=by_name) for item in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def redact_json_text(text: str) -> str:
    """JSON text (a serialised model) with credential shapes removed, still valid JSON.

    The fast path scans the text as it is; only when that changed something and the
    result no longer parses (a secret spanning two strings) is the value walked.
    """
    redacted = redact_text(text)
    if redacted == text:
        return text
    try:
        json.loads(redacted)
    except ValueError:
        walked = redact_value(json.loads(text), by_name=False)
        return json.dumps(walked, separators=(",", ":"), ensure_ascii=False)
    return redacted


@functools.lru_cache(maxsize=4096)
def _redacted_string(value: str) -> str:
    return redact_text(value)


def _redact_strings(value: Any) -> Any:
    """``value`` with every string redacted; the very same object when none changed."""
    if isinstance(value, str):
        redacted = _redacted_string(value)
        return value if redacted == value else redacted
    if isinstance(value, dict):
        changed = False
        items = {}
        for key, item in value.items():
            new = item if item is None or item.__class__ in _SCALARS else _redact_strings(item)
            changed = changed or new is not item
            items[key] = new
        return items if changed else value
    if isinstance(value, list):
        listed = [_redact_strings(item) for item in value]
        changed = any(new is not old for new, old in zip(listed, value, strict=True))
        return listed if changed else value
    return value


_SCALARS = frozenset({int, float, bool})


def redact_model_json(text: str) -> str:
    """A serialised model's JSON (an action, a decision) with its string values redacted.

    The field names are the model's own, so only the values are scanned, one string at
    a time: most of them (hosts, user agents, scopes, rule ids, digests) repeat from
    one request to the next and their redaction is remembered, which makes this several
    times cheaper than rescanning the whole text for every record. The text is kept
    byte for byte when nothing in it was a credential.
    """
    value = json.loads(text)
    redacted = _redact_strings(value)
    if redacted is value:
        return text
    return json.dumps(redacted, separators=(",", ":"), ensure_ascii=False)


@functools.lru_cache(maxsize=512)
def _redacted_part(text: str) -> str:
    return redact_json_text(text)


class JoinsParts(Protocol):
    """A JSON document cut into parts that :meth:`join` reassembles, each part passed
    through a function (:class:`guardproxy.context.ContextParts`). A protocol, so that
    redaction stays a leaf module that imports nothing of guardproxy."""

    def join(self, part: Callable[[str], str]) -> str: ...


def redact_context_json(parts: JoinsParts) -> str:
    """A decision context's JSON with credential shapes removed, part by part.

    Each part (session, history, resource history, signals) is a JSON value of its
    own, redacted as :func:`redact_json_text` would; the parts repeat from one
    request to the next (every read of a session shares them), so their redaction
    is remembered instead of rescanning the whole context on every record.
    """
    return parts.join(_redacted_part)


_XML_FIELD = re.compile(
    r"(?is)<((?:[\w.-]{1,64}:)?[\w.-]{0,64}(?:password|passwd|secret|token|credential|key|signature"
    r"|connectionstring)[\w.-]{0,64})(\s[^>]{0,1024})?>([^<]{0,8192})</\1>"
)


def redact_body(body: bytes, content_type: str, limit: int = 4096) -> str:
    """At most ``limit`` characters of a request body, safe to keep.

    JSON, form and XML bodies lose the values of sensitive fields; every text body is
    then scanned for credential shapes.  Binary bodies are described, never kept.  The
    cut happens after redaction, so a secret is never half-kept.
    """
    kind = content_type.split(";", 1)[0].strip().lower()
    if not body:
        return ""
    if len(body) > _BODY_PARSE_LIMIT:
        return f"[{len(body)} bytes of {kind or 'unknown type'} not kept]"
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return f"[{len(body)} bytes of {kind or 'binary'} not kept]"
    if kind.endswith("json") or kind.endswith("+json"):
        text = _redact_json_text(text)
    elif kind == "application/x-www-form-urlencoded":
        text = _redact_form(text)
    elif kind.endswith("xml"):
        text = _XML_FIELD.sub(lambda m: f"<{m[1]}{m[2] or ''}>{REDACTED}</{m[1]}>", text)
    text = redact_text(text)
    if len(text) > limit:
        return text[:limit] + f"…[{len(text) - limit} more characters]"
    return text


def _redact_json_text(text: str) -> str:
    try:
        parsed = json.loads(text)
    except ValueError:
        return text  # the shape rules still apply to it
    return json.dumps(redact_value(parsed), separators=(",", ":"), ensure_ascii=False)


def _redact_form(text: str) -> str:
    pairs = parse_qsl(text, keep_blank_values=True)
    if not pairs:
        return text
    return urlencode(
        [(name, REDACTED if is_sensitive_name(name) else value) for name, value in pairs],
        safe="[]",
    )
