"""YAML bodies read the way kube-apiserver reads them: go-yaml v2, then JSON.

Every YAML body the API server accepts (``application/yaml`` objects and delete
options, ``application/apply-patch+yaml`` for server-side apply) goes through
``sigs.k8s.io/yaml``: ``YAMLToJSON`` / ``Unmarshal`` decode it with go-yaml v2
(``go.yaml.in/yaml/v2``, a port of libyaml) into ``interface{}``, convert it to JSON
(kubernetes-sigs/yaml ``yaml.go: yamlToJSONTarget, convertToJSONableObject``), and the
API machinery decodes that JSON. Three things differ from PyYAML's own loader and are
ported here (go-yaml/yaml, branch v2):

* **Only the first document counts**: ``unmarshal`` calls ``p.parse()`` once
  (``yaml.go``); later documents are never even parsed.
* **Plain scalars resolve by go-yaml's rules** (``resolve.go: resolve``), not PyYAML's:
  ``0e0`` and ``08`` are floats, ``0o17`` is 15, underscores vanish from numbers,
  ``.5e999`` (out of range) is a string, timestamps stay strings.
* **Merge keys apply in document order** (``decode.go: mapping, merge``): a ``<<``
  overwrites keys set before it and is overwritten by keys after it, where PyYAML
  lets explicit keys win wherever they stand. A repeated key: the last one wins.

The composition itself (scanner, parser, anchors) is libyaml's through PyYAML, the
same C grammar go-yaml v2 was ported from. Non-string keys become JSON strings as
``convertToJSONableObject`` writes them; a null or unsigned 64-bit key, a NaN or an
infinity fails the conversion (the API server answers 400), and so does anything this
module cannot follow (:class:`YamlError`: the caller makes the reading unknown).
"""

from __future__ import annotations

import binascii
import math
import re
import struct
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

__all__ = ["YamlDocument", "YamlError", "go_resolve", "load_documents"]

MAX_NODES = 200_000
"""Values built from one body, aliases expanded; go-yaml v2 refuses excessive aliasing."""
MAX_DEPTH = 1_000
MAX_DOCUMENTS = 16
"""Documents read after the first (they are readings, not what the server applies)."""

_PLAIN = "tag:guardproxy:plain-scalar"
_LONG = "tag:yaml.org,2002:"
_MERGE_TAG = _LONG + "merge"
_INT64_MAX = (1 << 63) - 1
_UINT64_MAX = (1 << 64) - 1


class YamlError(ValueError):
    """Not YAML that go-yaml v2 and sigs.k8s.io/yaml turn into JSON the same way."""


class _Resolver(yaml.resolver.BaseResolver):
    """Marks plain untagged scalars for :func:`go_resolve`; quoted ones are strings."""

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is ScalarNode and implicit[0]:
            return _PLAIN
        return super().resolve(kind, value, implicit)  # type: ignore[no-untyped-call]


try:
    import yaml.cyaml

    _CParser: Any = getattr(yaml.cyaml, "CParser", None)
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    _CParser = None

if _CParser is not None:  # libyaml, the grammar go-yaml v2 was ported from

    class _Composer(_CParser, yaml.constructor.BaseConstructor, _Resolver):  # type: ignore[misc]
        def __init__(self, stream: bytes) -> None:
            _CParser.__init__(self, stream)
            yaml.constructor.BaseConstructor.__init__(self)
            _Resolver.__init__(self)

else:  # pragma: no cover - PyYAML without libyaml

    class _Composer(  # type: ignore[no-redef]
        yaml.reader.Reader,
        yaml.scanner.Scanner,
        yaml.parser.Parser,
        yaml.composer.Composer,
        yaml.constructor.BaseConstructor,
        _Resolver,
    ):
        def __init__(self, stream: bytes) -> None:
            yaml.reader.Reader.__init__(self, stream)
            yaml.scanner.Scanner.__init__(self)
            yaml.parser.Parser.__init__(self)
            yaml.composer.Composer.__init__(self)
            yaml.constructor.BaseConstructor.__init__(self)
            _Resolver.__init__(self)


# ------------------------------------------------------------------ go-yaml v2 resolve

_RESOLVE_MAP: dict[str, Any] = {
    **dict.fromkeys(("y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE"), True),
    **dict.fromkeys(("on", "On", "ON"), True),
    **dict.fromkeys(("n", "N", "no", "No", "NO", "false", "False", "FALSE"), False),
    **dict.fromkeys(("off", "Off", "OFF"), False),
    **dict.fromkeys(("", "~", "null", "Null", "NULL"), None),
    **dict.fromkeys((".nan", ".NaN", ".NAN"), math.nan),
    **dict.fromkeys((".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF"), math.inf),
    **dict.fromkeys(("-.inf", "-.Inf", "-.INF"), -math.inf),
}
_TAG_OF = {bool: "!!bool", type(None): "!!null", int: "!!int", float: "!!float", str: "!!str"}
_YAML_STYLE_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_GO_FLOAT_FROM_DOT = re.compile(r"\.[0-9]+([eE][-+]?[0-9]+)?")
_DIGITS = {2: "01", 8: "01234567", 10: "0123456789", 16: "0123456789abcdefABCDEF"}


def _go_parse_uint(text: str) -> int | None:
    """``strconv.ParseUint(text, 0, 64)``: prefixes 0b/0o/0x, a leading 0 is octal."""
    if not text:
        return None
    base, digits = 10, text
    if text[0] == "0":
        prefix = text[1:2].lower()
        if len(text) >= 3 and prefix in ("b", "o", "x"):
            base, digits = {"b": 2, "o": 8, "x": 16}[prefix], text[2:]
        else:
            base, digits = 8, text[1:]
    if any(c not in _DIGITS[base] for c in digits):
        return None
    value = int(digits, base) if digits else 0
    return value if value <= _UINT64_MAX else None


def _go_parse_int(text: str) -> int | None:
    """``strconv.ParseInt(text, 0, 64)``: a sign, then ParseUint's syntax, int64 range."""
    sign = 1
    if text[:1] in ("+", "-"):
        sign, text = (-1 if text[0] == "-" else 1), text[1:]
    value = _go_parse_uint(text)
    if value is None:
        return None
    value *= sign
    return value if -_INT64_MAX - 1 <= value <= _INT64_MAX else None


def _go_float(text: str) -> float | None:
    """``strconv.ParseFloat`` for the decimal syntax the callers let through; out of
    range is an error (go-yaml then keeps the scalar a string)."""
    value = float(text)
    return None if math.isinf(value) else value


def _resolve_plain(text: str, *, as_string: bool = False) -> tuple[str, Any]:
    """``resolve`` of go-yaml v2 resolve.go for an untagged plain scalar (or the
    hinted part of a tagged one): the resolved short tag and value."""
    hint = text[:1]
    if as_string or not (hint in "+-.0123456789yYnNtTfFoO~" or text == ""):
        return "!!str", text
    if text in _RESOLVE_MAP:
        value = _RESOLVE_MAP[text]
        return _TAG_OF[type(value)], value
    if hint == ".":
        if _GO_FLOAT_FROM_DOT.fullmatch(text):
            parsed = _go_float(text)
            if parsed is not None:
                return "!!float", parsed
    elif hint in "+-0123456789":
        # A timestamp (go-yaml tries one first) decodes into interface{} as its text,
        # and nothing that parses as a timestamp parses as a number.
        plain = text.replace("_", "")
        number: int | float | None = _go_parse_int(plain)
        if number is None:
            number = _go_parse_uint(plain)
        if number is None and _YAML_STYLE_FLOAT.fullmatch(plain):
            number = _go_float(plain)
        if number is not None:
            return ("!!float" if isinstance(number, float) else "!!int"), number
    return "!!str", text


def go_resolve(tag: str, text: str) -> Any:
    """The value go-yaml v2 decodes scalar ``text`` with ``tag`` into, inside an
    ``interface{}`` (``decode.go: scalar`` and ``resolve.go: resolve``)."""
    if tag == _PLAIN:
        return _resolve_plain(text)[1]
    short = "!!" + tag[len(_LONG) :] if tag.startswith(_LONG) else tag
    if short == "!!binary":
        try:
            data = binascii.a2b_base64(text.replace("\r", "").replace("\n", ""), strict_mode=True)
        except binascii.Error as error:
            raise YamlError("!!binary value contains invalid base64 data") from error
        return data.decode("utf-8", "replace")
    if short == "!!timestamp":
        if re.match(r"[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}", text):
            return text  # a timestamp decodes into interface{} as its text
        raise YamlError(f"cannot decode {text!r} as a !!timestamp")
    if short not in ("!!bool", "!!int", "!!float", "!!null", "!!str"):
        return text  # tags go-yaml cannot resolve leave the text as it is
    resolved_tag, value = _resolve_plain(text, as_string=short == "!!str")
    if short in (resolved_tag, "!!str"):
        return value
    if short == "!!float" and resolved_tag == "!!int":
        return float(value)
    raise YamlError(f"cannot decode {resolved_tag} {text!r} as a {short}")


# ------------------------------------------------------------ node -> JSON-able value


def _go_format_float32(value: float) -> str:
    """``strconv.FormatFloat(value, 'g', -1, 32)`` closely enough for map keys (a float
    key can never spell a field name, so only its distinctness matters)."""
    if math.isnan(value):
        return ".nan"
    if math.isinf(value):
        return ".inf" if value > 0 else "-.inf"
    single = struct.unpack("f", struct.pack("f", value))[0]
    for precision in range(1, 10):
        text = f"{single:.{precision}g}"
        if struct.unpack("f", struct.pack("f", float(text)))[0] == single:
            return text
    return repr(single)


def _json_key(key: Any) -> str:
    """``convertToJSONableObject``'s key conversion (string, int, float, bool)."""
    if isinstance(key, str):
        return key
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, int) and key <= _INT64_MAX:
        return str(key)
    if isinstance(key, float):
        return _go_format_float32(key)
    raise YamlError(f"unsupported map key {key!r}")


@dataclass
class _Walk:
    first_wins: bool
    nodes: int = 0
    duplicates: bool = False
    active: set[int] = field(default_factory=set)


def _is_merge(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.value == "<<" and node.tag in (_PLAIN, _MERGE_TAG)


def _convert(node: Node, walk: _Walk, depth: int) -> Any:
    walk.nodes += 1
    if walk.nodes > MAX_NODES or depth > MAX_DEPTH:
        raise YamlError("document too large or too deep")
    if isinstance(node, ScalarNode):
        value = go_resolve(node.tag, node.value)
        if isinstance(value, float) and not math.isfinite(value):
            raise YamlError("NaN and infinities have no JSON form")
        return value
    if id(node) in walk.active:
        raise YamlError("an anchor's value contains itself")
    walk.active.add(id(node))
    try:
        if isinstance(node, SequenceNode):
            return [_convert(child, walk, depth + 1) for child in node.value]
        if isinstance(node, MappingNode):
            out: dict[str, Any] = {}
            explicit: set[str] = set()
            for key_node, value_node in node.value:
                if _is_merge(key_node):
                    merged = _merged(value_node, walk, depth + 1)
                    if explicit.intersection(merged):
                        # go-yaml lets this merge overwrite keys written before it;
                        # the YAML spec (and PyYAML) keeps the explicit ones
                        walk.duplicates = True
                    for key, value in merged.items():
                        if not (walk.first_wins and key in explicit):
                            out[key] = value
                    continue
                if not isinstance(key_node, ScalarNode):
                    raise YamlError("invalid map key")
                key = _json_key(_convert(key_node, walk, depth + 1))
                value = _convert(value_node, walk, depth + 1)
                if key in explicit:
                    walk.duplicates = True
                    if walk.first_wins:
                        continue
                explicit.add(key)
                out[key] = value
            return out
    finally:
        walk.active.discard(id(node))
    raise YamlError(f"unexpected node {type(node).__name__}")


def _merged(node: Node, walk: _Walk, depth: int) -> dict[str, Any]:
    """What ``decoder.merge`` sets: a mapping's keys (an alias is the node itself
    here), or those of a sequence of mappings applied last to first, so that earlier
    ones win."""
    if isinstance(node, MappingNode):
        merged: dict[str, Any] = _convert(node, walk, depth)
        return merged
    if isinstance(node, SequenceNode) and all(isinstance(c, MappingNode) for c in node.value):
        combined: dict[str, Any] = {}
        for child in reversed(node.value):
            combined.update(_convert(child, walk, depth))
        return combined
    raise YamlError("map merge requires map or sequence of maps as the value")


@dataclass(frozen=True, slots=True)
class YamlDocument:
    """One document as JSON-able data, and whether a mapping repeated a key."""

    value: Any
    duplicates: bool


def _document(node: Node | None, first_wins: bool) -> YamlDocument:
    if node is None:
        return YamlDocument(None, False)
    walk = _Walk(first_wins=first_wins)
    return YamlDocument(_convert(node, walk, 0), walk.duplicates)


def load_documents(body: bytes, *, first_wins: bool = False) -> list[YamlDocument]:
    """The first document as the API server reads it, then the later ones (at most
    :data:`MAX_DOCUMENTS`; reading stops quietly at the first one that does not parse,
    as the server never parses them). ``first_wins`` keeps the first of repeated keys
    instead (a reading other parsers make). Raises :class:`YamlError` if the first
    document cannot be read."""
    composer = _Composer(body)
    try:
        try:
            first = composer.get_node() if composer.check_node() else None
            documents = [_document(first, first_wins)]
        except (yaml.YAMLError, RecursionError, ValueError) as error:
            raise YamlError(str(error)) from error
        try:
            while len(documents) <= MAX_DOCUMENTS and composer.check_node():
                documents.append(_document(composer.get_node(), first_wins))
        except (yaml.YAMLError, RecursionError, ValueError):
            pass
        return documents
    finally:
        composer.dispose()
