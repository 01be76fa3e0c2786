"""The gate: turn a decision into what happens to the request (forward, answer, hold)."""
