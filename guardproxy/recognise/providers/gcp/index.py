"""An index of Google's API discovery documents: (host, method, path) -> method id.

Every Google REST API publishes a discovery document that names each method
(``compute.instances.delete``), its HTTP method and its URL template. The documents
ship inside ``google-api-python-client`` (~600 of them, ~110 MB of JSON), so nothing
about Google's APIs is listed by hand here: a client upgrade brings its new methods
into the next index build. Decoding the JSON takes a couple of seconds, so the
distilled routes are pickled into the user's cache directory, keyed by the client
library version and this file's hash (like AWS's ``index``).

Matching uses ``flatPath`` where the document has one: it splits ``{+name}`` into one
parameter per segment (``projects/{projectsId}/locations/{locationsId}/...``), which is
both more specific and gives the project and location their own names. Where several
templates match, the most specific wins: most literal characters, then fewest
parameters.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from guardproxy.recognise.index_cache import (
    Shared,
    default_cache_dir,
    load_or_build,
    read_payload,
    write_payload,
)

INDEX_FORMAT = 1
"""Bump when the pickled layout changes (the source hash catches most changes anyway)."""

BATCH = "batch"
"""``RouteSpec.collection`` of a document's batch endpoint (many calls in one body)."""

WWW_HOST = "www.googleapis.com"
"""The legacy shared host: ``www.googleapis.com/<servicePath>`` still serves older APIs."""

_PARAM = re.compile(r"\{(\+?)([^}]+)\}")
_DISTRIBUTION = "google-api-python-client"


Shape = tuple[int, str, str]
"""(number of path segments, first segment, second segment), ``*`` for a parameter."""


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """One method's URL template, as stored in the cache (no compiled regex)."""

    http_method: str
    template: str  # path from the host root, leading "/": "/compute/v1/projects/{project}"
    method_id: str  # "compute.instances.delete"; "" for a batch endpoint
    api: str  # the document's name: "compute", "sqladmin"
    version: str
    collection: str  # resource the method belongs to: "instances"; BATCH for /batch


@dataclass(frozen=True, slots=True)
class Route:
    """A compiled route: cheap prefix/suffix checks before the regex."""

    spec: RouteSpec
    regex: re.Pattern[str]
    prefix: str
    suffix: str
    names: tuple[str, ...]
    rank: tuple[int, int]  # (literal characters, -parameters): higher is more specific
    shape: Shape | None  # None for a "{+x}" template, which spans any number of segments


Buckets = dict[Shape | None, list[Route]]


@dataclass(frozen=True, slots=True)
class RouteMatch:
    spec: RouteSpec
    params: dict[str, str]  # template parameter -> raw (still percent-encoded) value
    ambiguous: bool


@dataclass
class GcpIndex:
    """Routes by host; compiled and sorted per host on first use."""

    routes: dict[str, list[RouteSpec]]
    aliases: dict[str, str]  # mTLS and locational hosts -> the rootUrl host they serve
    _compiled: dict[tuple[str, str], Buckets] = field(default_factory=dict)

    def canonical_host(self, host: str) -> str | None:
        """The indexed host ``host`` stands for, or None."""
        host = host.lower()
        if host in self.routes:
            return host
        return self.aliases.get(host)

    def match(self, host: str, http_method: str, path: str) -> RouteMatch | None:
        """The most specific route of ``host`` matching ``http_method`` and raw ``path``."""
        buckets = self._compiled_for(host, http_method.upper())
        routes = _candidates(buckets, path)
        for position, route in enumerate(routes):
            params = _try(route, path)
            if params is None:
                continue
            ambiguous = any(
                other.rank == route.rank
                and other.spec.method_id != route.spec.method_id
                and _try(other, path) is not None
                for other in _same_rank(routes, position + 1, route.rank)
            )
            return RouteMatch(route.spec, params, ambiguous)
        return None

    def _compiled_for(self, host: str, http_method: str) -> Buckets:
        """The host's routes for one HTTP method, compiled and bucketed by shape.

        Compute alone has ~4,000 templates on one host; bucketing by segment count and
        the first two segments leaves a few dozen to try per request.
        """
        key = (host, http_method)
        found = self._compiled.get(key)
        if found is None:
            found = {}
            for spec in self.routes.get(host, ()):
                if spec.http_method == http_method:
                    route = compile_route(spec)
                    found.setdefault(route.shape, []).append(route)
            self._compiled[key] = found
        return found


def _candidates(buckets: Buckets, path: str) -> list[Route]:
    """Routes whose shape fits ``path``, most specific first."""
    segments = path.lstrip("/").split("/")
    count = len(segments)
    first = segments[0]
    second = segments[1] if count > 1 else ""
    shapes: list[Shape | None] = [
        (count, first, second),
        (count, first, "*"),
        (count, "*", second),
        (count, "*", "*"),
        None,
    ]
    found = [route for shape in shapes for route in buckets.get(shape, ())]
    found.sort(key=lambda r: r.rank, reverse=True)
    return found


def _same_rank(routes: list[Route], start: int, rank: tuple[int, int]) -> Iterator[Route]:
    for route in routes[start:]:
        if route.rank != rank:
            return
        yield route


def _try(route: Route, path: str) -> dict[str, str] | None:
    if not path.startswith(route.prefix) or not path.endswith(route.suffix):
        return None
    found = route.regex.match(path)
    if found is None:
        return None
    return dict(zip(route.names, found.groups(), strict=True))


def compile_route(spec: RouteSpec) -> Route:
    """Regex for a discovery template: ``{x}`` one segment, ``{+x}`` one or more."""
    template = spec.template
    out: list[str] = []
    names: list[str] = []
    pos = 0
    literal = 0
    for found in _PARAM.finditer(template):
        text = template[pos : found.start()]
        literal += len(text)
        out.append(re.escape(text))
        out.append("(.+)" if found.group(1) else "([^/]+)")
        names.append(found.group(2))
        pos = found.end()
    tail = template[pos:]
    literal += len(tail)
    out.append(re.escape(tail))
    first = _PARAM.search(template)
    prefix = template[: first.start()] if first else template
    shape: Shape | None = None
    if not any(plus for plus, _name in _PARAM.findall(template)):
        segments = [s if "{" not in s else "*" for s in template.lstrip("/").split("/")]
        segments += ["", ""]
        shape = (len(segments) - 2, segments[0], segments[1] if len(segments) > 3 else "")
    return Route(
        spec=spec,
        regex=re.compile("^" + "".join(out) + "$"),
        prefix=prefix,
        suffix=tail,
        names=tuple(names),
        rank=(literal, -len(names)),
        shape=shape,
    )


# --------------------------------------------------------------------------- building


def documents_dir() -> Path:
    """Where google-api-python-client keeps its bundled discovery documents."""
    spec = importlib.util.find_spec("googleapiclient")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("google-api-python-client is not installed")
    return Path(spec.origin).parent / "discovery_cache" / "documents"


def _host_and_base(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.netloc.lower(), parts.path or "/"


def _walk(node: dict[str, Any], collection: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for method in (node.get("methods") or {}).values():
        yield collection, method
    for name, child in (node.get("resources") or {}).items():
        yield from _walk(child, name)


def _templates(method: dict[str, Any], base: str) -> Iterator[str]:
    """Every path the method is served on: its paths and its media upload paths."""
    # flatPath first (more specific); path too, as a fallback for values the flat
    # template does not foresee ({+parent} spanning a different number of segments).
    for key in ("flatPath", "path"):
        relative = method.get(key)
        if isinstance(relative, str) and relative:
            yield relative if relative.startswith("/") else base + relative
    upload = (method.get("mediaUpload") or {}).get("protocols") or {}
    for protocol in upload.values():
        path = protocol.get("path") if isinstance(protocol, dict) else None
        if isinstance(path, str):
            yield path if path.startswith("/") else base + path


def routes_of(document: dict[str, Any]) -> tuple[str, list[RouteSpec], list[str]]:
    """(root host, route specs, alias hosts) of one discovery document.

    The specs cover the document's root host; if its ``servicePath`` names the API
    (``storage/v1/``), the same specs are also valid on ``www.googleapis.com``.
    """
    api, version = str(document.get("name", "")), str(document.get("version", ""))
    host, root_path = _host_and_base(str(document.get("rootUrl", "")))
    base = root_path + str(document.get("servicePath", ""))
    specs: list[RouteSpec] = []
    for collection, method in _walk(document, ""):
        for template in _templates(method, base):
            specs.append(
                RouteSpec(
                    http_method=str(method.get("httpMethod", "GET")).upper(),
                    template=template,
                    method_id=str(method.get("id", "")),
                    api=api,
                    version=version,
                    collection=collection,
                )
            )
    batch = document.get("batchPath")
    if isinstance(batch, str) and batch:
        specs.append(RouteSpec("POST", root_path + batch, "", api, version, BATCH))
    aliases = [
        _host_and_base(url)[0]
        for url in [document.get("mtlsRootUrl")]
        + [e.get("endpointUrl") for e in document.get("endpoints") or []]
        if isinstance(url, str) and url
    ]
    return host, specs, aliases


def _add(table: dict[tuple[str, str, str], RouteSpec], specs: list[RouteSpec]) -> None:
    """Add ``specs``, one per (method, template, id).

    Some documents serve another version's paths (compute's ``preview`` document uses
    ``compute/v1/``); the spec whose version is in its own path is the one kept.
    """
    for spec in specs:
        key = (spec.http_method, spec.template, spec.method_id)
        old = table.get(key)
        if old is None or (_own_path(spec) and not _own_path(old)):
            table[key] = spec


def _own_path(spec: RouteSpec) -> bool:
    return f"/{spec.version}/" in spec.template or spec.template.endswith(f"/{spec.version}")


def build_index(directory: Path | None = None, names: list[str] | None = None) -> GcpIndex:
    """Read the discovery documents (all, or the ``names`` like ``compute.v1``)."""
    directory = directory or documents_dir()
    files = sorted(directory.glob("*.json"))
    if names is not None:
        files = [directory / f"{n}.json" for n in names]
    routes: dict[str, dict[tuple[str, str, str], RouteSpec]] = {}
    aliases: dict[str, str] = {}
    for file in files:
        document = json.loads(file.read_text(encoding="utf-8"))
        if not isinstance(document, dict) or "rootUrl" not in document:
            continue
        host, specs, alias_hosts = routes_of(document)
        _add(routes.setdefault(host, {}), specs)
        service_path = str(document.get("servicePath", ""))
        if host != WWW_HOST and service_path.strip("/").count("/") >= 1:
            # "storage/v1/": the API's own name and version, so the path is unambiguous
            # on the shared legacy host too.
            root_path = _host_and_base(str(document["rootUrl"]))[1]
            legacy = [s for s in specs if s.template.startswith(root_path + service_path)]
            _add(routes.setdefault(WWW_HOST, {}), legacy)
        for alias in alias_hosts:
            if alias != host:
                aliases.setdefault(alias, host)
    ordered = {
        h: sorted(s.values(), key=lambda r: (r.template, r.http_method)) for h, s in routes.items()
    }
    return GcpIndex(routes=ordered, aliases=aliases)


# --------------------------------------------------------------------------- caching


def client_version() -> str:
    """Version of the installed google-api-python-client (its documents' snapshot)."""
    try:
        return metadata.version(_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "none"


def cache_path(cache_dir: Path | None = None) -> Path:
    """The index file for the installed client library and this code."""
    code = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]
    directory = cache_dir or default_cache_dir()
    return directory / f"gcp-index-{client_version()}-f{INDEX_FORMAT}-{code}.pickle"


def save_index(index: GcpIndex, path: Path) -> None:
    """Write ``index`` atomically to the cache."""
    write_payload(path, {"routes": index.routes, "aliases": index.aliases})


def read_index(path: Path) -> GcpIndex | None:
    """The cached index in ``path``, or None if missing, unreadable or of another shape."""
    payload = read_payload(path)
    if payload is None:
        return None
    routes, aliases = payload.get("routes"), payload.get("aliases")
    if not isinstance(routes, dict) or not isinstance(aliases, dict):
        return None
    return GcpIndex(routes=routes, aliases=aliases)


def load_index(cache_dir: Path | None = None, *, rebuild: bool = False) -> GcpIndex:
    """The index from the cache, building (and caching) it when missing or stale."""
    return load_or_build(
        cache_path(cache_dir), read_index, build_index, save_index, rebuild=rebuild
    )


_shared = Shared(load_index)


def shared_index() -> GcpIndex:
    """The process-wide index, loaded on first use."""
    return _shared.get()
