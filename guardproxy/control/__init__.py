"""The control API and its client: holds, approvals and sessions, for humans and `run`."""
