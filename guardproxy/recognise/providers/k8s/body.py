"""What a Kubernetes request body says, read the way kube-apiserver decodes it.

Which decoder reads a body is the API server's decision, made from the request, never
from sniffing the bytes (kubernetes/kubernetes ``staging/src/k8s.io/apiserver/pkg/
endpoints/handlers/``):

* objects (create, update) and ``DeleteOptions`` (delete, deletecollection) go through
  ``negotiation.NegotiateInputSerializer``: the ``Content-Type`` media type as
  ``mime.ParseMediaType`` reads it (lower-cased, parameters dropped), JSON when there
  is none; JSON, YAML and protobuf are served (CBOR behind a feature gate), anything
  else is refused with 415;
* patches (``patch.go``) by the exact ``Content-Type`` up to the first ``;``:
  ``application/json-patch+json``, ``merge-patch+json``,
  ``strategic-merge-patch+json``, ``apply-patch+yaml`` (and ``apply-patch+cbor``).

The body bytes are the ones on the wire: the API server does not undo a
``Content-Encoding`` on requests, so neither is it undone here.

Duplicate keys are read every way a decoder reads them and each distinct reading is
returned. The API server decodes JSON with sigs.k8s.io/json, a case-sensitive fork of
Go's ``encoding/json`` (k8s.io/apimachinery ``pkg/runtime/serializer/json/json.go:
Serializer.unmarshal``: ``UnmarshalCaseSensitivePreserveInts``, always for
``DeleteOptions``; ``UnmarshalStrict`` under ``fieldValidation=Strict``/``Warn``, which
reports duplicates, refused under Strict): the last value of a repeated key wins, but
into a typed object a repeated object *merges* into the first (a struct or map is
decoded into in place). Other JSON parsers keep the first value. YAML is read by
:mod:`.yaml_docs`; protobuf by the small walker below (a repeated scalar field: the
last wins, a repeated message field merges, as gogo-protobuf's generated ``Unmarshal``
does; the first-wins reading is returned too).

kubectl sends JSON for apply/patch but **protobuf** for ``kubectl create`` (and any
client-go client may be configured for it). The protobuf envelope is ``k8s\\x00``
followed by a ``runtime.Unknown`` (``typeMeta`` = 1: apiVersion 1, kind 2; ``raw`` = 2),
whose ``raw`` holds the object: ``ObjectMeta`` is field 1 (name 1, namespace 3);
workloads and ``Scale`` keep ``replicas`` as field 1 of ``spec`` (field 2);
``DeleteOptions`` has gracePeriodSeconds 1, dryRun 5 (repeated),
ignoreStoreReadErrorWithClusterBreakingPotential 6; ``Eviction`` its
``deleteOptions`` as field 2 (k8s.io/apimachinery ``pkg/apis/meta/v1/generated.proto``,
``pkg/runtime/generated.proto``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from guardproxy.recognise import cbor
from guardproxy.recognise.providers.k8s.patch import (
    PatchError,
    json_patch_effect,
    merge_patch_effect,
    numeric,
)
from guardproxy.recognise.providers.k8s.yaml_docs import YamlError, load_documents

__all__ = [
    "PROTOBUF_MAGIC",
    "UNREADABLE",
    "BodyFacts",
    "BodyReading",
    "ProtobufError",
    "Purpose",
    "body_facts",
    "fields",
    "read_body",
]

PROTOBUF_MAGIC = b"k8s\x00"
MAX_FIELDS = 10_000
MAX_BODY_BYTES = 4 * 1024 * 1024
"""Larger bodies are not read (the API server's own limit is 3 MiB): unknown reading."""

JSON = "application/json"
YAML = "application/yaml"
PROTOBUF = "application/vnd.kubernetes.protobuf"
CBOR = "application/cbor"
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_YAML = "application/apply-patch+yaml"
APPLY_CBOR = "application/apply-patch+cbor"

# Kinds whose protobuf spec keeps replicas as field 1 (apps/v1, core/v1, autoscaling/v1)
_REPLICA_KINDS = frozenset(
    {"Deployment", "StatefulSet", "ReplicaSet", "ReplicationController", "Scale"}
)


class Purpose(Enum):
    """What the API server decodes the body as."""

    OBJECT = "object"  # create, update (a whole object, or an Eviction, Scale, ...)
    DELETE_OPTIONS = "delete-options"  # delete, deletecollection
    PATCH = "patch"


@dataclass(frozen=True, slots=True)
class BodyFacts:
    """The facts about a body that the recogniser uses."""

    name: str = ""  # metadata.name
    namespace: str = ""  # metadata.namespace (the API server uses the path's)
    replicas: int | None = None  # spec.replicas when the body sets it to a number
    grace_period: int | None = None  # DeleteOptions.gracePeriodSeconds
    dry_run: bool = False  # DeleteOptions.dryRun: non-empty and every value "All"
    unsafe_delete: bool = False  # DeleteOptions.ignoreStoreReadErrorWithClusterBreakingPotential
    finalizers_removed: bool = False  # the body empties or removes metadata.finalizers


@dataclass(frozen=True, slots=True)
class BodyReading:
    """Every distinct reading of a body, the API server's first.

    ``unreadable`` says the body could not be read as the API server would read it
    (the recogniser then makes the reading unknown); ``ambiguities`` names why there
    is more than one reading (``duplicate-key``, ``multiple-documents``).
    """

    facts: tuple[BodyFacts, ...] = (BodyFacts(),)
    ambiguities: tuple[str, ...] = ()
    unreadable: bool = False


UNREADABLE = BodyReading(unreadable=True)
EMPTY = BodyReading()


class ProtobufError(ValueError):
    """Not a protobuf message this walker can read."""


class BodyError(ValueError):
    """The body cannot be read as the API server reads it."""


# ------------------------------------------------------------------------ protobuf


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ProtobufError("bad varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value & ((1 << 64) - 1), pos
        shift += 7


def fields(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of each top-level field of a protobuf message.

    Varints come back as ints, length-delimited fields as bytes; fixed-width fields
    are skipped over and returned as raw bytes; groups are refused.
    """
    pos = 0
    count = 0
    while pos < len(data):
        count += 1
        if count > MAX_FIELDS:
            raise ProtobufError("too many fields")
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            yield number, wire, value
        elif wire == 2:
            length, pos = _varint(data, pos)
            if pos + length > len(data):
                raise ProtobufError("truncated field")
            yield number, wire, data[pos : pos + length]
            pos += length
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            if pos + size > len(data):
                raise ProtobufError("truncated fixed field")
            yield number, wire, data[pos : pos + size]
            pos += size
        else:
            raise ProtobufError(f"unsupported wire type {wire}")


class _Message:
    """The fields of one message as gogo-protobuf reads them, or the first-wins view."""

    def __init__(self, data: bytes, *, last: bool, repeats: list[bool] | None = None) -> None:
        self._fields: dict[int, list[tuple[int, int | bytes]]] = {}
        self._last = last
        self.repeats = repeats if repeats is not None else [False]  # a read scalar repeated
        for number, wire, value in fields(data):
            self._fields.setdefault(number, []).append((wire, value))

    def _typed(self, number: int, wire: int) -> list[int | bytes]:
        found = self._fields.get(number, [])
        if any(kind != wire for kind, _ in found):
            # gogo: "proto: wrong wireType = N for field X", the request is refused
            raise ProtobufError(f"wrong wire type for field {number}")
        return [value for _, value in found]

    def scalar(self, number: int, wire: int) -> int | bytes | None:
        values = self._typed(number, wire)
        if not values:
            return None
        if len(values) > 1:
            self.repeats[0] = True
        return values[-1] if self._last else values[0]

    def repeated(self, number: int, wire: int) -> list[int | bytes]:
        return self._typed(number, wire)

    def message(self, number: int) -> _Message | None:
        parts = self._typed(number, 2)
        if not parts:
            return None
        # a repeated message field merges, which is what parsing the concatenation does
        merged = b"".join(p for p in parts if isinstance(p, bytes))
        return _Message(merged, last=self._last, repeats=self.repeats)

    def text(self, number: int) -> str:
        value = self.scalar(number, 2)
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else ""


def _signed(value: int, bits: int) -> int:
    """int32/int64 fields travel sign-extended to 64 bits."""
    value &= (1 << 64) - 1
    if value >= 1 << 63:
        value -= 1 << 64
    return value if bits == 64 else ((value + (1 << 31)) % (1 << 32)) - (1 << 31)


def _delete_options_pb(message: _Message) -> BodyFacts:
    grace = message.scalar(1, 0)
    dry = [v.decode("utf-8", "replace") for v in message.repeated(5, 2) if isinstance(v, bytes)]
    unsafe = message.scalar(6, 0)
    return BodyFacts(
        grace_period=_signed(grace, 64) if isinstance(grace, int) else None,
        dry_run=_dry_run(dry),
        unsafe_delete=bool(unsafe),
    )


def _protobuf_facts(
    body: bytes, purpose: Purpose, kind_default: str, *, last: bool, repeats: list[bool]
) -> BodyFacts:
    if not body.startswith(PROTOBUF_MAGIC) or len(body) == len(PROTOBUF_MAGIC):
        raise ProtobufError("not a k8s protobuf envelope")
    envelope = _Message(body[len(PROTOBUF_MAGIC) :], last=last, repeats=repeats)
    type_meta = envelope.message(1)
    kind = (type_meta.text(2) if type_meta else "") or kind_default
    raw = envelope.scalar(2, 2)
    obj = _Message(raw if isinstance(raw, bytes) else b"", last=last, repeats=repeats)
    if purpose is Purpose.DELETE_OPTIONS:
        return _delete_options_pb(obj)
    facts = BodyFacts()
    meta = obj.message(1)
    if meta is not None:
        facts = replace(facts, name=meta.text(1), namespace=meta.text(3))
    if kind in _REPLICA_KINDS:
        spec = obj.message(2)
        replicas = spec.scalar(1, 0) if spec is not None else None
        if isinstance(replicas, int):
            facts = replace(facts, replicas=_signed(replicas, 32))
    elif kind == "Eviction":
        options = obj.message(2)
        if options is not None:
            evicted = _delete_options_pb(options)
            facts = replace(
                facts,
                grace_period=evicted.grace_period,
                dry_run=evicted.dry_run,
                unsafe_delete=evicted.unsafe_delete,
            )
    return facts


def protobuf_object(body: bytes) -> bytes | None:
    """The serialised object inside a ``k8s\\x00`` + runtime.Unknown envelope."""
    if not body.startswith(PROTOBUF_MAGIC):
        return None
    raw = _Message(body[len(PROTOBUF_MAGIC) :], last=True).scalar(2, 2)
    return raw if isinstance(raw, bytes) else None


# ---------------------------------------------------------------------- documents


class _Object(list[tuple[str, Any]]):
    """A JSON object's members in order, duplicates kept."""


def _json_text(body: bytes) -> str:
    # Go's decoder takes invalid UTF-8 inside strings (as U+FFFD); outside strings it
    # is a syntax error to both
    return body.decode("utf-8", "replace")


def _materialise(node: Any, mode: str) -> Any:
    """A document from members kept in order: ``last`` (encoding/json into
    ``interface{}``), ``first``, or ``merge`` (encoding/json into a typed object: a
    repeated object merges into the first, ``null`` leaves it as it was)."""
    if isinstance(node, list) and not isinstance(node, _Object):
        return [_materialise(item, mode) for item in node]
    if not isinstance(node, _Object):
        return node
    out: dict[str, Any] = {}
    for key, raw in node:
        value = _materialise(raw, mode)
        if key in out:
            if mode == "first":
                continue
            if mode == "merge" and isinstance(out[key], dict):
                if isinstance(value, dict):
                    value = _merge(out[key], value)
                elif value is None:
                    continue
        out[key] = value
    return out


def _merge(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    merged = dict(old)
    for key, value in new.items():
        if isinstance(merged.get(key), dict) and isinstance(value, dict):
            merged[key] = _merge(merged[key], value)
        elif value is None and isinstance(merged.get(key), dict):
            continue
        else:
            merged[key] = value
    return merged


def _json_documents(body: bytes) -> tuple[list[Any], bool]:
    """The readings of a JSON body (the API server's first) and whether a key repeated."""
    text = _json_text(body)
    repeated = False

    def members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal repeated
        obj = dict(pairs)
        if len(obj) != len(pairs):
            repeated = True
        return obj

    try:
        document = json.loads(text, object_pairs_hook=members)
        if not repeated:
            return [document], False
        kept = json.loads(text, object_pairs_hook=_Object)
    except (ValueError, RecursionError) as error:
        raise BodyError(f"not JSON: {error}") from error
    return [_materialise(kept, mode) for mode in ("merge", "last", "first")], True


def _yaml_documents(body: bytes) -> tuple[list[Any], list[str]]:
    try:
        documents = load_documents(body)
        readings = [documents[0].value]
        ambiguities = []
        if documents[0].duplicates:
            ambiguities.append("duplicate-key")
            readings.append(load_documents(body, first_wins=True)[0].value)
    except YamlError as error:
        raise BodyError(f"not YAML: {error}") from error
    if len(documents) > 1:
        ambiguities.append("multiple-documents")
        readings.extend(d.value for d in documents[1:])
    return readings, ambiguities


def _cbor_documents(body: bytes) -> list[Any]:
    try:
        return [cbor.loads(body)]
    except (cbor.CborError, RecursionError, ValueError) as error:
        raise BodyError(f"not CBOR: {error}") from error


# -------------------------------------------------------------------------- facts


def _dry_run(values: Any) -> bool:
    """``dryRun`` means dry run when it is non-empty and every value is ``All``
    (``dryrun.IsDryRun`` is ``len != 0``; ``ValidateDryRun`` refuses anything else)."""
    return (
        isinstance(values, list)
        and bool(values)
        and all(isinstance(v, str) and v == "All" for v in values)
    )


def _delete_options(doc: Any) -> BodyFacts:
    if not isinstance(doc, dict):
        return BodyFacts()
    return BodyFacts(
        grace_period=numeric(doc.get("gracePeriodSeconds")),
        dry_run=_dry_run(doc.get("dryRun")),
        unsafe_delete=doc.get("ignoreStoreReadErrorWithClusterBreakingPotential") is True,
    )


def _object_facts(doc: Any) -> BodyFacts:
    if not isinstance(doc, dict):
        return BodyFacts()
    meta = doc.get("metadata")
    meta = meta if isinstance(meta, dict) else {}
    name, namespace = meta.get("name"), meta.get("namespace")
    spec = doc.get("spec")
    replicas = numeric(spec.get("replicas")) if isinstance(spec, dict) else None
    facts = BodyFacts(
        name=name if isinstance(name, str) else "",
        namespace=namespace if isinstance(namespace, str) else "",
        replicas=replicas,
        finalizers_removed="finalizers" in meta and meta["finalizers"] in (None, []),
    )
    if "deleteOptions" in doc:  # an Eviction (pods/eviction)
        evicted = _delete_options(doc["deleteOptions"])
        facts = replace(
            facts,
            grace_period=evicted.grace_period,
            dry_run=evicted.dry_run,
            unsafe_delete=evicted.unsafe_delete,
        )
    return facts


def _merge_patch_facts(doc: Any) -> BodyFacts:
    replicas, removed = merge_patch_effect(doc)
    return BodyFacts(replicas=replicas, finalizers_removed=removed)


def _json_patch_facts(doc: Any) -> BodyFacts:
    try:
        replicas, removed = json_patch_effect(doc)
    except PatchError as error:
        raise BodyError(str(error)) from error
    return BodyFacts(replicas=replicas, finalizers_removed=removed)


def media_type(content_type: str) -> str:
    """The media type as ``mime.ParseMediaType`` returns it (parameters dropped)."""
    return content_type.partition(";")[0].strip().lower()


def patch_type(content_type: str) -> str:
    """The patch type as ``PatchResource`` takes it: exact, cut at the first ``;``
    (unless the header starts with one)."""
    index = content_type.find(";")
    return content_type[:index] if index > 0 else content_type


def _readings(
    documents: list[Any], to_facts: Callable[[Any], BodyFacts], ambiguities: list[str]
) -> BodyReading:
    facts = tuple(dict.fromkeys(to_facts(d) for d in documents))
    return BodyReading(facts, tuple(ambiguities))


def read_body(body: bytes, content_type: str, purpose: Purpose, *, kind: str = "") -> BodyReading:
    """Every reading of ``body`` as the API server decodes it for ``purpose``.

    ``content_type`` is the first ``Content-Type`` header (``Header.Get``); ``kind``
    the kind the endpoint decodes when a protobuf envelope names none. An empty body
    has no facts (for a delete, the options then come from the query).
    """
    if not body:
        return EMPTY
    if len(body) > MAX_BODY_BYTES:
        return UNREADABLE
    try:
        if purpose is Purpose.PATCH:
            return _read_patch(body, patch_type(content_type))
        to_facts = _delete_options if purpose is Purpose.DELETE_OPTIONS else _object_facts
        media = media_type(content_type) or JSON
        if media == JSON:
            documents, repeated = _json_documents(body)
            return _readings(documents, to_facts, ["duplicate-key"] if repeated else [])
        if media == YAML:
            yaml_documents, ambiguities = _yaml_documents(body)
            return _readings(yaml_documents, to_facts, ambiguities)
        if media == PROTOBUF:
            return _read_protobuf(body, purpose, kind)
        if media == CBOR:
            return _readings(_cbor_documents(body), to_facts, [])
    except (BodyError, ProtobufError, RecursionError):
        return UNREADABLE
    return UNREADABLE  # refused with 415; a reading we cannot make


def _read_patch(body: bytes, kind: str) -> BodyReading:
    if kind == JSON_PATCH:
        documents, repeated = _json_documents(body)
        return _readings(documents, _json_patch_facts, ["duplicate-key"] if repeated else [])
    if kind in (MERGE_PATCH, STRATEGIC_MERGE_PATCH):
        documents, repeated = _json_documents(body)
        return _readings(documents, _merge_patch_facts, ["duplicate-key"] if repeated else [])
    if kind == APPLY_YAML:
        yaml_documents, ambiguities = _yaml_documents(body)
        return _readings(yaml_documents, _merge_patch_facts, ambiguities)
    if kind == APPLY_CBOR:
        return _readings(_cbor_documents(body), _merge_patch_facts, [])
    return UNREADABLE  # refused with 415


def _read_protobuf(body: bytes, purpose: Purpose, kind: str) -> BodyReading:
    repeats = [False]
    server = _protobuf_facts(body, purpose, kind, last=True, repeats=repeats)
    if not repeats[0]:  # no field it read was repeated: every reader agrees
        return BodyReading((server,))
    first = _protobuf_facts(body, purpose, kind, last=False, repeats=[False])
    if first == server:
        return BodyReading((server,))
    return BodyReading((server, first), ("duplicate-field",))


def body_facts(body: bytes, content_type: str) -> BodyFacts:
    """The API server's reading of an object body (create or update)."""
    reading = read_body(body, content_type, Purpose.OBJECT)
    return reading.facts[0]
