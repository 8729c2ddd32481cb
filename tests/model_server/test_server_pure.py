"""Pure parts of the server: the model card's schema."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from model_server.modelcard import (
    ModelCard,
    ModelCardError,
    input_model,
    load_model_card,
)

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
