"""Tests for guardproxy.store (a package, so its conftest cannot clash with others)."""
