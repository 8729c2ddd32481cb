"""The pure condition merge, on the contract's typed conditions."""

from __future__ import annotations

from model_operator.conditions import parse_conditions, set_condition, transitions
from modeldeploy.contract.status import Condition, find

T0 = "2026-01-01T00:00:00Z"
T1 = "2026-01-01T00:05:00Z"


def test_new_condition_gets_the_current_time() -> None:
    merged = set_condition([], "Ready", "False", "RolloutProgressing", "0 of 1", T0, 3)
    assert [c.model_dump(by_alias=True) for c in merged] == [{
        "type": "Ready", "status": "False", "reason": "RolloutProgressing", "message": "0 of 1",
        "lastTransitionTime": T0, "observedGeneration": 3,
    }]


def test_transition_time_kept_while_status_unchanged() -> None:
    first = set_condition([], "Ready", "False", "RolloutProgressing", "0 of 1", T0, 1)
    second = set_condition(first, "Ready", "False", "KeyMismatch", "wrong key", T1, 2)
    ready = find(second, "Ready")
    assert ready is not None and (ready.reason, ready.last_transition_time, ready.observed_generation) == (
        "KeyMismatch", T0, 2,
    )


def test_transition_time_moves_when_status_changes() -> None:
    first = set_condition([], "Ready", "False", "RolloutProgressing", "", T0, 1)
    ready = find(set_condition(first, "Ready", "True", "Serving", "", T1, 1), "Ready")
    assert ready is not None and ready.last_transition_time == T1


def test_input_not_modified_and_known_types_ordered_first() -> None:
    original = [Condition(type="Custom", status="True", reason="X", message="", last_transition_time=T0,
                          observed_generation=1)]
    merged = set_condition(original, "Ready", "True", "Serving", "", T1, 1)
    merged = set_condition(merged, "ParametersVerified", "True", "SignatureValid", "", T1, 1)
    assert [c.type for c in merged] == ["ParametersVerified", "Ready", "Custom"]
    assert len(original) == 1


def test_transitions_report_status_or_reason_changes_only() -> None:
    old = set_condition([], "Ready", "False", "RolloutProgressing", "0 of 2", T0, 1)
    same = set_condition(old, "Ready", "False", "RolloutProgressing", "1 of 2", T1, 1)
    assert transitions(old, same) == []
    changed = set_condition(old, "Ready", "False", "KeyMismatch", "wrong key", T1, 1)
    assert [c.reason for c in transitions(old, changed)] == ["KeyMismatch"]
    assert [c.type for c in transitions([], old)] == ["Ready"]


def test_stored_entries_that_are_not_conditions_are_dropped() -> None:
    stored = [
        {"type": "Ready", "status": "True", "reason": "Serving", "message": "", "lastTransitionTime": T0,
         "observedGeneration": 2},
        {"type": "Ready", "status": "Maybe"},
    ]
    assert [c.status for c in parse_conditions(stored)] == ["True"]
