"""The end-to-end fixtures (real proxy, logging upstreams) for the adversarial tests."""

from e2e.conftest import *  # noqa: F403
