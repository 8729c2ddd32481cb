"""The policy engine: compiling (what the operator's admission runs), binding to a model card, applying."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from model_server.modelcard import ModelCard
from modeldeploy.contract.spec import Policy
from modeldeploy.guardrails import EvaluationFailed, PolicyError, PolicySet, Rejected, compile_policies

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


def bound(*documents: dict[str, Any]) -> PolicySet:
    """The policies of these documents, compiled and bound to the pricing card."""
    return compile_policies([Policy.model_validate(d) for d in documents]).bind(PRICING)


def test_invalid_cel_is_refused_without_a_model_naming_policy_key_and_problem() -> None:
    policy = Policy(name="cap", when="prediction.price <", action="reject")
    with pytest.raises(PolicyError) as caught:
        compile_policies([policy])
    assert str(caught.value) == ("policy 'cap': invalid CEL in 'when' ('prediction.price <'): "
                                 "unexpected end of expression at line 1, column 19")
    for source, problem in (("input.cost ++ 1", "unexpected '+' at line 1, column 13"),
                            ('"open', "unexpected characters '\"open' at line 1, column 1"),
                            ("nope > 1", "undeclared reference to 'nope' (in container '') at line 1, column 1")):
        override = Policy(name="fix", action="override", expression=source)
        with pytest.raises(PolicyError) as caught:
            compile_policies([override])
        assert str(caught.value) == f"policy 'fix': invalid CEL in 'expression' ({source!r}): {problem}"


def test_valid_policies_compile_without_a_model() -> None:
    policies = [Policy(name="floor", when="prediction.price < 0.0", action="clamp", min=0.0),
                Policy(name="old", when="input.age > 60", action="reject")]
    assert [p.spec.name for p in compile_policies(policies).policies] == ["floor", "old"]


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"name": "p", "when": "prediction.price <", "action": "reject"}, "invalid CEL"),
        ({"name": "p", "when": "input.height > 2", "action": "reject"}, "fails on the example input"),
        ({"name": "p", "when": "input.age", "action": "reject"}, "must be a bool"),
        ({"name": "p", "when": "true", "action": "override", "value": "cheap"}, "not a valid 'price'"),
        ({"name": "p", "when": "true", "action": "override", "value": 1.0, "field": "nope"}, "not an output"),
        ({"name": "p", "when": "true", "action": "override", "expression": "prediction.nope"}, "expression"),
    ],
)
def test_invalid_policies_are_refused_with_a_clear_error(policy: dict[str, Any], message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        bound(policy)


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"name": "p", "when": "true", "action": "clamp"}, "min"),
        ({"name": "p", "when": "true", "action": "explode"}, "action"),
    ],
)
def test_malformed_policy_documents_never_reach_the_compiler(policy: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Policy.model_validate(policy)


def test_duplicate_policy_names_are_refused() -> None:
    policy = {"name": "p", "when": "false", "action": "reject"}
    with pytest.raises(PolicyError, match="duplicate"):
        bound(policy, policy)


def test_reject_names_policy_and_message() -> None:
    policies = bound({"name": "old-smoker", "when": "input.smoker && input.age > 60", "action": "reject",
                      "message": "no"})
    with pytest.raises(Rejected) as caught:
        policies.apply(ROW, {"price": 1.0})
    assert str(caught.value) == "no"
    assert (caught.value.policy, caught.value.source) == ("old-smoker", "spec")
    assert policies.apply({**ROW, "smoker": False}, {"price": 1.0}) == []


def test_clamp_bounds_a_numeric_output() -> None:
    policies = bound({"name": "floor", "when": "prediction.price < 0.0", "action": "clamp", "min": 0.0})
    prediction = {"price": -5.0}
    [applied] = policies.apply(ROW, prediction)
    assert prediction == {"price": 0.0}
    assert (applied.policy, applied.action, applied.original, applied.value) == ("floor", "clamp", -5.0, 0.0)
    assert policies.apply(ROW, {"price": 3.0}) == []


def test_override_with_a_literal_and_with_an_expression() -> None:
    literal = bound({"name": "fixed", "when": "input.age > 60", "action": "override", "value": 99.0})
    prediction = {"price": 1.0}
    literal.apply(ROW, prediction)
    assert prediction == {"price": 99.0}
    expression = bound(
        {"name": "cost-plus", "when": "prediction.price < input.cost", "action": "override",
         "expression": "input.cost * 1.1"}
    )
    prediction = {"price": 1.0}
    [applied] = expression.apply(ROW, prediction)
    assert (applied.policy, applied.original) == ("cost-plus", 1.0)
    assert prediction["price"] == pytest.approx(11.0)
    assert isinstance(prediction["price"], float)


def test_policies_combine_in_order() -> None:
    policies = bound(
        {"name": "cost-plus", "when": "prediction.price < input.cost", "action": "override",
         "expression": "input.cost - 20.0"},
        {"name": "floor", "when": "prediction.price < 0.0", "action": "clamp", "min": 0.0},
        {"name": "cap", "action": "clamp", "max": 1000.0},
    )
    prediction = {"price": -3.0}
    applied = policies.apply(ROW, prediction)
    assert prediction == {"price": 0.0}
    assert [(a.policy, a.value) for a in applied] == [("cost-plus", -10.0), ("floor", 0.0), ("cap", 0.0)]


def test_policy_that_cannot_evaluate_fails_closed() -> None:
    policies = bound({"name": "ratio", "when": "100 / input.age > 1", "action": "reject"})
    with pytest.raises(EvaluationFailed, match="ratio") as caught:
        policies.apply({**ROW, "age": 0}, {"price": 1.0})
    assert caught.value.policy == "ratio"


def test_a_when_the_checker_knows_is_not_a_bool_is_refused_at_compile_time() -> None:
    with pytest.raises(PolicyError, match=r"'when' must be a bool, '1 \+ 2' is int"):
        compile_policies([Policy(name="sum", when="1 + 2", action="reject")])


def test_integers_compare_with_doubles_and_the_strings_and_math_extensions_are_there() -> None:
    policies = bound({"name": "old", "when": "input.age > 69.5 && math.abs(input.cost - 20.0) == 10.0",
                      "action": "override", "expression": "double('hi'.upperAscii().size())"})
    prediction = {"price": 1.0}
    [applied] = policies.apply(ROW, prediction)
    assert (applied.policy, prediction) == ("old", {"price": 2.0})


def test_an_override_of_the_wrong_type_and_an_overflow_fail_closed_naming_the_policy() -> None:
    wrong = bound({"name": "text", "when": "input.age > 60", "action": "override",
                   "expression": "input.age > 0 ? prediction.price : 1.0"},
                  {"name": "huge", "when": "input.age > 60 && input.age * 153722867280912930 > 0", "action": "reject"})
    with pytest.raises(EvaluationFailed, match="policy 'huge' failed: integer overflow"):
        wrong.apply(ROW, {"price": 1.0})


def test_a_policy_past_cels_iteration_budget_is_refused_when_bound() -> None:
    numbers = f"[{','.join(str(i) for i in range(30))}]"
    with pytest.raises(PolicyError, match="'when' fails on the example input: Iteration budget exceeded"):
        bound({"name": "huge", "when": f"{numbers}.map(x, {numbers}.map(y, {numbers}.map(z, x))).size() > 0",
               "action": "reject"})
