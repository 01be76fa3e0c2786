"""The audit trail: hash-chained decision records, signed checkpoints, export, verify,
replay."""

from __future__ import annotations

from typing import TYPE_CHECKING

from guardproxy.facade import lazy_exports

if TYPE_CHECKING:
    from guardproxy.audit.checkpoint import (
        AuditKeyError,
        Checkpointer,
        SigningKey,
        VerifyKey,
        load_or_create_signing_key,
        load_verify_key,
    )
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
        Verification,
        checked_records,
        export_lines,
        iter_chain,
        iter_checkpoints,
        parse_time,
        record_dict,
        verify_store,
    )
else:
    __getattr__ = lazy_exports(
        __name__,
        {
            "checkpoint": [
                "AuditKeyError",
                "Checkpointer",
                "SigningKey",
                "VerifyKey",
                "load_or_create_signing_key",
                "load_verify_key",
            ],
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
                "Verification",
                "checked_records",
                "export_lines",
                "iter_chain",
                "iter_checkpoints",
                "parse_time",
                "record_dict",
                "verify_store",
            ],
        },
    )

__all__ = [
    "AuditKeyError",
    "ChainCheck",
    "Checkpointer",
    "DecisionView",
    "Replayed",
    "SigningKey",
    "Verification",
    "VerifyKey",
    "checked_chain",
    "checked_record",
    "checked_records",
    "export_lines",
    "iter_chain",
    "iter_checkpoints",
    "load_or_create_signing_key",
    "load_verify_key",
    "parse_time",
    "record_dict",
    "replay_records",
    "shadow_differences",
    "verify_store",
]
