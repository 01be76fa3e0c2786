"""The addon tests' fixtures (a taddons proxy, a session registry on SQLite), shared."""

from .test_addons import proxy, registry, session, store

__all__ = ["proxy", "registry", "session", "store"]
