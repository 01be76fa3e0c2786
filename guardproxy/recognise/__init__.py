"""Recognise: turn one intercepted HTTP request into the normalised Action.

``recognise`` (``dispatcher.py``) asks the provider registry (``registry.py``, the
providers in ``providers/``) which providers claim a request, builds the action from
the most certain one and resolves its environment (``environment.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from guardproxy.facade import lazy_exports

if TYPE_CHECKING:
    from guardproxy.recognise.dispatcher import dispatch, dispatch_reason, recognise, warm_up
    from guardproxy.recognise.request import HttpRequest, RecogniseSettings
else:
    __getattr__ = lazy_exports(
        __name__,
        {
            "dispatcher": ["dispatch", "dispatch_reason", "recognise", "warm_up"],
            "request": ["HttpRequest", "RecogniseSettings"],
        },
    )

__all__ = [
    "HttpRequest",
    "RecogniseSettings",
    "dispatch",
    "dispatch_reason",
    "recognise",
    "warm_up",
]
