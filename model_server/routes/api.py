"""The model API: list models, describe one, and predict (one row or a batch)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response

from model_server.dataplane import DataPlane
from model_server.modelcard import request_schema
from model_server.routes.responses import add_fast_route, json_response, openapi_responses


def register(app: FastAPI, dataplane: DataPlane) -> None:
    body_schema = request_schema(dataplane.input_row, dataplane.max_batch_size)
    output = dataplane.output_row.model_json_schema()
    applied = {"type": "array", "items": {"type": "object"}}
    one = {
        "type": "object",
        "required": ["prediction", "policies"],
        "properties": {"prediction": output, "policies": applied},
    }
    many = {
        "type": "object",
        "required": ["predictions"],
        "properties": {"predictions": {"type": "array", "items": one}},
    }
    example = dataplane.model.card.example_input()

    @app.get("/api/models", tags=["models"], summary="The models this server serves")
    async def models() -> Response:
        return json_response({"models": [dataplane.model.status()]})

    @app.get(
        "/api/models/{name}/metadata",
        tags=["models"],
        summary="Input/output JSON Schema, an example input and the policies",
        responses=openapi_responses({"type": "object"}, 404),
    )
    async def metadata(name: str) -> Response:
        return json_response(dataplane.metadata(name))

    async def prediction(request: Request) -> Response:
        name = request.path_params["name"]
        model = dataplane.get_model(name)
        rows, single = dataplane.decode_body(await request.body())
        results = await dataplane.predict(model, rows)
        if single:
            return json_response({"prediction": results[0].output, "policies": results[0].applied})
        body: dict[str, Any] = {"predictions": [{"prediction": r.output, "policies": r.applied} for r in results]}
        return json_response(body)

    add_fast_route(
        app,
        "/api/models/{name}/prediction",
        prediction,
        tags=["models"],
        summary="Predict one input (an object) or a batch (an array of objects)",
        body={"schema": body_schema, "example": example},
        responses=openapi_responses({"anyOf": [one, many]}, 400, 404, 413, 422, 503),
    )
