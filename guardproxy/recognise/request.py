"""The raw request a recogniser sees: decoupled from mitmproxy so it can be tested alone."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from urllib.parse import parse_qsl


@dataclass(frozen=True)
class HttpRequest:
    """One HTTP request as it will reach the upstream.

    ``host`` and ``port`` are the **real destination** (the CONNECT target or the
    absolute-form URL of a plain proxy request), never the Host header or SNI the
    client chose; ``host_header`` is kept only so recognisers can notice a mismatch.
    """

    method: str
    scheme: str
    host: str
    port: int
    path: str  # path and query, as sent: "/api/v1/namespaces?watch=1"
    headers: tuple[tuple[str, str], ...] = ()  # (lower-case name, value), in order
    body: bytes = b""
    host_header: str = ""

    @cached_property
    def path_only(self) -> str:
        """The path of the request target, as the upstream will see it.

        Split by hand, not with ``urlsplit``: a target such as ``//api/v1/x`` is a
        path to the server, while ``urlsplit`` would read ``api`` as a host name and
        hand a recogniser ``/v1/x`` (or raise on ``//[``).
        """
        return self.path.partition("?")[0].partition("#")[0] or "/"

    @cached_property
    def query(self) -> list[tuple[str, str]]:
        """Decoded query pairs (computed once: recognisers read them several times)."""
        query = self.path.partition("#")[0].partition("?")[2]
        return parse_qsl(query, keep_blank_values=True)

    @cached_property
    def query_values(self) -> dict[str, list[str]]:
        """Every value of every query key, in order: a key given twice is ambiguous
        unless the server's own rule for repeats is known (each recogniser decides,
        citing the server; never "first value wins" silently)."""
        values: dict[str, list[str]] = {}
        for key, value in self.query:
            values.setdefault(key, []).append(value)
        return values

    @cached_property
    def repeated_query_keys(self) -> frozenset[str]:
        """Query keys given more than once."""
        return frozenset(k for k, v in self.query_values.items() if len(v) > 1)

    def header_values(self, name: str) -> list[str]:
        """Every value of header ``name`` (case-insensitive), in order."""
        wanted = name.lower()
        return [v for k, v in self.headers if k == wanted]

    def header(self, name: str, default: str = "") -> str:
        """First value of header ``name`` (case-insensitive)."""
        wanted = name.lower()
        return next((v for k, v in self.headers if k == wanted), default)

    @property
    def header_names(self) -> list[str]:
        return sorted({k for k, _ in self.headers})

    @property
    def user_agent(self) -> str:
        return self.header("user-agent")


@dataclass(frozen=True)
class RecogniseSettings:
    """Site knowledge that turns ids into environments; see environment.py."""

    environments: dict[str, str] = field(default_factory=dict)  # "aws:account:1111" -> "prod"
    kubernetes_hosts: tuple[str, ...] = ()  # API server hosts (host or host:port) to parse as k8s
