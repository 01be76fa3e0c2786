"""Operating a running guardproxy: metrics, health and readiness, policy reload."""
