"""The app in process (httpx.ASGITransport): every endpoint, bad input, policies, metrics, flavors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from server_support import SETOSA, VIRGINICA, app_client

pytestmark = pytest.mark.anyio

PREDICT = "/api/models/iris/prediction"


async def test_probes_and_models_when_loaded(iris_dir: Path) -> None:
    async with app_client(iris_dir) as client:
        for path in ("/api/health", "/api/health/ready", "/api/health/startup", "/v2/health/live", "/v2/health/ready"):
            assert (await client.get(path)).status_code == 200, path
        assert (await client.get("/api/health/ready")).json() == {"ready": True, "reason": "Serving", "message": "",
                                                                  "failedFiles": []}
        models = (await client.get("/api/models")).json()["models"]
        assert [(m["name"], m["version"], m["flavor"], m["ready"]) for m in models] == [
            ("iris", "1.0.0", "sklearn", True)
        ]
        assert (await client.get("/v2/models/iris/ready")).json() == {"name": "iris", "ready": True}
        meta = (await client.get("/v2/models/iris")).json()
        assert meta["versions"] == ["1.0.0"]
        assert [i["name"] for i in meta["inputs"]] == ["sepal_length", "sepal_width", "petal_length", "petal_width"]


async def test_metadata_has_schemas_and_a_valid_example(iris_dir: Path) -> None:
    async with app_client(iris_dir) as client:
        meta = (await client.get("/api/models/iris/metadata")).json()
        assert meta["name"] == "iris"
        assert set(meta["inputSchema"]["anyOf"][0]["properties"]) == set(SETOSA)
        assert meta["outputSchema"]["properties"]["species"]["enum"] == ["setosa", "versicolor", "virginica"]
        response = await client.post(PREDICT, json=meta["example"])
        assert response.json()["prediction"] == {"species": "setosa"}


async def test_single_and_batch_predictions(iris_dir: Path) -> None:
    async with app_client(iris_dir) as client:
        single = await client.post(PREDICT, json=VIRGINICA)
        assert single.status_code == 200
        assert single.json() == {"prediction": {"species": "virginica"}, "policies": []}
        batch = await client.post(PREDICT, json=[SETOSA, VIRGINICA])
        assert [p["prediction"]["species"] for p in batch.json()["predictions"]] == ["setosa", "virginica"]


async def test_v2_infer_accepts_both_tensor_layouts(iris_dir: Path) -> None:
    async with app_client(iris_dir) as client:
        matrix = {
            "id": "r1",
            "inputs": [
                {
                    "name": "input-0",
                    "shape": [2, 4],
                    "datatype": "FP64",
                    "data": [list(SETOSA.values()), list(VIRGINICA.values())],
                }
            ],
        }
        response = await client.post("/v2/models/iris/infer", json=matrix)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["id"] == "r1" and body["model_name"] == "iris"
        assert body["outputs"] == [
            {"name": "species", "datatype": "BYTES", "shape": [2], "data": ["setosa", "virginica"]}
        ]
        columns = {"inputs": [{"name": k, "shape": [1], "datatype": "FP32", "data": [v]} for k, v in VIRGINICA.items()]}
        response = await client.post("/v2/models/iris/infer", json=columns)
        assert response.json()["outputs"][0]["data"] == ["virginica"]


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b'{"sepal_length": 5.1,', 400, "Invalid JSON"),
        (json.dumps({**SETOSA, "sepal_width": "wide"}).encode(), 400, "sepal_width"),
        (
            json.dumps({k: v for k, v in SETOSA.items() if k != "petal_width"}).encode(),
            400,
            "petal_width: Field required",
        ),
        (json.dumps({**SETOSA, "colour": "blue"}).encode(), 400, "colour: Extra inputs are not permitted"),
        (b'{"sepal_length": NaN, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}', 400, "finite"),
        (b'{"sepal_length": Infinity, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}', 400, "finite"),
        (
            json.dumps({**SETOSA, "sepal_length": 500.0}).encode(),
            400,
            "sepal_length: Input should be less than or equal to 50",
        ),
        (b"[]", 400, "at least 1"),
        (b"42", 400, "object"),
        (json.dumps([SETOSA, {**SETOSA, "sepal_length": True}]).encode(), 400, "1.sepal_length"),
    ],
)
async def test_bad_input_is_a_4xx_that_says_what_is_wrong(
    iris_dir: Path, body: bytes, status: int, needle: str
) -> None:
    async with app_client(iris_dir) as client:
        response = await client.post(PREDICT, content=body, headers={"content-type": "application/json"})
        assert response.status_code == status
        error = response.json()
        assert error["type"] == "InvalidInput"
        assert any(needle in message for message in error["messages"]), error


async def test_unknown_model_and_path_are_404(iris_dir: Path) -> None:
    async with app_client(iris_dir) as client:
        for response in (
            await client.post("/api/models/roses/prediction", json=SETOSA),
            await client.get("/api/models/roses/metadata"),
            await client.get("/v2/models/roses/ready"),
            await client.post(
                "/v2/models/roses/infer",
                json={
                    "inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": list(SETOSA.values())}]
                },
            ),
        ):
            assert response.status_code == 404
            assert response.json()["type"] == "ModelNotFound"
        assert (await client.get("/nowhere")).json()["type"] == "NotFound"


async def test_v2_bad_tensors_are_400(iris_dir: Path) -> None:
    async with app_client(iris_dir) as client:
        cases = [
            {"inputs": [{"name": "input-0", "shape": [1, 3], "datatype": "FP64", "data": [1.0, 2.0, 3.0]}]},
            {"inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP64", "data": [1.0, 2.0]}]},
            {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [1.0, 2.0, 3.0, "x"]}]},
            {"inputs": "nope"},
        ]
        for case in cases:
            response = await client.post("/v2/models/iris/infer", json=case)
            assert response.status_code == 400, (case, response.text)
            assert response.json()["error"]


async def test_body_over_the_size_limit_is_413(iris_dir: Path) -> None:
    async with app_client(iris_dir, max_request_bytes=1000) as client:
        big = json.dumps([SETOSA] * 50).encode()
        response = await client.post(PREDICT, content=big, headers={"content-type": "application/json"})
        assert response.status_code == 413
        assert response.json()["type"] == "PayloadTooLarge"

        async def chunks() -> Any:  # no content-length: the limit applies while reading
            for _ in range(50):
                yield json.dumps(SETOSA).encode()

        response = await client.post(PREDICT, content=chunks(), headers={"content-type": "application/json"})
        assert response.status_code == 413


async def test_batch_over_the_limit_is_400(iris_dir: Path) -> None:
    async with app_client(iris_dir, max_batch_size=2) as client:
        response = await client.post(PREDICT, json=[SETOSA] * 3)
        assert response.status_code == 400
        assert "at most 2" in response.json()["messages"][0]


async def test_metrics_count_requests_latency_load_time_and_in_flight(iris_dir: Path) -> None:
    async with app_client(iris_dir) as client:
        await client.post(PREDICT, json=SETOSA)
        await client.post(PREDICT, json={})
        text = (await client.get("/metrics")).text
    assert 'modeldeploy_requests_total{endpoint="/api/models/{name}/prediction",model="iris",status="200"} 1.0' in text
    assert 'modeldeploy_requests_total{endpoint="/api/models/{name}/prediction",model="iris",status="400"} 1.0' in text
    assert (
        'modeldeploy_request_duration_seconds_count{endpoint="/api/models/{name}/prediction",model="iris",status="200"} 1.0'
        in text
    )
    assert 'modeldeploy_model_ready{model="iris"} 1.0' in text
    assert "modeldeploy_requests_in_flight 1.0" in text  # the /metrics request itself
    load = next(line for line in text.splitlines() if line.startswith('modeldeploy_model_load_seconds{model="iris"}'))
    assert float(load.split()[-1]) > 0


async def test_tampered_parameters_fail_the_load(iris_dir: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "iris"
    shutil.copytree(iris_dir, copy)
    with (copy / "model.joblib").open("ab") as artifact:
        artifact.write(b"\0")
    async with app_client(copy) as client:
        live = await client.get("/api/health")
        assert live.status_code == 503 and live.json()["status"] == "NOT_HEALTHY"
        assert "model.joblib" in live.json()["model"]["error"]
        assert (await client.get("/api/health/ready")).status_code == 503
        assert (await client.get("/api/health/startup")).status_code == 200
        response = await client.post(PREDICT, json=SETOSA)
        assert response.status_code == 503 and response.json()["type"] == "ModelNotReady"


async def test_unverified_parameters_are_never_loaded(iris_dir: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "iris"
    shutil.copytree(iris_dir, copy)
    (copy / "model.sig").unlink()
    async with app_client(copy) as client:
        assert "SignatureMissing" in (await client.get("/api/health")).json()["model"]["error"]
        assert (await client.get("/api/health/ready")).status_code == 503


async def test_invalid_policy_keeps_readiness_false_with_a_clear_error(iris_dir: Path) -> None:
    bad = [{"name": "broken", "when": "prediction.species ==", "action": "reject"}]
    async with app_client(iris_dir, policies=bad) as client:
        ready = await client.get("/api/health/ready")
        assert ready.status_code == 503
        assert ready.json()["reason"] == "SpecInvalid"
        assert "policy 'broken': invalid CEL" in ready.json()["message"]


async def test_onnx_flavor_predicts_like_the_sklearn_model(onnx_dir: Path) -> None:
    async with app_client(onnx_dir) as client:
        response = await client.post("/api/models/iris-onnx/prediction", json=[SETOSA, VIRGINICA])
        assert response.status_code == 200, response.text
        assert [p["prediction"]["species"] for p in response.json()["predictions"]] == ["setosa", "virginica"]
        assert (await client.get("/api/models")).json()["models"][0]["flavor"] == "onnx"


PRICING_ROW = {"age": 30, "smoker": False, "cost": 100.0}  # price = 150 - 60 = 90


async def test_python_flavor_predicts(pricing_dir: Callable[..., Path]) -> None:
    async with app_client(pricing_dir()) as client:
        response = await client.post("/api/models/pricing/prediction", json=PRICING_ROW)
        assert response.json() == {"prediction": {"price": 90.0}, "policies": []}


async def test_python_flavor_failed_load_reports_the_error(pricing_dir: Callable[..., Path]) -> None:
    async with app_client(pricing_dir(fail_load=True)) as client:
        live = await client.get("/api/health")
        assert live.status_code == 503
        assert "weights are corrupt" in live.json()["model"]["error"]
        assert (await client.get("/v2/health/live")).status_code == 503


REJECT = {
    "name": "no-smoker-over-60",
    "when": "input.smoker && input.age > 60",
    "action": "reject",
    "message": "Prediction cannot be made for a smoker over 60.",
}
CLAMP = {"name": "no-negative-price", "when": "prediction.price < 0.0", "action": "clamp", "field": "price", "min": 0.0}
OVERRIDE = {
    "name": "cost-floor",
    "when": "prediction.price < input.cost",
    "action": "override",
    "expression": "input.cost",
    "message": "never below cost",
}


async def test_reject_policy_is_a_422_naming_the_policy(pricing_dir: Callable[..., Path]) -> None:
    async with app_client(pricing_dir(), policies=[REJECT]) as client:
        response = await client.post("/api/models/pricing/prediction", json={"age": 61, "smoker": True, "cost": 10.0})
        assert response.status_code == 422
        assert response.json() == {
            "type": "PolicyRejected",
            "messages": [REJECT["message"]],
            "error": REJECT["message"],
            "policy": "no-smoker-over-60",
            "source": "spec",
        }
        batch = await client.post(
            "/api/models/pricing/prediction", json=[PRICING_ROW, {"age": 61, "smoker": True, "cost": 10.0}]
        )
        assert batch.status_code == 422 and batch.json()["index"] == 1
        ok = await client.post("/api/models/pricing/prediction", json=PRICING_ROW)
        assert ok.status_code == 200
        text = (await client.get("/metrics")).text
        assert ('modeldeploy_policy_hits_total{action="reject",model="pricing",policy="no-smoker-over-60",'
                'source="spec"} 2.0') in text


async def test_clamp_policy_bounds_and_says_so(pricing_dir: Callable[..., Path]) -> None:
    async with app_client(pricing_dir(), policies=[CLAMP]) as client:
        response = await client.post("/api/models/pricing/prediction", json={"age": 80, "smoker": True, "cost": 10.0})
        body = response.json()
        assert body["prediction"] == {"price": 0.0}
        assert body["policies"] == [
            {
                "policy": "no-negative-price",
                "source": "spec",
                "action": "clamp",
                "field": "price",
                "original": -195.0,
                "value": 0.0,
                "message": None,
            }
        ]


async def test_override_policy_replaces_and_says_so(pricing_dir: Callable[..., Path]) -> None:
    async with app_client(pricing_dir(), policies=[OVERRIDE]) as client:
        body = (
            await client.post("/api/models/pricing/prediction", json={"age": 50, "smoker": False, "cost": 100.0})
        ).json()
        assert body["prediction"] == {"price": 100.0}
        assert body["policies"][0]["message"] == "never below cost"
        v2 = await client.post(
            "/v2/models/pricing/infer",
            json={
                "inputs": [
                    {"name": "age", "shape": [1], "datatype": "INT64", "data": [50]},
                    {"name": "smoker", "shape": [1], "datatype": "BOOL", "data": [False]},
                    {"name": "cost", "shape": [1], "datatype": "FP64", "data": [100.0]},
                ]
            },
        )
        assert v2.json()["outputs"][0]["data"] == [100.0]
        assert v2.json()["parameters"]["policies"][0]["policy"] == "cost-floor"


async def test_policies_combine_reject_first_then_override_then_clamp(pricing_dir: Callable[..., Path]) -> None:
    policies = [REJECT, {**OVERRIDE, "expression": "input.cost - 500.0"}, CLAMP]
    async with app_client(pricing_dir(), policies=policies) as client:
        url = "/api/models/pricing/prediction"
        rejected = await client.post(url, json={"age": 70, "smoker": True, "cost": 100.0})
        assert rejected.status_code == 422
        body = (await client.post(url, json={"age": 50, "smoker": False, "cost": 100.0})).json()
        assert body["prediction"] == {"price": 0.0}
        assert [(p["policy"], p["value"]) for p in body["policies"]] == [
            ("cost-floor", -400.0),
            ("no-negative-price", 0.0),
        ]
        untouched = (await client.post(url, json={"age": 10, "smoker": False, "cost": 100.0})).json()
        assert untouched == {"prediction": {"price": 130.0}, "policies": []}
        text = (await client.get("/metrics")).text
        for policy, action in (
            ("no-smoker-over-60", "reject"),
            ("cost-floor", "override"),
            ("no-negative-price", "clamp"),
        ):
            assert (f'modeldeploy_policy_hits_total{{action="{action}",model="pricing",policy="{policy}",'
                    'source="spec"} 1.0') in text


async def test_openapi_documents_the_input_schema(iris_dir: Path) -> None:
    async with app_client(iris_dir) as client:
        spec = (await client.get("/openapi.json")).json()
        body = spec["paths"]["/api/models/{name}/prediction"]["post"]["requestBody"]["content"]["application/json"]
        assert body["schema"]["anyOf"][0]["required"] == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
        assert body["example"] == (await client.get("/api/models/iris/metadata")).json()["example"]
        assert (await client.get("/docs")).status_code == 200


async def test_ready_false_while_draining_but_predictions_still_served(iris_dir: Path) -> None:
    async with app_client(iris_dir) as client:
        dataplane = client._transport.app.state.dataplane  # type: ignore[attr-defined]
        dataplane.drain()
        ready = await client.get("/api/health/ready")
        assert ready.status_code == 503 and ready.json()["reason"] == "Draining"
        assert (await client.get("/v2/health/ready")).status_code == 503
        assert (await client.get("/api/health")).status_code == 200
        assert (await client.post(PREDICT, json=SETOSA)).status_code == 200
