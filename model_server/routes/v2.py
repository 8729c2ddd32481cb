"""Open Inference Protocol v2 (REST): health, model metadata/readiness and `infer`.

Tensors map to the model card's fields in one of two ways: one tensor per input field
(named after it, shape [N] or [N, 1]), or one tensor of shape [N, F] holding every field
in the card's order (what MLServer and KServe clients send for scikit-learn models).
Each tensor's `datatype` must be one the field's type accepts (`DATATYPES`, and for
numbers any FP/INT type), and its data must hold values of that datatype. `outputs`
names which outputs to return, in that order. The published request schema
(`request_schema`) is built from the card and is what the server accepts, except what
JSON Schema cannot say: that `shape` multiplies to the number of values, and that every
per-field tensor has the same N.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from model_server.dataplane import DataPlane, Row
from model_server.errors import InvalidInput, ModelNotReady
from model_server.modelcard import FieldSpec, ModelCard
from model_server.routes.responses import (
    add_fast_route,
    inline_schema,
    json_response,
    openapi_responses,
)
from modeldeploy.contract.validation import error_lines

DATATYPES = {"number": "FP64", "integer": "INT64", "string": "BYTES", "boolean": "BOOL"}
_INTS = ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")
ACCEPTED: dict[str, tuple[str, ...]] = {
    "number": ("FP16", "FP32", "FP64", *_INTS),
    "integer": _INTS,
    "string": ("BYTES",),
    "boolean": ("BOOL",),
}


class RequestInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    shape: list[int] = Field(min_length=1, max_length=2)
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any]


class RequestOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    parameters: dict[str, Any] | None = None


class InferenceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None

SERVER_VERSION = version("modeldeploy")  # the installed distribution, as /v2 reports it


def _flatten(data: list[Any]) -> list[Any]:
    flat: list[Any] = []
    for item in data:
        if isinstance(item, list):
            flat.extend(_flatten(item))
        else:
            flat.append(item)
    return flat


def _holds(datatype: str, value: Any) -> bool:
    """Whether `value` is a value of the v2 `datatype`."""
    if datatype == "BOOL":
        return isinstance(value, bool)
    if datatype == "BYTES":
        return isinstance(value, str)
    if isinstance(value, bool):
        return False
    if isinstance(value, float):  # JSON does not tell 3.0 from 3
        return datatype.startswith("FP") or value.is_integer()
    return isinstance(value, int)


def _check_datatype(tensor: RequestInput, fields: list[FieldSpec]) -> None:
    for spec in fields:
        if tensor.datatype not in ACCEPTED[spec.type]:
            raise InvalidInput(
                f"tensor {tensor.name!r}: datatype {tensor.datatype!r} does not fit {spec.name!r} ({spec.type}); "
                f"use one of {', '.join(ACCEPTED[spec.type])}"
            )
    for value in tensor.data:
        if not _holds(tensor.datatype, value):
            raise InvalidInput(f"tensor {tensor.name!r}: {value!r} is not a {tensor.datatype} value")


def tensors_to_rows(card: ModelCard, inputs: list[RequestInput]) -> list[Row]:
    """Input rows from v2 tensors (see the module docstring for the two layouts).

    Raises:
        InvalidInput: the tensors match neither layout, shape and data disagree, or a
            datatype does not fit its field or its data.
    """
    names = [f.name for f in card.inputs]
    for tensor in inputs:
        expected = 1
        for dim in tensor.shape:
            expected *= dim
        tensor.data = _flatten(tensor.data)
        if any(dim < 1 for dim in tensor.shape) or len(tensor.data) != expected:
            raise InvalidInput(f"tensor {tensor.name!r}: shape {tensor.shape} does not match {len(tensor.data)} values")
    by_name = {t.name: t for t in inputs}
    if set(by_name) == set(names) and len(inputs) == len(names):
        sizes = {t.shape[0] for t in inputs}
        if len(sizes) != 1 or any(len(t.shape) == 2 and t.shape[1] != 1 for t in inputs):
            raise InvalidInput("per-field tensors must all have shape [N] or [N, 1] with the same N")
        for spec in card.inputs:
            _check_datatype(by_name[spec.name], [spec])
        columns = [by_name[name].data for name in names]
        return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]
    if len(inputs) == 1 and len(inputs[0].shape) == 2 and inputs[0].shape[1] == len(names):
        _check_datatype(inputs[0], card.inputs)
        data = inputs[0].data
        width = len(names)
        return [dict(zip(names, data[i : i + width], strict=True)) for i in range(0, len(data), width)]
    raise InvalidInput(
        f"expected one tensor per input {names} or one tensor of shape [N, {len(names)}]; "
        f"got {[(t.name, t.shape) for t in inputs]}"
    )


def requested_outputs(card: ModelCard, outputs: list[RequestOutput] | None) -> list[FieldSpec]:
    """The card's outputs a request asks for, in its order (all of them by default).

    Raises:
        InvalidInput: an output the model does not have.
    """
    if outputs is None:
        return list(card.outputs)
    by_name = {f.name: f for f in card.outputs}
    unknown = [o.name for o in outputs if o.name not in by_name]
    if unknown:
        raise InvalidInput(f"unknown outputs {unknown}; the model has {sorted(by_name)}")
    return [by_name[o.name] for o in outputs]


def request_schema(card: ModelCard, field_schemas: dict[str, Any], max_batch: int) -> dict[str, Any]:
    """The JSON Schema of an inference request for this card (see the module docstring)."""

    def tensor(
        name: dict[str, Any], datatypes: tuple[str, ...], value: dict[str, Any], shape: dict[str, Any]
    ) -> dict[str, Any]:
        data: dict[str, Any] = {"type": "array", "minItems": 1, "maxItems": max_batch * len(card.inputs)}
        data["items"] = {"anyOf": [value, {"type": "array", "items": value, "minItems": 1}]}
        return {
            "type": "object",
            "additionalProperties": False,
            "required": ["name", "shape", "datatype", "data"],
            "properties": {
                "name": name,
                "shape": shape,
                "datatype": {"type": "string", "enum": list(datatypes)},
                "parameters": {"type": ["object", "null"]},
                "data": data,
            },
        }

    rows = {"type": "integer", "minimum": 1, "maximum": max_batch}
    per_field = [
        tensor(
            {"type": "string", "const": f.name},
            ACCEPTED[f.type],
            field_schemas[f.name],
            {"type": "array", "prefixItems": [rows, {"const": 1}], "minItems": 1, "maxItems": 2, "items": False},
        )
        for f in card.inputs
    ]
    common = tuple(t for t in ACCEPTED[card.inputs[0].type] if all(t in ACCEPTED[f.type] for f in card.inputs))
    matrix = tensor(
        {"type": "string"},
        common,
        {"anyOf": [field_schemas[f.name] for f in card.inputs]},
        {"type": "array", "prefixItems": [rows, {"const": len(card.inputs)}], "minItems": 2, "maxItems": 2,
         "items": False},
    )
    layouts: list[dict[str, Any]] = [
        {"type": "array", "prefixItems": per_field, "minItems": len(per_field), "maxItems": len(per_field),
         "items": False}
    ]
    if common:
        layouts.append({"type": "array", "prefixItems": [matrix], "minItems": 1, "maxItems": 1, "items": False})
    output = {
        "type": "object",
        "additionalProperties": False,
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "enum": [f.name for f in card.outputs]},
            "parameters": {"type": ["object", "null"]},
        },
    }
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["inputs"],
        "properties": {
            "id": {"type": ["string", "null"]},
            "parameters": {"type": ["object", "null"]},
            "inputs": {"anyOf": layouts},
            "outputs": {"anyOf": [{"type": "array", "items": output}, {"type": "null"}]},
        },
    }


def register(app: FastAPI, dataplane: DataPlane) -> None:
    card = dataplane.model.card
    field_schemas = inline_schema(dataplane.input_row.model_json_schema())["properties"]

    def tensor_meta(fields: list[Any]) -> list[dict[str, Any]]:
        return [{"name": f.name, "datatype": DATATYPES[f.type], "shape": [-1]} for f in fields]

    @app.get("/v2", tags=["v2"], summary="Server metadata")
    async def server_metadata() -> Response:
        return json_response({"name": "modeldeploy", "version": SERVER_VERSION, "extensions": []})

    @app.get("/v2/health/live", tags=["v2"], summary="Liveness")
    async def live() -> Response:
        ok = dataplane.live()
        return json_response({"live": ok}, 200 if ok else 503)

    @app.get("/v2/health/ready", tags=["v2"], summary="Readiness")
    async def ready() -> Response:
        ok = dataplane.ready()
        return json_response({"ready": ok}, 200 if ok else 503)

    @app.get(
        "/v2/models/{name}", tags=["v2"], summary="Model metadata", responses=openapi_responses({"type": "object"}, 404)
    )
    async def model_metadata(name: str) -> Response:
        model = dataplane.get_model(name)
        return json_response(
            {
                "name": card.name,
                "versions": [card.version],
                "platform": card.flavor,
                "inputs": tensor_meta(card.inputs),
                "outputs": tensor_meta(card.outputs),
                "parameters": {"policies": model.policies.describe()},
            }
        )

    @app.get(
        "/v2/models/{name}/ready",
        tags=["v2"],
        summary="Model readiness",
        responses=openapi_responses({"type": "object"}, 404, 503),
    )
    async def model_ready(name: str) -> Response:
        model = dataplane.get_model(name)
        if not model.ready:
            raise ModelNotReady(f"model {name!r} is not ready ({model.state.value.lower()})")
        return json_response({"name": name, "ready": True})

    async def infer(raw: Request) -> Response:
        model = dataplane.get_model(raw.path_params["name"])
        try:
            request = InferenceRequest.model_validate_json(await raw.body())
        except ValidationError as err:
            raise InvalidInput(*error_lines(err)) from err
        wanted = requested_outputs(card, request.outputs)
        rows = dataplane.decode_rows(tensors_to_rows(card, request.inputs))
        results = await dataplane.predict(model, rows)
        outputs = [
            {
                "name": f.name,
                "datatype": DATATYPES[f.type],
                "shape": [len(results)],
                "data": [r.output[f.name] for r in results],
            }
            for f in wanted
        ]
        body: dict[str, Any] = {"model_name": card.name, "model_version": card.version, "outputs": outputs}
        if request.id is not None:
            body["id"] = request.id
        applied = [{**hit, "index": i} for i, r in enumerate(results) for hit in r.applied]
        if applied:
            body["parameters"] = {"policies": applied}
        return json_response(body)

    add_fast_route(
        app,
        "/v2/models/{name}/infer",
        infer,
        tags=["v2"],
        summary="Inference (Open Inference Protocol v2)",
        body={"schema": request_schema(card, field_schemas, dataplane.max_batch_size)},
        responses=openapi_responses({"type": "object"}, 400, 404, 413, 422, 503),
    )
