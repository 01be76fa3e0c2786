"""Actions with several readings: every reading is decided and the strictest applies.

An ambiguous request (a field given twice, two protocols that parse it) or one that
performs several operations carries its other readings in ``Action.readings``; the
engine decides each as if it were alone and keeps the most restrictive outcome, so a
harmless first reading can never carry a destructive second one through.
"""

from __future__ import annotations

from pathlib import Path

from policy_helpers import action, context, rules_bundle

from guardproxy.action import Confidence
from guardproxy.policy import Outcome, evaluate, explain, input_hash

RULES = """
- id: deny-prod-drop
  decision: deny
  message: dropping prod is denied
  match: {verbs: [destroy], environments: [prod]}
- id: hold-prod-delete
  decision: hold
  message: deleting in prod needs sre
  match: {verbs: [delete], environments: [prod]}
  approval: {groups: [sre], timeout: 2h, grant: "session:30m"}
- id: hold-staging-delete
  decision: hold
  message: deleting in staging needs dba
  match: {verbs: [delete], environments: [staging]}
  approval: {groups: [dba], quorum: 2, timeout: 1h}
"""


def test_a_harmless_first_reading_does_not_decide_for_a_destructive_second(
    tmp_path: Path,
) -> None:
    bundle = rules_bundle(tmp_path, RULES)
    harmless = action(environment="dev", resource={"type": "aws:rds:db", "name": "dev-x"})
    alone = evaluate(bundle, harmless, context())
    assert alone.outcome is Outcome.ALLOW

    both = harmless.model_copy(update={"readings": [action()], "confidence": Confidence.AMBIGUOUS})
    decision = evaluate(bundle, both, context())
    assert decision.outcome is Outcome.HOLD
    assert decision.determining_rules == ["s/hold-prod-delete"]
    assert decision.message == "deleting in prod needs sre"


def test_deny_of_any_reading_beats_holds_of_the_others(tmp_path: Path) -> None:
    bundle = rules_bundle(tmp_path, RULES)
    both = action().model_copy(update={"readings": [action(verb="destroy")]})
    decision = evaluate(bundle, both, context())
    assert decision.outcome is Outcome.DENY
    assert decision.determining_rules == ["s/deny-prod-drop"]
    assert decision.approval is None


def test_holds_of_several_readings_need_every_requirement(tmp_path: Path) -> None:
    bundle = rules_bundle(tmp_path, RULES)
    both = action().model_copy(update={"readings": [action(environment="staging")]})
    decision = evaluate(bundle, both, context())
    assert decision.outcome is Outcome.HOLD
    assert decision.determining_rules == ["s/hold-prod-delete", "s/hold-staging-delete"]
    assert decision.approval is not None
    assert [a.rule for a in decision.approval.all_of] == [
        "s/hold-prod-delete",
        "s/hold-staging-delete",
    ]
    assert decision.approval.quorum == 2
    assert decision.approval.timeout_seconds == 3600
    assert decision.approval.grant == "once"  # the narrowest grant of the two
    assert decision.approval.is_met({"a": ["sre"], "b": ["dba"], "c": ["dba"]})
    assert not decision.approval.is_met({"a": ["sre"], "b": ["dba"]})
    assert decision.message == "deleting in prod needs sre deleting in staging needs dba"


def test_an_unclassified_reading_fails_closed(tmp_path: Path) -> None:
    bundle = rules_bundle(tmp_path, RULES)
    read = action(verb="read")
    both = read.model_copy(update={"readings": [action(verb="unknown", operation="")]})
    assert evaluate(bundle, read, context()).outcome is Outcome.ALLOW
    decision = evaluate(bundle, both, context())
    assert decision.outcome is Outcome(bundle.config.unclassified)
    assert decision.basis == "unclassified"


def test_the_input_hash_covers_every_reading_and_replays(tmp_path: Path) -> None:
    bundle = rules_bundle(tmp_path, RULES)
    harmless = action(environment="dev")
    both = harmless.model_copy(update={"readings": [action()]})
    first = evaluate(bundle, both, context())
    assert first.input_hash == input_hash(both, context())
    assert first.input_hash != input_hash(harmless, context())
    assert evaluate(bundle, both, context()) == first  # deterministic


def test_explain_marks_which_reading_each_trace_belongs_to(tmp_path: Path) -> None:
    bundle = rules_bundle(tmp_path, RULES)
    both = action(environment="dev").model_copy(update={"readings": [action()]})
    decision, traces = explain(bundle, both, context())
    assert decision == evaluate(bundle, both, context())
    fired = {(t.reading, t.rule) for t in traces if t.fired}
    assert fired == {(1, "s/hold-prod-delete")}


def test_each_reading_applies_a_change_to_every_reading() -> None:
    both = action(environment="dev").model_copy(update={"readings": [action()]})
    renamed = both.each_reading(lambda a: a.model_copy(update={"service": a.service + "-seen"}))
    assert [r.service for r in renamed.all_readings()] == ["rds-seen", "rds-seen"]
    assert all(not r.readings for r in renamed.all_readings())


def test_pages_of_several_readings_are_all_kept(tmp_path: Path) -> None:
    rules = RULES.replace(
        "approval: {groups: [sre], timeout: 2h",
        "approval: {groups: [sre, 'oncall:primary'], page: 'oncall:primary', timeout: 2h",
    ).replace(
        "approval: {groups: [dba], quorum: 2",
        "approval: {groups: [dba, 'oncall:dba'], page: 'oncall:dba', quorum: 2",
    )
    bundle = rules_bundle(tmp_path, rules)
    both = action().model_copy(update={"readings": [action(environment="staging")]})
    decision = evaluate(bundle, both, context())
    assert decision.approval is not None
    assert decision.approval.page == ["oncall:dba", "oncall:primary"]
