"""What the API server makes of a request's path and query: a port of
``RequestInfoFactory.NewRequestInfo`` (kubernetes/kubernetes ``staging/src/k8s.io/
apiserver/pkg/endpoints/request/requestinfo.go``) and of the query option conversions
it and the handlers use (``pkg/runtime/conversion.go``, ``pkg/fields/selector.go``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from guardproxy.recognise.providers.k8s.url import split_path

__all__ = [
    "API_PREFIXES",
    "RequestInfo",
    "first_value",
    "option_bool",
    "option_dry_run",
    "option_int",
    "request_info",
]

API_PREFIXES = frozenset({"api", "apis"})
_GROUPLESS_PREFIXES = frozenset({"api"})
_SPECIAL_VERBS = frozenset({"proxy", "watch"})
_SPECIAL_VERBS_NO_SUBRESOURCES = frozenset({"proxy"})
_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})

_METHOD_VERBS = {
    "POST": "create",
    "GET": "get",
    "HEAD": "get",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """The fields of the API server's ``RequestInfo`` that the recogniser uses."""

    is_resource_request: bool
    verb: str
    api_prefix: str = ""
    api_group: str = ""
    api_version: str = ""
    namespace: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""


def first_value(query: Mapping[str, Sequence[str]], key: str) -> str | None:
    values = query.get(key)
    return values[0] if values else None


def option_bool(value: str | None) -> bool:
    """``Convert_Slice_string_To_bool``: false only for no value, ``0`` or ``false``
    (``strings.EqualFold``); anything else, the empty string included, is true."""
    return value is not None and value != "0" and value.casefold() != "false"


_GO_INT = re.compile(r"[+-]?[0-9]+")


def option_int(value: str | None) -> int | None:
    """``strconv.ParseInt(value, 10, 64)`` (None where the API server answers 400)."""
    if value is None or not _GO_INT.fullmatch(value) or not value.isascii():
        return None
    number = int(value)
    return number if -(1 << 63) <= number < (1 << 63) else None


def option_dry_run(query: Mapping[str, Sequence[str]]) -> bool:
    """``DryRun`` takes every ``dryRun`` value; a dry run needs at least one and only
    ``All`` (``ValidateDryRun`` refuses any other value, so nothing runs)."""
    values = query.get("dryRun") or []
    return bool(values) and all(v == "All" for v in values)


def _unescape_selector_value(text: str) -> str | None:
    """``fields.UnescapeValue``: ``\\\\``, ``\\,`` and ``\\=`` only; a bare ``,`` or
    ``=`` or any other escape is an error (None)."""
    out: list[str] = []
    escaped = False
    for char in text:
        if escaped:
            if char not in "\\,=":
                return None
            out.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char in ",=":
            return None
        else:
            out.append(char)
    return None if escaped else "".join(out)


def _split_terms(selector: str) -> list[str]:
    """``fields.splitTerms``: commas split terms unless backslash-escaped."""
    terms, start, escaped = [], 0, False
    for index, char in enumerate(selector):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ",":
            terms.append(selector[start:index])
            start = index + 1
    terms.append(selector[start:])
    return terms


def _selected_name(field_selector: str) -> str:
    """``metadata.name`` when the field selector requires exactly one name.

    Port of ``fields.ParseSelector`` + ``RequiresExactMatch`` (k8s.io/apimachinery
    ``pkg/fields/selector.go``): terms sorted, split at the first ``!=``, ``==`` or
    ``=`` (no trimming), values unescaped; the first ``metadata.name`` equality term
    after sorting names the object. A selector that does not parse names nothing.
    """
    if not field_selector:
        return ""
    found = ""
    for term in sorted(_split_terms(field_selector)):
        if not term:
            continue
        match = re.search(r"!=|==|=", term)
        if match is None:
            return ""
        value = _unescape_selector_value(term[match.end() :])
        if value is None:
            return ""
        if not found and match.group() != "!=" and term[: match.start()] == "metadata.name":
            found = value
    return found


def _valid_name(name: str) -> bool:
    """``content.IsPathSegmentName``: what may stand for a name in a URL path."""
    return name not in ("", ".", "..") and "/" not in name and "%" not in name


def request_info(
    method: str, path: str, query: Mapping[str, Sequence[str]] | None = None
) -> RequestInfo:
    """Port of ``RequestInfoFactory.NewRequestInfo`` (without its error returns) for
    the decoded ``path`` and the query values."""
    query = query or {}
    method = method.upper()
    non_resource = RequestInfo(is_resource_request=False, verb=method.lower())
    parts = split_path(path)
    if len(parts) < 3 or parts[0] not in API_PREFIXES:
        return non_resource
    prefix, parts = parts[0], parts[1:]
    group = ""
    if prefix not in _GROUPLESS_PREFIXES:
        if len(parts) < 3:
            return non_resource
        group, parts = parts[0], parts[1:]
    version, parts = parts[0], parts[1:]

    if parts[0] in _SPECIAL_VERBS:
        if len(parts) < 2:
            return non_resource  # an error to NewRequestInfo: the API server answers 500
        verb, parts = parts[0], parts[1:]
    else:
        verb = _METHOD_VERBS.get(method, "")

    namespace = ""
    if parts[0] == "namespaces" and len(parts) > 1:
        namespace = parts[1]
        if len(parts) > 2 and parts[2] not in _NAMESPACE_SUBRESOURCES:
            parts = parts[2:]

    resource = name = subresource = ""
    if len(parts) >= 3 and verb not in _SPECIAL_VERBS_NO_SUBRESOURCES:
        subresource = parts[2]
    if len(parts) >= 2:
        name = parts[1]
    if parts:
        resource = parts[0]

    if not name and verb == "get":
        verb = "watch" if option_bool(first_value(query, "watch")) else "list"
        selected = _selected_name(first_value(query, "fieldSelector") or "")
        if _valid_name(selected):
            name = selected
    if not name and verb == "delete":
        verb = "deletecollection"
    return RequestInfo(
        is_resource_request=True,
        verb=verb,
        api_prefix=prefix,
        api_group=group,
        api_version=version,
        namespace=namespace,
        resource=resource,
        subresource=subresource,
        name=name,
    )
