"""The parameters of a matched AWS operation, and every value a server may read for each.

botocore's serialisers (``botocore/serialize.py``) are the reference for how AWS
parameters travel: the query and EC2 serialisers write each member under exactly one
form key (``QuerySerializer._serialize_type_*``), the JSON and CBOR serialisers each
body member once under its wire name, the REST serialisers each member in exactly one
place (``BaseRestSerializer._partition_parameters``: URI label, query string, header or
body). A request no serialiser could have produced is ambiguous:

* a key given twice (``StackName=dev-x&StackName=prod-calc``, a JSON object with a
  repeated key, a query-string member or header member repeated where its shape is
  not a list);
* a member spelled in a way botocore never writes (``StackName.member``,
  ``StackName.1``, ``member.StackName``, ``stackname``);
* a member bound to the URI (or a header) that also appears in the query string or
  body, or a body member also in the query string.

Which value the server then takes is undocumented: moto takes the first value of a
repeated form key (``moto/core/parse.py``, ``QueryParser._default_handle`` reads
werkzeug's ``MultiDict.get``, query string before form body) and ignores
``StackName.member``; Python's ``json`` and Jackson's default keep the last of a
repeated JSON key; Go's ``encoding/json`` matches keys case-insensitively. So every
value a member may take is kept as a candidate (:class:`ParamReadings`), and every
combination becomes a reading the policy engine decides.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from guardproxy.recognise.aws_spec import SCALAR, FormShape, OpSpec
from guardproxy.recognise.aws_wire import (
    MAX_FORM_FIELDS,
    Pairs,
    form_tree,
    has_repeats,
    parse_cbor_pairs,
    parse_json_pairs,
    parse_xml,
    rename,
    resolve,
)
from guardproxy.recognise.request import HttpRequest

DUPLICATE = "ambiguous:duplicate-parameter"
ALIAS = "ambiguous:parameter-alias"
UNPARSED = "ambiguous:unparsed-body"

AUTH_PARAMS = frozenset(
    {
        # SigV4 presigned URLs (and SigV4a's region set)
        "X-Amz-Algorithm",
        "X-Amz-Credential",
        "X-Amz-Date",
        "X-Amz-Expires",
        "X-Amz-SignedHeaders",
        "X-Amz-Signature",
        "X-Amz-Security-Token",
        "X-Amz-Region-Set",
        # SigV2 query authentication, still accepted by the query services
        "AWSAccessKeyId",
        "Signature",
        "SignatureMethod",
        "SignatureVersion",
        "Timestamp",
        "Expires",
        "SecurityToken",
    }
)
"""Query parameters that authenticate the request; never operation parameters."""

_MARKERS = frozenset({"member", "entry"})
_MISSING: Any = object()


def _key(value: Any) -> str:
    """A comparable form of a parameter value (values may be dicts and lists)."""
    if isinstance(value, str):
        return "s" + value
    return "j" + json.dumps(value, sort_keys=True, default=repr)


@dataclass
class ParamReadings:
    """The canonical parameters (what botocore would have meant) and, per member, the
    other values the request also gives it; ``tags`` name the ambiguities found."""

    canonical: dict[str, Any] = field(default_factory=dict)
    alternatives: dict[str, list[Any]] = field(default_factory=dict)
    tags: set[str] = field(default_factory=set)

    def offer(self, member: str, value: Any) -> None:
        """``value`` as a candidate for ``member``: canonical if it is the first."""
        if member not in self.canonical:
            self.canonical[member] = value
            return
        wanted = _key(value)
        if wanted == _key(self.canonical[member]):
            return
        others = self.alternatives.setdefault(member, [])
        if all(_key(other) != wanted for other in others):
            others.append(value)

    def expand(self, limit: int) -> tuple[list[dict[str, Any]], bool]:
        """Every combination of candidate values, canonical first, and whether all fit
        in ``limit`` (if not: the canonical reading and as many single substitutions
        as fit, so each candidate value is seen at least once when possible)."""
        if not self.alternatives:
            return [dict(self.canonical)], True
        members = list(self.alternatives)
        choices = [[self.canonical[m], *self.alternatives[m]] for m in members]
        total = 1
        for options in choices:
            total *= len(options)
        if total <= limit:
            out = []
            for combination in itertools.product(*choices):
                reading = dict(self.canonical)
                reading.update(zip(members, combination, strict=True))
                out.append(reading)
            return out, True
        out = [dict(self.canonical)]
        for member in members:
            for value in self.alternatives[member]:
                if len(out) >= limit:
                    return out, False
                out.append({**self.canonical, member: value})
        return out, False


def significant(key: str) -> str:
    """The first segment of a form key that is neither a list/map marker nor an index,
    lower-cased: what a lenient server might take the key to name."""
    for segment in key.split("."):
        if segment and segment.lower() not in _MARKERS and not segment.isdigit():
            return segment.lower()
    return ""


# --------------------------------------------------------------------------- form


class _FormReader:
    """Reads an input shape off form fields key by key, as botocore writes them."""

    def __init__(self, values: dict[str, list[str]]) -> None:
        self.values = values
        self._prefixes: set[str] | None = None
        self.consumed: list[str] = []
        self.repeated = False

    def present(self, prefix: str) -> bool:
        """Whether a key is ``prefix`` or starts with ``prefix.``."""
        if prefix in self.values:
            return True
        if self._prefixes is None:
            self._prefixes = set()
            for key in self.values:
                parts = key.split(".")
                for end in range(1, len(parts)):
                    self._prefixes.add(".".join(parts[:end]))
        return prefix in self._prefixes

    def take(self, key: str, last: bool) -> str:
        self.consumed.append(key)
        found = self.values[key]
        if len(found) > 1:
            self.repeated = True
        return found[-1] if last else found[0]

    def read(self, shape: FormShape, prefix: str, last: bool) -> Any:
        kind = shape.kind
        if kind == "scalar":
            return self.take(prefix, last) if prefix in self.values else _MISSING
        if kind == "structure":
            out: dict[str, Any] = {}
            for wire, member, sub in shape.fields:
                key = f"{prefix}.{wire}" if prefix else wire
                if self.present(key):
                    value = self.read(sub, key, last)
                    if value is not _MISSING:
                        out[member] = value
            return out if out else _MISSING
        if kind == "list":
            if self.values.get(prefix) == [""]:  # botocore writes an empty list as "Name="
                self.take(prefix, last)
                return []
            base = f"{prefix}.{shape.item_path}" if shape.item_path else prefix
            items: list[Any] = []
            for index in range(1, MAX_FORM_FIELDS):
                key = f"{base}.{index}"
                if not self.present(key):
                    break
                value = self.read(shape.item or SCALAR, key, last)
                if value is _MISSING:
                    break
                items.append(value)
            return items if items else _MISSING
        if kind == "map":
            base = f"{prefix}.{shape.item_path}" if shape.item_path else prefix
            entries: dict[str, Any] = {}
            for index in range(1, MAX_FORM_FIELDS):
                entry = f"{base}.{index}"
                if not self.present(entry):
                    break
                name = self.read(SCALAR, f"{entry}.{shape.key_name}", last)
                if name is _MISSING:
                    break
                value = self.read(shape.item or SCALAR, f"{entry}.{shape.value_name}", last)
                if last or name not in entries:
                    entries[name] = "" if value is _MISSING else value
            return entries if entries else _MISSING
        # opaque (a recursive shape): every key under the prefix, read leniently
        keys = [k for k in self.values if k == prefix or k.startswith(prefix + ".")]
        if not keys:
            return _MISSING
        self.consumed.extend(keys)
        if any(len(self.values[k]) > 1 for k in keys):
            self.repeated = True
        pairs = [("_" + k[len(prefix) :], v) for k in keys for v in self.values[k]]
        return form_tree(pairs, last=last).get("_", _MISSING)


def _lenient(keys: list[str], values: dict[str, list[str]], wire: str, last: bool) -> Any:
    """A member's value from all keys that may name it, markers and case ignored."""
    pairs: list[tuple[str, str]] = []
    for key in keys:
        segments = key.split(".")
        while segments and (segments[0].lower() in _MARKERS or segments[0].isdigit()):
            segments = segments[1:]
        if not segments:
            continue
        rewritten = ".".join([wire, *segments[1:]])
        pairs.extend((rewritten, value) for value in values[key])
    return form_tree(pairs, last=last).get(wire, _MISSING)


def _plain(values: dict[str, list[str]], shape: FormShape) -> bool:
    """Whether every key names a scalar member of ``shape`` exactly, with one value."""
    for key, found in values.items():
        position = shape.by_wire.get(key)
        if position is None or len(found) != 1 or shape.fields[position][2].kind != "scalar":
            return False
    return True


def form_params(pairs: list[tuple[str, str]], shape: FormShape | None) -> ParamReadings:
    """awsQuery/EC2 parameters (``Action`` and ``Version`` left out) with every value
    a server may read for each member."""
    values: dict[str, list[str]] = {}
    for key, value in pairs[:MAX_FORM_FIELDS]:
        if key not in ("Action", "Version"):
            values.setdefault(key, []).append(value)
    readings = ParamReadings()
    if shape is None or shape.kind != "structure":
        tree = form_tree((k, v) for k, vs in values.items() for v in vs)
        for member, value in tree.items():
            readings.offer(member, value)
        return readings

    if _plain(values, shape):  # every key a scalar member, once: what botocore writes most
        for key, given in values.items():
            _wire, member, _sub = shape.fields[shape.by_wire[key]]
            readings.offer(member, given[0])
        return readings

    reader = _FormReader(values)
    strict: dict[str, tuple[str, FormShape, Any, Any, list[str]]] = {}
    positions = {p for k in values if (p := shape.by_wire.get(k.partition(".")[0])) is not None}
    for position in sorted(positions):
        wire, member, sub = shape.fields[position]
        start = len(reader.consumed)
        first = reader.read(sub, wire, last=False)
        keys = reader.consumed[start:]
        last = reader.read(sub, wire, last=True) if reader.repeated else first
        del reader.consumed[start + len(keys) :]
        strict[member] = (wire, sub, first, last, keys)
    if reader.repeated:
        readings.tags.add(DUPLICATE)

    aliases: dict[str, list[str]] = {}
    if len(reader.consumed) < len(values):
        consumed = set(reader.consumed)
        by_name: dict[str, tuple[str, str, FormShape]] = {}
        for wire, member, sub in shape.fields:
            by_name.setdefault(wire.lower(), (wire, member, sub))
            by_name.setdefault(member.lower(), (wire, member, sub))
        for key in values:
            if key in consumed or key in AUTH_PARAMS:
                continue
            found = by_name.get(significant(key))
            if found is not None:
                aliases.setdefault(found[1], []).append(key)
                if found[1] not in strict:
                    strict[found[1]] = (found[0], found[2], _MISSING, _MISSING, [])
        if aliases:
            readings.tags.add(ALIAS)

    for member, (wire, sub, first, last, keys) in strict.items():
        extra = aliases.get(member, [])
        if sub.kind == "scalar":
            if len(keys) == 1 and not extra and len(values[keys[0]]) == 1:
                readings.offer(member, first)
                continue
            for key in keys + extra:
                for value in values[key]:
                    readings.offer(member, value)
            continue
        for value in (first, last):
            if value is not _MISSING:
                readings.offer(member, value)
        if not extra:
            continue
        for policy in (False, True):
            value = _lenient(keys + extra, values, wire, policy)
            if value is not _MISSING:
                readings.offer(member, value)
        if sub.kind == "list" and (sub.item or SCALAR).kind == "scalar":
            # every value given under any spelling, and each spelling's alone
            readings.offer(member, [v for key in keys + extra for v in values[key]])
            for key in extra:
                readings.offer(member, list(values[key]))
    return readings


# --------------------------------------------------------------------------- JSON / CBOR


def document_params(
    document: Any,
    wire: dict[str, str],
    folded: dict[str, str],
    readings: ParamReadings | None = None,
) -> ParamReadings:
    """Members of a JSON or CBOR object (a ``Pairs`` tree): every occurrence of a member,
    under its wire name (``wire``: wire -> member) or a case variant of it (``folded``:
    lower-cased wire and member names -> member), read with its repeated inner keys
    kept first and last. Keys that name no member are kept as they are (risk tags
    read them)."""
    readings = readings if readings is not None else ParamReadings()
    if not isinstance(document, Pairs):
        return readings
    repeats = has_repeats(document)
    if repeats:
        readings.tags.add(DUPLICATE)
    occurrences: dict[str, list[tuple[Any, bool]]] = {}
    for key, value in document:
        if not isinstance(key, str):
            continue
        named = wire.get(key)
        is_exact = named is not None
        if named is None:
            named = folded.get(key.lower())
            if named is None:
                named = key
                is_exact = True
            else:
                readings.tags.add(ALIAS)
        occurrences.setdefault(named, []).append((value, is_exact))
    for member, found in occurrences.items():
        if len(found) == 1 and not repeats:
            readings.offer(member, resolve(found[0][0], last=True))
            continue
        exact_values = [value for value, is_exact in found if is_exact]
        # json.loads keeps the last occurrence: that is the canonical reading
        canonical = exact_values[-1] if exact_values else found[-1][0]
        readings.offer(member, resolve(canonical, last=True))
        for value, _is_exact in found:
            readings.offer(member, resolve(value, last=False))
            readings.offer(member, resolve(value, last=True))
    return readings


def body_document(body: bytes, cbor: bool) -> Any:
    """A JSON (or CBOR) body as a ``Pairs`` tree; None when empty or unreadable."""
    return parse_cbor_pairs(body) if cbor else parse_json_pairs(body)


def rpc_params(op: OpSpec, body: bytes | None, cbor: bool) -> ParamReadings:
    """awsJson / RPC v2 CBOR parameters: the whole body is the input structure."""
    readings = ParamReadings()
    if not body or not body.strip():
        return readings
    document = body_document(body, cbor)
    if document is None or not isinstance(document, Pairs):
        readings.tags.add(UNPARSED)
        return readings
    return document_params(document, op.body_wire, op.body_folded, readings)


# --------------------------------------------------------------------------- REST


def rest_params(
    op: OpSpec,
    labels: dict[str, str],
    request: HttpRequest,
    body: bytes | None,
    xml: bool,
) -> ParamReadings:
    """rest-json / rest-xml parameters from URI labels, query string, headers and body,
    with the values a member also gets from places botocore never puts it."""
    readings = ParamReadings()
    for member, value in labels.items():
        readings.offer(member, value)

    query = request.query_values
    own_query: set[str] = set()
    for wire, member in op.query_members:
        found = query.get(wire)
        if not found:
            continue
        own_query.add(wire)
        if wire in op.query_lists:  # botocore repeats the key for each list item
            readings.offer(member, found if len(found) > 1 else found[0])
            continue
        if len(found) > 1:
            readings.tags.add(DUPLICATE)
        for value in found:
            readings.offer(member, value)
    for wire, member in op.header_members:
        found = request.header_values(wire)
        if not found:
            continue
        for value in found:
            readings.offer(member, value)
        if len(found) > 1:
            # a server may also see the header folded into one comma-joined value
            readings.tags.add(DUPLICATE)
            readings.offer(member, ", ".join(found))
        for value in found:
            # and a folded one as its items (RFC 9110, 5.3): only a different action
            # from an item makes the request ambiguous
            if "," in value:
                for item in value.split(","):
                    readings.offer(member, item.strip())

    document: Any = None
    xml_root: Any = None
    if body and body.strip() and (op.parse_body or not op.payload):
        if xml:
            parsed = parse_xml(body)
            xml_root = parsed[1] if parsed is not None else None
            if parsed is None and op.parse_body:
                readings.tags.add(UNPARSED)
        else:
            document = parse_json_pairs(body)
            if document is None and op.parse_body:
                readings.tags.add(UNPARSED)
    if op.parse_body:
        if op.payload:
            if xml and xml_root is not None:
                readings.offer(op.payload, xml_root)
            elif isinstance(document, (Pairs, list)):
                if has_repeats(document):
                    readings.tags.add(DUPLICATE)
                readings.offer(op.payload, resolve(document, last=True))
                readings.offer(op.payload, resolve(document, last=False))
        elif xml and isinstance(xml_root, dict):
            for member, value in rename(xml_root, op.body_names).items():
                readings.offer(member, value)
        elif isinstance(document, Pairs):
            document_params(document, op.body_wire, op.body_folded, readings)

    # Members also given where botocore never puts them.
    located = op.located
    body_members = op.body_folded
    if not op.query_map:
        literal = {key for key, _value in op.query_literals}
        for key, found in query.items():
            if key in own_query or key in literal or key in AUTH_PARAMS:
                continue
            aliased = located.get(key.lower()) or body_members.get(key.lower())
            if aliased is None:
                continue
            readings.tags.add(ALIAS)
            for value in found:
                readings.offer(aliased, value)
    top: Iterable[tuple[Any, Any]] = ()
    if isinstance(document, Pairs):
        top = [(k, resolve(v, last=True)) for k, v in document]
    elif isinstance(xml_root, dict):
        top = xml_root.items()
    for key, value in top:
        if not isinstance(key, str) or op.payload:
            continue
        aliased = located.get(key.lower())
        if aliased is not None:
            readings.tags.add(ALIAS)
            readings.offer(aliased, value)
    return readings
