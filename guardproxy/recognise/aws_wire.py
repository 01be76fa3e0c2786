"""Reading an AWS request off the wire: SigV4 scope, endpoint host, and bodies.

Everything here is protocol knowledge shared by all services; which operation a
request is comes from the model index (``aws_match``).
"""

from __future__ import annotations

import json
import re
import struct
import xml.etree.ElementTree as ET
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from guardproxy.recognise import cbor
from guardproxy.recognise.hosts import canonical_host
from guardproxy.recognise.request import HttpRequest

_CREDENTIAL = re.compile(r"Credential=([^,\s]+)")
_REGION = re.compile(r"^[a-z]{2}(?:-gov|-iso[a-z]*)?-[a-z]+-\d+$")
_ACCOUNT = re.compile(r"^\d{12}$")
_S3_LABEL = re.compile(
    r"^s3(?:-fips|-external-1|-accelerate|-global|-outposts"
    r"|-accesspoint(?:-fips)?|-object-lambda(?:-fips)?"
    r"|-(?:fips-)?[a-z]{2}(?:-gov|-iso[a-z]*)?-[a-z]+-\d+)?$|^s3express-"
)
_AWS_SUFFIXES = (".amazonaws.com.cn", ".amazonaws.com", ".api.aws", ".amazonaws.eu")

MAX_FORM_FIELDS = 10_000
MAX_XML_DEPTH = 64


@dataclass(frozen=True, slots=True)
class Credential:
    """The SigV4 credential scope: who signed for which region and service.

    The access key id is deliberately not kept.
    """

    region: str
    service: str


_SIGV4 = ("AWS4-HMAC-SHA256", "AWS4-ECDSA-P256-SHA256")


def _scope(credential: str, algorithm: str, region_set: str) -> Credential | None:
    """The scope of one ``<key>/<date>/<region>/<service>/aws4_request`` credential
    (SigV4a has no region in it: the region set header or parameter carries it)."""
    parts = credential.split("/")
    if algorithm == "AWS4-ECDSA-P256-SHA256" and len(parts) >= 4:
        first = region_set.split(",", maxsplit=1)[0].strip()
        return Credential(region="" if first == "*" else first, service=parts[-2])
    if len(parts) >= 5:
        return Credential(region=parts[-3], service=parts[-2])
    return None


def header_scopes(request: HttpRequest) -> list[Credential]:
    """Every SigV4/SigV4a scope in the ``Authorization`` header(s), in order.

    A request carries one; two headers, or two ``Credential=`` in one, are not
    something any SDK sends, and which one a server would verify is undocumented,
    so each is a reading.
    """
    scopes: list[Credential] = []
    for name, auth in request.headers:
        if name != "authorization" or not auth.startswith(_SIGV4):
            continue
        algorithm = auth.split(None, 1)[0]
        region_set = request.header("x-amz-region-set") if "ECDSA" in algorithm else ""
        for credential in _CREDENTIAL.findall(auth):
            scope = _scope(credential, algorithm, region_set)
            if scope is not None and scope not in scopes:
                scopes.append(scope)
    return scopes


def query_scopes(request: HttpRequest) -> list[Credential]:
    """Every SigV4/SigV4a scope of a presigned URL (``X-Amz-Credential`` in the query)."""
    values = request.query_values
    credentials = values.get("X-Amz-Credential")
    if not credentials:
        return []
    algorithm = (values.get("X-Amz-Algorithm") or ["AWS4-HMAC-SHA256"])[0]
    region_set = (values.get("X-Amz-Region-Set") or [request.header("x-amz-region-set")])[0]
    scopes: list[Credential] = []
    for credential in credentials:
        scope = _scope(credential, algorithm, region_set)
        if scope is not None and scope not in scopes:
            scopes.append(scope)
    return scopes


def credential_scopes(request: HttpRequest) -> list[Credential]:
    """Every distinct SigV4 scope the request carries: header ones first, then the
    presigned query's. More than one (header and query auth together, two headers,
    two scopes) makes the service and region ambiguous: S3 rejects a request with
    both (``InvalidArgument: Only one auth mechanism allowed``), other endpoints
    and emulators pick one by rules nobody documents."""
    scopes = header_scopes(request)
    for scope in query_scopes(request):
        if scope not in scopes:
            scopes.append(scope)
    return scopes


def credential_scope(request: HttpRequest) -> Credential | None:
    """The first SigV4/SigV4a scope (header before presigned query), if any."""
    scopes = credential_scopes(request)
    return scopes[0] if scopes else None


def is_aws_host(host: str) -> bool:
    """Whether ``host`` is an AWS API endpoint name (any spelling, see ``hosts``)."""
    return canonical_host(host).endswith(_AWS_SUFFIXES)


@dataclass(frozen=True, slots=True)
class HostInfo:
    """What an ``*.amazonaws.com`` host name says."""

    prefixes: tuple[str, ...] = ()  # endpoint prefixes it may belong to
    region: str = ""
    bucket: str = ""  # S3 virtual-hosted bucket or access point name
    account: str = ""  # a 12-digit account label (s3control, access points)
    labels_before: tuple[str, ...] = ()  # host-prefix labels in front of the endpoint prefix


def _region_after(labels: list[str], start: int) -> str:
    for label in labels[start:]:
        if _REGION.match(label):
            return label
    return ""


@lru_cache(maxsize=4096)
def parse_host(host: str, known_prefixes: frozenset[str]) -> HostInfo:
    """Endpoint prefix, region, S3 bucket and account from an AWS host name."""
    host = canonical_host(host)
    suffix = next((s for s in _AWS_SUFFIXES if host.endswith(s)), "")
    if not suffix:
        return HostInfo()
    return _parse_labels(host[: -len(suffix)].split("."), known_prefixes)


def _s3_host(labels: list[str], at: int) -> HostInfo:
    """Bucket (or access point and account) in front of the S3 label, region after it."""
    label = labels[at]
    bucket = ".".join(labels[:at])
    account = ""
    if label.startswith("s3-accesspoint") and bucket:
        name, _, acct = bucket.rpartition("-")
        if _ACCOUNT.match(acct):
            bucket, account = name, acct
    region = _region_after(labels, at + 1)
    if not region and label.startswith("s3-"):
        tail = label.removeprefix("s3-").removeprefix("fips-")
        region = tail if _REGION.match(tail) else ""
    prefix = "s3-object-lambda" if label.startswith("s3-object-lambda") else "s3"
    return HostInfo(prefixes=(prefix,), region=region, bucket=bucket, account=account)


def _parse_labels(labels: list[str], known: Container[str]) -> HostInfo:
    # S3 first, and its *last* S3-style label: bucket names may contain dots, and may
    # look like endpoint prefixes themselves ("logs.s3.us-west-2...").
    # An S3-style label that is also another model's endpoint prefix (s3-outposts is
    # S3 on Outposts' control plane) is S3 only with a bucket or access point in front.
    s3_labels = [
        i
        for i, label in enumerate(labels)
        if _S3_LABEL.match(label) and (i > 0 or label == "s3" or label not in known)
    ]
    if s3_labels:
        return _s3_host(labels, s3_labels[-1])
    for start in range(len(labels)):
        for end in range(len(labels), start, -1):
            candidate = ".".join(labels[start:end])
            plain = candidate.replace("-fips", "")
            if candidate in known or plain in known:
                in_front = tuple(labels[:start])
                account = next((lab for lab in in_front if _ACCOUNT.match(lab)), "")
                return HostInfo(
                    prefixes=(plain if plain in known else candidate,),
                    region=_region_after(labels, end),
                    account=account,
                    labels_before=in_front,
                )
    return HostInfo(region=_region_after(labels, 0))


# --------------------------------------------------------------------------- bodies


def form_tree(pairs: Iterable[tuple[str, str]], *, last: bool = False) -> dict[str, Any]:
    """Nested parameters from awsQuery/EC2 form fields, read leniently.

    ``InstanceId.1=a&InstanceId.2=b`` -> {"InstanceId": ["a", "b"]};
    ``Tags.member.1.Key=k`` -> {"Tags": [{"Key": "k"}]}; ``member``/``entry`` list and map
    markers are dropped and numbered levels become lists. A key given twice keeps its
    first value, or its last with ``last``. The strict reading, key by key as
    botocore writes them, is ``aws_params``'s; this one reads what a lenient server
    might make of keys botocore never writes.
    """
    root: dict[str, Any] = {}
    for count, (key, value) in enumerate(pairs):
        if count >= MAX_FORM_FIELDS:
            break
        node = root
        parts = [p for p in key.split(".") if p not in ("member", "entry")]
        if not parts:
            continue
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                if child is not None:
                    break
                child = {}
                node[part] = child
            node = child
        else:
            if last and not isinstance(node.get(parts[-1]), dict):
                node[parts[-1]] = value
            else:
                node.setdefault(parts[-1], value)
    tree = _listify(root)
    return tree if isinstance(tree, dict) else {}


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    converted = {k: _listify(v) for k, v in node.items()}
    if converted and all(k.isdigit() for k in converted):
        return [converted[k] for k in sorted(converted, key=int)]
    return converted


class Pairs(list[tuple[Any, Any]]):
    """A JSON object or CBOR map as its (key, value) pairs in wire order, repeated keys
    included (``json.loads`` would keep only the last). ``resolve`` turns it into
    plain values, keeping the first or the last of a repeated key."""

    __slots__ = ("repeated",)

    def __init__(self, pairs: Iterable[tuple[Any, Any]]) -> None:
        super().__init__(pairs)
        self.repeated = len({key for key, _ in self}) != len(self)


def has_repeats(value: Any, depth: int = 0) -> bool:
    """Whether any object in ``value`` (a ``Pairs`` tree) repeats a key."""
    if depth > MAX_XML_DEPTH * 2:
        return False
    if isinstance(value, Pairs):
        return value.repeated or any(has_repeats(v, depth + 1) for _, v in value)
    if isinstance(value, list):
        return any(has_repeats(v, depth + 1) for v in value)
    return False


def resolve(value: Any, *, last: bool) -> Any:
    """Plain dicts and lists from a ``Pairs`` tree; a repeated key keeps its first value,
    or its last with ``last`` (what ``json.loads`` does)."""
    if isinstance(value, Pairs):
        out: dict[Any, Any] = {}
        for key, item in value:
            if last or key not in out:
                out[key] = resolve(item, last=last)
        return out
    if isinstance(value, list):
        return [resolve(item, last=last) for item in value]
    return value


def parse_json_pairs(body: bytes) -> Any:
    """JSON body as a ``Pairs`` tree, or None when empty or not JSON."""
    if not body.strip():
        return None
    try:
        return json.loads(body, object_pairs_hook=Pairs)
    except (ValueError, RecursionError):
        return None


def parse_cbor_pairs(body: bytes) -> Any:
    """CBOR body as a ``Pairs`` tree, or None when not CBOR."""
    try:
        return cbor.loads(body, pairs_hook=Pairs)
    except (cbor.CborError, RecursionError, OverflowError, ValueError, struct.error):
        return None


def parse_json(body: bytes) -> Any:
    """JSON body (a repeated key keeps its last value), or None."""
    found = parse_json_pairs(body)
    return None if found is None else resolve(found, last=True)


def parse_cbor(body: bytes) -> Any:
    """CBOR body (a repeated key keeps its last value), or None."""
    found = parse_cbor_pairs(body)
    return None if found is None else resolve(found, last=True)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _xml_obj(element: ET.Element, depth: int) -> Any:
    children = list(element)
    if not children or depth > MAX_XML_DEPTH:
        return (element.text or "").strip()
    out: dict[str, Any] = {}
    for child in children:
        tag = _local(child.tag)
        value = _xml_obj(child, depth + 1)
        if tag in out:
            existing = out[tag]
            if isinstance(existing, list):
                existing.append(value)
            else:
                out[tag] = [existing, value]
        else:
            out[tag] = value
    return out


def parse_xml(body: bytes) -> tuple[str, Any] | None:
    """(root tag, nested value) of an XML body, or None.

    Documents with a DOCTYPE are refused: AWS request bodies never carry one, and
    refusing them rules out entity-expansion tricks.
    """
    if not body.strip() or b"<!DOCTYPE" in body.upper() or b"<!ENTITY" in body.upper():
        return None
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return None
    return _local(root.tag), _xml_obj(root, 0)


def rename(values: Mapping[str, Any], names: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """``values`` with wire names replaced by member names."""
    mapping = dict(names)
    return {mapping.get(k, k): v for k, v in values.items()}
