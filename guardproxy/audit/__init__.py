"""The audit trail: hash-chained decision records, export, verify, replay."""
