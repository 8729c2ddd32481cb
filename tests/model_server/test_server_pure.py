"""Pure parts of the server: the model card's schema and the policy engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import celpy
import pytest
import yaml
from pydantic import ValidationError

from model_server.errors import PolicyFailed, PolicyRejected
from model_server.modelcard import (
    ModelCard,
    ModelCardError,
    input_model,
    load_model_card,
)
from model_server.policies import PolicyError, compile_policies

PRICING = ModelCard.model_validate(
    {
        "name": "pricing",
        "version": "1",
        "flavor": "python",
        "entrypoint": "m:C",
        "inputs": [
            {"name": "age", "type": "integer", "example": 40},
            {"name": "smoker", "type": "boolean"},
            {"name": "cost", "type": "number", "minimum": 0},
        ],
        "outputs": [{"name": "price", "type": "number"}],
    }
)
ROW = {"age": 70, "smoker": True, "cost": 10.0}


def test_input_model_is_strict_finite_and_closed() -> None:
    row = input_model(PRICING)
    assert row.model_validate(ROW).__dict__ == ROW
    for bad in (
        {**ROW, "age": "70"},
        {**ROW, "cost": float("nan")},
        {**ROW, "extra": 1},
        {"age": 1},
        {**ROW, "cost": -1.0},
    ):
        with pytest.raises(ValidationError):
            row.model_validate(bad)


def test_example_input_validates() -> None:
    assert input_model(PRICING).model_validate(PRICING.example_input())


def test_model_card_requires_entrypoint_for_python(tmp_path: Path) -> None:
    card = PRICING.model_dump(exclude_none=True)
    del card["entrypoint"]
    (tmp_path / "model.yaml").write_text(yaml.safe_dump(card))
    with pytest.raises(ModelCardError, match="entrypoint"):
        load_model_card(tmp_path)


def test_model_card_missing_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelCardError, match="model.yaml"):
        load_model_card(tmp_path)


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"name": "p", "when": "prediction.price <", "action": "reject"}, "invalid CEL"),
        ({"name": "p", "when": "input.height > 2", "action": "reject"}, "fails on the example input"),
        ({"name": "p", "when": "input.age", "action": "reject"}, "must be a bool"),
        ({"name": "p", "when": "true", "action": "clamp"}, "min"),
        ({"name": "p", "when": "true", "action": "override", "value": "cheap"}, "not a valid 'price'"),
        ({"name": "p", "when": "true", "action": "override", "value": 1.0, "field": "nope"}, "not an output"),
        ({"name": "p", "when": "true", "action": "explode"}, "action"),
        ({"name": "p", "when": "true", "action": "override", "expression": "prediction.nope"}, "expression"),
    ],
)
def test_invalid_policies_are_refused_with_a_clear_error(policy: dict[str, Any], message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        compile_policies([policy], PRICING)


def test_duplicate_policy_names_are_refused() -> None:
    policy = {"name": "p", "when": "false", "action": "reject"}
    with pytest.raises(PolicyError, match="duplicate"):
        compile_policies([policy, policy], PRICING)


def test_reject_names_policy_and_message() -> None:
    policies = compile_policies(
        [{"name": "old-smoker", "when": "input.smoker && input.age > 60", "action": "reject", "message": "no"}], PRICING
    )
    with pytest.raises(PolicyRejected) as caught:
        policies.apply(ROW, {"price": 1.0})
    assert caught.value.messages == ["no"]
    assert caught.value.details == {"policy": "old-smoker"}
    assert policies.apply({**ROW, "smoker": False}, {"price": 1.0}) == []


def test_clamp_bounds_a_numeric_output() -> None:
    policies = compile_policies(
        [{"name": "floor", "when": "prediction.price < 0.0", "action": "clamp", "min": 0.0}], PRICING
    )
    prediction = {"price": -5.0}
    [applied] = policies.apply(ROW, prediction)
    assert prediction == {"price": 0.0}
    assert (applied.policy, applied.action, applied.original, applied.value) == ("floor", "clamp", -5.0, 0.0)
    assert policies.apply(ROW, {"price": 3.0}) == []


def test_override_with_a_literal_and_with_an_expression() -> None:
    literal = compile_policies(
        [{"name": "fixed", "when": "input.age > 60", "action": "override", "value": 99.0}], PRICING
    )
    prediction = {"price": 1.0}
    literal.apply(ROW, prediction)
    assert prediction == {"price": 99.0}
    expression = compile_policies(
        [
            {
                "name": "cost-plus",
                "when": "prediction.price < input.cost",
                "action": "override",
                "expression": "input.cost * 1.1",
            }
        ],
        PRICING,
    )
    prediction = {"price": 1.0}
    [applied] = expression.apply(ROW, prediction)
    assert prediction["price"] == pytest.approx(11.0)
    assert isinstance(prediction["price"], float)


def test_policies_combine_in_order() -> None:
    policies = compile_policies(
        [
            {
                "name": "cost-plus",
                "when": "prediction.price < input.cost",
                "action": "override",
                "expression": "input.cost - 20.0",
            },
            {"name": "floor", "when": "prediction.price < 0.0", "action": "clamp", "min": 0.0},
            {"name": "cap", "action": "clamp", "max": 1000.0},
        ],
        PRICING,
    )
    prediction = {"price": -3.0}
    applied = policies.apply(ROW, prediction)
    assert prediction == {"price": 0.0}
    assert [(a.policy, a.value) for a in applied] == [("cost-plus", -10.0), ("floor", 0.0), ("cap", 0.0)]


def test_policy_that_cannot_evaluate_fails_closed() -> None:
    policies = compile_policies([{"name": "ratio", "when": "100 / input.age > 1", "action": "reject"}], PRICING)
    with pytest.raises(PolicyFailed, match="ratio"):
        policies.apply({**ROW, "age": 0}, {"price": 1.0})



def test_policies_compile_after_another_cel_user_in_the_same_process() -> None:
    celpy.Environment().compile("1 == 1")  # the interpreter builds cel-python's shared parser first
    policies = compile_policies(
        [{"name": "floor", "when": "prediction.price < 0.0", "action": "clamp", "min": 0.0}], PRICING
    )
    prediction = {"price": -1.0}
    policies.apply(ROW, prediction)
    assert prediction == {"price": 0.0}
