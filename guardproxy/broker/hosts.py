"""Where a real credential may go: host patterns, with or without a port."""

from __future__ import annotations

import fnmatch
import re


def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile(fnmatch.translate(pattern.lower()))


def _host(host: str) -> str:
    return host.strip("[]").lower().rstrip(".")


class HostSet:
    """Hosts a provider's real credential is sent to.

    ``defaults``: the provider's own hosts, reached over HTTPS only (a credential in
    clear text would be readable on the way); ``configured``: hosts the user named
    (``github.corp:8443``, a loopback LocalStack), over HTTP too. A pattern with a port
    matches that port only; ``*.`` globs match subdomains, never the bare name.
    """

    def __init__(self, defaults: tuple[str, ...] = (), configured: tuple[str, ...] = ()) -> None:
        self.defaults = defaults
        self.configured = configured
        self._defaults = [_compile(p) for p in defaults]
        self._configured = [_compile(p) for p in configured]
        self._seen: dict[tuple[str, str, int], bool] = {}

    def allows(self, scheme: str, host: str, port: int) -> bool:
        key = (scheme, host, port)
        found = self._seen.get(key)
        if found is None:
            found = self._allows(scheme, host, port)
            if len(self._seen) > 4096:
                self._seen.clear()
            self._seen[key] = found
        return found

    def _allows(self, scheme: str, host: str, port: int) -> bool:
        name = _host(host)
        candidates = (name, f"{name}:{port}")
        if any(p.fullmatch(c) for p in self._configured for c in candidates):
            return True
        if scheme != "https":
            return False
        return any(p.fullmatch(c) for p in self._defaults for c in candidates)


METADATA_HOSTS = frozenset(
    {"169.254.169.254", "fd00:ec2::254", "169.254.170.2", "169.254.170.23",
     "metadata.google.internal", "metadata", "metadata.goog"}
)  # fmt: skip
"""Instance metadata services: each hands out the machine's own cloud credentials, the
way around every brokered one (AWS IMDS and its IPv6 address, the ECS and EKS Pod
Identity agents, GCP's and Azure's metadata servers)."""


def is_metadata_host(host: str) -> bool:
    return _host(host) in METADATA_HOSTS


__all__ = ["METADATA_HOSTS", "HostSet", "is_metadata_host"]
