"""The Terraform Cloud / Enterprise recogniser: JSON:API requests -> Actions.

``operation`` is ``<collection>.<action>`` (``runs.create``, ``workspaces.safe-delete``).
The API is small and stable, so the dangerous routes are a table; everything else is
classified by HTTP method with heuristic confidence.

A run's danger is in its body, not its URL: ``is-destroy`` makes it a destroy (verb
destroy, ``destroy-run``), ``auto-apply`` skips the human plan review, and
``replace-addrs`` destroys and re-creates the named objects. An apply
(``runs/{id}/actions/apply``) is when a reviewed plan takes effect; what it does is in
the plan, not the request, so it stays heuristic. A workspace update that schedules a
destroy (``auto-destroy-at``, ``auto-destroy-activity-duration``: HCP Terraform queues a
destroy run of everything the workspace manages then) is a destroy too.

Attributes are read the way a Rails JSON:API backend may read them, every reading
counted: a key in any spelling that ``underscore`` makes the same name (``is-destroy``,
``is_destroy``, ``isDestroy``), every value of a key given twice, and a boolean as
``ActiveModel::Type::Boolean`` casts it (anything but ``false``, ``0``, ``"f"``,
``"false"``, ``"off"`` and their capitalised forms, ``nil`` or ``""`` is true).
"""

from __future__ import annotations

import json
import re
from typing import Any

from guardproxy.action import Action, Confidence, Provider, Resource, Scope, Verb
from guardproxy.recognise.common import actor_of, cap, decoded_body, resource_key, summary_of
from guardproxy.recognise.request import HttpRequest

_HOST = re.compile(r"^app\.(?:[a-z]{2}\.)?terraform\.io$")
_PREFIX = "/api/v2/"
_JSON_API = "application/vnd.api+json"

_METHOD_ACTIONS = {"POST": "create", "PATCH": "update", "PUT": "update", "DELETE": "delete"}
_METHOD_VERBS = {
    "GET": Verb.READ,
    "HEAD": Verb.READ,
    "POST": Verb.CREATE,
    "PATCH": Verb.UPDATE,
    "PUT": Verb.UPDATE,
    "DELETE": Verb.DELETE,
}

# (operation) -> (verb, risk tags) for routes whose method understates them.
_OVERRIDES: dict[str, tuple[Verb, tuple[str, ...]]] = {
    "workspaces.delete": (Verb.DESTROY, ()),
    "workspaces.safe-delete": (Verb.DESTROY, ()),
    "organizations.delete": (Verb.DESTROY, ()),
    "projects.delete": (Verb.DESTROY, ()),
    "runs.apply": (Verb.UPDATE, ()),
    "runs.discard": (Verb.UPDATE, ()),
    "runs.cancel": (Verb.UPDATE, ()),
    "runs.force-cancel": (Verb.UPDATE, ("force",)),
    "runs.force-execute": (Verb.EXECUTE, ("force",)),
    "workspaces.lock": (Verb.UPDATE, ()),
    "workspaces.unlock": (Verb.UPDATE, ()),
    "workspaces.force-unlock": (Verb.UPDATE, ("force",)),
    "state-versions.create": (Verb.UPDATE, ("state-overwrite",)),
    "state-versions.rollback": (Verb.UPDATE, ("state-overwrite",)),
    "team-workspaces.create": (Verb.PERMISSION, ()),
    "team-workspaces.update": (Verb.PERMISSION, ()),
    "team-workspaces.delete": (Verb.PERMISSION, ()),
    "team-projects.create": (Verb.PERMISSION, ()),
    "team-projects.update": (Verb.PERMISSION, ()),
    "team-projects.delete": (Verb.PERMISSION, ()),
    "team-members.create": (Verb.PERMISSION, ()),
    "team-members.delete": (Verb.PERMISSION, ()),
    "organization-memberships.create": (Verb.PERMISSION, ()),  # invites a user
    "organization-memberships.delete": (Verb.PERMISSION, ()),
    "authentication-token.create": (Verb.PERMISSION, ()),
}
_EXACT = frozenset({*_OVERRIDES, "runs.create", "workspaces.create", "workspaces.update"})


_RAILS_FALSE = frozenset({"0", "f", "F", "false", "FALSE", "off", "OFF"})
"""ActiveModel::Type::Boolean::FALSE_VALUES (strings; ``false`` and ``0`` are below)."""
_SCHEDULED_DESTROY = ("auto-destroy-at", "auto-destroy-activity-duration")


class _Pairs(list[tuple[str, Any]]):
    """A JSON object as its (key, value) pairs: a key given twice keeps both values."""


def _underscore(key: str) -> str:
    """ActiveSupport's ``String#underscore`` (the key transform of Rails JSON:API
    deserialisers): ``is-destroy``, ``isDestroy`` and ``IS_DESTROY`` are ``is_destroy``."""
    key = re.sub(r"([A-Z\d]+)([A-Z][a-z])", r"\1_\2", key)
    key = re.sub(r"([a-z\d])([A-Z])", r"\1_\2", key)
    return key.replace("-", "_").lower()


def _all(node: Any, key: str) -> list[Any]:
    """Every value of attribute ``key`` in any spelling Rails reads as the same name."""
    if not isinstance(node, _Pairs):
        return []
    wanted = _underscore(key)
    return [v for k, v in node if _underscore(k) == wanted]


def _rails_true(value: Any) -> bool:
    """``ActiveModel::Type::Boolean#cast``: nil and "" are nil, the false values false,
    anything else true."""
    if value is None or value is False or value == "":
        return False
    if isinstance(value, (int, float)) and value == 0:
        return False
    return not (isinstance(value, str) and value in _RAILS_FALSE)


def _any_true(node: Any, key: str) -> bool:
    return any(_rails_true(v) for v in _all(node, key))


def _given(node: Any, key: str) -> bool:
    """Whether ``key`` is set to a value (not null, not empty) in any reading."""
    return any(v not in (None, "") for v in _all(node, key))


class TfcError(ValueError):
    """A request body the recogniser cannot read."""


def looks_like_tfc(request: HttpRequest) -> bool:
    """HCP Terraform hosts (``app.terraform.io``, ``app.eu.terraform.io``), or any host's
    ``/api/v2/`` with the JSON:API media type (Terraform Enterprise; go-tfe always
    sends it). Snowflake's ``/api/v2/statements`` is plain JSON, so it is not claimed."""
    path = request.path_only
    if not path.startswith(_PREFIX):
        return False
    if _HOST.match(request.host.lower()):
        return True
    media = request.header("content-type") + request.header("accept")
    return _JSON_API in media.lower()


def _route(method: str, parts: list[str]) -> tuple[str, dict[str, str]]:
    """(operation, identifiers) for an API path split after ``/api/v2/``."""
    ids: dict[str, str] = {}
    if len(parts) >= 2 and parts[0] == "organizations":
        ids["organization"] = parts[1]
        if len(parts) == 2:
            return f"organizations.{_action(method, True)}", ids
        parts = parts[2:]
        if len(parts) >= 2 and parts[0] == "workspaces":
            ids["workspace"] = parts[1]
    if len(parts) == 4 and parts[0] == "teams" and parts[2] == "relationships":
        # Team membership: POST/DELETE /teams/:id/relationships/users (or
        # .../organization-memberships) adds or removes members.
        ids["team"] = parts[1]
        if parts[3] in ("users", "organization-memberships"):
            return f"team-members.{_action(method, False)}", ids
    if "actions" in parts:
        at = parts.index("actions")
        collection = parts[at - 2] if at >= 2 else parts[0]
        if at >= 2:
            ids[_singular(collection)] = parts[at - 1]
        name = parts[at + 1] if at + 1 < len(parts) else ""
        if collection == "state-versions" and name == "rollback":
            return "state-versions.rollback", ids
        return f"{collection}.{name}", ids
    if len(parts) >= 3 and parts[0] == "workspaces" and parts[2] == "state-versions":
        ids["workspace"] = parts[1]
        return f"state-versions.{_action(method, len(parts) > 3)}", ids
    if len(parts) >= 2 and parts[0] in ("workspaces", "runs"):
        ids[_singular(parts[0])] = parts[1]
    collection = parts[-1] if len(parts) % 2 else parts[-2]
    return f"{collection}.{_action(method, len(parts) % 2 == 0)}", ids


def _singular(collection: str) -> str:
    return collection.removesuffix("s")


def _action(method: str, member: bool) -> str:
    if method in ("GET", "HEAD"):
        return "show" if member else "list"
    return _METHOD_ACTIONS.get(method, method.lower())


def _attributes(request: HttpRequest) -> tuple[_Pairs, _Pairs]:
    """(data.attributes, data.relationships) of a JSON:API document body, every member
    given (all of them when ``data``, ``attributes`` or ``relationships`` repeats)."""
    body = decoded_body(request)
    if body is None:
        raise TfcError("body too large or undecodable")
    if not body.strip():
        return _Pairs(), _Pairs()
    try:
        document = json.loads(body, object_pairs_hook=_Pairs)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise TfcError("body is not JSON") from exc
    datas = _all(document, "data")
    if not datas or not all(isinstance(d, _Pairs) for d in datas):
        raise TfcError("not a JSON:API document")
    attributes, relationships = _Pairs(), _Pairs()
    for data in datas:
        for name, into in (("attributes", attributes), ("relationships", relationships)):
            for found in _all(data, name):
                if found is None:
                    continue
                if not isinstance(found, _Pairs):
                    raise TfcError("not a JSON:API document")
                into.extend(found)
    return attributes, relationships


def _related_id(relationships: _Pairs, name: str) -> str:
    for related in _all(relationships, name):
        for data in _all(related, "data"):
            for value in _all(data, "id"):
                if isinstance(value, str):
                    return value
    return ""


def _run_create(request: HttpRequest) -> tuple[Verb, list[str], str]:
    """Verb, risk tags and workspace id of a ``POST /runs`` body."""
    attributes, relationships = _attributes(request)
    tags: list[str] = []
    verb = Verb.UPDATE
    if _any_true(attributes, "is-destroy"):
        verb = Verb.DESTROY
        tags.append("destroy-run")
    if _any_true(attributes, "auto-apply"):
        tags.append("auto-apply")
    if any(_all(attributes, "replace-addrs")):
        tags.append("replace")
    if any(_all(attributes, "target-addrs")):
        tags.append("targeted")
    only = _any_true(attributes, "plan-only") or _any_true(attributes, "refresh-only")
    if only and verb is not Verb.DESTROY:
        tags.append("plan-only")
    return verb, tags, _related_id(relationships, "workspace")


def recognise_tfc(request: HttpRequest) -> Action:
    """The Action for a Terraform Cloud / Enterprise API request."""
    method = request.method.upper()
    path = request.path_only
    if not path.startswith(_PREFIX):
        raise TfcError("not a TFC API path")
    parts = [p for p in path[len(_PREFIX) :].split("/") if p]
    if not parts:
        raise TfcError("no collection")
    operation, ids = _route(method, parts)
    verb = _METHOD_VERBS.get(method, Verb.UNKNOWN)
    tags: list[str] = []
    if operation in _OVERRIDES:
        verb, fixed = _OVERRIDES[operation]
        tags.extend(fixed)
    if operation == "runs.create":
        verb, tags, workspace = _run_create(request)
        ids.setdefault("workspace", workspace)
    elif operation in ("workspaces.update", "workspaces.create"):
        attributes, _ = _attributes(request)
        if _any_true(attributes, "auto-apply"):
            tags.append("auto-apply")
        if any(_given(attributes, key) for key in _SCHEDULED_DESTROY):
            verb = Verb.DESTROY
            tags.append("scheduled-destroy")
    if verb is Verb.READ:
        confidence = Confidence.EXACT
    elif verb is Verb.UNKNOWN:
        confidence = Confidence.UNKNOWN
    else:
        confidence = Confidence.EXACT if operation in _EXACT else Confidence.HEURISTIC
    organization = ids.get("organization", "")
    if ids.get("workspace"):
        rtype, name = "tfc:workspace", ids["workspace"]
    elif "run" in ids:
        rtype, name = "tfc:run", ids["run"]
    elif operation.startswith("organizations."):
        rtype, name = "tfc:organization", organization
    else:
        rtype, name = f"tfc:{_singular(operation.split('.', 1)[0])}", ""
    name, truncated = cap(name)
    key_scope = [request.host.lower(), *([organization] if organization else [])]
    return Action(
        provider=Provider.TFC,
        service=operation.split(".", 1)[0],
        operation=operation,
        verb=verb,
        resource=Resource(type=rtype, name=name, key=resource_key("tfc", key_scope, rtype, name)),
        scope=Scope(project=organization),
        risk_tags=tags,
        actor=actor_of(request),
        request=summary_of(request),
        confidence=confidence,
        truncated=truncated,
    )
