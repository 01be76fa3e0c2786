"""The gate: turn a decision into what happens to the request (forward, answer, hold)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from guardproxy.facade import lazy_exports

if TYPE_CHECKING:
    from guardproxy.gate.answers import Answer, Forward, Verdict
    from guardproxy.gate.digest import request_digest
    from guardproxy.gate.gate import Gate
    from guardproxy.gate.recorder import DecisionDraft, DecisionRecorder, Writer
    from guardproxy.gate.responses import NativeAnswer, native_answer
    from guardproxy.gate.writer import ProcessWriter, StoreWriter
else:
    __getattr__ = lazy_exports(
        __name__,
        {
            "digest": ["request_digest"],
            "answers": ["Answer", "Forward", "Verdict"],
            "gate": ["Gate"],
            "recorder": ["DecisionDraft", "DecisionRecorder", "Writer"],
            "responses": ["NativeAnswer", "native_answer"],
            "writer": ["ProcessWriter", "StoreWriter"],
        },
    )

__all__ = [
    "Answer",
    "DecisionDraft",
    "DecisionRecorder",
    "Forward",
    "Gate",
    "NativeAnswer",
    "ProcessWriter",
    "StoreWriter",
    "Verdict",
    "Writer",
    "native_answer",
    "request_digest",
]
