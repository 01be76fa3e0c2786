"""Kubernetes users' real credentials, held by the guard for a session.

A session kubeconfig user carries a session token; the guard presents the user's real
credential to the clusters that user is used with (its contexts' servers) and to no
other host:

* a client certificate (the key cannot pass through a TLS proxy anyway): presented on
  the upstream TLS connection, chosen per connection, so two clusters on one host name
  (or two users of one cluster) each get their own;
* a bearer token (``token``, ``tokenFile``, read again when the file changes);
* an exec credential plugin (``aws eks get-token``, ``gke-gcloud-auth-plugin``), run
  by the guard with the guard's environment as client-go runs it
  (``KUBERNETES_EXEC_INFO``, the plugin's ``env``), its token or certificate cached
  until its ``expirationTimestamp``.

Users with an ``auth-provider`` or a username/password are not brokered: their
credentials stay in the session kubeconfig (``run`` lists them).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from guardproxy.broker.rewrite import CredentialError
from guardproxy.broker.sources import FileToken, StaticToken, TokenSource, parse_time, run_command
from guardproxy.session.environment import file_or_data

EXEC_API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")


@dataclass(frozen=True)
class ExecResult:
    token: str = ""
    certificate: tuple[bytes, bytes] | None = None


class ExecPlugin:
    """A kubeconfig user's exec credential plugin, run by the guard, cached until expiry."""

    def __init__(
        self,
        user: str,
        spec: dict[str, Any],
        cluster: dict[str, Any] | None,
        *,
        timeout: float,
        default_ttl: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.what = f"kubeconfig user {user!r}: exec plugin"
        command = spec.get("command")
        if not isinstance(command, str) or not command:
            raise CredentialError(f"kubeconfig user {user!r}: exec has no command")
        self._argv = [command, *[str(a) for a in spec.get("args") or []]]
        self.what = f"kubeconfig user {user!r}: exec plugin `{command}`"
        api_version = spec.get("apiVersion", "")
        if api_version not in EXEC_API_VERSIONS:
            raise CredentialError(f"{self.what}: unsupported apiVersion {api_version!r}")
        if spec.get("interactiveMode") == "Always":
            raise CredentialError(
                f"{self.what}: interactiveMode Always needs a terminal the guard does not have"
            )
        info: dict[str, Any] = {"kind": "ExecCredential", "apiVersion": api_version,
                                "spec": {"interactive": False}}  # fmt: skip
        if spec.get("provideClusterInfo") and cluster is not None:
            info["spec"]["cluster"] = {
                k: cluster[k]
                for k in ("server", "tls-server-name", "insecure-skip-tls-verify",
                          "certificate-authority-data", "proxy-url", "disable-compression")
                if k in cluster
            }  # fmt: skip
        env = dict(os.environ)
        for entry in spec.get("env") or []:
            if isinstance(entry, dict) and "name" in entry:
                env[str(entry["name"])] = str(entry.get("value", ""))
        env["KUBERNETES_EXEC_INFO"] = json.dumps(info)
        self._env = env
        self._timeout = timeout
        self._default_ttl = default_ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._result: ExecResult | None = None
        self._expires = 0.0
        self.runs = 0

    def needs_io(self) -> bool:
        return self._result is None or self._clock() >= self._expires - 10.0

    def get(self) -> ExecResult:
        if not self.needs_io():
            assert self._result is not None
            return self._result
        with self._lock:
            if self.needs_io():
                self._result, self._expires = self._run()
        assert self._result is not None
        return self._result

    def check(self) -> None:
        """Whether the plugin can run at all (found on PATH): it runs on first use."""
        command = self._argv[0]
        if "/" in command:
            if not os.access(command, os.X_OK):
                raise CredentialError(f"{self.what}: {command} is not an executable file")
            return
        path = self._env.get("PATH", os.defpath)
        if not any(os.access(os.path.join(d, command), os.X_OK) for d in path.split(os.pathsep)):
            raise CredentialError(f"{self.what}: {command} is not on the guard's PATH")

    def _run(self) -> tuple[ExecResult, float]:
        self.runs += 1
        output = run_command(self._argv, what=self.what, env=self._env, timeout=self._timeout)
        try:
            status = json.loads(output)["status"]
        except (ValueError, KeyError, TypeError):
            raise CredentialError(f"{self.what}: printed no ExecCredential status") from None
        token = str(status.get("token") or "")
        certificate = None
        if status.get("clientCertificateData") and status.get("clientKeyData"):
            certificate = (
                str(status["clientCertificateData"]).encode(),
                str(status["clientKeyData"]).encode(),
            )
        if not token and certificate is None:
            raise CredentialError(f"{self.what}: its ExecCredential has no token or certificate")
        expires = self._clock() + self._default_ttl
        stamp = status.get("expirationTimestamp")
        if isinstance(stamp, str) and stamp:
            try:
                expires = parse_time(stamp)
            except ValueError:
                raise CredentialError(f"{self.what}: bad expirationTimestamp") from None
        return ExecResult(token, certificate), expires


@dataclass
class KubeCredential:
    """One kubeconfig user's real credential and the servers it may be sent to."""

    user: str
    servers: frozenset[tuple[str, int]]
    certificate: tuple[bytes, bytes] | None = None
    token: TokenSource | None = None
    plugin: ExecPlugin | None = None
    kinds: list[str] = field(default_factory=list)

    def needs_io(self) -> bool:
        return (self.plugin is not None and self.plugin.needs_io()) or (
            self.token is not None and self.token.needs_io()
        )

    def current(self) -> tuple[str, tuple[bytes, bytes] | None]:
        """(bearer token or "", client certificate) now; may run the plugin."""
        token = self.token.get() if self.token is not None else ""
        certificate = self.certificate
        if self.plugin is not None:
            result = self.plugin.get()
            token = result.token or token
            certificate = result.certificate or certificate
        return token, certificate

    def check(self) -> None:
        if self.plugin is not None:
            self.plugin.check()
        if self.token is not None:
            self.token.check()


def server_address(server: str) -> tuple[str, int] | None:
    split = urlsplit(server)
    if split.hostname is None:
        return None
    default = 443 if split.scheme == "https" else 80
    try:
        port = split.port or default
    except ValueError:
        return None
    return split.hostname.lower(), port


def user_credentials(
    merged: dict[str, Any],
    *,
    everything: bool,
    exec_timeout: float = 30.0,
    token_cache: float = 300.0,
) -> tuple[dict[str, KubeCredential], dict[str, str]]:
    """The users the guard brokers (``everything``: tokens and exec plugins too, else
    client certificates only), and the others with why they are not brokered."""
    clusters = {c["name"]: c.get("cluster") or {} for c in merged["clusters"]}
    servers: dict[str, set[tuple[str, int]]] = {}
    first_cluster: dict[str, dict[str, Any]] = {}
    for context in merged["contexts"]:
        body = context.get("context") or {}
        cluster = clusters.get(body.get("cluster", ""))
        user = body.get("user", "")
        if cluster is None or not user:
            continue
        address = server_address(str(cluster.get("server", "")))
        if address is not None:
            servers.setdefault(user, set()).add(address)
        first_cluster.setdefault(user, cluster)
    brokered: dict[str, KubeCredential] = {}
    left: dict[str, str] = {}
    for item in merged["users"]:
        name, user = item["name"], item.get("user") or {}
        try:
            credential = _credential(
                name, user, servers.get(name, set()), first_cluster.get(name),
                everything=everything, exec_timeout=exec_timeout, token_cache=token_cache,
            )  # fmt: skip
        except (OSError, ValueError) as error:
            why = f"cannot read {error.filename}: {error.strerror}" if isinstance(
                error, OSError) else "its certificate data is not base64"  # fmt: skip
            left[name] = f"not brokered: {why}"
            continue
        except CredentialError as error:
            left[name] = f"not brokered: {error}"
            continue
        if isinstance(credential, KubeCredential):
            brokered[name] = credential
        elif credential:
            left[name] = credential
    return brokered, left


def _credential(
    name: str,
    user: dict[str, Any],
    servers: set[tuple[str, int]],
    cluster: dict[str, Any] | None,
    *,
    everything: bool,
    exec_timeout: float,
    token_cache: float,
) -> KubeCredential | str:
    certificate_pem = file_or_data(user, "client-certificate")
    key_pem = file_or_data(user, "client-key")
    has_certificate = certificate_pem is not None and key_pem is not None
    if user.get("auth-provider"):
        return "auth-provider (not brokered)"
    if user.get("username") or user.get("password"):
        return "username/password (not brokered)"
    if not has_certificate and not everything:
        kinds = [k for k in ("token", "tokenFile", "exec") if user.get(k)]
        return f"{'/'.join(kinds)} (Kubernetes brokering is off)" if kinds else ""
    credential = KubeCredential(name, frozenset(servers))
    if has_certificate:
        assert certificate_pem is not None and key_pem is not None
        credential.certificate = (certificate_pem, key_pem)
        credential.kinds.append("client certificate")
    if user.get("token"):
        credential.token = StaticToken(f"kubeconfig user {name!r}: token", str(user["token"]))
        credential.kinds.append("token")
    elif user.get("tokenFile"):
        credential.token = FileToken(
            f"kubeconfig user {name!r}: tokenFile", Path(str(user["tokenFile"]))
        )
        credential.kinds.append("token file")
    if isinstance(user.get("exec"), dict):
        credential.plugin = ExecPlugin(name, user["exec"], cluster, timeout=exec_timeout,
                                       default_ttl=token_cache)  # fmt: skip
        credential.kinds.append("exec plugin")
    if not credential.kinds:
        return ""
    return credential


__all__ = [
    "EXEC_API_VERSIONS",
    "ExecPlugin",
    "ExecResult",
    "KubeCredential",
    "server_address",
    "user_credentials",
]
