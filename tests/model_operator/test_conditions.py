"""The pure condition merge."""

from __future__ import annotations

from model_operator.conditions import find, set_condition, transitions

T0 = "2026-01-01T00:00:00Z"
T1 = "2026-01-01T00:05:00Z"


def test_new_condition_gets_the_current_time() -> None:
    merged = set_condition([], "Ready", "False", "RolloutProgressing", "0 of 1", T0, 3)
    assert merged == [{
        "type": "Ready", "status": "False", "reason": "RolloutProgressing", "message": "0 of 1",
        "lastTransitionTime": T0, "observedGeneration": 3,
    }]


def test_transition_time_kept_while_status_unchanged() -> None:
    first = set_condition([], "Ready", "False", "RolloutProgressing", "0 of 1", T0)
    second = set_condition(first, "Ready", "False", "KeyMismatch", "wrong key", T1)
    assert find(second, "Ready") == {
        "type": "Ready", "status": "False", "reason": "KeyMismatch", "message": "wrong key", "lastTransitionTime": T0,
    }


def test_transition_time_moves_when_status_changes() -> None:
    first = set_condition([], "Ready", "False", "RolloutProgressing", "", T0)
    assert find(set_condition(first, "Ready", "True", "Serving", "", T1), "Ready")["lastTransitionTime"] == T1


def test_input_not_modified_and_known_types_ordered_first() -> None:
    original = [{"type": "Custom", "status": "True", "reason": "X", "message": "", "lastTransitionTime": T0}]
    merged = set_condition(original, "Ready", "True", "Serving", "", T1)
    merged = set_condition(merged, "ParametersVerified", "True", "SignatureValid", "", T1)
    assert [c["type"] for c in merged] == ["ParametersVerified", "Ready", "Custom"]
    assert len(original) == 1


def test_transitions_report_status_or_reason_changes_only() -> None:
    old = set_condition([], "Ready", "False", "RolloutProgressing", "0 of 2", T0)
    same = set_condition(old, "Ready", "False", "RolloutProgressing", "1 of 2", T1)
    assert transitions(old, same) == []
    changed = set_condition(old, "Ready", "False", "KeyMismatch", "wrong key", T1)
    assert [c["reason"] for c in transitions(old, changed)] == ["KeyMismatch"]
    assert [c["type"] for c in transitions([], old)] == ["Ready"]
