"""Policy hot reload: load and lint a changed bundle, refuse it if it has errors.

The bundle in force is only replaced by one that loads without errors; a refused
reload leaves the last good bundle in force and says why (file:line problems, as
`guardproxy policy lint` prints them). Every decision records its bundle's digest,
so the audit log shows which bundle decided what.

Whether a change that removes rules was meant cannot be known, so every reload says
which rule ids it added and removed (the log, the API's report, `policy reload`):
a policy file emptied by mistake shows up as the rules it took away, and an empty or
comment-only file is a load error (the bundle is refused).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guardproxy.policy import Bundle, load_bundle
from guardproxy.policy.loader import policy_files

MAX_REPORTED_PROBLEMS = 50


@dataclass(frozen=True)
class ReloadReport:
    """What a reload did: loaded (a new digest), unchanged, or refused (and why)."""

    result: str  # loaded | unchanged | refused
    source: str  # api | sighup | watch | cli
    digest: str  # the digest in force afterwards
    previous: str
    rules: int
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    added: tuple[str, ...] = ()
    """Rule ids the reload brought in (sorted); empty unless loaded."""
    removed: tuple[str, ...] = ()
    """Rule ids the reload took away (sorted); empty unless loaded."""
    previous_rules: int = 0

    @property
    def ok(self) -> bool:
        return self.result != "refused"

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "result": self.result,
            "source": self.source,
            "bundle": self.digest,
            "previous": self.previous,
            "rules": self.rules,
            "previous_rules": self.previous_rules,
            "added": list(self.added),
            "removed": list(self.removed),
            "errors": list(self.errors),
            "warnings": list(self.warnings),
        }


def load_candidate(path: Path) -> tuple[Bundle | None, tuple[str, ...], tuple[str, ...]]:
    """The bundle at ``path`` (None if it has errors), its errors and its warnings."""
    if not path.exists():
        return None, (f"{path}: no such file or directory",), ()
    result = load_bundle([path])
    errors = tuple(str(p) for p in result.errors[:MAX_REPORTED_PROBLEMS])
    warnings = tuple(str(p) for p in result.warnings[:MAX_REPORTED_PROBLEMS])
    if result.bundle is None and not errors:
        errors = (f"{path}: no bundle found (no BundleConfig)",)
    return (result.bundle if not errors else None), errors, warnings


def reload_bundle(path: Path, current: Bundle, source: str) -> tuple[Bundle, ReloadReport]:
    """The bundle to keep in force after a reload request, and the report of it."""
    candidate, errors, warnings = load_candidate(path)
    before = len(current.rules)
    if candidate is None:
        report = ReloadReport(
            "refused", source, current.digest, current.digest, before, errors, warnings,
            previous_rules=before,
        )  # fmt: skip
        return current, report
    if candidate.digest == current.digest:
        report = ReloadReport(
            "unchanged", source, current.digest, current.digest, before, (), warnings,
            previous_rules=before,
        )  # fmt: skip
        return current, report
    added, removed = rule_changes(current, candidate)
    report = ReloadReport(
        "loaded", source, candidate.digest, current.digest, len(candidate.rules), (), warnings,
        added=added, removed=removed, previous_rules=before,
    )  # fmt: skip
    return candidate, report


def rule_changes(old: Bundle, new: Bundle) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(added, removed) rule ids, each sorted."""
    before = {rule.id for rule in old.rules}
    after = {rule.id for rule in new.rules}
    return tuple(sorted(after - before)), tuple(sorted(before - after))


def bundle_fingerprint(path: Path) -> tuple[tuple[str, int, int], ...]:
    """Names, mtimes and sizes of the bundle's files: cheap to poll for changes."""
    files = policy_files(path) if path.is_dir() else [path]
    out: list[tuple[str, int, int]] = []
    for file in files:
        try:
            stat = file.stat()
        except OSError:
            continue
        out.append((str(file), stat.st_mtime_ns, stat.st_size))
    return tuple(out)
