"""End-to-end test support: real upstream servers on loopback for real clients."""
