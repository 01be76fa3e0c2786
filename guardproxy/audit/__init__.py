"""The audit trail: hash-chained decision records, export, verify, replay."""

from __future__ import annotations

from typing import TYPE_CHECKING

from guardproxy.facade import lazy_exports

if TYPE_CHECKING:
    from guardproxy.audit.replay import (
        ChainCheck,
        Replayed,
        checked_chain,
        checked_record,
        replay_records,
        shadow_differences,
    )
    from guardproxy.audit.trail import (
        DecisionView,
        export_lines,
        iter_chain,
        parse_time,
        record_dict,
        verify_store,
    )
else:
    __getattr__ = lazy_exports(
        __name__,
        {
            "replay": [
                "ChainCheck",
                "Replayed",
                "checked_chain",
                "checked_record",
                "replay_records",
                "shadow_differences",
            ],
            "trail": [
                "DecisionView",
                "export_lines",
                "iter_chain",
                "parse_time",
                "record_dict",
                "verify_store",
            ],
        },
    )

__all__ = [
    "ChainCheck",
    "DecisionView",
    "Replayed",
    "checked_chain",
    "checked_record",
    "export_lines",
    "iter_chain",
    "parse_time",
    "record_dict",
    "replay_records",
    "shadow_differences",
    "verify_store",
]
