"""The audit trail: redaction, hash-chained decision records, export, verify, replay."""

from guardproxy.audit.redact import (
    REDACTED,
    is_secret_field,
    is_sensitive_name,
    redact_body,
    redact_context_json,
    redact_headers,
    redact_json_text,
    redact_model_json,
    redact_text,
    redact_url,
    redact_value,
)

__all__ = [
    "REDACTED",
    "is_secret_field",
    "is_sensitive_name",
    "redact_body",
    "redact_context_json",
    "redact_headers",
    "redact_json_text",
    "redact_model_json",
    "redact_text",
    "redact_url",
    "redact_value",
]
