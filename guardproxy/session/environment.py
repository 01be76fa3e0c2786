"""What a guarded session's processes need: proxy variables, a CA bundle, a kubeconfig.

Most tools replace their trust store with whatever file these variables name, so
the bundle holds guardproxy's CA *and* the roots the user already trusts. kubectl
trusts only its kubeconfig's CA and (being Go) never proxies loopback servers, so
the session gets its own kubeconfig whose clusters go through the guard by
``proxy-url`` and trust guardproxy's CA. Users whose credentials the guard brokers
(client certificates always: a private key cannot pass through a TLS proxy; tokens
and exec plugins when Kubernetes brokering is on) carry only a session token for the
guard, which presents the real credential upstream.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import certifi
import yaml

SYSTEM_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
)
CA_VARIABLES = (
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "AWS_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "GIT_SSL_CAINFO",
    "CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE",
    "PIP_CERT",
    "HTTPLIB2_CA_CERTS",
    "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH",
    "CARGO_HTTP_CAINFO",
    "DENO_CERT",
    "NIX_SSL_CERT_FILE",
)


def proxy_url(host: str, port: int, session_id: str, token: str) -> str:
    return f"http://{quote(session_id, safe='')}:{quote(token, safe='')}@{host}:{port}"


def existing_roots(environ: dict[str, str]) -> str:
    """The roots the user's tools trust today."""
    for variable in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        path = environ.get(variable)
        if path and Path(path).is_file():
            return Path(path).read_text(encoding="ascii", errors="ignore")
    for candidate in SYSTEM_BUNDLES:
        if Path(candidate).is_file():
            return Path(candidate).read_text(encoding="ascii", errors="ignore")
    return Path(certifi.where()).read_text(encoding="ascii")


def write_ca_bundle(ca_cert: Path, out: Path, environ: dict[str, str]) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        ca_cert.read_text(encoding="ascii") + "\n" + existing_roots(environ), encoding="ascii"
    )
    return out


@dataclass
class KubeconfigRewrite:
    """A session kubeconfig, plus the cluster CAs the proxy must learn to reach them."""

    path: Path
    upstream_cas: list[Path] = field(default_factory=list)
    brokered_users: list[str] = field(default_factory=list)
    """Users whose credentials the guard holds: the session has only a token for the guard."""


def kubeconfig_sources(environ: Mapping[str, str]) -> list[Path]:
    """The kubeconfig files kubectl would read with ``environ``: $KUBECONFIG's list, else
    ~/.kube/config (only those that exist)."""
    listed = environ.get("KUBECONFIG", "")
    paths = [Path(p) for p in listed.split(os.pathsep) if p] if listed else []
    if not paths:
        paths = [Path(environ.get("HOME", str(Path.home()))) / ".kube" / "config"]
    return [p.absolute() for p in paths if p.is_file()]


_FILE_FIELDS = {
    "clusters": ("certificate-authority",),
    "users": ("client-certificate", "client-key", "tokenFile"),
}


def _absolute(entry: dict[str, Any], fields: tuple[str, ...], base: Path) -> None:
    """Make the file references of ``entry`` absolute, relative to its kubeconfig
    (client-go's ResolveLocalPaths: each file's references are relative to it)."""
    for name in fields:
        value = entry.get(name)
        if isinstance(value, str) and value and not Path(value).is_absolute():
            entry[name] = str(base / value)
    exec_spec = entry.get("exec")
    if isinstance(exec_spec, dict):
        command = exec_spec.get("command")
        if isinstance(command, str) and "/" in command and not Path(command).is_absolute():
            exec_spec["command"] = str(base / command)


def merged_kubeconfig(sources: list[Path]) -> dict[str, Any]:
    """The kubeconfig kubectl would see: every file merged, the first to define a name
    winning (clientcmd's merge), file references made absolute."""
    merged: dict[str, Any] = {"apiVersion": "v1", "kind": "Config", "clusters": [], "users": [],
                              "contexts": [], "preferences": {}, "current-context": ""}  # fmt: skip
    for source in sources:
        loaded = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            continue
        for section in ("clusters", "users", "contexts"):
            known = {item["name"] for item in merged[section]}
            for given in loaded.get(section) or []:
                if not isinstance(given, dict) or given.get("name") in known:
                    continue
                item = copy.deepcopy(given)
                body = item.get(section[:-1]) or {}
                item[section[:-1]] = body
                _absolute(body, _FILE_FIELDS.get(section, ()), source.parent)
                merged[section].append(item)
                known.add(item["name"])
        if not merged["current-context"]:
            merged["current-context"] = loaded.get("current-context", "") or ""
    return merged


def self_contained_kubeconfig(sources: list[Path]) -> dict[str, Any]:
    """:func:`merged_kubeconfig` with every file it names read in (``<key>-data``; a
    ``tokenFile`` becomes the ``token`` it holds now), for a guard that runs as another
    user and cannot read the user's files (root mode). OSError when one is unreadable."""
    merged = merged_kubeconfig(sources)
    for section, fields in _FILE_FIELDS.items():
        for item in merged[section]:
            body = item[section[:-1]]
            for key in fields:
                if not isinstance(body.get(key), str) or not body[key]:
                    continue
                content = Path(body.pop(key)).read_bytes()
                if key == "tokenFile":
                    body["token"] = content.decode("utf-8").strip()
                else:
                    body[f"{key}-data"] = base64.b64encode(content).decode()
    return merged


def file_or_data(entry: dict[str, Any], key: str) -> bytes | None:
    """``<key>-data`` (base64) or the file named by ``<key>`` (absolute by now)."""
    if entry.get(f"{key}-data"):
        return base64.b64decode(entry[f"{key}-data"])
    if entry.get(key):
        return Path(entry[key]).read_bytes()
    return None


_IMPERSONATION = ("as", "as-uid", "as-groups", "as-user-extra")
"""What a kubeconfig user says besides its credential: who to impersonate (kubectl sends
these as Impersonate-* headers; they are not credentials and stay)."""


def rewrite_kubeconfig(
    environ: Mapping[str, str],
    out_dir: Path,
    *,
    proxy: str,
    ca_cert: Path,
    upstream_ca_dir: Path,
    session_tokens: Mapping[str, str],
) -> KubeconfigRewrite | None:
    """Write the session kubeconfig; None when the user has none.

    Every cluster goes through the guard (``proxy-url``) and trusts its CA; the users in
    ``session_tokens`` (user name -> the session's token for it) carry that token alone,
    the guard presenting their real credentials upstream."""
    sources = kubeconfig_sources(environ)
    if not sources:
        return None
    merged = merged_kubeconfig(sources)
    rewrite = KubeconfigRewrite(out_dir / "kubeconfig")
    guard_ca = base64.b64encode(ca_cert.read_bytes()).decode()
    for item in merged["clusters"]:
        cluster = item["cluster"]
        original_ca = file_or_data(cluster, "certificate-authority")
        if original_ca:
            upstream_ca_dir.mkdir(parents=True, exist_ok=True)
            # named by content: clusters with the same name in different kubeconfigs
            # must not overwrite each other's CA
            digest = hashlib.sha256(original_ca).hexdigest()[:16]
            path = upstream_ca_dir / f"kube-{digest}.pem"
            path.write_bytes(original_ca)
            rewrite.upstream_cas.append(path)
        for key in ("certificate-authority", "insecure-skip-tls-verify"):
            cluster.pop(key, None)
        cluster["certificate-authority-data"] = guard_ca
        cluster["proxy-url"] = proxy
    for item in merged["users"]:
        token = session_tokens.get(item["name"])
        if token is None:
            continue
        user = item["user"]
        item["user"] = {"token": token, **{k: user[k] for k in _IMPERSONATION if k in user}}
        rewrite.brokered_users.append(item["name"])
    out_dir.mkdir(parents=True, exist_ok=True)
    rewrite.path.write_text(yaml.safe_dump(merged, sort_keys=False), encoding="utf-8")
    os.chmod(rewrite.path, 0o600)
    return rewrite


def session_environment(
    *,
    proxy: str,
    ca_bundle: Path,
    ca_cert: Path,
    kubeconfig: Path | None,
    session_id: str,
) -> dict[str, str]:
    """The variables that make common tools use the proxy and trust its CA."""
    split = urlsplit(proxy)
    env = {
        "HTTP_PROXY": proxy,
        "HTTPS_PROXY": proxy,
        "http_proxy": proxy,
        "https_proxy": proxy,
        "NO_PROXY": "",
        "no_proxy": "",
        "NODE_USE_ENV_PROXY": "1",
        # git (libcurl) otherwise sends its first requests without the proxy credential,
        # waiting for a 407 challenge that a guard serving anonymous clients never sends:
        # its traffic would not be the session's
        "GIT_HTTP_PROXY_AUTHMETHOD": "basic",
        "CLOUDSDK_PROXY_TYPE": "http",
        "CLOUDSDK_PROXY_ADDRESS": split.hostname or "127.0.0.1",
        "CLOUDSDK_PROXY_PORT": str(split.port or 80),
        "CLOUDSDK_PROXY_USERNAME": split.username or "",
        "CLOUDSDK_PROXY_PASSWORD": split.password or "",
        "GUARDPROXY_SESSION": session_id,
    }
    env.update({name: str(ca_bundle) for name in CA_VARIABLES})
    env["NODE_EXTRA_CA_CERTS"] = str(ca_cert)
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    return env


def export_lines(env: dict[str, str]) -> str:
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in sorted(env.items()))
