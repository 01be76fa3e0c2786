"""The decision pipeline: one request from recognition to the session history.

``Pipeline.decide`` (recognise, resolve names, actor, history, context, evaluate) and
``Pipeline.after`` (the gate's outcome into the history, a learner for the response)
are the steps every caller runs: the proxy's Guard addon through ``LivePipeline`` (on
its event loop), replay of captured traffic (``guardproxy.pipeline.replay``) and tests.
No mitmproxy here: the intercept layer adapts flows to it.
"""

from guardproxy.pipeline.live import READ_BATCH_SECONDS, LivePipeline
from guardproxy.pipeline.steps import (
    FixedPolicies,
    Pipeline,
    Policies,
    Verdict,
    learns_from,
    with_actor,
)

__all__ = [
    "READ_BATCH_SECONDS",
    "FixedPolicies",
    "LivePipeline",
    "Pipeline",
    "Policies",
    "Verdict",
    "learns_from",
    "with_actor",
]
