"""Sessions: who is behind a request, what they did before it, and the environment
`guardproxy run` gives them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from guardproxy.facade import lazy_exports

if TYPE_CHECKING:
    from guardproxy.session.environment import (
        export_lines,
        proxy_url,
        rewrite_kubeconfig,
        session_environment,
        write_ca_bundle,
    )
    from guardproxy.session.history import HistorySettings, SessionHistory
    from guardproxy.session.names import ResponseLearner, learner_for, resolve
    from guardproxy.session.registry import (
        SessionCredential,
        SessionRefused,
        SessionRegistry,
        anonymous_session,
        session_info,
    )
else:
    __getattr__ = lazy_exports(
        __name__,
        {
            "environment": [
                "export_lines",
                "proxy_url",
                "rewrite_kubeconfig",
                "session_environment",
                "write_ca_bundle",
            ],
            "history": ["HistorySettings", "SessionHistory"],
            "names": ["ResponseLearner", "learner_for", "resolve"],
            "registry": [
                "SessionCredential",
                "SessionRefused",
                "SessionRegistry",
                "anonymous_session",
                "session_info",
            ],
        },
    )

__all__ = [
    "HistorySettings",
    "ResponseLearner",
    "SessionCredential",
    "SessionHistory",
    "SessionRefused",
    "SessionRegistry",
    "anonymous_session",
    "export_lines",
    "learner_for",
    "proxy_url",
    "resolve",
    "rewrite_kubeconfig",
    "session_environment",
    "session_info",
    "write_ca_bundle",
]
