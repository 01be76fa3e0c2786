"""What a Kubernetes request body says: object name, namespace, replicas, delete options.

kubectl sends JSON for apply/patch but **protobuf** for ``kubectl create`` (and any
client-go client may be configured for it), so both encodings are read. The protobuf
walker knows just enough of the wire format to follow the envelope:

* the body is ``k8s\\x00`` followed by a ``runtime.Unknown`` message whose field 2
  (``raw``) holds the serialised object;
* nearly every object has ``ObjectMeta`` as field 1, whose field 1 is ``name``,
  field 2 ``generateName`` and field 3 ``namespace``;
* workload specs (Deployment, StatefulSet, ReplicaSet, Scale) keep ``replicas`` as
  field 1 of field 2 (``spec``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml

PROTOBUF_MAGIC = b"k8s\x00"
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when available
MAX_FIELDS = 10_000


@dataclass(frozen=True, slots=True)
class BodyFacts:
    """The few facts about a body that the recogniser uses."""

    name: str = ""
    namespace: str = ""
    replicas: int | None = None  # spec.replicas when the body sets it
    grace_period: int | None = None  # DeleteOptions.gracePeriodSeconds
    dry_run: bool = False  # DeleteOptions.dryRun: ["All"]


class ProtobufError(ValueError):
    """Not a protobuf message this walker can read."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ProtobufError("bad varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def fields(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of each top-level field of a protobuf message.

    Varints come back as ints, length-delimited fields as bytes; fixed-width fields
    are skipped over and returned as raw bytes.
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


def _field(data: bytes, number: int, wire: int) -> int | bytes | None:
    for num, kind, value in fields(data):
        if num == number and kind == wire:
            return value
    return None


def _text(value: int | bytes | None) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else ""


def protobuf_object(body: bytes) -> bytes | None:
    """The serialised object inside a ``k8s\\x00`` + runtime.Unknown envelope."""
    if not body.startswith(PROTOBUF_MAGIC):
        return None
    raw = _field(body[len(PROTOBUF_MAGIC) :], 2, 2)
    return raw if isinstance(raw, bytes) else None


def _signed32(value: int) -> int:
    """int32 fields are sign-extended to 64 bits on the wire."""
    value &= (1 << 64) - 1
    if value >= 1 << 63:
        value -= 1 << 64
    return value


def protobuf_facts(body: bytes) -> BodyFacts:
    """Name, namespace and spec.replicas of a protobuf-encoded object."""
    raw = protobuf_object(body)
    if raw is None:
        return BodyFacts()
    meta = _field(raw, 1, 2)
    name = namespace = ""
    if isinstance(meta, bytes):
        name = _text(_field(meta, 1, 2))
        namespace = _text(_field(meta, 3, 2))
    replicas: int | None = None
    spec = _field(raw, 2, 2)
    if isinstance(spec, bytes):
        try:
            value = _field(spec, 1, 0)
        except ProtobufError:
            value = None  # spec field 1 is not a varint in this kind: no replicas
        if isinstance(value, int):
            replicas = _signed32(value)
    return BodyFacts(name=name, namespace=namespace, replicas=replicas)


def _replicas_from_json(document: Any) -> int | None:
    if isinstance(document, list):  # JSON patch: [{"op": "replace", "path": "/spec/replicas"}]
        for operation in document:
            if (
                isinstance(operation, dict)
                and operation.get("path") == "/spec/replicas"
                and operation.get("op") in ("add", "replace")
            ):
                value = operation.get("value")
                return value if isinstance(value, int) and not isinstance(value, bool) else None
        return None
    if isinstance(document, dict):
        spec = document.get("spec")
        if isinstance(spec, dict) and "replicas" in spec:
            value = spec["replicas"]
            return value if isinstance(value, int) and not isinstance(value, bool) else None
    return None


def _document_facts(document: Any) -> BodyFacts:
    name = namespace = ""
    grace: int | None = None
    dry = False
    if isinstance(document, dict):
        meta = document.get("metadata")
        if isinstance(meta, dict):
            name = str(meta.get("name") or "")
            namespace = str(meta.get("namespace") or "")
        period = document.get("gracePeriodSeconds")
        if isinstance(period, int) and not isinstance(period, bool):
            grace = period
        dry_run = document.get("dryRun")
        dry = isinstance(dry_run, list) and "All" in dry_run
    return BodyFacts(
        name=name,
        namespace=namespace,
        replicas=_replicas_from_json(document),
        grace_period=grace,
        dry_run=dry,
    )


def json_facts(body: bytes) -> BodyFacts:
    """Name, namespace, spec.replicas and DeleteOptions fields of a JSON body."""
    try:
        return _document_facts(json.loads(body))
    except (ValueError, RecursionError):
        return BodyFacts()


def yaml_facts(body: bytes) -> BodyFacts:
    """The same from a YAML body (server-side apply sends ``application/apply-patch+yaml``)."""
    try:
        return _document_facts(yaml.load(body, Loader=_YAML_LOADER))  # a safe loader
    except (yaml.YAMLError, RecursionError, ValueError):
        return BodyFacts()


def body_facts(body: bytes, content_type: str) -> BodyFacts:
    """Facts from a JSON, YAML or protobuf body; empty facts if unreadable."""
    if not body:
        return BodyFacts()
    try:
        if body.startswith(PROTOBUF_MAGIC) or "protobuf" in content_type:
            return protobuf_facts(body)
    except ProtobufError:
        return BodyFacts()
    if body.lstrip()[:1] in (b"{", b"["):
        return json_facts(body)
    if "yaml" in content_type:
        return yaml_facts(body)
    return BodyFacts()
