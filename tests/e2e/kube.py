"""A Kubernetes-like API server over mutual TLS, good enough for real kubectl.

Only what kubectl needs for namespaces and pods: legacy discovery, list/get/create/
delete/patch, watch streamed as chunked JSON lines, and ``Table`` output.  State is in
memory and per server, so each test starts from the same seed.
"""

from __future__ import annotations

import base64
import copy
import datetime
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import yaml

from ._http import (
    JSON,
    LOOPBACK,
    BaseHandler,
    RecordedRequest,
    UpstreamServer,
    peer_subject,
    server_tls_context,
)
from .pki import ThrowawayPki


def _clone(obj: JSON) -> JSON:
    """Deep copy, so callers never share mutable state with the store."""
    return copy.deepcopy(obj)


def _merge_patch(target: JSON, patch: JSON) -> JSON:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge_patch(target[key], value)
        else:
            target[key] = value
    return target


def _rfc3339(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _age(created: str) -> str:
    then = datetime.datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    seconds = int((datetime.datetime.now(datetime.UTC) - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def kube_status(code: int, reason: str, message: str, details: JSON | None = None) -> JSON:
    """A ``v1 Status`` object, the body of every Kubernetes API error."""
    status: JSON = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        status["details"] = details
    return status


@dataclass(frozen=True)
class _Resource:
    """One served resource type: enough metadata for discovery and Table output."""

    plural: str
    singular: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...]
    columns: tuple[str, ...]
    row: Callable[[JSON], list[Any]]

    def discovery(self) -> JSON:
        entry: JSON = {
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": ["create", "delete", "get", "list", "patch", "watch"],
            "shortNames": list(self.short_names),
        }
        if self.namespaced:
            entry["categories"] = ["all"]
        return entry


def _namespace_row(obj: JSON) -> list[Any]:
    meta = obj["metadata"]
    return [
        meta["name"],
        obj.get("status", {}).get("phase", "Active"),
        _age(meta["creationTimestamp"]),
    ]


def _pod_row(obj: JSON) -> list[Any]:
    meta = obj["metadata"]
    containers = obj.get("spec", {}).get("containers", [])
    phase = obj.get("status", {}).get("phase", "Pending")
    ready = len(containers) if phase == "Running" else 0
    return [meta["name"], f"{ready}/{len(containers)}", phase, 0, _age(meta["creationTimestamp"])]


_RESOURCES: dict[str, _Resource] = {
    "namespaces": _Resource(
        "namespaces",
        "namespace",
        "Namespace",
        False,
        ("ns",),
        ("Name", "Status", "Age"),
        _namespace_row,
    ),
    "pods": _Resource(
        "pods",
        "pod",
        "Pod",
        True,
        ("po",),
        ("Name", "Ready", "Status", "Restarts", "Age"),
        _pod_row,
    ),
}

_COLUMN_TYPES = {"Restarts": "integer"}


@dataclass(frozen=True)
class WatchEvent:
    """A change in the store, numbered by the resourceVersion it produced."""

    rv: int
    type: str
    resource: str
    namespace: str | None
    obj: JSON


class KubeStore:
    """In-memory object store with monotonically increasing resourceVersions and a change feed.

    Watches are served from the change feed, so a watch that starts from a list's
    resourceVersion sees exactly the later changes, like a real API server.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._rv = 1000
        self._objects: dict[tuple[str, str | None, str], JSON] = {}
        self._events: list[WatchEvent] = []

    @property
    def resource_version(self) -> int:
        with self._cond:
            return self._rv

    def _next_rv(self) -> int:
        self._rv += 1
        return self._rv

    def _emit(self, kind: str, resource: str, namespace: str | None, obj: JSON) -> None:
        self._events.append(WatchEvent(self._rv, kind, resource, namespace, obj))
        self._cond.notify_all()

    def list_objects(self, resource: str, namespace: str | None) -> list[JSON]:
        with self._cond:
            return [
                _clone(obj)
                for (res, ns, _), obj in sorted(self._objects.items(), key=lambda kv: str(kv[0]))
                if res == resource and (namespace is None or ns == namespace)
            ]

    def get(self, resource: str, namespace: str | None, name: str) -> JSON | None:
        with self._cond:
            obj = self._objects.get((resource, namespace, name))
            return _clone(obj) if obj is not None else None

    def create(
        self, resource: str, namespace: str | None, obj: JSON, dry_run: bool = False
    ) -> JSON:
        """Store ``obj`` (filling server-set metadata); raises KeyError if it exists."""
        with self._cond:
            name = obj["metadata"]["name"]
            if (resource, namespace, name) in self._objects:
                raise KeyError(name)
            meta = obj["metadata"]
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", _rfc3339(time.time()))
            if namespace is not None:
                meta["namespace"] = namespace
            if resource == "namespaces":
                obj.setdefault("spec", {"finalizers": ["kubernetes"]})
                obj["status"] = {"phase": "Active"}
                meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = name
            if dry_run:
                meta["resourceVersion"] = str(self._rv)
                return obj
            meta["resourceVersion"] = str(self._next_rv())
            self._objects[(resource, namespace, name)] = obj
            self._emit("ADDED", resource, namespace, obj)
            return _clone(obj)

    def delete(
        self, resource: str, namespace: str | None, name: str, dry_run: bool = False
    ) -> JSON | None:
        """Remove an object (and a namespace's pods); returns its final state or None."""
        with self._cond:
            obj = self._objects.get((resource, namespace, name))
            if obj is None:
                return None
            final = _clone(obj)
            final["metadata"]["deletionTimestamp"] = _rfc3339(time.time())
            if resource == "namespaces":
                final["status"] = {"phase": "Terminating"}
            if dry_run:
                return final
            if resource == "namespaces":
                for key in [k for k in self._objects if k[0] == "pods" and k[1] == name]:
                    pod = self._objects.pop(key)
                    pod["metadata"]["resourceVersion"] = str(self._next_rv())
                    self._emit("DELETED", "pods", name, pod)
            del self._objects[(resource, namespace, name)]
            final["metadata"]["resourceVersion"] = str(self._next_rv())
            self._emit("DELETED", resource, namespace, final)
            return _clone(final)

    def patch(
        self, resource: str, namespace: str | None, name: str, patch: JSON, dry_run: bool = False
    ) -> JSON | None:
        """Apply a JSON merge patch (RFC 7386); returns the new object or None if absent."""
        with self._cond:
            current = self._objects.get((resource, namespace, name))
            if current is None:
                return None
            merged = _merge_patch(_clone(current), patch)
            merged["metadata"]["name"] = name
            if dry_run:
                return merged
            merged["metadata"]["resourceVersion"] = str(self._next_rv())
            self._objects[(resource, namespace, name)] = merged
            self._emit("MODIFIED", resource, namespace, merged)
            return _clone(merged)

    def touch_first(self, resource: str, namespace: str | None) -> None:
        """Annotate the first matching object, producing a MODIFIED event (the watch 'tick')."""
        with self._cond:
            keys = sorted(
                (
                    k
                    for k in self._objects
                    if k[0] == resource and (namespace is None or k[1] == namespace)
                ),
                key=str,
            )
            if not keys:
                return
            obj = self._objects[keys[0]]
            annotations = obj["metadata"].setdefault("annotations", {})
            annotations["e2e.guardproxy/watch-tick"] = str(time.time())
            obj["metadata"]["resourceVersion"] = str(self._next_rv())
            self._emit("MODIFIED", resource, keys[0][1], obj)

    def events_after(
        self, rv: int, resource: str, namespace: str | None, wait: float
    ) -> list[WatchEvent]:
        """Events newer than ``rv`` for this collection, waiting up to ``wait`` s for one."""

        def pending() -> list[WatchEvent]:
            return [
                e
                for e in self._events
                if e.rv > rv
                and e.resource == resource
                and (namespace is None or e.namespace == namespace)
            ]

        with self._cond:
            self._cond.wait_for(lambda: bool(pending()), timeout=wait)
            return [
                WatchEvent(e.rv, e.type, e.resource, e.namespace, _clone(e.obj)) for e in pending()
            ]


def _seed(store: KubeStore) -> None:
    """Namespaces default/prod/dev (plus kube-system) and a few pods."""
    created = _rfc3339(time.time() - 3 * 86400)
    for ns in ("default", "kube-system", "prod", "dev"):
        store.create(
            "namespaces",
            None,
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": ns, "creationTimestamp": created},
            },
        )
    pods = {
        "default": ["web-5d9c7b-abcde", "web-5d9c7b-fghij"],
        "prod": ["api-0", "api-1"],
        "dev": ["scratch"],
    }
    for ns, names in pods.items():
        for name in names:
            store.create(
                "pods",
                ns,
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "name": name,
                        "creationTimestamp": created,
                        "labels": {"app": name.split("-")[0]},
                    },
                    "spec": {"containers": [{"name": "main", "image": "registry.example/app:1.0"}]},
                    "status": {"phase": "Running", "podIP": "10.0.0.1"},
                },
            )


def _go_duration(text: str) -> float:
    """Seconds in a Go duration like ``3s``, ``1m30s`` or ``500ms`` (inf if unparsable)."""
    match = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+)ms)?", text)
    if not match or not text:
        return float("inf")
    h, m, sec, ms = match.groups()
    return int(h or 0) * 3600 + int(m or 0) * 60 + float(sec or 0) + int(ms or 0) / 1000


MERGE_PATCH_TYPES = ("application/merge-patch+json", "application/strategic-merge-patch+json")
PROTOBUF_MEDIA_TYPE = "application/vnd.kubernetes.protobuf"


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _pb_fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """Top-level (field number, value) pairs of a protobuf message; enough for ObjectMeta."""
    fields: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            size, pos = _varint(data, pos)
            value, pos = data[pos : pos + size], pos + size
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = data[pos : pos + size], pos + size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        fields.append((number, value))
    return fields


def _pb_strings(data: bytes) -> dict[int, str]:
    return {n: v.decode() for n, v in _pb_fields(data) if isinstance(v, bytes)}


def _pb_map(entries: list[int | bytes]) -> dict[str, str]:
    pairs = (_pb_strings(e) for e in entries if isinstance(e, bytes))
    return {p.get(1, ""): p.get(2, "") for p in pairs}


def decode_k8s_protobuf(body: bytes) -> JSON:
    """Decode the parts of a Kubernetes protobuf object that creation needs.

    kubectl's typed clients (``kubectl create namespace``) send
    ``application/vnd.kubernetes.protobuf`` whatever discovery says: the envelope is
    ``k8s\\0`` + ``runtime.Unknown{typeMeta{apiVersion=1, kind=2}=1, raw=2}`` and
    ``raw`` carries ``ObjectMeta`` as field 1 (name=1, generateName=2, namespace=3,
    labels=11, annotations=12).  Spec and status are not decoded.
    """
    if not body.startswith(b"k8s\x00"):
        raise ValueError("missing the k8s protobuf magic")
    envelope = dict(_pb_fields(body[4:]))
    type_meta = _pb_strings(cast(bytes, envelope.get(1, b"")))
    raw = cast(bytes, envelope.get(2, b""))
    meta_fields = _pb_fields(
        next((v for n, v in _pb_fields(raw) if n == 1 and isinstance(v, bytes)), b"")
    )
    strings = {n: v.decode() for n, v in meta_fields if isinstance(v, bytes) and n in (1, 2, 3)}
    meta: JSON = {"name": strings.get(1) or ""}
    if strings.get(3):
        meta["namespace"] = strings[3]
    if labels := _pb_map([v for n, v in meta_fields if n == 11]):
        meta["labels"] = labels
    if annotations := _pb_map([v for n, v in meta_fields if n == 12]):
        meta["annotations"] = annotations
    return {"apiVersion": type_meta.get(1, "v1"), "kind": type_meta.get(2, ""), "metadata": meta}


def _dry_run(entry: RecordedRequest) -> bool:
    """``dryRun=All`` as kube-apiserver reads it: a DELETE with a body takes its options
    from the body only, any other request from the query (handlers/delete.go)."""
    if entry.method == "DELETE" and entry.body:
        try:
            options = json.loads(entry.body)
        except ValueError:
            return True  # the API server refuses the request (400): nothing is deleted
        return isinstance(options, dict) and "All" in (options.get("dryRun") or [])
    return "All" in entry.query.get("dryRun", [])


class _KubeHandler(BaseHandler):
    """Route Kubernetes REST calls onto the :class:`KubeStore` of the owning server."""

    TABLE_MEDIA = "as=Table"

    @property
    def api(self) -> KubeApiServer:
        return cast(KubeApiServer, self.server.upstream)

    def _dispatch(self) -> None:
        try:
            body = self.read_body()
        except ValueError:
            self.send_json(413, kube_status(413, "RequestEntityTooLarge", "body too large"))
            return
        entry = self.record(body)
        if not self._authorized(entry):
            return
        try:
            self._route(entry)
        except OSError:
            self.close_connection = True

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch  # noqa: N815

    def _authorized(self, entry: RecordedRequest) -> bool:
        bearer = entry.header("Authorization") or ""
        if self.api.token_user is not None and bearer:
            scheme, _, token = bearer.partition(" ")
            if scheme.lower() != "bearer" or self.api.token_user(token.strip()) is None:
                self.send_json(401, kube_status(401, "Unauthorized", "Unauthorized"))
                return False
            return True
        if entry.client_cn is None:
            self.send_json(401, kube_status(401, "Unauthorized", "Unauthorized"))
            return False
        if "system:masters" not in peer_subject(self.request, "organizationName"):
            msg = f'User "{entry.client_cn}" cannot {entry.method.lower()} {entry.path}'
            self.send_json(403, kube_status(403, "Forbidden", msg))
            return False
        return True

    def _route(self, entry: RecordedRequest) -> None:
        parts = [p for p in entry.path.split("/") if p]
        method = entry.method
        if method == "GET" and entry.path in ("/version", "/version/"):
            self.send_json(200, self.api.version_info())
        elif method == "GET" and parts == ["api"]:
            self._discovery(self.api.api_versions())
        elif method == "GET" and parts == ["apis"]:
            self._discovery({"kind": "APIGroupList", "apiVersion": "v1", "groups": []})
        elif method == "GET" and parts == ["api", "v1"]:
            self._discovery(
                {
                    "kind": "APIResourceList",
                    "groupVersion": "v1",
                    "resources": [r.discovery() for r in _RESOURCES.values()],
                }
            )
        elif parts[:2] == ["api", "v1"] and len(parts) > 2:
            self._resource_call(entry, parts[2:])
        else:
            self.send_json(
                404,
                kube_status(404, "NotFound", "the server could not find the requested resource"),
            )

    def _discovery(self, payload: JSON) -> None:
        """Legacy discovery only: aggregated (apidiscovery.k8s.io/v2) answers 406 if demanded."""
        accept = self.headers.get("Accept", "")
        wants = [a.strip() for a in accept.split(",") if a.strip()]
        legacy_ok = not wants or any(
            a.split(";")[0] in ("application/json", "*/*", "application/*")
            and "apidiscovery" not in a
            for a in wants
        )
        if not legacy_ok:
            self.send_json(
                406, kube_status(406, "NotAcceptable", "only application/json is served")
            )
            return
        self.send_json(200, payload)

    def _resource_call(self, entry: RecordedRequest, rest: list[str]) -> None:
        # rest: [plural] or [plural, name], optionally behind ["namespaces", ns]
        namespace: str | None = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        if not rest or rest[0] not in _RESOURCES or len(rest) > 2:
            self.send_json(
                404,
                kube_status(404, "NotFound", "the server could not find the requested resource"),
            )
            return
        res = _RESOURCES[rest[0]]
        name = rest[1] if len(rest) == 2 else None
        if namespace is not None and not res.namespaced:
            self.send_json(404, kube_status(404, "NotFound", f"{res.plural} is not namespaced"))
            return
        query = entry.query
        dry_run = _dry_run(entry)
        method = entry.method
        if method == "GET" and name is None:
            if query.get("watch", ["false"])[0] in ("1", "true"):
                self._watch(res, namespace, query)
            else:
                self._list(res, namespace, query)
        elif method == "GET" and name is not None:
            obj = self.api.store.get(res.plural, namespace, name)
            if obj is None:
                self._not_found(res, name)
            else:
                self._send_objects(res, [obj], single=True)
        elif method == "POST" and name is None:
            self._create(res, namespace, entry, dry_run)
        elif method == "DELETE" and name is not None:
            gone = self.api.store.delete(res.plural, namespace, name, dry_run=dry_run)
            if gone is None:
                self._not_found(res, name)
            else:
                self.send_json(200, gone)
        elif method == "PATCH" and name is not None:
            self._patch(res, namespace, name, entry, dry_run)
        else:
            self.send_json(405, kube_status(405, "MethodNotAllowed", f"{method} is not supported"))

    def _patch(
        self,
        res: _Resource,
        namespace: str | None,
        name: str,
        entry: RecordedRequest,
        dry_run: bool,
    ) -> None:
        """Merge patches only (kubectl label, annotate, client-side apply)."""
        ctype = (entry.header("Content-Type") or "").split(";")[0].strip()
        if ctype not in MERGE_PATCH_TYPES:
            self.send_json(
                415, kube_status(415, "UnsupportedMediaType", f"unsupported patch type {ctype!r}")
            )
            return
        try:
            patch = json.loads(entry.body)
        except ValueError:
            self.send_json(400, kube_status(400, "BadRequest", "patch is not JSON"))
            return
        patched = self.api.store.patch(res.plural, namespace, name, patch, dry_run=dry_run)
        if patched is None:
            self._not_found(res, name)
        else:
            self.send_json(200, patched)

    def _not_found(self, res: _Resource, name: str) -> None:
        self.send_json(
            404,
            kube_status(
                404,
                "NotFound",
                f'{res.plural} "{name}" not found',
                {"name": name, "kind": res.plural},
            ),
        )

    def _create(
        self, res: _Resource, namespace: str | None, entry: RecordedRequest, dry_run: bool
    ) -> None:
        ctype = (entry.header("Content-Type") or "").split(";")[0].strip()
        if ctype not in ("application/json", PROTOBUF_MEDIA_TYPE):
            self.send_json(
                415, kube_status(415, "UnsupportedMediaType", f"unsupported media type {ctype!r}")
            )
            return
        try:
            if ctype == PROTOBUF_MEDIA_TYPE:
                obj = decode_k8s_protobuf(entry.body)
            else:
                obj = json.loads(entry.body)
            name = obj["metadata"]["name"]
            if not name or not isinstance(name, str):
                raise KeyError("metadata.name")
        except (ValueError, KeyError, TypeError, IndexError):
            self.send_json(
                400, kube_status(400, "BadRequest", "expected an object with metadata.name")
            )
            return
        if obj.get("kind") != res.kind:
            self.send_json(400, kube_status(400, "BadRequest", f"expected kind {res.kind}"))
            return
        if namespace is not None and self.api.store.get("namespaces", None, namespace) is None:
            self._not_found(_RESOURCES["namespaces"], namespace)
            return
        try:
            created = self.api.store.create(res.plural, namespace, obj, dry_run=dry_run)
        except KeyError:
            self.send_json(
                409,
                kube_status(
                    409,
                    "AlreadyExists",
                    f'{res.plural} "{name}" already exists',
                    {"name": name, "kind": res.plural},
                ),
            )
            return
        self.send_json(201, created)

    def _select(self, objs: list[JSON], query: dict[str, list[str]]) -> list[JSON]:
        for selector in query.get("fieldSelector", []):
            for term in filter(None, selector.split(",")):
                key, _, value = term.partition("=")
                value = value.lstrip("=")
                if key == "metadata.name":
                    objs = [o for o in objs if o["metadata"]["name"] == value]
                elif key == "metadata.namespace":
                    objs = [o for o in objs if o["metadata"].get("namespace") == value]
        for selector in query.get("labelSelector", []):
            for term in filter(None, selector.split(",")):
                key, _, value = term.partition("=")
                value = value.lstrip("=")
                objs = [o for o in objs if o["metadata"].get("labels", {}).get(key) == value]
        return objs

    def _list(self, res: _Resource, namespace: str | None, query: dict[str, list[str]]) -> None:
        objs = self._select(self.api.store.list_objects(res.plural, namespace), query)
        self._send_objects(res, objs, single=False)

    def _wants_table(self) -> bool:
        return self.TABLE_MEDIA in self.headers.get("Accept", "")

    def _send_objects(self, res: _Resource, objs: list[JSON], single: bool) -> None:
        rv = str(self.api.store.resource_version)
        if self._wants_table():
            self.send_json(200, self._table(res, objs, rv, with_columns=True))
        elif single:
            self.send_json(200, objs[0])
        else:
            self.send_json(
                200,
                {
                    "kind": f"{res.kind}List",
                    "apiVersion": "v1",
                    "metadata": {"resourceVersion": rv},
                    "items": objs,
                },
            )

    def _table(self, res: _Resource, objs: list[JSON], rv: str, with_columns: bool) -> JSON:
        include = parse_qs(urlsplit(self.path).query).get("includeObject", ["Metadata"])[0]
        rows = []
        for obj in objs:
            row: JSON = {"cells": res.row(obj)}
            if include == "Object":
                row["object"] = obj
            elif include != "None":
                row["object"] = {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": obj["metadata"],
                }
            rows.append(row)
        columns = [
            {
                "name": col,
                "type": _COLUMN_TYPES.get(col, "string"),
                "format": "name" if col == "Name" else "",
                "description": col,
                "priority": 0,
            }
            for col in res.columns
        ]
        return {
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": rv},
            "columnDefinitions": columns if with_columns else [],
            "rows": rows,
        }

    def _watch(self, res: _Resource, namespace: str | None, query: dict[str, list[str]]) -> None:
        """Stream watch events as chunked JSON lines until the bound or the client hangs up.

        Without a resourceVersion (or with "0") every existing object is sent as ADDED
        first, like a real server; ~1 s later the first object is touched so at least
        one live MODIFIED event follows, proving the response is streamed.
        """
        bound = self.api.watch_seconds
        if "timeoutSeconds" in query:
            bound = min(bound, float(query["timeoutSeconds"][0]))
        if "timeout" in query:  # kubectl --request-timeout=3s sends timeout=3s
            bound = min(bound, _go_duration(query["timeout"][0]))
        deadline = time.monotonic() + bound
        start_rv = query.get("resourceVersion", ["0"])[0] or "0"
        table = self._wants_table()
        rv = self.api.store.resource_version if start_rv == "0" else int(start_rv)
        self.start_chunked(200, "application/json")
        first = True

        def send(kind: str, obj: JSON) -> None:
            nonlocal first
            if table:
                obj = self._table(
                    res, [obj], obj["metadata"]["resourceVersion"], with_columns=first
                )
            first = False
            self.write_chunk(json.dumps({"type": kind, "object": obj}).encode() + b"\n")

        if start_rv == "0":
            for obj in self._select(self.api.store.list_objects(res.plural, namespace), query):
                send("ADDED", obj)
        ticker = threading.Timer(
            self.api.watch_tick_after, self.api.store.touch_first, (res.plural, namespace)
        )
        ticker.daemon = True
        ticker.start()
        try:
            while not self.server.stopping.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                for event in self.api.store.events_after(
                    rv, res.plural, namespace, min(remaining, 0.2)
                ):
                    rv = event.rv
                    if self._select([event.obj], query):
                        send(event.type, event.obj)
            self.end_chunked()
        finally:
            ticker.cancel()


class KubeApiServer(UpstreamServer):
    """A Kubernetes API server over mutual TLS, good enough for real kubectl 1.27+.

    Serves legacy discovery (``/api``, ``/api/v1``, empty ``/apis``; aggregated
    discovery is never offered, so kubectl falls back), namespaces (cluster-scoped) and
    pods (namespaced): list, get, create (JSON, or the protobuf that ``kubectl create
    namespace`` sends regardless of discovery: metadata only), merge-patch, delete
    (namespaces answer ``Terminating`` and are removed at once, with their pods),
    ``watch`` streamed as chunked JSON lines, ``Table`` output when kubectl asks for it,
    ``fieldSelector=metadata.name=`` and equality label selectors, ``dryRun=All``.
    Not served: OpenAPI (so ``create -f``/``apply -f`` need ``--validate=false``),
    JSON patch, server-side apply, any API group.

    Client certificates must chain to the PKI's client CA.  With
    ``require_client_cert=True`` a client without one fails the TLS handshake; with
    False it gets a ``401`` Status.  A certificate without ``O=system:masters`` gets 403.
    """

    def __init__(
        self,
        pki: ThrowawayPki,
        require_client_cert: bool = True,
        watch_seconds: float = 4.0,
        watch_tick_after: float = 1.0,
        token_user: Callable[[str], str | None] | None = None,
    ) -> None:
        """``token_user``: bearer tokens are accepted too, as the user it names (None: an
        unknown or expired token, answered 401); a request with no token needs a client
        certificate as before."""
        ctx = server_tls_context(pki, pki.client_ca.cert_pem, require_client_cert)
        super().__init__(_KubeHandler, ctx)
        self.pki = pki
        self.token_user = token_user
        self.store = KubeStore()
        self.watch_seconds = watch_seconds
        self.watch_tick_after = watch_tick_after
        _seed(self.store)

    def version_info(self) -> JSON:
        return {
            "major": "1",
            "minor": "32",
            "gitVersion": "v1.32.0-guardproxy-e2e",
            "gitCommit": "0" * 40,
            "gitTreeState": "clean",
            "buildDate": "2025-01-01T00:00:00Z",
            "goVersion": "go1.23.0",
            "compiler": "gc",
            "platform": "linux/amd64",
        }

    def api_versions(self) -> JSON:
        return {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{LOOPBACK}:{self.port}"}
            ],
        }

    def namespaces(self) -> list[str]:
        """Names of the namespaces that exist right now (server-side truth for asserts)."""
        return [o["metadata"]["name"] for o in self.store.list_objects("namespaces", None)]

    def pods(self, namespace: str) -> list[str]:
        return [o["metadata"]["name"] for o in self.store.list_objects("pods", namespace)]


def write_kubeconfig(
    path: Path,
    server_url: str,
    ca_pem: bytes,
    client_cert_pem: bytes,
    client_key_pem: bytes,
    proxy_url: str | None = None,
    namespace: str = "default",
) -> Path:
    """Write a self-contained kubeconfig (data fields, no file references), mode 0600.

    ``proxy_url`` sets the cluster's ``proxy-url``.  Go ignores ``HTTPS_PROXY`` for
    loopback destinations, so that field is the way to put a proxy in front of a
    127.0.0.1 API server; ``ca_pem`` must then be the proxy's CA.
    """

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    cluster: JSON = {"server": server_url, "certificate-authority-data": b64(ca_pem)}
    if proxy_url is not None:
        cluster["proxy-url"] = proxy_url
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": cluster}],
        "users": [
            {
                "name": "kube-admin",
                "user": {
                    "client-certificate-data": b64(client_cert_pem),
                    "client-key-data": b64(client_key_pem),
                },
            }
        ],
        "contexts": [
            {
                "name": "e2e",
                "context": {"cluster": "e2e", "user": "kube-admin", "namespace": namespace},
            }
        ],
        "current-context": "e2e",
        "preferences": {},
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


def kubectl_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for kubectl: private HOME and discovery cache, no inherited KUBECONFIG."""
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBECACHEDIR")}
    env.update(HOME=str(home), KUBECACHEDIR=str(home / ".kube" / "cache"))
    env.update(extra or {})
    return env
