"""Open Inference Protocol v2 (REST): health, model metadata/readiness and `infer`.

Tensors map to the model card's fields in one of two ways: one tensor per input field
(named after it, shape [N] or [N, 1]), or one tensor of shape [N, F] holding every field
in the card's order (what MLServer and KServe clients send for scikit-learn models).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from model_server.dataplane import DataPlane, Row, validation_messages
from model_server.errors import InvalidInput, ModelNotReady
from model_server.modelcard import ModelCard
from model_server.routes.responses import (
    add_fast_route,
    inline_schema,
    json_response,
    openapi_responses,
)

DATATYPES = {"number": "FP64", "integer": "INT64", "string": "BYTES", "boolean": "BOOL"}


class RequestInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    shape: list[int] = Field(min_length=1, max_length=2)
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any]


class InferenceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[dict[str, Any]] | None = None


def _flatten(data: list[Any]) -> list[Any]:
    flat: list[Any] = []
    for item in data:
        if isinstance(item, list):
            flat.extend(_flatten(item))
        else:
            flat.append(item)
    return flat


def tensors_to_rows(card: ModelCard, inputs: list[RequestInput]) -> list[Row]:
    """Input rows from v2 tensors (see the module docstring for the two layouts).

    Raises:
        InvalidInput: the tensors match neither layout, or shape and data disagree.
    """
    names = [f.name for f in card.inputs]
    for tensor in inputs:
        expected = 1
        for dim in tensor.shape:
            expected *= dim
        tensor.data = _flatten(tensor.data)
        if any(dim < 0 for dim in tensor.shape) or len(tensor.data) != expected:
            raise InvalidInput(f"tensor {tensor.name!r}: shape {tensor.shape} does not match {len(tensor.data)} values")
    by_name = {t.name: t for t in inputs}
    if set(by_name) == set(names) and len(inputs) == len(names):
        sizes = {t.shape[0] for t in inputs}
        if len(sizes) != 1 or any(len(t.shape) == 2 and t.shape[1] != 1 for t in inputs):
            raise InvalidInput("per-field tensors must all have shape [N] or [N, 1] with the same N")
        columns = [by_name[name].data for name in names]
        return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]
    if len(inputs) == 1 and len(inputs[0].shape) == 2 and inputs[0].shape[1] == len(names):
        data = inputs[0].data
        width = len(names)
        return [dict(zip(names, data[i : i + width], strict=True)) for i in range(0, len(data), width)]
    raise InvalidInput(
        f"expected one tensor per input {names} or one tensor of shape [N, {len(names)}]; "
        f"got {[(t.name, t.shape) for t in inputs]}"
    )


def register(app: FastAPI, dataplane: DataPlane) -> None:
    card = dataplane.model.card

    def tensor_meta(fields: list[Any]) -> list[dict[str, Any]]:
        return [{"name": f.name, "datatype": DATATYPES[f.type], "shape": [-1]} for f in fields]

    @app.get("/v2", tags=["v2"], summary="Server metadata")
    async def server_metadata() -> Response:
        return json_response({"name": "modeldeploy", "version": "0.1.0", "extensions": []})

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
        dataplane.get_model(name)
        return json_response(
            {
                "name": card.name,
                "versions": [card.version],
                "platform": card.flavor,
                "inputs": tensor_meta(card.inputs),
                "outputs": tensor_meta(card.outputs),
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
        name = raw.path_params["name"]
        dataplane.get_model(name)
        try:
            request = InferenceRequest.model_validate_json(await raw.body())
        except ValidationError as err:
            raise InvalidInput(*validation_messages(err)) from err
        rows = dataplane.decode_rows(tensors_to_rows(card, request.inputs))
        results = await dataplane.predict(name, rows)
        outputs = [
            {
                "name": f.name,
                "datatype": DATATYPES[f.type],
                "shape": [len(results)],
                "data": [r.output[f.name] for r in results],
            }
            for f in card.outputs
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
        body={"schema": inline_schema(InferenceRequest.model_json_schema())},
        responses=openapi_responses({"type": "object"}, 400, 404, 413, 422, 503),
    )
