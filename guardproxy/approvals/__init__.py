"""Approvals: who may release a hold, how many must agree, and the events people watch."""
