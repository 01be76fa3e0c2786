"""Interception: mitmproxy embedded, with guardproxy's addons."""

from __future__ import annotations

from typing import TYPE_CHECKING

from guardproxy.facade import lazy_exports

if TYPE_CHECKING:
    from guardproxy.intercept.flows import http_request
    from guardproxy.intercept.proxy import GuardProxy, ProxyStartError, ensure_ca
else:
    __getattr__ = lazy_exports(
        __name__,
        {
            "flows": ["http_request"],
            "proxy": ["GuardProxy", "ProxyStartError", "ensure_ca"],
        },
    )

__all__ = ["GuardProxy", "ProxyStartError", "ensure_ca", "http_request"]
