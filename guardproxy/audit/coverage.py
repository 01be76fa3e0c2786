"""Destructive coverage: how much of what can destroy a bundle holds or denies.

The shipped bundle promises to hold every delete, destroy and permission change in a
production or unknown environment, except the low-risk deletes its allowlist names
(``params.lowRiskDeletes`` of a policy set, keyed like ``catalogue.operation_key``).
``measure`` decides every entry of the destructive catalogue with a bundle and counts,
per provider, what it holds, denies, lets through because the allowlist says so, and
lets through otherwise (the offenders). Pure: the bundle, the entries and the time in,
the figures out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from guardproxy.action import Environment, Provider
from guardproxy.context import Context
from guardproxy.policy.bundle import Bundle
from guardproxy.policy.engine import evaluate
from guardproxy.policy.model import Outcome
from guardproxy.recognise.catalogue import Destructive, catalogue

__all__ = [
    "ALLOWLIST_PARAM",
    "ENVIRONMENTS",
    "Coverage",
    "ProviderCoverage",
    "allowlist_of",
    "as_json",
    "measure",
    "measure_everywhere",
    "table",
]

ENVIRONMENTS = (Environment.PROD, Environment.UNKNOWN)
"""Where the promise holds: production, and wherever the environment is not known."""

ALLOWLIST_PARAM = "lowRiskDeletes"
"""The policy-set parameter that lists low-risk deletes: operation key -> reason."""


@dataclass
class ProviderCoverage:
    """The figures of one provider (or of all of them, ``provider=None``)."""

    provider: Provider | None
    total: int = 0
    held: int = 0
    denied: int = 0
    allowlisted: int = 0
    allowed: list[Destructive] = field(default_factory=list)
    """Let through without an allowlist entry saying why: the offenders."""

    @property
    def covered(self) -> int:
        """Held, denied or allowlisted: everything the promise is kept for."""
        return self.held + self.denied + self.allowlisted

    @property
    def held_or_denied_share(self) -> float:
        return self.held_denied / self.total if self.total else 1.0

    @property
    def held_denied(self) -> int:
        return self.held + self.denied

    @property
    def covered_share(self) -> float:
        """What share of the total is held, denied or allowlisted (1.0 when empty)."""
        return self.covered / self.total if self.total else 1.0

    def add(self, entry: Destructive, outcome: Outcome, allowlisted: bool) -> None:
        self.total += 1
        if outcome is Outcome.HOLD:
            self.held += 1
        elif outcome is Outcome.DENY:
            self.denied += 1
        elif allowlisted:
            self.allowlisted += 1
        else:
            self.allowed.append(entry)


@dataclass
class Coverage:
    """The figures of one environment, per provider and overall."""

    environment: Environment
    providers: list[ProviderCoverage]

    @property
    def overall(self) -> ProviderCoverage:
        whole = ProviderCoverage(provider=None)
        for part in self.providers:
            whole.total += part.total
            whole.held += part.held
            whole.denied += part.denied
            whole.allowlisted += part.allowlisted
            whole.allowed += part.allowed
        return whole


def allowlist_of(bundle: Bundle) -> dict[str, str]:
    """Every low-risk delete the bundle's policy sets list (``params.lowRiskDeletes``),
    operation key -> reason."""
    found: dict[str, str] = {}
    for rule in bundle.rules:
        listed = rule.scope.params.get(ALLOWLIST_PARAM)
        if isinstance(listed, Mapping):
            found.update({str(k): str(v) for k, v in listed.items()})
    return found


def measure(
    bundle: Bundle,
    entries: Iterable[Destructive],
    environment: Environment,
    now: datetime,
) -> Coverage:
    """Decide every entry with ``bundle`` (a fresh session, no history) and count."""
    allowlist = allowlist_of(bundle)
    context = Context(now=now)
    by_provider: dict[Provider, ProviderCoverage] = {}
    for entry in entries:
        part = by_provider.setdefault(entry.provider, ProviderCoverage(entry.provider))
        decision = evaluate(bundle, entry.action, context)
        part.add(entry, decision.outcome, entry.key in allowlist)
    return Coverage(environment, list(by_provider.values()))


def measure_everywhere(bundle: Bundle, now: datetime) -> list[Coverage]:
    """``measure`` over the whole catalogue in every environment of ``ENVIRONMENTS``
    (builds the catalogue: a few seconds, most of it loading the model indexes)."""
    return [measure(bundle, catalogue(env), env, now) for env in ENVIRONMENTS]


_COLUMNS = ("provider", "total", "held", "denied", "allowlisted", "allowed", "held or denied")


def _row(cells: tuple[object, ...]) -> str:
    first, *rest = cells
    widths = [max(len(c), 8) for c in _COLUMNS[1:]]
    return f"    {first!s:<10}" + "".join(
        f"  {c!s:>{w}}" for w, c in zip(widths, rest, strict=True)
    )


def table(coverages: list[Coverage], *, offenders: int = 20) -> list[str]:
    """The figures as text lines: one table per environment, then what was let through
    (``offenders`` of them at most)."""
    lines: list[str] = []
    for coverage in coverages:
        lines.append(f"  environment {coverage.environment}:")
        lines.append(_row(_COLUMNS))
        for part in [*coverage.providers, coverage.overall]:
            name = str(part.provider) if part.provider is not None else "all"
            share = f"{part.held_or_denied_share:.1%}"
            counts = (part.total, part.held, part.denied, part.allowlisted, len(part.allowed))
            lines.append(_row((name, *counts, share)))
        allowed = coverage.overall.allowed
        for entry in allowed[:offenders]:
            lines.append(f"    let through: {entry.label} ({entry.action.verb})")
        if len(allowed) > offenders:
            lines.append(f"    ... and {len(allowed) - offenders} more")
    return lines


def as_json(coverages: list[Coverage]) -> dict[str, Any]:
    """The figures as JSON: environment -> provider -> counts and what was let through."""
    return {
        str(coverage.environment): {
            (str(part.provider) if part.provider is not None else "all"): {
                "total": part.total,
                "held": part.held,
                "denied": part.denied,
                "allowlisted": part.allowlisted,
                "allowed": [entry.label for entry in part.allowed],
                "held_or_denied": round(part.held_or_denied_share, 4),
            }
            for part in [*coverage.providers, coverage.overall]
        }
        for coverage in coverages
    }
