"""The policy engine: load a bundle, evaluate and explain actions; no I/O at decision time."""

from guardproxy.policy.bundle import Bundle
from guardproxy.policy.decision import ApprovalRequirement, AuditFinding, Decision, RuleError
from guardproxy.policy.engine import ENGINE_VERSION, evaluate, explain, input_hash
from guardproxy.policy.loader import LoadResult, load_bundle
from guardproxy.policy.model import Outcome

__all__ = [
    "ENGINE_VERSION",
    "ApprovalRequirement",
    "AuditFinding",
    "Bundle",
    "Decision",
    "LoadResult",
    "Outcome",
    "RuleError",
    "evaluate",
    "explain",
    "input_hash",
    "load_bundle",
]
