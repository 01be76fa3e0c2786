"""Pieces every recogniser needs: who sent the request, what may be kept of it, identity keys.

Kept apart from the provider modules so that the fail-closed path in ``__init__`` can
still describe a request whose provider recogniser blew up.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable

from guardproxy.action import Actor, RequestSummary
from guardproxy.recognise.request import HttpRequest

USER_AGENT_LIMIT = 256
"""Longest user agent kept on the action; SDK user agents can carry kilobytes of metadata."""

NAME_LIMIT = 1024
"""Longest resource name or id kept; the bundle's ``maxStringBytes`` default is the same."""

BODY_PARSE_LIMIT = 4 * 1024 * 1024
"""Bodies larger than this are not parsed: parameters that matter are in small requests,
and large ones (S3 uploads, git packs aside) are data, not API calls worth decoding."""

# Ordered: the first pattern found in the user agent names the tool. Wrappers come
# before the SDKs they embed (Terraform's provider sends aws-sdk-go-v2 in its UA; the
# AWS CLI sends botocore), so their markers must win.
_TOOLS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), tool)
    for pattern, tool in (
        (r"\bTerraform/", "terraform"),
        (r"\bpulumi", "pulumi"),
        (r"\baws-cdk\b|\baws-cdk-lib\b", "aws-cdk"),
        (r"^kubectl/|\bkubectl/", "kubectl"),
        (r"^helm/|\bHelm/", "helm"),
        (r"\baws-cli/", "aws-cli"),
        (r"\bBoto3/", "boto3"),
        (r"\bBotocore/", "botocore"),
        (r"\baws-sdk-go-v2\b", "aws-sdk-go-v2"),
        (r"\baws-sdk-go/", "aws-sdk-go"),
        (r"\baws-sdk-js\b|\baws-sdk-nodejs\b", "aws-sdk-js"),
        (r"\baws-sdk-java\b", "aws-sdk-java"),
        (r"\baws-sdk-rust\b", "aws-sdk-rust"),
        (r"\baws-sdk-dotnet|\baws-sdk-net\b", "aws-sdk-dotnet"),
        (r"^git/|\bgit/\d", "git"),
        (r"\bJGit/", "jgit"),
        (r"^gh/|\bGitHub CLI\b", "gh"),
        (r"\bgoogle-cloud-sdk\b|\bgcloud/", "gcloud"),
        (r"\bazsdk-|\bAZURECLI/|\bazure-cli\b", "azure-cli"),
        (r"^Docker-Client/|^docker/", "docker"),
        (r"^curl/", "curl"),
        (r"^Wget/", "wget"),
        (r"^python-requests/", "python-requests"),
        (r"^python-httpx/", "python-httpx"),
        (r"^Python-urllib/", "python-urllib"),
        (r"\baiohttp/", "aiohttp"),
        (r"^axios/", "axios"),
        (r"^node-fetch|^undici\b|^node\b", "node"),
        (r"^Go-http-client/", "go-http-client"),
        (r"^okhttp/", "okhttp"),
    )
)


def tool_from_user_agent(user_agent: str) -> str:
    """The tool that sent the request, as far as its user agent tells (``""`` if unknown)."""
    for pattern, tool in _TOOLS:
        if pattern.search(user_agent):
            return tool
    return ""


def actor_of(request: HttpRequest) -> Actor:
    """The actor fields the wire shows: tool and user agent (never a credential)."""
    user_agent = request.user_agent
    tool = tool_from_user_agent(user_agent)
    if not tool and request.header("kubectl-command"):
        tool = "kubectl"
    return Actor(tool=tool, user_agent=user_agent[:USER_AGENT_LIMIT])


def summary_of(request: HttpRequest) -> RequestSummary:
    """What may be kept of the request: no query (it can hold presigned signatures), no values."""
    return RequestSummary(
        method=request.method.upper(),
        host=request.host.lower(),
        port=request.port,
        path=request.path_only,
        header_names=request.header_names,
        body_bytes=len(request.body),
    )


def resource_key(provider: str, scope: Iterable[str], rtype: str, ident: str) -> str:
    """``<provider>:<scope parts>:<type>/<name or id>``; empty when nothing identifies it.

    Two requests about the same user-chosen name (a delete, then a create) get the
    same key, which is what a delete-and-recreate detector compares.
    """
    if not ident or not rtype:
        return ""
    return ":".join([provider, *scope, rtype]) + "/" + ident


def cap(text: str, limit: int = NAME_LIMIT) -> tuple[str, bool]:
    """``text`` cut to ``limit`` characters, and whether it was cut."""
    if len(text) <= limit:
        return text, False
    return text[:limit], True


def decoded_body(request: HttpRequest, limit: int = BODY_PARSE_LIMIT) -> bytes | None:
    """The body with any gzip/deflate content encoding removed, or None if over ``limit``.

    Decompression is bounded so a small compressed body cannot expand without limit.
    """
    body = request.body
    if len(body) > limit:
        return None
    encoding = request.header("content-encoding").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "x-gzip", "deflate"):
        return None
    wbits = 16 + zlib.MAX_WBITS if "gzip" in encoding else zlib.MAX_WBITS
    try:
        inflater = zlib.decompressobj(wbits)
        out = inflater.decompress(body, limit + 1)
    except zlib.error:
        return None
    if len(out) > limit:
        return None
    return out
