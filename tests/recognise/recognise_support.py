"""Helpers for the recogniser tests: real SDK requests captured before they are sent,
and hand-built requests for the protocols without an SDK here (Kubernetes, git).

AWS requests are produced by boto3 itself: a ``before-send`` handler captures the
signed ``AWSPreparedRequest`` and answers with an empty fake response, so nothing
leaves the process. Parameters come from the operation's input shape (required
members only), so every operation of a service can be generated without a table.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal
from urllib.parse import urlsplit

import boto3
from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from botocore.config import Config
from botocore.model import ListShape, MapShape, OperationModel, Shape, StructureShape

from guardproxy.recognise.request import HttpRequest

AddressingStyle = Literal["auto", "virtual", "path"]

FAKE_KEY = "AKIDEXAMPLE"
FAKE_SECRET = "fake-secret-for-tests"
LOCAL_ENDPOINT = "http://127.0.0.1:1"
ACCOUNT = "111122223333"


class _EmptyBody:
    def stream(self, **_kwargs: Any) -> Any:
        return iter([b""])


class Capture:
    """A boto3 client whose requests are captured instead of sent."""

    def __init__(
        self,
        service: str,
        *,
        endpoint_url: str | None = LOCAL_ENDPOINT,
        region: str = "us-east-1",
        addressing_style: AddressingStyle | None = None,
    ) -> None:
        session = boto3.session.Session(
            aws_access_key_id=FAKE_KEY,
            aws_secret_access_key=FAKE_SECRET,
            region_name=region,
        )
        config = Config(retries={"total_max_attempts": 1}, parameter_validation=True)
        if addressing_style is not None:
            config = config.merge(Config(s3={"addressing_style": addressing_style}))
        factory: Any = session  # boto3-stubs types client() per literal service name
        self.client: Any = factory.client(service, endpoint_url=endpoint_url, config=config)
        self.sent: list[AWSPreparedRequest] = []
        self.client.meta.events.register("before-send", self._capture)

    def _capture(self, request: AWSPreparedRequest, **_kwargs: Any) -> AWSResponse:
        self.sent.append(request)
        return AWSResponse(request.url, 200, {}, _EmptyBody())  # type: ignore[arg-type]

    @property
    def service_model(self) -> Any:
        return self.client.meta.service_model

    def call(self, operation: str, params: dict[str, Any]) -> HttpRequest:
        """Build, sign and capture one request of ``operation`` (an API name)."""
        before = len(self.sent)
        method = self.client.meta.method_to_api_mapping
        python_name = next(k for k, v in method.items() if v == operation)
        try:
            getattr(self.client, python_name)(**params)
        except Exception:  # the fake response rarely parses; the request is captured
            if len(self.sent) == before:
                raise
        return to_http_request(self.sent[-1])


_CLIENTS: dict[tuple[str, str | None, str, str | None], Capture] = {}


def capture(
    service: str,
    *,
    endpoint_url: str | None = LOCAL_ENDPOINT,
    region: str = "us-east-1",
    addressing_style: AddressingStyle | None = None,
) -> Capture:
    """A shared :class:`Capture` per configuration (building boto3 clients is slow)."""
    key = (service, endpoint_url, region, addressing_style)
    found = _CLIENTS.get(key)
    if found is None:
        found = Capture(
            service, endpoint_url=endpoint_url, region=region, addressing_style=addressing_style
        )
        _CLIENTS[key] = found
    return found


def to_http_request(prepared: AWSPreparedRequest) -> HttpRequest:
    """The proxy's view of a botocore request."""
    url = urlsplit(prepared.url)
    body: Any = prepared.body or b""
    if hasattr(body, "read"):
        body = body.read()
    if isinstance(body, str):
        body = body.encode()
    headers = tuple(
        (str(k).lower(), v.decode() if isinstance(v, bytes) else str(v))
        for k, v in prepared.headers.items()
    )
    default_port = 443 if url.scheme == "https" else 80
    return HttpRequest(
        method=prepared.method,
        scheme=url.scheme,
        host=url.hostname or "",
        port=url.port or default_port,
        path=url.path + (f"?{url.query}" if url.query else ""),
        headers=headers,
        body=bytes(body),
        host_header=url.netloc,
    )


# --------------------------------------------------------------------------- parameters


def _string(shape: Shape, member: str) -> str:
    enum: list[str] = getattr(shape, "enum", []) or []
    if enum:
        return enum[0]
    lowered = member.lower()
    if "account" in lowered and "id" in lowered:
        return ACCOUNT
    if lowered.endswith("url"):
        return f"https://sqs.us-east-1.amazonaws.com/{ACCOUNT}/gp-queue"
    minimum = int(shape.metadata.get("min", 1))
    value = f"gp-{lowered or 'value'}"[:60].replace("_", "-")
    return value + "x" * max(0, minimum - len(value))


def value_for(shape: Shape, member: str = "", depth: int = 0) -> Any:
    """A schema-valid value for ``shape`` using only required members."""
    kind = shape.type_name
    if kind == "structure":
        assert isinstance(shape, StructureShape)
        if depth > 8 or shape.metadata.get("document"):
            return {}
        names = list(shape.required_members)
        if shape.is_tagged_union and not names:
            names = list(shape.members)[:1]
        return {name: value_for(shape.members[name], name, depth + 1) for name in names}
    if kind == "list":
        assert isinstance(shape, ListShape)
        count = max(1, int(shape.metadata.get("min", 1)))
        return [value_for(shape.member, member, depth + 1) for _ in range(count)]
    if kind == "map":
        assert isinstance(shape, MapShape)
        return {"k": value_for(shape.value, member, depth + 1)}
    if kind == "string":
        return _string(shape, member)
    if kind in ("integer", "long"):
        return max(1, int(shape.metadata.get("min", 1)))
    if kind in ("float", "double"):
        return 1.0
    if kind == "boolean":
        return False
    if kind == "timestamp":
        return dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    if kind == "blob":
        return b"x"
    return "x"


def minimal_params(operation: OperationModel) -> dict[str, Any]:
    """Required input members of ``operation`` with made-up valid values."""
    shape = operation.input_shape
    if shape is None:
        return {}
    value = value_for(shape)
    assert isinstance(value, dict)
    return value


# --------------------------------------------------------------------------- other protocols


def http(
    method: str,
    path: str,
    *,
    host: str = "127.0.0.1",
    port: int = 6443,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    scheme: str = "https",
) -> HttpRequest:
    """A hand-built request."""
    pairs = tuple((k.lower(), v) for k, v in (headers or {}).items())
    return HttpRequest(
        method=method,
        scheme=scheme,
        host=host,
        port=port,
        path=path,
        headers=pairs,
        body=body,
        host_header=f"{host}:{port}",
    )


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def pb_bytes(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def pb_varint(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value & ((1 << 64) - 1))


def k8s_protobuf(
    api_version: str, kind: str, name: str, namespace: str = "", replicas: int | None = None
) -> bytes:
    """A ``k8s\\x00`` + runtime.Unknown body as client-go writes it."""
    meta = pb_bytes(1, name.encode())
    if namespace:
        meta += pb_bytes(3, namespace.encode())
    obj = pb_bytes(1, meta)
    if replicas is not None:
        obj += pb_bytes(2, pb_varint(1, replicas))
    type_meta = pb_bytes(1, api_version.encode()) + pb_bytes(2, kind.encode())
    unknown = (
        pb_bytes(1, type_meta)
        + pb_bytes(2, obj)
        + pb_bytes(4, b"application/vnd.kubernetes.protobuf")
    )
    return b"k8s\x00" + unknown


def pkt(payload: bytes) -> bytes:
    return f"{len(payload) + 4:04x}".encode() + payload


ZERO = "0" * 40
