"""Open Inference Protocol v2 (REST): health, model metadata/readiness and `infer`, with binary data.

Tensors and their layouts are `model_server.tensors`' (one tensor per input field, or one
[N, F] tensor). The binary tensor data extension: with the header
`Inference-Header-Content-Length: L`, the body's first L bytes are the JSON request and the
rest the binary data of the inputs that give `parameters.binary_data_size` (in their order,
each its raw little-endian values); other inputs carry JSON `data` as usual. Outputs are
binary when `parameters.binary_data` of the requested output says so, else when the
request's `parameters.binary_data_output` does: their bytes follow the JSON response, each
output giving its `binary_data_size`, and the response has the same header and
`Content-Type: application/octet-stream`. `outputs` names which outputs to return, in that
order. The published request schema (`request_schema`) is built from the card and is what
the server accepts as JSON, except what JSON Schema cannot say: that `shape` multiplies to
the number of values, and that every per-field tensor has the same N.
"""

from __future__ import annotations

import re
from importlib.metadata import version
from typing import Any

import orjson
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from model_server.dataplane import DataPlane, policy_hits
from model_server.errors import InvalidInput, ModelNotReady
from model_server.modelcard import FieldSpec, ModelCard
from model_server.routes.responses import (
    add_fast_route,
    inline_schema,
    json_response,
    openapi_responses,
)
from model_server.tensors import (
    ACCEPTED,
    DATATYPES,
    Tensor,
    encode_raw,
    output_values,
    raw_tensor,
    requested_outputs,
    tensor,
    tensors_to_rows,
)
from modeldeploy.contract.validation import error_lines

INFERENCE_HEADER = "Inference-Header-Content-Length"
EXTENSIONS = ["binary_tensor_data"]
BINARY_NOTE = (
    "The JSON form is described here. The binary tensor data extension sends the header "
    f"`{INFERENCE_HEADER}: L`: the body's first L bytes are this JSON (inputs giving "
    "`parameters.binary_data_size` instead of `data`), then their raw little-endian bytes in order "
    "(BYTES: each element a 4-byte little-endian length and its UTF-8 bytes). Outputs with "
    "`parameters.binary_data: true` (or all, with the request's `parameters.binary_data_output: true`) "
    "follow the JSON response the same way, in an `application/octet-stream` body with the same header."
)
_DIGITS = re.compile(r"[0-9]{1,19}")


class RequestInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    shape: list[int] = Field(min_length=1, max_length=2)
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None  # None: in the binary data (`parameters.binary_data_size`)


class RequestOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    parameters: dict[str, Any] | None = None


class InferenceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    model_name: str | None = None  # KServe's client repeats the path's model name here
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


SERVER_VERSION = version("modeldeploy")  # the installed distribution, as /v2 reports it


def split_body(body: bytes, header: str | None) -> tuple[bytes, memoryview]:
    """The JSON part and the binary part of a request body (all JSON without the header).

    Raises:
        InvalidInput: the header is not a byte count within the body.
    """
    if header is None:
        return body, memoryview(b"")
    if not _DIGITS.fullmatch(header) or not 0 < int(header) <= len(body):
        raise InvalidInput(f"{INFERENCE_HEADER} {header!r} is not a JSON length within the body's {len(body)} bytes")
    length = int(header)
    return body[:length], memoryview(body)[length:]


def input_tensors(inputs: list[RequestInput], binary: memoryview) -> list[Tensor]:
    """Tensors of the request's inputs: JSON `data`, or the next `binary_data_size` bytes of `binary`.

    Raises:
        InvalidInput: an input has both or neither, a size is not a byte count, the sizes do not
            add up to the binary data, or a tensor's data does not fit its shape and datatype.
    """
    tensors = []
    offset = 0
    for item in inputs:
        parameters = item.parameters or {}
        if "binary_data_size" not in parameters:
            if item.data is None:
                raise InvalidInput(f"tensor {item.name!r}: no `data` and no parameters.binary_data_size")
            tensors.append(tensor(item.name, item.datatype, item.shape, item.data))
            continue
        if item.data is not None:
            raise InvalidInput(f"tensor {item.name!r}: both `data` and parameters.binary_data_size")
        size = parameters["binary_data_size"]
        if type(size) is not int or size < 0:
            raise InvalidInput(f"tensor {item.name!r}: binary_data_size {size!r} is not a byte count")
        if size > len(binary) - offset:
            raise InvalidInput(
                f"tensor {item.name!r}: binary_data_size {size} exceeds the {len(binary) - offset} bytes of binary "
                f"data left after the JSON header ({INFERENCE_HEADER})"
            )
        tensors.append(raw_tensor(item.name, item.datatype, item.shape, binary[offset : offset + size]))
        offset += size
    if offset != len(binary):
        raise InvalidInput(f"{len(binary) - offset} bytes of binary data follow the last binary input")
    return tensors


def _flag(parameters: dict[str, Any] | None, key: str, default: bool) -> bool:
    value = (parameters or {}).get(key, default)
    if not isinstance(value, bool):
        raise InvalidInput(f"parameters.{key} must be true or false, not {value!r}")
    return value


def binary_flags(request: InferenceRequest, wanted: list[FieldSpec]) -> list[bool]:
    """Whether each wanted output is sent as binary data (its `binary_data`, else `binary_data_output`).

    Raises:
        InvalidInput: one of these parameters is not a boolean.
    """
    default = _flag(request.parameters, "binary_data_output", False)
    flags = {o.name: _flag(o.parameters, "binary_data", default) for o in request.outputs or []}
    return [flags.get(f.name, default) for f in wanted]


def request_schema(card: ModelCard, field_schemas: dict[str, Any], max_batch: int) -> dict[str, Any]:
    """The JSON Schema of an inference request for this card (see the module docstring)."""

    def tensor_schema(
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
                # binary_data_size: the binary form (`Inference-Header-Content-Length`), not JSON
                "parameters": {"type": ["object", "null"], "not": {"required": ["binary_data_size"]}},
                "data": data,
            },
        }

    rows = {"type": "integer", "minimum": 1, "maximum": max_batch}
    per_field = [
        tensor_schema(
            {"type": "string", "const": f.name},
            ACCEPTED[f.type],
            field_schemas[f.name],
            {"type": "array", "prefixItems": [rows, {"const": 1}], "minItems": 1, "maxItems": 2, "items": False},
        )
        for f in card.inputs
    ]
    common = tuple(t for t in ACCEPTED[card.inputs[0].type] if all(t in ACCEPTED[f.type] for f in card.inputs))
    matrix = tensor_schema(
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
            "parameters": {"type": ["object", "null"], "properties": {"binary_data": {"type": "boolean"}}},
        },
    }
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["inputs"],
        "properties": {
            "id": {"type": ["string", "null"]},
            "model_name": {"anyOf": [{"const": card.name}, {"type": "null"}]},
            "parameters": {"type": ["object", "null"], "properties": {"binary_data_output": {"type": "boolean"}}},
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
        return json_response({"name": "modeldeploy", "version": SERVER_VERSION, "extensions": EXTENSIONS})

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
        header, binary = split_body(await raw.body(), raw.headers.get(INFERENCE_HEADER))
        try:
            request = InferenceRequest.model_validate_json(header)
        except ValidationError as err:
            raise InvalidInput(*error_lines(err)) from err
        if request.model_name not in (None, card.name):
            raise InvalidInput(f"model_name {request.model_name!r} is not the path's model {card.name!r}")
        wanted = requested_outputs(card, None if request.outputs is None else [o.name for o in request.outputs])
        binary_wanted = binary_flags(request, wanted)
        rows = dataplane.decode_rows(tensors_to_rows(card, input_tensors(request.inputs, binary)))
        results = await dataplane.predict(model, rows)
        outputs: list[dict[str, Any]] = []
        chunks: list[bytes] = []
        for field, as_binary in zip(wanted, binary_wanted, strict=True):
            values = output_values(field, [r.output for r in results])
            output: dict[str, Any] = {"name": field.name, "datatype": DATATYPES[field.type], "shape": [len(results)]}
            if as_binary:
                chunks.append(encode_raw(DATATYPES[field.type], values))
                output["parameters"] = {"binary_data_size": len(chunks[-1])}
            else:
                output["data"] = values
            outputs.append(output)
        body: dict[str, Any] = {"model_name": card.name, "model_version": card.version, "outputs": outputs}
        if request.id is not None:
            body["id"] = request.id
        applied = policy_hits(results)
        if applied:
            body["parameters"] = {"policies": applied}
        if not chunks:
            return json_response(body)
        head = orjson.dumps(body)
        return Response(
            b"".join([head, *chunks]),
            media_type="application/octet-stream",
            headers={INFERENCE_HEADER: str(len(head))},
        )

    responses = openapi_responses({"type": "object"}, 400, 404, 413, 422, 503)
    responses[200]["content"]["application/octet-stream"] = {"schema": {"type": "string", "format": "binary"}}
    add_fast_route(
        app,
        "/v2/models/{name}/infer",
        infer,
        tags=["v2"],
        summary="Inference (Open Inference Protocol v2)",
        description=BINARY_NOTE,
        body={"schema": request_schema(card, field_schemas, dataplane.max_batch_size)},
        responses=responses,
    )
