"""Adversarial regression tests reuse the end-to-end fixtures (real proxy, logging upstreams)."""

from e2e.conftest import *  # noqa: F403
