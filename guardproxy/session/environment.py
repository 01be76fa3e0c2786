"""What a guarded session's processes need: proxy variables, a CA bundle, a kubeconfig.

Most tools replace their trust store with whatever file these variables name, so
the bundle holds guardproxy's CA *and* the roots the user already trusts. kubectl
trusts only its kubeconfig's CA and (being Go) never proxies loopback servers, so
the session gets its own kubeconfig whose clusters go through the guard by
``proxy-url`` and trust guardproxy's CA; client certificates move into the proxy,
which presents them upstream (the private key cannot pass through a TLS proxy).
"""

from __future__ import annotations

import base64
import hashlib
import os
import shlex
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import certifi
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

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
    """A session kubeconfig, plus what the proxy must learn to reach the clusters."""

    path: Path
    upstream_cas: list[Path] = field(default_factory=list)
    client_certs: list[Path] = field(default_factory=list)


def _kubeconfig_sources(environ: dict[str, str]) -> list[Path]:
    listed = environ.get("KUBECONFIG", "")
    paths = [Path(p) for p in listed.split(os.pathsep) if p] if listed else []
    if not paths:
        paths = [Path(environ.get("HOME", str(Path.home()))) / ".kube" / "config"]
    return [p for p in paths if p.is_file()]


def _data(entry: dict[str, Any], key: str, base: Path) -> bytes | None:
    """``<key>-data`` (base64) or the file named by ``<key>``, relative to the kubeconfig."""
    if entry.get(f"{key}-data"):
        return base64.b64decode(entry[f"{key}-data"])
    if entry.get(key):
        path = Path(entry[key])
        return (path if path.is_absolute() else base / path).read_bytes()
    return None


def rewrite_kubeconfig(
    environ: dict[str, str],
    out_dir: Path,
    *,
    proxy: str,
    ca_cert: Path,
    client_cert_dir: Path,
    upstream_ca_dir: Path,
) -> KubeconfigRewrite | None:
    """Write the session kubeconfig; None when the user has none."""
    sources = _kubeconfig_sources(environ)
    if not sources:
        return None
    merged: dict[str, Any] = {"apiVersion": "v1", "kind": "Config", "clusters": [], "users": [],
                              "contexts": [], "preferences": {}}  # fmt: skip
    for source in sources:
        loaded = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
        for section in ("clusters", "users", "contexts"):
            known = {item["name"] for item in merged[section]}
            merged[section].extend(i for i in loaded.get(section) or [] if i["name"] not in known)
        merged.setdefault("current-context", loaded.get("current-context", ""))
        if not merged["current-context"]:
            merged["current-context"] = loaded.get("current-context", "")
    rewrite = KubeconfigRewrite(out_dir / "kubeconfig")
    guard_ca = base64.b64encode(ca_cert.read_bytes()).decode()
    server_of: dict[str, str] = {}
    for item in merged["clusters"]:
        cluster = item["cluster"]
        server_of[item["name"]] = urlsplit(cluster.get("server", "")).hostname or ""
        original_ca = _data(cluster, "certificate-authority", sources[0].parent)
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
    users_by_name = {u["name"]: u for u in merged["users"]}
    for context in merged["contexts"]:
        user = users_by_name.get(context["context"].get("user", ""))
        host = server_of.get(context["context"].get("cluster", ""), "")
        if user is None or not host:
            continue
        _move_client_cert(user["user"], host, client_cert_dir, sources[0].parent, rewrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    rewrite.path.write_text(yaml.safe_dump(merged, sort_keys=False), encoding="utf-8")
    os.chmod(rewrite.path, 0o600)
    return rewrite


def _move_client_cert(
    user: dict[str, Any], host: str, cert_dir: Path, base: Path, rewrite: KubeconfigRewrite
) -> None:
    cert = _data(user, "client-certificate", base)
    key = _data(user, "client-key", base)
    if cert is None or key is None:
        return
    cert_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(cert_dir, 0o700)
    path = cert_dir / f"{host}.pem"
    path.write_bytes(cert.rstrip(b"\n") + b"\n" + key)
    os.chmod(path, 0o600)
    rewrite.client_certs.append(path)
    for name in ("client-certificate", "client-key"):
        user.pop(name, None)
        user.pop(f"{name}-data", None)
    # A user with no credential makes kubectl prompt for a username. This stand-in is
    # never sent: the guard does not ask clients for certificates.
    stand_in_cert, stand_in_key = _stand_in_certificate()
    user["client-certificate-data"] = base64.b64encode(stand_in_cert).decode()
    user["client-key-data"] = base64.b64encode(stand_in_key).decode()


@cache
def _stand_in_certificate() -> tuple[bytes, bytes]:
    """A throwaway self-signed client certificate (PEM cert, PEM key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "guardproxy-session-stand-in")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


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
