"""Approvals: who may release a hold, how many must agree, the events people watch and
the notifications that tell them.

:mod:`~guardproxy.approvals.service` decides holds (verdicts, quorum, the re-check
against the current policy, expiry, escalation); :mod:`~guardproxy.approvals.holds` is
a hold's stored record; :mod:`~guardproxy.approvals.rules` the pure approval rules.

On-call routing: :mod:`~guardproxy.approvals.schedules` says who is on call in a named
schedule (the rotation file of :mod:`~guardproxy.approvals.rotation`, PagerDuty,
Opsgenie), :mod:`~guardproxy.approvals.oncall` who of them is an approver in a hold's
``oncall:`` groups, :mod:`~guardproxy.approvals.paging` pages them and
:mod:`~guardproxy.approvals.slack` lets them decide from Slack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from guardproxy.facade import lazy_exports

if TYPE_CHECKING:
    from guardproxy.approvals.carry import agent_note, release_note
    from guardproxy.approvals.channels import (
        Channel,
        HoldFacts,
        channel,
        channel_kinds,
        register_channel,
        sign,
        verify,
    )
    from guardproxy.approvals.events import HoldEvent, HoldEventKind, HoldEvents
    from guardproxy.approvals.holds import HeldRequest, create_hold, held_request, store_grant
    from guardproxy.approvals.notify import (
        HttpPost,
        HttpTransport,
        Notifications,
        Notifier,
        NotifyConfigError,
        TransportError,
        hold_facts,
    )
    from guardproxy.approvals.oncall import OnCallRouting, OnCallStatus, schedule_problems
    from guardproxy.approvals.paging import Pager, Paging, build_pagers
    from guardproxy.approvals.rules import (
        ApprovalRefused,
        OnCallGroup,
        Progress,
        check_may_decide,
        effective_groups,
        progress,
        requirement_of,
    )
    from guardproxy.approvals.schedules import Roster, Schedules, build_schedules
    from guardproxy.approvals.service import (
        ApprovalMetrics,
        ApprovalService,
        HoldDecision,
        ResolutionListener,
        policy_change,
    )
    from guardproxy.approvals.settings import OnCallSettings, SlackSettings
    from guardproxy.approvals.slack import SlackApi, SlackChat, SlackInteractions
    from guardproxy.approvals.snapshot import hold_detail
    from guardproxy.approvals.targets import NotificationTarget
else:
    __getattr__ = lazy_exports(
        __name__,
        {
            "carry": ["agent_note", "release_note"],
            "channels": [
                "Channel",
                "HoldFacts",
                "channel",
                "channel_kinds",
                "register_channel",
                "sign",
                "verify",
            ],
            "events": ["HoldEvent", "HoldEventKind", "HoldEvents"],
            "notify": [
                "HttpPost",
                "HttpTransport",
                "Notifications",
                "Notifier",
                "NotifyConfigError",
                "TransportError",
                "hold_facts",
            ],
            "holds": ["HeldRequest", "create_hold", "held_request", "store_grant"],
            "oncall": ["OnCallRouting", "OnCallStatus", "schedule_problems"],
            "paging": ["Pager", "Paging", "build_pagers"],
            "schedules": ["Roster", "Schedules", "build_schedules"],
            "settings": ["OnCallSettings", "SlackSettings"],
            "slack": ["SlackApi", "SlackChat", "SlackInteractions"],
            "rules": [
                "ApprovalRefused",
                "OnCallGroup",
                "Progress",
                "check_may_decide",
                "effective_groups",
                "progress",
                "requirement_of",
            ],
            "service": [
                "ApprovalMetrics",
                "ApprovalService",
                "HoldDecision",
                "ResolutionListener",
                "policy_change",
            ],
            "snapshot": ["hold_detail"],
            "targets": ["NotificationTarget"],
        },
    )

__all__ = [
    "ApprovalMetrics",
    "ApprovalRefused",
    "ApprovalService",
    "Channel",
    "HeldRequest",
    "HoldDecision",
    "HoldEvent",
    "HoldEventKind",
    "HoldEvents",
    "HoldFacts",
    "HttpPost",
    "HttpTransport",
    "NotificationTarget",
    "Notifications",
    "Notifier",
    "NotifyConfigError",
    "OnCallGroup",
    "OnCallRouting",
    "OnCallSettings",
    "OnCallStatus",
    "Pager",
    "Paging",
    "Progress",
    "ResolutionListener",
    "Roster",
    "Schedules",
    "SlackApi",
    "SlackChat",
    "SlackInteractions",
    "SlackSettings",
    "TransportError",
    "agent_note",
    "build_pagers",
    "build_schedules",
    "channel",
    "channel_kinds",
    "check_may_decide",
    "create_hold",
    "effective_groups",
    "held_request",
    "hold_detail",
    "hold_facts",
    "policy_change",
    "progress",
    "register_channel",
    "release_note",
    "requirement_of",
    "schedule_problems",
    "sign",
    "store_grant",
    "verify",
]
