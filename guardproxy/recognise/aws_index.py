"""An index of botocore's bundled AWS service models, built once and cached on disk.

Recognising an AWS request needs, per service: how the operation is encoded on the
wire (query ``Action=``, JSON ``X-Amz-Target``, REST method + URI template, CBOR
path), which parameters identify the resource, and where each parameter travels.
botocore ships all of that as ~450 gzip'd JSON models (~26 MB); decoding them takes
seconds, so the distilled index is pickled into the user's cache directory, keyed by
the botocore version and this code's own hash, and loads in milliseconds. Each model's
part is pickled separately and only unpickled the first time a request needs it.

Nothing here lists operations by hand: a botocore upgrade adds its new operations to
the next index build by itself.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from guardproxy.recognise import aws_models, aws_names, aws_spec
from guardproxy.recognise.aws_models import botocore_version, read_models
from guardproxy.recognise.aws_spec import ModelSpec, OpSpec, Tables
from guardproxy.recognise.index_cache import Shared, load_or_build, read_payload, write_payload

INDEX_FORMAT = 2
"""Bump when the pickled layout changes (the source hash catches most changes anyway)."""

_LABEL = re.compile(r"\{([^}]+?)(\+)?\}")


@dataclass(frozen=True, slots=True)
class Route:
    """A compiled REST route."""

    regex: re.Pattern[str]
    op: OpSpec


@dataclass
class AwsIndex:
    """The loaded index: lookup tables plus lazily unpickled models."""

    tables: Tables
    blobs: dict[str, bytes]
    _models: dict[str, ModelSpec] = field(default_factory=dict)
    _routes: dict[str, dict[tuple[str, str, str], list[Route]]] = field(default_factory=dict)
    _prefixes: frozenset[str] = frozenset()

    @property
    def names(self) -> list[str]:
        return sorted(self.blobs)

    @property
    def prefixes(self) -> frozenset[str]:
        """Every endpoint prefix (and rule-set signing name) a host may start with."""
        if not self._prefixes:
            self._prefixes = frozenset(self.tables.by_prefix)
        return self._prefixes

    def model(self, name: str) -> ModelSpec | None:
        """The model called ``name`` (botocore service name), unpickled on first use."""
        found = self._models.get(name)
        if found is None:
            blob = self.blobs.get(name)
            if blob is None:
                return None
            found = pickle.loads(blob)  # our own cache file, see read_index
            assert isinstance(found, ModelSpec)
            self._models[name] = found
        return found

    def routes(
        self, model: ModelSpec, method: str, first_segment: str, query_keys: Iterable[str]
    ) -> Iterator[Route]:
        """REST routes of ``model`` that may match: same method, a first path segment that
        is the request's or a label, and literal query keys the request has.

        Routes are compiled and bucketed on first use, so a request scans a handful of
        templates rather than every route of S3 and S3 Control.
        """
        table = self._routes.get(model.name)
        if table is None:
            table = _bucket_routes(model)
            self._routes[model.name] = table
        for segment in (first_segment, "*"):
            yield from table.get((method, segment, ""), ())
            for key in query_keys:
                yield from table.get((method, segment, key), ())


def _first_segment(template: str) -> str:
    first = template.lstrip("/").split("/", 1)[0]
    return "*" if "{" in first else first


def _bucket_routes(model: ModelSpec) -> dict[tuple[str, str, str], list[Route]]:
    table: dict[tuple[str, str, str], list[Route]] = defaultdict(list)
    for op in model.ops.values():
        literal_keys = [k for k, _v in op.query_literals if k != "x-id"]
        key = (op.method, _first_segment(op.path), literal_keys[0] if literal_keys else "")
        table[key].append(Route(re.compile(path_regex(op.path)), op))
    return dict(table)


def path_regex(template: str) -> str:
    """Regex for a URI template path: ``{X}`` one segment, ``{X+}`` the rest, no trailing /."""
    template = template.rstrip("/") or "/"
    out: list[str] = []
    pos = 0
    for match in _LABEL.finditer(template):
        out.append(re.escape(template[pos : match.start()]))
        out.append("(.+)" if match.group(2) else "([^/]+)")
        pos = match.end()
    out.append(re.escape(template[pos:]))
    return "^" + "".join(out) + "$"


def build_index(data_dir: Path | None = None, services: Iterable[str] | None = None) -> AwsIndex:
    """Read botocore's models (all, or just ``services``) into a fresh index."""
    tables, blobs = read_models(data_dir, services)
    return AwsIndex(tables=tables, blobs=blobs)


# --------------------------------------------------------------------------- caching


def default_cache_dir() -> Path:
    """Where the index is cached.

    ``$GUARDPROXY_CACHE_DIR``, else ``$XDG_CACHE_HOME/guardproxy``, else
    ``~/.cache/guardproxy`` (the XDG convention platformdirs follows on Linux).
    """
    explicit = os.environ.get("GUARDPROXY_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "guardproxy"


def _code_hash() -> str:
    """Hash of the code that shapes the index, so an edit invalidates old caches."""
    digest = hashlib.sha256()
    for module_file in (__file__, aws_spec.__file__, aws_models.__file__, aws_names.__file__):
        digest.update(Path(module_file or "").read_bytes())
    return digest.hexdigest()[:12]


def cache_path(cache_dir: Path | None = None) -> Path:
    """The index file for the installed botocore and this code."""
    directory = cache_dir or default_cache_dir()
    return directory / f"aws-index-{botocore_version()}-f{INDEX_FORMAT}-{_code_hash()}.pickle"


def save_index(index: AwsIndex, path: Path) -> None:
    """Write ``index`` atomically to the cache."""
    write_payload(path, {"tables": index.tables, "blobs": index.blobs})


def read_index(path: Path) -> AwsIndex | None:
    """The cached index in ``path``, or None if missing, unreadable or of another shape."""
    payload = read_payload(path)
    if payload is None:
        return None
    tables, blobs = payload.get("tables"), payload.get("blobs")
    if not isinstance(tables, Tables) or not isinstance(blobs, dict):
        return None
    return AwsIndex(tables=tables, blobs=blobs)


def load_index(cache_dir: Path | None = None, *, rebuild: bool = False) -> AwsIndex:
    """The index from the cache, building (and caching) it when missing or stale."""
    return load_or_build(
        cache_path(cache_dir), read_index, build_index, save_index, rebuild=rebuild
    )


_shared = Shared(load_index)


def shared_index() -> AwsIndex:
    """The process-wide index, loaded on first use."""
    return _shared.get()
