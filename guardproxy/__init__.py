"""guardproxy: deterministic guardrails for AI coding agents.

Every request an agent session sends to an infrastructure API becomes an
:class:`~guardproxy.action.Action`; a pure policy engine turns the action and its
context into a :class:`~guardproxy.policy.decision.Decision`: allow, deny or hold.
"""

__version__ = "0.1.0"
