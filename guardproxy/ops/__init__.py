"""Operating a running guardproxy: health, readiness and metrics pages, policy reload,
listener checks."""

from __future__ import annotations

from typing import TYPE_CHECKING

from guardproxy.facade import lazy_exports

if TYPE_CHECKING:
    from guardproxy.ops.http import Operations, OpsServer, ops_routes
    from guardproxy.ops.listen import Listener, bind_problem, clashes, describe
    from guardproxy.ops.reload import ReloadReport, bundle_fingerprint, reload_bundle
else:
    __getattr__ = lazy_exports(
        __name__,
        {
            "http": ["Operations", "OpsServer", "ops_routes"],
            "listen": ["Listener", "bind_problem", "clashes", "describe"],
            "reload": ["ReloadReport", "bundle_fingerprint", "reload_bundle"],
        },
    )

__all__ = [
    "Listener",
    "Operations",
    "OpsServer",
    "ReloadReport",
    "bind_problem",
    "bundle_fingerprint",
    "clashes",
    "describe",
    "ops_routes",
    "reload_bundle",
]
