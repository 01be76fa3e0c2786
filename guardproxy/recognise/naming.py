"""What names say about environments: ``prod-calc`` is production, ``test-db`` dev.

The name heuristic of environment resolution (``environment.py``) and of names learned
from responses (``session/names.py``), and the order of environments from the most to
the least guarded. Providers' recognisers use it too (an AWS ARN's name), so it reads
no registry.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from guardproxy.action import Environment

__all__ = ["STRICTNESS", "environment_from_names", "parse_environment", "strictest"]

_TOKEN_SPLIT = re.compile(r"[-_./:\s]+")

_NAME_TOKENS: dict[str, Environment] = {
    "prod": Environment.PROD,
    "production": Environment.PROD,
    "prd": Environment.PROD,
    "staging": Environment.STAGING,
    "stage": Environment.STAGING,
    "stg": Environment.STAGING,
    "dev": Environment.DEV,
    "development": Environment.DEV,
    "test": Environment.DEV,
    "sandbox": Environment.DEV,
}

# Tokens that are also top-level domains (.dev is a gTLD, .test reserved by RFC 2606):
# as the last label of a dotted name they are a domain, not an environment.
_TLD_TOKENS = frozenset({"dev", "test"})

# When several names point different ways, the most dangerous reading wins.
_SEVERITY = {Environment.PROD: 3, Environment.STAGING: 2, Environment.DEV: 1}

STRICTNESS = {
    Environment.PROD: 4,
    Environment.UNKNOWN: 3,
    Environment.STAGING: 2,
    Environment.DEV: 1,
}
"""How guarded an environment is: policies hold destroys in prod *and* unknown, so
where two configured answers disagree, prod is taken first, then unknown."""


def parse_environment(value: str) -> Environment:
    """A configured environment value; anything that is not one is ``unknown``."""
    try:
        return Environment(value.strip().lower())
    except ValueError:
        return Environment.UNKNOWN


def strictest(environments: Iterable[Environment]) -> Environment:
    """The most guarded of ``environments`` (at least one)."""
    return max(environments, key=STRICTNESS.__getitem__)


def environment_from_names(names: Iterable[str]) -> Environment:
    """The environment a set of names suggests, by whole tokens (``prod-calc`` -> prod)."""
    best = Environment.UNKNOWN
    for name in names:
        for token in _TOKEN_SPLIT.split(_without_tld(name.lower())):
            found = _NAME_TOKENS.get(token)
            if found is not None and _SEVERITY[found] > _SEVERITY.get(best, 0):
                best = found
    return best


def _without_tld(name: str) -> str:
    """``name`` without a last dotted label that is a top-level domain (see above)."""
    head, dot, last = name.rstrip(".").rpartition(".")
    if dot and head and last in _TLD_TOKENS:
        return head
    return name
