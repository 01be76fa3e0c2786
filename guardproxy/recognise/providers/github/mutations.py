"""GitHub's GraphQL mutations, judged: each root field of a mutation (or each ref update
of ``updateRefs``) as an operation ``graphql:<field>`` with its verb class and risk tags.

Names are GitHub's public schema's (octokit/graphql-schema, schema.graphql); a name not
listed here is at least an ``update``, never a read.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from guardproxy.action import Confidence, Verb
from guardproxy.recognise.providers.github.graphql_http import Execution

__all__ = ["ZERO_OID", "Judged", "judge_execution", "judge_mutation"]

_GQL_PROTECTION_REMOVALS = frozenset(
    {"deleteBranchProtectionRule", "deleteRepositoryRuleset", "deleteTagProtectionRule"}
)
# UpdateBranchProtectionRuleInput fields that switch a guard off when true / when false
# (the GraphQL names of the REST fields in _ALLOW_FLAGS and _GUARD_FIELDS/_GUARD_FLAGS).
_GQL_ALLOW_FLAGS = ("allowsForcePushes", "allowsDeletions")
_GQL_GUARD_FLAGS = (
    "requiresStatusChecks",
    "requiresApprovingReviews",
    "restrictsPushes",
    "isAdminEnforced",
    "requiresLinearHistory",
    "requiresCommitSignatures",
)
# UpdateBranchProtectionRuleInput fields that move the rule off the branches it guards
# (``pattern``) or exempt actors from it: any value given guards less, or other refs.
_GQL_RULE_SCOPE = (
    "pattern",
    "bypassForcePushActorIds",
    "bypassPullRequestActorIds",
    "pushActorIds",
)
_GQL_UNENFORCED = frozenset({"DISABLED", "EVALUATE"})  # RuleEnforcement values that guard nothing
# UpdateRepositoryRulesetInput fields that change which refs a ruleset applies to or who
# may bypass it.
_GQL_RULESET_SCOPE = ("target", "conditions", "bypassActors")
_GQL_EXECUTE = frozenset({"approveDeployments", "rerequestCheckSuite"})
_GQL_PERMISSIONS = frozenset({"updateTeamsRepository", "accessUserNamespaceRepository"})
_GQL_PERMISSION = re.compile(
    r"Collaborator|Permission|Member|Role|Admin|Invitation|IdentityProvider|IpAllowList"
    r"|TwoFactor|DeployKey|^transfer"
)
_GQL_PREFIX_VERBS = (
    ("delete", Verb.DELETE),
    ("remove", Verb.DELETE),
    ("create", Verb.CREATE),
    ("add", Verb.CREATE),
    ("update", Verb.UPDATE),
)
ZERO_OID = "0" * 40
"""``afterOid`` of an ``updateRefs`` ref update that deletes the ref (GitHub's docs)."""


@dataclass(frozen=True)
class Judged:
    """How one GraphQL root field (or one ref update of ``updateRefs``) is classed."""

    operation: str
    verb: Verb
    tags: tuple[str, ...] = ()
    confidence: Confidence = Confidence.EXACT
    ref: str = ""


def _values(value: Any, key: str) -> Iterator[Any]:
    """Every value of member ``key`` anywhere in a resolved argument value."""
    if isinstance(value, dict):
        for k, v in value.items():
            if k == key:
                yield v
            yield from _values(v, key)
    elif isinstance(value, list):
        for item in value:
            yield from _values(item, key)


def _has_true(value: Any, key: str) -> bool:
    return any(v is True for v in _values(value, key))


def _branch_protection_weakened(arguments: dict[str, Any]) -> bool:
    if any(_has_true(arguments, k) for k in _GQL_ALLOW_FLAGS):
        return True
    if any(True for k in _GQL_RULE_SCOPE for _ in _values(arguments, k)):
        return True
    if any(v == 0 for v in _values(arguments, "requiredApprovingReviewCount")):
        return True
    return any(v is False or v is None for k in _GQL_GUARD_FLAGS for v in _values(arguments, k))


def _ruleset_weakened(arguments: dict[str, Any]) -> bool:
    if any(v in _GQL_UNENFORCED for v in _values(arguments, "enforcement")):
        return True
    if any(True for k in _GQL_RULESET_SCOPE for _ in _values(arguments, k)):
        return True
    return any(v == [] or v is None for v in _values(arguments, "rules"))


def _ref_updates(name: str, arguments: dict[str, Any]) -> list[Judged]:
    """One reading per ref update of ``updateRefs`` (a list, or one object the server
    coerces to a list of one); a zero ``afterOid`` deletes the ref."""
    updates: list[Any] = []
    for found in _values(arguments, "refUpdates"):
        updates += found if isinstance(found, list) else [found]
    judged: list[Judged] = []
    for update in updates:
        if not isinstance(update, dict):
            continue
        ref = str(update.get("name") or "")
        if update.get("afterOid") == ZERO_OID:
            tags = ("branch-delete",) if ref.startswith("refs/heads/") else ()
            judged.append(Judged(f"graphql:{name}", Verb.DELETE, tags, ref=ref))
        else:
            tags = ("force-push",) if update.get("force") is True else ()
            judged.append(Judged(f"graphql:{name}", Verb.UPDATE, tags, ref=ref))
    return judged or [Judged(f"graphql:{name}", Verb.UPDATE, confidence=Confidence.HEURISTIC)]


def judge_mutation(name: str, arguments: dict[str, Any]) -> list[Judged]:
    """How GitHub mutation ``name`` with resolved ``arguments`` is classed (one entry,
    or one per ref update of ``updateRefs``)."""
    operation = f"graphql:{name}"
    if name in _GQL_PROTECTION_REMOVALS:
        return [Judged(operation, Verb.UPDATE, ("protection-removal",))]
    if name == "updateBranchProtectionRule":
        weakened = _branch_protection_weakened(arguments)
        return [Judged(operation, Verb.UPDATE, ("protection-removal",) if weakened else ())]
    if name == "updateRepositoryRuleset":
        weakened = _ruleset_weakened(arguments)
        return [Judged(operation, Verb.UPDATE, ("protection-removal",) if weakened else ())]
    if name == "deleteRef":
        # The ref is a node id: branch or tag is unknowable here, so assume a branch.
        return [Judged(operation, Verb.DELETE, ("branch-delete",))]
    if name == "updateRef":
        forced = _has_true(arguments, "force")
        return [Judged(operation, Verb.UPDATE, ("force-push",) if forced else ())]
    if name == "updateRefs":
        return _ref_updates(name, arguments)
    if name == "archiveRepository":
        return [Judged(operation, Verb.UPDATE, ("archive",))]
    if name in _GQL_EXECUTE:
        return [Judged(operation, Verb.EXECUTE)]
    if name in _GQL_PERMISSIONS:
        return [Judged(operation, Verb.PERMISSION)]
    if _GQL_PERMISSION.search(name):
        return [Judged(operation, Verb.PERMISSION, confidence=Confidence.HEURISTIC)]
    for prefix, verb in _GQL_PREFIX_VERBS:
        if name.startswith(prefix):
            return [Judged(operation, verb, confidence=Confidence.HEURISTIC)]
    return [Judged(operation, Verb.UPDATE, confidence=Confidence.HEURISTIC)]


def judge_execution(execution: Execution) -> list[Judged]:
    """Every action one execution performs: its mutation fields, or one read."""
    if execution.error:
        return [Judged("graphql", Verb.UNKNOWN, confidence=Confidence.UNKNOWN)]
    if execution.operation != "mutation":
        return [Judged(f"graphql:{execution.operation}", Verb.READ)]
    judged = [j for f in execution.fields for j in judge_mutation(f.name, f.arguments)]
    if not judged:  # only __typename: nothing runs
        return [Judged("graphql:mutation", Verb.READ)]
    deletes = sum(1 for j in judged if j.verb in (Verb.DELETE, Verb.DESTROY))
    if deletes > 1:
        judged = [
            Judged(j.operation, j.verb, (*j.tags, "bulk"), j.confidence, j.ref)
            if j.verb in (Verb.DELETE, Verb.DESTROY)
            else j
            for j in judged
        ]
    return judged
