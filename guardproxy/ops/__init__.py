"""Operating a running guardproxy: health, readiness and metrics pages, policy reload,
listener checks."""
