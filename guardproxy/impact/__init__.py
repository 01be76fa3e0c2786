"""Impact previews and safety steps: what a held action would destroy, read from its
upstream before anyone decides, and the copy the guard makes before it releases an
approved one (README, On-call).

Above the broker (its real credentials) and the recognisers (their parsers), below
the server that wires it: the gate and the approvals service reach it only through
the two interfaces of :mod:`guardproxy.approvals.safety`. Nothing here is read by a
decision: the engine stays a pure function of its recorded input.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from guardproxy.facade import lazy_exports

if TYPE_CHECKING:
    from guardproxy.impact.model import Budget, Facts, ImpactError
    from guardproxy.impact.service import ImpactService
    from guardproxy.impact.settings import ImpactSettings
else:
    __getattr__ = lazy_exports(
        __name__,
        {
            "model": ["Budget", "Facts", "ImpactError"],
            "service": ["ImpactService"],
            "settings": ["ImpactSettings"],
        },
    )

__all__ = ["Budget", "Facts", "ImpactError", "ImpactService", "ImpactSettings"]
