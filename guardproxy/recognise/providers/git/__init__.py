"""git smart HTTP: the provider module (see ``recognise/registry.py``).

Claims: a smart-HTTP endpoint path (receive-pack, upload-pack, upload-archive,
``info/refs?service=git-*``), on any host. The recogniser (``recogniser.py``) reads a
push as ``git receive-pack`` does, one action per ref update.

A refused push is answered inside a receive-pack report that rejects every ref, so git
prints the message and ``! [remote rejected]`` per ref (a bare 403 prints only "RPC
failed"); other requests get the message as text.

Selectors: ``git:<host>[:<port>]/<path>`` for a repository or any leading part of its
path, ``git:<host>[:<port>]``, then ``git:repo:<owner/repo>``; names: the repository and
its owner (never a ref: a branch called ``test-fix`` says nothing about where its
repository deploys).
"""

from __future__ import annotations

from guardproxy.action import Action, Provider
from guardproxy.hosts import host_port
from guardproxy.recognise.providers.git.recogniser import (
    is_git_request,
    parse_push_request,
    recognise_git,
)
from guardproxy.recognise.registry import (
    Claim,
    HostKey,
    NativeError,
    ProviderModule,
    Selectors,
    Spelling,
)
from guardproxy.recognise.request import HttpRequest, RecogniseSettings

__all__ = ["PROVIDER"]

_RECEIVE_PACK = "/git-receive-pack"


def _claims(request: HttpRequest, settings: RecogniseSettings) -> bool:
    return is_git_request(request)


def _reason(request: HttpRequest) -> str:
    return "its path is a git smart-HTTP endpoint"


def _error(request: HttpRequest, action: Action, message: str, reference: str) -> NativeError:
    return NativeError("text/plain; charset=utf-8", (message + "\n").encode())


def _pkt(data: bytes) -> bytes:
    return f"{len(data) + 4:04x}".encode() + data


def _push_rejected(
    request: HttpRequest, message: str, decision: str, reference: str
) -> NativeError | None:
    """A receive-pack report that rejects every ref: git prints our message as
    `remote: ...` and each ref as `! [remote rejected]`, where a plain HTTP 403
    would only print "RPC failed; HTTP 403" and lose the message."""
    if not request.path_only.endswith(_RECEIVE_PACK):
        return None
    try:
        updates, capabilities = parse_push_request(request)
    except ValueError:
        return None
    if not updates:
        return None
    why = f"held for approval ({reference})" if decision == "hold" else f"denied ({reference})"
    report = _pkt(b"unpack ok\n")
    report += b"".join(_pkt(f"ng {u.ref} guardproxy: {why}\n".encode()) for u in updates)
    report += b"0000"
    content_type = "application/x-git-receive-pack-result"
    if not capabilities & {"side-band", "side-band-64k"}:
        return NativeError(content_type, report, status=200)
    limit = 65515 if "side-band-64k" in capabilities else 995
    progress = f"{message}\n".encode()
    body = b"".join(_pkt(b"\x02" + progress[i : i + limit]) for i in range(0, len(progress), limit))
    body += b"".join(_pkt(b"\x01" + report[i : i + limit]) for i in range(0, len(report), limit))
    return NativeError(content_type, body + b"0000", status=200)


def _path_prefixes(path: str) -> list[str]:
    """``a/b/c``, ``a/b``, ``a``: a repository path and its parents, longest first."""
    parts = [p for p in path.split("/") if p]
    return ["/".join(parts[:n]) for n in range(len(parts), 0, -1)]


def _selectors(action: Action, spell: Spelling) -> list[str]:
    host, port = spell(action.request.host), action.request.port
    hosts = [host_port(host, port), host] if port else [host]
    found = [f"git:{h}/{prefix}" for prefix in _path_prefixes(action.scope.repository)
             for h in hosts]  # fmt: skip
    found += [f"git:{h}" for h in hosts]
    repository = action.scope.repository
    return [*found, f"git:repo:{repository}"] if repository else found


def _names(action: Action) -> list[str]:
    return [n for n in (action.scope.repository, action.scope.project) if n]


PROVIDER = ProviderModule(
    provider=Provider.GIT,
    recognise=recognise_git,
    claims=(Claim(30, "git", _claims, _reason),),
    error=_error,
    in_band_refusal=_push_rejected,
    selectors=Selectors(
        _selectors, host_keys=(HostKey("git:", excluding=("git:repo:",)),), names=_names
    ),
)
