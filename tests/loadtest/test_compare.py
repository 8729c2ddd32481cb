"""Comparing two revisions' answers (pure): predictions within a tolerance, outcomes, policy counts."""

from __future__ import annotations

from typing import Any

import pytest

from modeldeploy.loadtest.compare import Answer, answers_differ, inputs_to_compare, same_prediction

TOL = 1e-6


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (1.0, 1.0 + 1e-9),
        (1e9, 1e9 * (1 + 1e-7)),  # relatively close
        (0.0, 5e-7),  # absolutely close
        (3, 3.0),  # an int and a float are both numbers
        ("setosa", "setosa"),
        (None, None),
        (True, True),
        ({"a": [1, {"b": 2.0}], "c": "x"}, {"c": "x", "a": [1.0000001, {"b": 2}]}),
        ([], []),
    ],
)
def test_same_predictions(a: Any, b: Any) -> None:
    assert same_prediction(a, b, TOL) and same_prediction(b, a, TOL)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (1.0, 1.01),
        (0.0, 2e-6),
        (True, 1),  # a boolean is not a number
        (False, 0.0),
        (True, False),
        ("setosa", "Setosa"),
        ("1", 1),
        (None, 0),
        (None, "null"),
        ({"a": 1}, {"a": 1, "b": 2}),  # a missing key
        ({"a": 1}, {"b": 1}),
        ([1, 2], [1, 2, 3]),
        ([1, [2, 3]], [1, [2, 4]]),
        ({"a": [1]}, {"a": 1}),
        (float("nan"), float("nan")),
    ],
)
def test_different_predictions(a: Any, b: Any) -> None:
    assert not same_prediction(a, b, TOL) and not same_prediction(b, a, TOL)


def test_tolerance_is_configurable() -> None:
    assert same_prediction({"p": 0.5}, {"p": 0.55}, 0.1)
    assert not same_prediction({"p": 0.5}, {"p": 0.55}, 0.01)
    assert not same_prediction(1.0, 1.0 + 1e-12, 0.0) and same_prediction(1.0, 1.0, 0.0)


def ok(prediction: Any, *actions: str) -> Answer:
    return Answer(200, {"prediction": prediction, "policies": [{"policy": a, "action": a} for a in actions]})


REJECTED = Answer(422, {"type": "PolicyRejected", "messages": ["no"], "error": "no", "policy": "p"})


def test_only_the_prediction_is_compared() -> None:
    assert not answers_differ(ok({"species": "setosa"}), ok({"species": "setosa"}, "override"), TOL)
    assert not answers_differ(
        Answer(200, {"prediction": {"y": 1.0}, "version": "2"}), Answer(200, {"prediction": {"y": 1.0}}), TOL
    )
    assert answers_differ(ok({"species": "setosa"}), ok({"species": "virginica"}), TOL)


def test_outcomes_that_differ() -> None:
    assert answers_differ(REJECTED, ok({"species": "setosa"}), TOL), "one side rejected"
    assert answers_differ(Answer(400, {}), Answer(422, {}), TOL), "different errors"
    assert not answers_differ(Answer(400, {"messages": ["a"]}), Answer(400, {"messages": ["b"]}), TOL)
    assert answers_differ(Answer(None), ok({}), TOL) and answers_differ(ok({}), Answer(None), TOL)
    assert answers_differ(Answer(None), Answer(None), TOL), "a transport error is a change, even on both sides"
    assert answers_differ(Answer(200, "not an object"), ok({}), TOL)


def test_batches_compare_every_row() -> None:
    def batch(*species: str) -> Answer:
        return Answer(200, {"predictions": [{"prediction": {"species": s}, "policies": []} for s in species]})

    assert not answers_differ(batch("a", "b"), batch("a", "b"), TOL)
    assert answers_differ(batch("a", "b"), batch("a", "c"), TOL)
    assert answers_differ(batch("a"), batch("a", "a"), TOL)


def test_rejections_and_overrides_are_read_from_the_answer() -> None:
    assert REJECTED.rejected and not REJECTED.overridden
    assert not Answer(422, {"type": "PolicyFailed"}).rejected and not Answer(400, {"type": "InvalidInput"}).rejected
    assert ok({}, "override").overridden and ok({}, "clamp").overridden
    assert not ok({}).overridden and not ok({}, "reject").overridden
    batch = Answer(
        200,
        {
            "predictions": [
                {"prediction": {}, "policies": []},
                {"prediction": {}, "policies": [{"policy": "floor", "action": "clamp"}]},
            ]
        },
    )
    assert batch.overridden
    assert not Answer(None).rejected and not Answer(None).overridden


def test_inputs_to_compare_are_distinct_then_cycle() -> None:
    assert inputs_to_compare([b"a", b"b", b"a", b"c"], 3) == [b"a", b"b", b"c"]
    assert inputs_to_compare([b"a", b"a", b"b"], 5) == [b"a", b"b", b"a", b"b", b"a"]
    assert inputs_to_compare([b"a"], 0) == []
