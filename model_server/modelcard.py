"""The model card: `model.yaml` as a pydantic model, and the request schema built from it.

Owns parsing `MODEL_DIR/model.yaml` and turning its `inputs` into a pydantic model
(validation, JSON Schema, example). Must not load any model artifact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError, create_model

MODEL_CARD = "model.yaml"
FieldType = Literal["number", "integer", "string", "boolean"]
_PYTHON_TYPES: dict[str, type] = {"number": float, "integer": int, "string": str, "boolean": bool}
_DEFAULTS: dict[str, Any] = {"number": 0.0, "integer": 0, "string": "", "boolean": False}
INT64 = (-(2**63), 2**63 - 1)  # what CEL, numpy and every runtime can hold
FLOAT_MAX = 1.7976931348623157e308  # a finite double: 10**400 is refused by the schema, not the model


class FieldSpec(BaseModel):
    """One named input or output of the model."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    type: FieldType
    description: str = ""
    minimum: float | None = None
    maximum: float | None = None
    enum: list[Any] | None = None
    example: Any = None

    def sample(self) -> Any:
        """A value of this field for examples and policy dry runs."""
        if self.example is not None:
            return self.example
        if self.enum:
            return self.enum[0]
        if self.minimum is not None and self.type in ("number", "integer"):
            return _PYTHON_TYPES[self.type](self.minimum)
        return _DEFAULTS[self.type]


class ModelCard(BaseModel):
    """`model.yaml`: identity, flavor, artifact and I/O schema."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$")
    version: str
    flavor: Literal["sklearn", "onnx", "python"]
    artifact: str | None = None
    entrypoint: str | None = Field(default=None, pattern=r"^[\w.]+:\w+$")
    description: str = ""
    inputs: list[FieldSpec] = Field(min_length=1)
    outputs: list[FieldSpec] = Field(min_length=1)

    def example_input(self) -> dict[str, Any]:
        """One valid input row."""
        return {f.name: f.sample() for f in self.inputs}

    def example_output(self) -> dict[str, Any]:
        """One output row of the declared types (for policy dry runs)."""
        return {f.name: f.sample() for f in self.outputs}


class ModelCardError(ValueError):
    """model.yaml is missing or does not describe a servable model."""


def load_model_card(model_dir: Path) -> ModelCard:
    """Read and validate `model_dir/model.yaml`.

    Raises:
        ModelCardError: the file is missing, not YAML, or fails validation.
    """
    path = model_dir / MODEL_CARD
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ModelCardError(f"{path}: {err}") from err
    return parse_model_card(data, path)


def parse_model_card(data: bytes, path: Path) -> ModelCard:
    """Validate the bytes of a model.yaml (`path` is only for messages).

    Raises:
        ModelCardError: not YAML, or fails validation.
    """
    try:
        card = ModelCard.model_validate(yaml.safe_load(data))
    except (yaml.YAMLError, ValidationError, UnicodeDecodeError) as err:
        raise ModelCardError(f"{path}: {err}") from err
    if card.flavor == "python" and card.entrypoint is None:
        raise ModelCardError(f"{path}: flavor 'python' needs entrypoint 'module:Class'")
    if card.flavor != "python" and card.artifact is None:
        raise ModelCardError(f"{path}: flavor {card.flavor!r} needs an artifact")
    return card


def _annotation(spec: FieldSpec) -> Any:
    """The pydantic field annotation and constraints for one field."""
    constraints: dict[str, Any] = {"description": spec.description or None}
    if spec.type in ("number", "integer"):
        constraints.update(ge=spec.minimum, le=spec.maximum)
    if spec.type == "integer":
        constraints["ge"] = max(INT64[0], int(-(-spec.minimum // 1))) if spec.minimum is not None else INT64[0]
        constraints["le"] = min(INT64[1], int(spec.maximum // 1)) if spec.maximum is not None else INT64[1]
    if spec.type == "number":
        constraints["allow_inf_nan"] = False
        constraints["ge"] = -FLOAT_MAX if spec.minimum is None else spec.minimum
        constraints["le"] = FLOAT_MAX if spec.maximum is None else spec.maximum
    if spec.example is not None:
        constraints["examples"] = [spec.example]
    base: Any = _PYTHON_TYPES[spec.type]
    if spec.type == "integer":  # JSON Schema's integer includes 3.0; strict mode alone refuses it
        base = Annotated[int, BeforeValidator(_integral)]
    if spec.enum:
        base = Literal[tuple(spec.enum)]
    return (base, Field(..., **constraints))


def _integral(value: Any) -> Any:
    """An integer-valued float (`3.0`) as the int it is; anything else unchanged."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _row_model(name: str, fields: list[FieldSpec]) -> type[BaseModel]:
    return create_model(
        name,
        __config__=ConfigDict(extra="forbid", strict=True),
        **{f.name: _annotation(f) for f in fields},
    )


def input_model(card: ModelCard) -> type[BaseModel]:
    """The pydantic model of one input row: strict types, no extra fields, finite numbers."""
    return _row_model(f"{_title(card.name)}Input", card.inputs)


def output_model(card: ModelCard) -> type[BaseModel]:
    """The pydantic model of one output row."""
    return _row_model(f"{_title(card.name)}Output", card.outputs)


def request_adapter(row: type[BaseModel], max_batch: int) -> TypeAdapter[Any]:
    """Validates a prediction body: one row, or a batch of 1..max_batch rows."""
    batch = Annotated[list[row], Field(min_length=1, max_length=max_batch)]  # type: ignore[valid-type]
    return TypeAdapter(row | batch)  # type: ignore[arg-type]


def request_schema(row: type[BaseModel], max_batch: int) -> dict[str, Any]:
    """The JSON Schema of a prediction body, self-contained (no `$ref`) for OpenAPI."""
    one = row.model_json_schema()
    return {"anyOf": [one, {"type": "array", "items": one, "minItems": 1, "maxItems": max_batch}]}


def _title(name: str) -> str:
    return "".join(part.capitalize() for part in name.replace("-", "_").replace(".", "_").split("_"))
