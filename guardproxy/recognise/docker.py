"""The Docker Engine API recogniser: daemon requests over TCP -> Actions.

``operation`` is ``<collection>.<action>`` (``containers.create``, ``volumes.prune``).
The CLI prefixes paths with the API version (``/v1.47/containers/...``); the prefix
is optional for the daemon, so both forms are read.

What makes a container dangerous is in the create body: ``HostConfig.Privileged``
(or ``CapAdd`` ALL/SYS_ADMIN) owns the host, and a bind mount of a host path — above
all ``/`` or the Docker socket — escapes the container. Volumes hold data, so
deleting or pruning them is a destroy; every prune is ``bulk``. ``docker system
prune`` has no endpoint of its own: the CLI calls the per-collection prunes, and
each is judged alone.

Parameters are read the way the daemon reads them (moby/moby):

* a boolean query parameter through ``httputils.BoolValue``
  (``daemon/server/httputils/form.go``): false only for ``""``, ``0``, ``no``,
  ``false`` and ``none`` after trimming and lower-casing, so ``force=yes`` or
  ``force=on`` is a forced removal. ``r.FormValue`` takes the first value (form body
  values before query values); a repeated key is read with every value and any true
  one counts, as a proxy in front may pick another;
* the create body through Go's ``encoding/json`` into ``container.CreateRequest``
  (``daemon/internal/runconfig/config.go: loadJSON``): object keys match struct fields
  case-insensitively (``hostconfig``, ``PRIVILEGED``; Go also folds the long s,
  U+017F, to ``s`` and the Kelvin sign, U+212A, to ``k``), and a key given twice is
  assigned twice, the last one staying; every value any such key gives is read.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl

from guardproxy.action import Action, Confidence, Provider, Resource, Verb
from guardproxy.recognise.common import actor_of, cap, decoded_body, resource_key, summary_of
from guardproxy.recognise.request import HttpRequest

_VERSION = re.compile(r"^/v1\.\d+(?=/)")
_COLLECTIONS = frozenset(
    {
        "containers",
        "images",
        "volumes",
        "networks",
        "exec",
        "build",
        "system",
        "plugins",
        "services",
        "tasks",
        "nodes",
        "secrets",
        "configs",
        "swarm",
        "distribution",
        "session",
    }
)
_SYSTEM_PATHS = {"_ping": "system.ping", "version": "system.version", "info": "system.info"}
_SYSTEM_PATHS |= {"events": "system.events", "auth": "system.auth", "commit": "images.commit"}
_FALSE = frozenset({"", "0", "no", "false", "none"})
"""The only values ``httputils.BoolValue`` reads as false (trimmed, lower-cased)."""
_DANGEROUS_CAPS = frozenset({"ALL", "SYS_ADMIN", "CAP_SYS_ADMIN", "SYS_MODULE", "SYS_PTRACE"})
_ESCAPE_SOURCES = ("/", "/var/run/docker.sock", "/run/docker.sock", "/proc", "/sys", "/etc")
_DOCKER_PORTS = frozenset({2375, 2376})

# (collection, action) -> verb; actions absent here follow the HTTP method.
_VERBS: dict[tuple[str, str], Verb] = {
    ("containers", "create"): Verb.CREATE,
    ("containers", "delete"): Verb.DELETE,
    ("containers", "start"): Verb.UPDATE,
    ("containers", "stop"): Verb.UPDATE,
    ("containers", "restart"): Verb.UPDATE,
    ("containers", "kill"): Verb.UPDATE,
    ("containers", "pause"): Verb.UPDATE,
    ("containers", "unpause"): Verb.UPDATE,
    ("containers", "update"): Verb.UPDATE,
    ("containers", "rename"): Verb.UPDATE,
    ("containers", "resize"): Verb.UPDATE,
    ("containers", "wait"): Verb.READ,
    ("containers", "attach"): Verb.EXECUTE,
    ("exec", "create"): Verb.EXECUTE,
    ("containers", "archive"): Verb.UPDATE,  # PUT: extract a tar into the container
    ("containers", "prune"): Verb.DELETE,
    ("exec", "start"): Verb.EXECUTE,
    ("exec", "resize"): Verb.UPDATE,
    ("images", "create"): Verb.CREATE,
    ("images", "build"): Verb.CREATE,
    ("images", "load"): Verb.CREATE,
    ("images", "push"): Verb.UPDATE,
    ("images", "tag"): Verb.UPDATE,
    ("images", "commit"): Verb.CREATE,
    ("images", "delete"): Verb.DELETE,
    ("images", "prune"): Verb.DELETE,
    ("build", "prune"): Verb.DELETE,
    ("networks", "create"): Verb.CREATE,
    ("networks", "delete"): Verb.DELETE,
    ("networks", "connect"): Verb.UPDATE,
    ("networks", "disconnect"): Verb.UPDATE,
    ("networks", "prune"): Verb.DELETE,
    ("volumes", "create"): Verb.CREATE,
    ("volumes", "delete"): Verb.DESTROY,
    ("volumes", "prune"): Verb.DESTROY,
    ("system", "auth"): Verb.READ,  # checks credentials, changes nothing
    ("swarm", "leave"): Verb.DESTROY,
    ("plugins", "pull"): Verb.PERMISSION,  # a plugin asks for host privileges
    ("secrets", "create"): Verb.PERMISSION,
}
_METHOD_VERBS = {"GET": Verb.READ, "HEAD": Verb.READ, "POST": Verb.CREATE, "PUT": Verb.UPDATE}
_METHOD_VERBS |= {"DELETE": Verb.DELETE}
_POST_ACTIONS = {"create": Verb.CREATE, "delete": Verb.DELETE, "remove": Verb.DELETE}


class DockerError(ValueError):
    """A request body the recogniser cannot read."""


def api_path(request: HttpRequest) -> str:
    """The path without its ``/v1.NN`` version prefix."""
    path = request.path_only
    found = _VERSION.match(path)
    return path[found.end() :] if found else path


def looks_like_docker(request: HttpRequest) -> bool:
    """A versioned Engine API path (``/v1.47/containers/...``), the Docker CLI's user
    agent, or the daemon's TCP ports 2375/2376 with an Engine path.

    Unversioned ``/containers/...`` on other ports is too generic to claim: configure
    the daemon's host for those.
    """
    path = request.path_only
    first = api_path(request).strip("/").split("/", 1)[0]
    known = first in _COLLECTIONS or first in _SYSTEM_PATHS
    if _VERSION.match(path) and known:
        return True
    if request.user_agent.startswith(("Docker-Client/", "docker/")):
        return True
    return request.port in _DOCKER_PORTS and known


def _route(method: str, parts: list[str]) -> tuple[str, str, str]:
    """(collection, action, identifier) of a version-less path."""
    head = parts[0] if parts else ""
    if head in _SYSTEM_PATHS and len(parts) == 1:
        collection, action = _SYSTEM_PATHS[head].split(".")
        return collection, action, ""
    if head == "build" and len(parts) == 1:
        return "images", "build", ""
    if head == "system":
        return "system", "-".join(parts[1:]) or "info", ""
    rest = parts[1:]
    if not rest:
        return head, "list" if method in ("GET", "HEAD") else _method_action(method), ""
    if len(rest) == 1:
        if rest[0] in ("create", "prune", "json", "load", "search", "get", "init", "join"):
            return head, "list" if rest[0] == "json" else rest[0], ""
        if (head, rest[0]) == ("plugins", "pull"):
            return head, "pull", ""  # POST /plugins/pull installs a plugin (no name in the path)
        if head == "swarm":
            return head, rest[0], ""
        return head, _method_action(method), rest[0]
    if head == "images" and len(rest) > 1:
        # Image names contain slashes: /images/registry/org/app:tag/push
        last = rest[-1]
        if last in ("json", "history", "push", "tag", "get"):
            name = "/".join(rest[:-1])
            return head, "inspect" if last == "json" else last, name
        return head, _method_action(method), "/".join(rest)
    action = rest[1]
    if (head, action) == ("containers", "exec"):
        return "exec", "create", rest[0]  # the exec instance is made for this container
    return head, "inspect" if action == "json" else action, rest[0]


def _method_action(method: str) -> str:
    return {"GET": "inspect", "HEAD": "inspect", "DELETE": "delete", "POST": "update"}.get(
        method, method.lower()
    )


def _bool_values(request: HttpRequest, key: str) -> list[bool]:
    """``key`` as ``httputils.BoolValue`` reads it, once per value given (form body
    values first, as ``r.ParseForm`` puts them before the query's)."""
    values: list[str] = []
    form = "x-www-form-urlencoded" in request.header("content-type").lower()
    if form and request.method.upper() in ("POST", "PUT", "PATCH"):
        body = decoded_body(request) or b""
        pairs = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        values += [v for k, v in pairs if k == key]
    values += request.query_values.get(key, [])
    return [v.strip().lower() not in _FALSE for v in values]


def _flag(request: HttpRequest, key: str) -> bool:
    """Whether any reading of boolean parameter ``key`` is true."""
    return any(_bool_values(request, key))


class _Pairs(list[tuple[str, Any]]):
    """A JSON object as its (key, value) pairs in order: Go assigns every one."""


def _go_fold(name: str) -> str:
    """``encoding/json``'s ``foldName``: ASCII upper-cased, other runes folded, so
    the long s (U+017F) matches ``S`` and the Kelvin sign (U+212A) ``K``."""
    return "".join(c.upper() if c.isascii() else c.lower().upper() for c in name)


def _fields(node: Any, name: str) -> list[Any]:
    """Every value Go's decoder assigns to struct field ``name`` from object ``node``:
    each key equal to it or equal under case folding, in order (the last one stays)."""
    if not isinstance(node, _Pairs):
        return []
    wanted = _go_fold(name)
    return [v for k, v in node if k == name or _go_fold(k) == wanted]


def _strings(values: list[Any]) -> list[str]:
    """The strings of list-valued fields (``Binds``, ``CapAdd``)."""
    return [s for v in values if isinstance(v, list) for s in v if isinstance(s, str)]


def _body(request: HttpRequest) -> _Pairs:
    body = decoded_body(request)
    if body is None:
        raise DockerError("body too large or undecodable")
    if not body.strip():
        return _Pairs()
    try:
        document = json.loads(body, object_pairs_hook=_Pairs)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise DockerError("body is not JSON") from exc
    if not isinstance(document, _Pairs):
        raise DockerError("body is not a JSON object")
    return document


def _mount_sources(host_configs: list[Any]) -> list[str]:
    """Host paths bind-mounted by ``Binds`` (``src:dst[:opts]``) and ``Mounts``."""
    sources: list[str] = []
    for host_config in host_configs:
        for bind in _strings(_fields(host_config, "Binds")):
            if bind.startswith("/"):
                sources.append(bind.split(":", 1)[0])
        for mounts in _fields(host_config, "Mounts"):
            for mount in mounts if isinstance(mounts, list) else []:
                kinds = [str(t).lower() for t in _fields(mount, "Type")]
                if "bind" in kinds:
                    sources += [str(s) for s in _fields(mount, "Source")] or [""]
    return sources


def container_risks(body: _Pairs) -> list[str]:
    """Risk tags of a ``containers/create`` body (every value Go may assign counts)."""
    host_configs = [h for h in _fields(body, "HostConfig") if h is not None]
    if any(not isinstance(h, _Pairs) for h in host_configs):
        raise DockerError("HostConfig is not an object")
    tags: list[str] = []
    caps = {c.upper() for h in host_configs for c in _strings(_fields(h, "CapAdd"))}
    sources = _mount_sources(host_configs)
    escapes = any(s.rstrip("/") in ("", *_ESCAPE_SOURCES) for s in sources)
    privileged = any(v is True for h in host_configs for v in _fields(h, "Privileged"))
    if privileged or caps & _DANGEROUS_CAPS or escapes:
        tags.append("privileged")
    if sources:
        tags.append("host-mount")
    modes = ("PidMode", "IpcMode", "NetworkMode", "UsernsMode")
    if any(v == "host" for h in host_configs for k in modes for v in _fields(h, k)):
        tags.append("host-namespace")
    return tags


def recognise_docker(request: HttpRequest) -> Action:
    """The Action for a Docker Engine API request."""
    method = request.method.upper()
    parts = [p for p in api_path(request).split("/") if p]
    collection, action, ident = _route(method, parts)
    query = dict(request.query)
    if action == "update" and method == "DELETE":
        action = "delete"
    verb = _VERBS.get((collection, action), _METHOD_VERBS.get(method, Verb.UNKNOWN))
    if (collection, action) not in _VERBS and method == "POST":
        # Unlisted POST actions (swarm services, nodes, plugins): named by their last word.
        verb = _POST_ACTIONS.get(action, Verb.UPDATE)
    if method in ("GET", "HEAD") and (collection, action) != ("containers", "attach"):
        verb = Verb.READ
    tags: list[str] = []
    if (collection, action) == ("containers", "create"):
        tags += container_risks(_body(request))
        ident = query.get("name", "")
    if collection == "exec" and action in ("create", "start"):
        _body(request)  # a malformed exec body is not something to guess about
    if action == "prune":
        tags.append("bulk")
    if action == "delete" and _flag(request, "force"):
        tags.append("force")
    if (collection, action) == ("containers", "delete") and _flag(request, "v"):
        tags.append("delete-volumes")
    if (collection, action) == ("swarm", "leave") and _flag(request, "force"):
        tags.append("force")
    known = (collection, action) in _VERBS or method in ("GET", "HEAD")
    if verb is Verb.UNKNOWN:
        confidence = Confidence.UNKNOWN
    else:
        confidence = Confidence.EXACT if known else Confidence.HEURISTIC
    rtype = f"docker:{collection.removesuffix('s')}"
    name, truncated = cap(ident)
    host = f"{request.host.lower()}:{request.port}"
    return Action(
        provider=Provider.DOCKER,
        service=collection,
        operation=f"{collection}.{action}",
        verb=verb,
        resource=Resource(type=rtype, name=name, key=resource_key("docker", [host], rtype, name)),
        risk_tags=tags,
        actor=actor_of(request),
        request=summary_of(request),
        confidence=confidence,
        truncated=truncated,
    )
