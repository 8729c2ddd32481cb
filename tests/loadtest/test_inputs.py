"""Request bodies from JSON Schemas and JSONL files (pure)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from model_server.modelcard import ModelCard, input_model, request_adapter, request_schema
from modeldeploy.loadtest.inputs import InputFileError, UnsupportedSchema, generate_bodies, read_jsonl, sample

CARD = ModelCard.model_validate(
    {
        "name": "pricing",
        "version": "1",
        "flavor": "python",
        "entrypoint": "m:Model",
        "inputs": [
            {"name": "age", "type": "integer", "minimum": 18, "maximum": 99},
            {"name": "smoker", "type": "boolean"},
            {"name": "cost", "type": "number", "minimum": 0.0, "example": 100.0},
            {"name": "region", "type": "string", "enum": ["north", "south"]},
            {"name": "note", "type": "string"},
        ],
        "outputs": [{"name": "price", "type": "number"}],
    }
)


def test_generated_bodies_pass_the_model_servers_own_validation() -> None:
    row = input_model(CARD)
    adapter = request_adapter(row, max_batch=8)
    bodies = generate_bodies(request_schema(row, 8), 300, seed=1)
    for body in bodies:
        adapter.validate_json(body)  # strict: exact types, no extra fields, bounds
    values = [json.loads(b) for b in bodies]
    assert all(isinstance(v, dict) for v in values), "anyOf takes the single-row branch"
    assert {v["region"] for v in values} == {"north", "south"}
    assert {v["smoker"] for v in values} == {True, False}
    assert len({v["cost"] for v in values}) > 200, "values vary"


def test_same_seed_same_bodies_other_seed_other_bodies() -> None:
    schema = request_schema(input_model(CARD), 8)
    assert generate_bodies(schema, 20, seed=3) == generate_bodies(schema, 20, seed=3)
    assert generate_bodies(schema, 20, seed=3) != generate_bodies(schema, 20, seed=4)


def test_integer_bounds_exclusive_and_multiple_of_hold() -> None:
    rng = random.Random(0)
    schema = {"type": "integer", "exclusiveMinimum": 2, "exclusiveMaximum": 10, "multipleOf": 3}
    assert {sample(schema, rng) for _ in range(200)} == {3, 6, 9}


def test_number_exclusive_bounds_hold() -> None:
    rng = random.Random(0)
    values = [sample({"type": "number", "exclusiveMinimum": 0, "maximum": 0.002}, rng) for _ in range(200)]
    assert all(0 < v <= 0.002 for v in values)


def test_refs_arrays_const_and_nullable_types() -> None:
    schema = {
        "$defs": {
            "Point": {
                "type": "object",
                "properties": {"x": {"const": 1}, "tag": {"type": ["null", "string"], "maxLength": 3}},
            }
        },
        "type": "array",
        "items": {"$ref": "#/$defs/Point"},
        "minItems": 2,
        "maxItems": 2,
    }
    value = sample(schema, random.Random(0))
    assert len(value) == 2
    assert all(p["x"] == 1 and isinstance(p["tag"], str) and 1 <= len(p["tag"]) <= 3 for p in value)


def test_pattern_strings_use_the_example() -> None:
    assert sample({"type": "string", "pattern": "^[0-9]{4}$", "examples": ["1234"]}, random.Random(0)) == "1234"


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string", "pattern": "^a+$"},
        {"$ref": "other.json#/x"},
        {"$ref": "#/missing"},
        {"type": "integer", "minimum": 5, "maximum": 4},
        {"type": "integer", "minimum": 1, "maximum": 2, "multipleOf": 5},
        {"type": "object", "properties": {}, "required": ["x"]},
        {"allOf": [{"type": "integer"}, {"minimum": 3}]},
        {"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"},
        {},
    ],
)
def test_unsatisfiable_or_unknown_schemas_raise(schema: dict) -> None:
    with pytest.raises(UnsupportedSchema):
        sample(schema, random.Random(0))


def test_jsonl_lines_become_compact_bodies(tmp_path: Path) -> None:
    path = tmp_path / "inputs.jsonl"
    path.write_text('{"a": 1,  "b": [1, 2]}\n\n[{"a": 2}]\n')
    assert read_jsonl(path) == [b'{"a":1,"b":[1,2]}', b'[{"a":2}]']


@pytest.mark.parametrize(("content", "message"), [("", "no inputs"), ('{"a": 1}\n{oops\n', ":2: not JSON")])
def test_bad_jsonl_says_where(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "inputs.jsonl"
    path.write_text(content)
    with pytest.raises(InputFileError, match=message):
        read_jsonl(path)


def test_missing_jsonl_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="No such file"):
        read_jsonl(tmp_path / "absent.jsonl")
