"""Reading botocore's service models into the recogniser's reduced form (``aws_spec``).

Everything the recogniser knows about AWS operations is derived here from the models
botocore ships: wire encoding, parameter locations, the identifying parameter and the
resource type. Runs once per botocore version; ``aws_index`` caches the result.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import importlib.util
import json
import pickle
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from guardproxy.recognise.aws_names import kebab, member_stem, noun_words, split_operation
from guardproxy.recognise.aws_spec import (
    OPAQUE,
    SCALAR,
    FormShape,
    Ident,
    ModelSpec,
    OpSpec,
    Tables,
)

_RESOURCE_VERBS = frozenset(
    {
        "Create",
        "Delete",
        "Terminate",
        "Run",
        "Register",
        "Deregister",
        "Allocate",
        "Release",
        "Launch",
        "Provision",
        "Deprovision",
        "Purchase",
    }
)
"""Verbs whose noun is a resource the service manages (CreateBucket -> bucket)."""

_NOT_TARGETS = frozenset(
    {
        ("Client",),
        ("Next",),
        ("Idempotency",),
        ("Kms",),
        ("KMS",),
        ("Kms", "Key"),
        ("KMS", "Key"),
        ("Marker",),
        ("Continuation",),
        ("Request",),
    }
)
"""Stems of members that end in Id/Name/Arn but never name the target resource."""

_MEMBER_NOUNS: dict[tuple[str, str], tuple[str, ...]] = {
    # S3 calls an object's name its key; the resource is the object.
    ("s3", "Key"): ("Object",),
}

_LABEL = re.compile(r"\{([^}]+?)(\+)?\}")


def botocore_data_dir() -> Path:
    """Where botocore keeps its models (found without importing botocore)."""
    spec = importlib.util.find_spec("botocore")
    if spec is None or spec.origin is None:
        raise RuntimeError("botocore is not installed; guardproxy needs its service models")
    return Path(spec.origin).parent / "data"


def botocore_version() -> str:
    try:
        return importlib.metadata.version("botocore")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _read_json(path: Path) -> Any:
    if path.suffix == ".gz":
        with gzip.open(path, "rb") as handle:
            return json.load(handle)
    with path.open("rb") as handle:
        return json.load(handle)


def _latest(service_dir: Path, stem: str) -> Path | None:
    """The newest API version's ``<stem>.json[.gz]``, as botocore's loader picks it."""
    versions = sorted((p for p in service_dir.iterdir() if p.is_dir()), reverse=True)
    for version in versions:
        for candidate in (version / f"{stem}.json.gz", version / f"{stem}.json"):
            if candidate.exists():
                return candidate
    return None


def _walk_signing_names(node: Any) -> Iterator[str]:
    """Signing names in an endpoint rule set (s3express, s3-object-lambda, ...)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "signingName" and isinstance(value, str):
                yield value
            else:
                yield from _walk_signing_names(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk_signing_names(value)


def _shape_kind(shapes: dict[str, Any], name: str) -> str:
    """``string``, ``list`` (of strings), or something we do not read as an identifier."""
    shape = shapes.get(name, {})
    kind = shape.get("type", "")
    if kind == "string":
        return "string"
    if kind == "list":
        inner = shapes.get(shape.get("member", {}).get("shape", ""), {})
        return "list" if inner.get("type") == "string" else ""
    return ""


def _candidates(
    service: str,
    members: dict[str, Any],
    shapes: dict[str, Any],
    nouns: frozenset[str],
    op_noun: tuple[str, ...],
    labels: frozenset[str],
) -> Iterator[tuple[str, tuple[str, ...], str, bool]]:
    """Members that may name the target: (member, stem words, kind, generic)."""
    for member, spec in members.items():
        if spec.get("location") == "headers":
            continue
        if not _shape_kind(shapes, spec.get("shape", "")):
            continue
        alias = _MEMBER_NOUNS.get((service, member))
        if alias is not None:
            yield member, alias, "name", False
            continue
        stem = member_stem(member)
        if stem is not None:
            words, kind, _plural = stem
            if words in _NOT_TARGETS:
                continue
            yield member, words, kind, words in ((), ("Resource",))
            continue
        bare = noun_words(member)
        if bare and (kebab(bare) in nouns or bare == op_noun or member in labels):
            yield member, bare, "name", False


def _contains(outer: tuple[str, ...], inner: tuple[str, ...]) -> bool:
    n = len(inner)
    return n > 0 and any(outer[i : i + n] == inner for i in range(len(outer) - n + 1))


def _choose_ident(
    candidates: list[tuple[str, tuple[str, ...], str, bool]],
    op_noun: tuple[str, ...],
    required: frozenset[str],
    labels: frozenset[str],
) -> tuple[str, tuple[str, ...], str, bool] | None:
    """The candidate most likely to name the target resource.

    A member whose stem *is* the operation's noun (StackName for DeleteStack) beats one
    inside it (Bucket for PutBucketVersioning), which beats a generic Name/Id when the
    operation names a noun, which beats any required identifier, URI label, or other.
    """
    best: tuple[int, tuple[str, tuple[str, ...], str, bool]] | None = None
    for cand in candidates:
        member, stem, _kind, generic = cand
        if generic:
            score = 60 if op_noun else 35
        elif stem == op_noun:
            score = 100
        elif _contains(op_noun, stem):
            score = 80 + len(stem)
        elif _contains(stem, op_noun):
            score = 30
        elif member in required:
            score = 40
        elif member in labels:
            score = 30
        else:
            score = 20
        score += (5 if member in required else 0) + (2 if member in labels else 0)
        if best is None or score > best[0]:
            best = (score, cand)
    return best[1] if best is not None else None


class _FormShapes:
    """Form layouts of one model's shapes, as botocore's query or EC2 serialiser writes
    them (``botocore/serialize.py``, ``QuerySerializer._serialize_type_*`` and
    ``EC2Serializer``). Structures are shared between the operations that use them; a
    shape met again while it is being built (a recursive shape) is read as opaque.
    """

    def __init__(self, shapes: dict[str, Any], protocol: str) -> None:
        self.shapes = shapes
        self.ec2 = protocol == "ec2"
        self.structures: dict[str, FormShape] = {}
        self.building: set[str] = set()

    def traits(self, ref: dict[str, Any]) -> dict[str, Any]:
        """A shape reference's serialisation traits: the shape's, overridden by the
        reference's own (botocore's ``ShapeResolver.resolve_shape_ref``)."""
        return {**self.shapes.get(ref.get("shape", ""), {}), **ref}

    def name(self, traits: dict[str, Any], default: str) -> str:
        """``_get_serialized_name``: EC2 prefers ``queryName``, then the capitalised
        ``locationName``; the query protocol takes ``locationName``."""
        if self.ec2:
            if "queryName" in traits:
                return str(traits["queryName"])
            location = str(traits.get("locationName", ""))
            return location[:1].upper() + location[1:] if location else default
        return str(traits.get("locationName", default))

    def shape(self, ref: dict[str, Any]) -> FormShape:
        name = str(ref.get("shape", ""))
        traits = self.traits(ref)
        kind = traits.get("type", "")
        if kind == "structure":
            return self.structure(name)
        if kind == "list":
            item_ref = traits.get("member", {})
            item = self.shape(item_ref)
            if self.ec2 or traits.get("flattened"):
                return FormShape("list", item=item, item_path="")
            return FormShape(
                "list", item=item, item_path=self.name(self.traits(item_ref), "member")
            )
        if kind == "map":
            key_name = self.name(self.traits(traits.get("key", {})), "key")
            value_name = self.name(self.traits(traits.get("value", {})), "value")
            value = self.shape(traits.get("value", {}))
            item_path = "" if traits.get("flattened") else "entry"
            return FormShape("map", item=value, item_path=item_path, key_name=key_name,
                             value_name=value_name)  # fmt: skip
        return SCALAR

    def structure(self, name: str) -> FormShape:
        found = self.structures.get(name)
        if found is not None:
            return found
        if name in self.building:
            return OPAQUE
        self.building.add(name)
        fields: list[tuple[str, str, FormShape]] = []
        for member, ref in self.shapes.get(name, {}).get("members", {}).items():
            traits = self.traits(ref)
            wire = self.name(traits, member)
            sub = self.shape(ref)
            if (
                not self.ec2
                and sub.kind == "list"
                and traits.get("flattened")
                and "locationName" in self.traits(traits.get("member", {}))
            ):
                # A flattened list whose member is named replaces the member's own
                # name with it (QuerySerializer._serialize_type_list).
                wire = self.name(self.traits(traits.get("member", {})), "")
            fields.append((wire, member, sub))
        self.building.discard(name)
        by_wire: dict[str, int] = {}
        for position, (wire, _member, _sub) in enumerate(fields):
            by_wire.setdefault(wire, position)
        shape = FormShape("structure", fields=tuple(fields), by_wire=by_wire)
        self.structures[name] = shape
        return shape


def _build_model(name: str, model: dict[str, Any]) -> ModelSpec:
    meta = model.get("metadata", {})
    shapes: dict[str, Any] = model.get("shapes", {})
    protocols = tuple(meta.get("protocols") or [meta.get("protocol", "")])
    form_protocol = "ec2" if "ec2" in protocols else "query"
    speaks_form = "awsQueryCompatible" in meta or any(p in ("query", "ec2") for p in protocols)
    form_shapes = _FormShapes(shapes, form_protocol) if speaks_form else None
    operations: dict[str, Any] = model.get("operations", {})

    nouns = frozenset(
        kebab(noun)
        for op_name in operations
        for verb, noun, _b in [split_operation(op_name)]
        if verb in _RESOURCE_VERBS and noun
    )

    # First pass: identifying members; remember which noun each Delete op's required
    # identifiers belong to, so ops named after an aspect (StopLogging) find their type.
    drafts: list[tuple[str, dict[str, Any], dict[str, Any], Any, tuple[str, ...]]] = []
    delete_nouns: dict[frozenset[str], set[str]] = defaultdict(set)
    for op_name, op in operations.items():
        input_shape = shapes.get(op.get("input", {}).get("shape", ""), {})
        members: dict[str, Any] = input_shape.get("members", {})
        required = frozenset(input_shape.get("required", []))
        _verb, op_noun, _b = split_operation(op_name)
        labels = frozenset(m for m, s in members.items() if s.get("location") == "uri")
        cands = list(_candidates(name, members, shapes, nouns, op_noun, labels))
        drafts.append((op_name, op, input_shape, cands, op_noun))
        if _verb == "Delete" and op_noun:
            key = frozenset(c[0] for c in cands if c[0] in required)
            if key:
                delete_nouns[key].add(kebab(op_noun))

    ops: dict[str, OpSpec] = {}
    for op_name, op, input_shape, cands, op_noun in drafts:
        members = input_shape.get("members", {})
        required = frozenset(input_shape.get("required", []))
        http = op.get("http", {})
        uri: str = http.get("requestUri", "/")
        path, _, query = uri.partition("?")
        query_literals = tuple(
            (k, v) for part in query.split("&") if part for k, _, v in [part.partition("=")]
        )
        uri_members = {
            spec.get("locationName", m): m
            for m, spec in members.items()
            if spec.get("location") == "uri"
        }
        label_names = tuple(uri_members.get(g.group(1), g.group(1)) for g in _LABEL.finditer(path))
        literal_len = len(_LABEL.sub("", path.rstrip("/")))  # trailing "/" is optional
        query_members = tuple(
            (str(spec.get("locationName", m)), m)
            for m, spec in members.items()
            if spec.get("location") == "querystring"
        )
        header_members = tuple(
            (str(spec.get("locationName", m)).lower(), m)
            for m, spec in members.items()
            if spec.get("location") == "header"
        )
        body_members = {m: spec for m, spec in members.items() if not spec.get("location")}
        body_names = tuple(
            (str(spec["locationName"]), m)
            for m, spec in body_members.items()
            if spec.get("locationName") and spec["locationName"] != m
        )
        form_shape = (
            form_shapes.structure(str(op.get("input", {}).get("shape", "")))
            if form_shapes is not None and op.get("input")
            else None
        )
        form_names = (
            tuple((wire, m) for wire, m, _s in form_shape.fields if wire != m)
            if form_shape is not None
            else ()
        )
        query_lists = frozenset(
            str(spec.get("locationName", m))
            for m, spec in members.items()
            if spec.get("location") == "querystring"
            and shapes.get(spec.get("shape", ""), {}).get("type") == "list"
        )
        query_map = any(
            spec.get("location") == "querystring"
            and shapes.get(spec.get("shape", ""), {}).get("type") == "map"
            for spec in members.values()
        )
        payload = str(input_shape.get("payload", ""))
        if payload:
            payload_shape = shapes.get(members.get(payload, {}).get("shape", ""), {})
            parse_body = payload_shape.get("type") == "structure"
        else:
            parse_body = bool(body_members)

        labels = frozenset(uri_members.values())
        chosen = _choose_ident(cands, op_noun, required, labels)
        ident = Ident(chosen[0], chosen[2], chosen[3]) if chosen is not None else None
        resource = _resource_noun(op_noun, nouns, chosen, cands, required, delete_nouns)
        ops[op_name] = OpSpec(
            name=op_name,
            method=str(http.get("method", "POST")).upper(),
            path=path or "/",
            query_literals=query_literals,
            required_query=tuple(w for w, m in query_members if m in required),
            required_headers=tuple(w for w, m in header_members if m in required),
            labels=label_names,
            greedy="+}" in path,
            literal_len=literal_len,
            host_prefix=str(op.get("endpoint", {}).get("hostPrefix", "")),
            deprecated=bool(op.get("deprecated", False)),
            query_members=query_members,
            header_members=header_members,
            body_names=body_names,
            form_names=form_names,
            payload=payload,
            parse_body=parse_body,
            ident=ident,
            resource=resource,
            express=_static_flag(op, "UseS3ExpressControlEndpoint") and "Bucket" not in members,
            body_wire={str(spec.get("locationName", m)): m for m, spec in body_members.items()},
            body_folded=_folded(
                (str(spec.get("locationName", m)), m) for m, spec in body_members.items()
            ),
            located=_folded(
                (str(spec.get("locationName", m)), m)
                for m, spec in members.items()
                if spec.get("location") in ("uri", "querystring", "header")
            ),
            query_lists=query_lists,
            query_map=query_map,
            form_shape=form_shape,
        )

    endpoint_prefix = str(meta.get("endpointPrefix", name))
    return ModelSpec(
        name=name,
        signing_name=str(meta.get("signingName", endpoint_prefix)),
        endpoint_prefix=endpoint_prefix,
        target_prefix=str(meta.get("targetPrefix", "")),
        api_version=str(meta.get("apiVersion", "")),
        protocols=protocols,
        query_compatible="awsQueryCompatible" in meta,
        resource_nouns=nouns,
        ops=ops,
    )


def _folded(names: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Lower-cased wire and member names -> member: the spellings a lenient server
    might take for a member (the first member to claim a spelling keeps it)."""
    pairs = list(names)
    out: dict[str, str] = {}
    for wire, member in pairs:
        out.setdefault(wire.lower(), member)
    for _wire, member in pairs:
        out.setdefault(member.lower(), member)
    return out


def _static_flag(op: dict[str, Any], name: str) -> bool:
    """An endpoint static context parameter set to true (``staticContextParams``)."""
    return bool(op.get("staticContextParams", {}).get(name, {}).get("value") is True)


def _resource_noun(
    op_noun: tuple[str, ...],
    nouns: frozenset[str],
    chosen: tuple[str, tuple[str, ...], str, bool] | None,
    cands: list[tuple[str, tuple[str, ...], str, bool]],
    required: frozenset[str],
    delete_nouns: dict[frozenset[str], set[str]],
) -> str:
    """The resource type noun: the op's own noun if the service manages such things,
    else the identifying member's stem, else the noun of the Delete operation taking
    the same required identifiers (StopLogging(Name) acts on what DeleteTrail(Name) deletes).
    """
    own = kebab(op_noun)
    if own in nouns:
        return own
    if chosen is not None and not chosen[3]:
        return _widest_noun(op_noun, chosen[1], nouns)
    if chosen is not None:
        key = frozenset(c[0] for c in cands if c[0] in required)
        found = delete_nouns.get(key, set())
        if len(found) == 1:
            return next(iter(found))
    return own


def _widest_noun(op_noun: tuple[str, ...], stem: tuple[str, ...], nouns: frozenset[str]) -> str:
    """The longest resource noun in the op's noun that ends with ``stem``.

    ``GroupId`` in AuthorizeSecurityGroupIngress names a *security group*: the service
    manages security groups, and "Group" ends that phrase.
    """
    best = stem
    n = len(stem)
    for end in range(n, len(op_noun) + 1):
        if op_noun[end - n : end] != stem:
            continue
        for start in range(end - n, -1, -1):
            phrase = op_noun[start:end]
            if len(phrase) > len(best) and kebab(phrase) in nouns:
                best = phrase
    return kebab(best)


def read_models(
    data_dir: Path | None = None, services: Iterable[str] | None = None
) -> tuple[Tables, dict[str, bytes]]:
    """Lookup tables and pickled models from botocore's data (all, or just ``services``)."""
    root = data_dir or botocore_data_dir()
    wanted = set(services) if services is not None else None
    by_signing: dict[str, list[str]] = defaultdict(list)
    by_prefix: dict[str, list[str]] = defaultdict(list)
    by_target: dict[str, list[str]] = defaultdict(list)
    by_action: dict[str, list[str]] = defaultdict(list)
    blobs: dict[str, bytes] = {}
    for service_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        name = service_dir.name
        if wanted is not None and name not in wanted:
            continue
        model_path = _latest(service_dir, "service-2")
        if model_path is None:
            continue
        rules_path = model_path.parent / "endpoint-rule-set-1.json.gz"
        rule_signing = (
            set(_walk_signing_names(_read_json(rules_path))) if rules_path.exists() else set()
        )
        spec = _build_model(name, _read_json(model_path))
        blobs[name] = pickle.dumps(spec, protocol=pickle.HIGHEST_PROTOCOL)
        for signing in {spec.signing_name, *rule_signing}:
            by_signing[signing].append(name)
        for prefix in {spec.endpoint_prefix, *rule_signing}:
            by_prefix[prefix].append(name)
        if spec.target_prefix:
            by_target[spec.target_prefix].append(name)
        if spec.speaks_query:
            for operation in spec.ops:
                by_action[operation].append(name)
    tables = Tables(
        botocore_version=botocore_version(),
        by_signing={k: tuple(v) for k, v in by_signing.items()},
        by_prefix={k: tuple(v) for k, v in by_prefix.items()},
        by_target={k: tuple(v) for k, v in by_target.items()},
        by_action={k: tuple(v) for k, v in by_action.items()},
    )
    return tables, blobs
