"""Approvals: who may release a hold, how many must agree, and the events people watch.

:mod:`~guardproxy.approvals.service` decides holds (verdicts, quorum, the re-check
against the current policy, expiry, escalation); :mod:`~guardproxy.approvals.holds` is
a hold's stored record; :mod:`~guardproxy.approvals.rules` the pure approval rules.
"""
