"""Open Inference Protocol v2 as real clients speak it: Triton's HTTP and gRPC clients with their
defaults (binary tensor data on), raw binary bodies, gRPC status codes, gRPC health and metrics.

The servers are processes (`modeldeploy serve ... MODELDEPLOY_GRPC_PORT=N`): this process imports
tritonclient.grpc, whose descriptors share the `inference` package with the server's own.
"""

from __future__ import annotations

import json
import re
import signal
import struct
import subprocess
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from server_support import SETOSA, VIRGINICA, ServerProcess
from tritonclient.utils import InferenceServerException

FEATURES = list(SETOSA)
INFER = "/v2/models/iris/infer"
HEADER = "Inference-Header-Content-Length"


@pytest.fixture(scope="module")
def iris(iris_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(iris_dir, None, tmp_path_factory.mktemp("protocols"), grpc=True)
    server.wait_listening()
    server.wait_started()
    yield server
    server.stop()


@pytest.fixture
def greeter_dir(tmp_path: Path, seal: Callable[[Path], Path]) -> Path:
    """A python-flavor model with a string input and a string output (BYTES both ways)."""
    model_dir = tmp_path / "greeter"
    model_dir.mkdir()
    (model_dir / "greeter_model.py").write_text(textwrap.dedent("""
        class Greeter:
            def load(self, model_dir):
                pass

            def predict(self, inputs):
                return [{"greeting": "hello " + row["name"], "length": len(row["name"])} for row in inputs]
    """))
    card = {
        "name": "greeter", "version": "1", "flavor": "python", "entrypoint": "greeter_model:Greeter",
        "inputs": [{"name": "name", "type": "string"}],
        "outputs": [{"name": "greeting", "type": "string"}, {"name": "length", "type": "integer"}],
    }
    (model_dir / "model.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
    return seal(model_dir)


def rows(*examples: dict[str, float]) -> np.ndarray:
    return np.array([[row[f] for f in FEATURES] for row in examples])


def http_client(server: ServerProcess) -> triton_http.InferenceServerClient:
    return triton_http.InferenceServerClient(f"127.0.0.1:{server.port}")


def grpc_client(server: ServerProcess) -> triton_grpc.InferenceServerClient:
    return triton_grpc.InferenceServerClient(server.grpc_address)


def matrix_input(module: Any, data: np.ndarray, datatype: str) -> Any:
    tensor = module.InferInput("input-0", list(data.shape), datatype)
    tensor.set_data_from_numpy(data.astype(np.float32 if datatype == "FP32" else np.float64))
    return tensor


# -- health and metadata ---------------------------------------------------------------------------


def test_triton_http_sees_a_live_ready_server_with_the_binary_extension(iris: ServerProcess) -> None:
    client = http_client(iris)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("iris")
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    metadata = client.get_model_metadata("iris")
    assert [i["name"] for i in metadata["inputs"]] == FEATURES
    assert metadata["outputs"] == [{"name": "species", "datatype": "BYTES", "shape": [-1]}]


def test_triton_grpc_sees_a_live_ready_server_and_the_model_metadata(iris: ServerProcess) -> None:
    client = grpc_client(iris)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("iris")
    assert client.get_server_metadata().extensions == ["binary_tensor_data"]
    metadata = client.get_model_metadata("iris", as_json=True)
    assert (metadata["name"], metadata["versions"], metadata["platform"]) == ("iris", ["1.0.0"], "sklearn")
    assert [(i["name"], i["datatype"]) for i in metadata["inputs"]] == [(f, "FP64") for f in FEATURES]


# -- inference ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("datatype", ["FP64", "FP32"])
@pytest.mark.parametrize("client", [http_client, grpc_client])
def test_triton_clients_infer_a_binary_n_by_4_tensor(
    iris: ServerProcess, client: Callable[[ServerProcess], Any], datatype: str
) -> None:
    triton = client(iris)
    module = triton_http if isinstance(triton, triton_http.InferenceServerClient) else triton_grpc
    result = triton.infer("iris", [matrix_input(module, rows(SETOSA, VIRGINICA), datatype)])
    assert result.as_numpy("species").tolist() == [b"setosa", b"virginica"]


@pytest.mark.parametrize("client", [http_client, grpc_client])
def test_triton_clients_infer_one_tensor_per_field(
    iris: ServerProcess, client: Callable[[ServerProcess], Any]
) -> None:
    triton = client(iris)
    module = triton_http if isinstance(triton, triton_http.InferenceServerClient) else triton_grpc
    inputs = []
    for name in FEATURES:
        tensor = module.InferInput(name, [2], "FP64")
        tensor.set_data_from_numpy(np.array([SETOSA[name], VIRGINICA[name]]))
        inputs.append(tensor)
    assert triton.infer("iris", inputs).as_numpy("species").tolist() == [b"setosa", b"virginica"]


def test_triton_http_asks_for_a_json_or_a_binary_output(iris: ServerProcess) -> None:
    client = http_client(iris)
    inputs = [matrix_input(triton_http, rows(VIRGINICA), "FP64")]
    as_json = client.infer("iris", inputs, outputs=[triton_http.InferRequestedOutput("species", binary_data=False)])
    assert as_json.get_response()["outputs"] == [
        {"name": "species", "datatype": "BYTES", "shape": [1], "data": ["virginica"]}
    ]
    as_binary = client.infer("iris", inputs, outputs=[triton_http.InferRequestedOutput("species", binary_data=True)])
    assert as_binary.get_response()["outputs"][0]["parameters"] == {"binary_data_size": 4 + len("virginica")}
    assert as_binary.as_numpy("species").tolist() == [b"virginica"]


def test_an_unknown_requested_output_is_refused_by_both_protocols(iris: ServerProcess) -> None:
    with pytest.raises(InferenceServerException, match=r"unknown outputs \['petals'\]") as http_error:
        http_client(iris).infer("iris", [matrix_input(triton_http, rows(SETOSA), "FP64")],
                                outputs=[triton_http.InferRequestedOutput("petals")])
    assert http_error.value.status() == "400"
    with pytest.raises(InferenceServerException, match=r"unknown outputs \['petals'\]") as grpc_error:
        grpc_client(iris).infer("iris", [matrix_input(triton_grpc, rows(SETOSA), "FP64")],
                                outputs=[triton_grpc.InferRequestedOutput("petals")])
    assert grpc_error.value.status() == "StatusCode.INVALID_ARGUMENT"


def test_bytes_inputs_and_outputs_over_both_protocols(
    greeter_dir: Path, start_server: Callable[..., ServerProcess]
) -> None:
    server = start_server(greeter_dir, grpc=True)
    names = np.array(["Ada", "Zoë"], dtype=object)
    for module, client in ((triton_http, http_client(server)), (triton_grpc, grpc_client(server))):
        tensor = module.InferInput("name", [2], "BYTES")
        tensor.set_data_from_numpy(names)
        result = client.infer("greeter", [tensor])
        assert [g.decode() for g in result.as_numpy("greeting")] == ["hello Ada", "hello Zoë"]
        assert result.as_numpy("length").tolist() == [3, 3]


# -- the binary data extension, by hand ----------------------------------------------------------


def binary_request(header: dict[str, Any], *chunks: bytes) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(header).encode()
    return head + b"".join(chunks), {HEADER: str(len(head)), "Content-Type": "application/octet-stream"}


def test_json_and_binary_inputs_mix_in_one_request(iris: ServerProcess) -> None:
    binary = [name for name in FEATURES if name != "sepal_width"]
    inputs = [
        {"name": name, "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 4}}
        if name in binary else {"name": name, "shape": [1], "datatype": "FP64", "data": [VIRGINICA[name]]}
        for name in FEATURES
    ]
    chunks = [struct.pack("<f", VIRGINICA[name]) for name in binary]
    body, headers = binary_request({"inputs": inputs, "outputs": [{"name": "species"}]}, *chunks)
    response = httpx.post(iris.url + INFER, content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["outputs"][0]["data"] == ["virginica"]


def test_binary_output_comes_after_the_json_header(iris: ServerProcess) -> None:
    body, headers = binary_request(
        {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "parameters": {"binary_data_size": 32}}],
         "parameters": {"binary_data_output": True}},
        rows(SETOSA).astype("<f8").tobytes(),
    )
    response = httpx.post(iris.url + INFER, content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    length = int(response.headers[HEADER])
    head = json.loads(response.content[:length])
    assert head["outputs"] == [
        {"name": "species", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 10}}
    ]
    assert response.content[length:] == struct.pack("<I", 6) + b"setosa"


FOUR = {"name": "x", "shape": [1, 4], "datatype": "FP64", "parameters": {"binary_data_size": 32}}
VALUES = rows(SETOSA).astype("<f8").tobytes()


def framed(header: dict[str, Any], rest: bytes, length: str | None = None) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(header).encode()
    return head + rest, {HEADER: length if length is not None else str(len(head))}


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (framed({"inputs": [FOUR]}, VALUES, length="100000"), "is not a JSON length within the body"),
        (framed({"inputs": [FOUR]}, VALUES, length="-5"), "is not a JSON length within the body"),
        (framed({"inputs": [FOUR]}, VALUES, length="1_0"), "is not a JSON length within the body"),
        (framed({"inputs": [FOUR]}, VALUES, length="0"), "is not a JSON length within the body"),
        (framed({"inputs": [FOUR]}, VALUES, length="20"), "Invalid JSON"),
        (framed({"inputs": [FOUR]}, VALUES[:31]), "binary_data_size 32 exceeds the 31 bytes"),
        (framed({"inputs": [FOUR]}, VALUES + b"\x00"), "1 bytes of binary data follow the last binary input"),
        (framed({"inputs": [{**FOUR, "parameters": {"binary_data_size": -8}}]}, VALUES), "is not a byte count"),
        (framed({"inputs": [{**FOUR, "parameters": {"binary_data_size": 2**70}}]}, VALUES), "exceeds the 32 bytes"),
        (framed({"inputs": [{**FOUR, "parameters": {"binary_data_size": "32"}}]}, VALUES), "is not a byte count"),
        (framed({"inputs": [{**FOUR, "parameters": {"binary_data_size": True}}]}, VALUES), "is not a byte count"),
        (framed({"inputs": [{**FOUR, "datatype": "FP32"}]}, VALUES), "32 bytes are not 4 FP32 values of 4 bytes"),
        (framed({"inputs": [{**FOUR, "parameters": {"binary_data_size": 24}}]}, VALUES[:24]),
         "24 bytes are not 4 FP64 values"),
        (framed({"inputs": [{**FOUR, "data": [1.0, 2.0, 3.0, 4.0]}]}, VALUES), "both `data` and"),
        (framed({"inputs": [{k: v for k, v in FOUR.items() if k != "parameters"}]}, b""), "no `data` and no"),
        (framed({"inputs": [{**FOUR, "parameters": {"binary_data_size": 32}}],
                 "parameters": {"binary_data_output": "yes"}}, VALUES), "binary_data_output must be true or false"),
        ((json.dumps({"inputs": [FOUR]}).encode(), {}), "exceeds the 0 bytes of binary data"),
    ],
)
def test_hostile_binary_bodies_get_a_v2_error(iris: ServerProcess, request_: tuple[bytes, dict[str, str]],
                                             message: str) -> None:
    body, headers = request_
    response = httpx.post(iris.url + INFER, content=body, headers=headers)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]


def test_bytes_elements_with_bad_lengths_get_a_v2_error(
    greeter_dir: Path, start_server: Callable[..., ServerProcess]
) -> None:
    server = start_server(greeter_dir)
    name = {"name": "name", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 8}}
    body, headers = framed({"inputs": [name]}, struct.pack("<I", 100) + b"abcd")
    response = httpx.post(server.url + "/v2/models/greeter/infer", content=body, headers=headers)
    assert response.status_code == 400
    assert response.json()["error"] == "tensor 'name': BYTES element 0 claims 100 bytes; 4 remain"


def test_a_body_over_max_request_bytes_is_413_or_resource_exhausted(
    iris_dir: Path, start_server: Callable[..., ServerProcess]
) -> None:
    server = start_server(iris_dir, config={"maxRequestBytes": 1024}, grpc=True)
    body, headers = framed({"inputs": [{**FOUR, "shape": [40, 4], "parameters": {"binary_data_size": 1280}}]},
                           VALUES * 40)
    response = httpx.post(server.url + INFER, content=body, headers=headers)
    assert response.status_code == 413
    assert response.json()["type"] == "PayloadTooLarge"
    with pytest.raises(InferenceServerException) as too_large:
        grpc_client(server).infer("iris", [matrix_input(triton_grpc, rows(*[SETOSA] * 40), "FP64")])
    assert too_large.value.status() == "StatusCode.RESOURCE_EXHAUSTED"


# -- gRPC status codes, health, policies and metrics ---------------------------------------------


def test_grpc_errors_map_to_status_codes(iris: ServerProcess) -> None:
    client = grpc_client(iris)
    with pytest.raises(InferenceServerException) as unknown:
        client.infer("tulip", [matrix_input(triton_grpc, rows(SETOSA), "FP64")])
    assert unknown.value.status() == "StatusCode.NOT_FOUND"
    assert unknown.value.message() == "model 'tulip' is not served here; this server serves 'iris'"
    bad_shape = triton_grpc.InferInput("input-0", [1, 3], "FP64")
    bad_shape.set_data_from_numpy(np.array([[5.1, 3.5, 1.4]]))
    with pytest.raises(InferenceServerException, match=r"one tensor of shape \[N, 4\]") as invalid:
        client.infer("iris", [bad_shape])
    assert invalid.value.status() == "StatusCode.INVALID_ARGUMENT"
    with pytest.raises(InferenceServerException) as unimplemented:
        client.load_model("iris")
    assert unimplemented.value.status() == "StatusCode.UNIMPLEMENTED"


def health_status(address: str, service: str) -> int:
    with grpc.insecure_channel(address) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        return int(response.status)


def test_grpc_health_serves_only_while_the_model_is_ready(
    pricing_dir: Callable[..., Path], start_server: Callable[..., ServerProcess]
) -> None:
    server = start_server(pricing_dir(load_seconds=3.0), wait="listening", grpc=True)
    address = server.grpc_address
    for _ in range(100):  # gRPC listens from the app's startup on
        try:
            assert health_status(address, "") == health_pb2.HealthCheckResponse.NOT_SERVING
            break
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.UNAVAILABLE
            time.sleep(0.02)
    else:
        pytest.fail("gRPC health did not answer while the model loaded")
    assert health_status(address, "pricing") == health_pb2.HealthCheckResponse.NOT_SERVING
    with pytest.raises(InferenceServerException) as loading:
        grpc_client(server).infer("pricing", pricing_inputs(triton_grpc, 40, False, 100.0))
    assert loading.value.status() == "StatusCode.UNAVAILABLE"
    server.wait_started()
    assert health_status(address, "") == health_pb2.HealthCheckResponse.SERVING
    assert health_status(address, "pricing") == health_pb2.HealthCheckResponse.SERVING
    assert health_status(address, "inference.GRPCInferenceService") == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as unknown:
        health_status(address, "tulip")
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


def pricing_inputs(module: Any, age: int, smoker: bool, cost: float) -> list[Any]:
    tensors = []
    for name, datatype, value in (("age", "INT64", np.array([age])), ("smoker", "BOOL", np.array([smoker])),
                                  ("cost", "FP64", np.array([cost]))):
        tensor = module.InferInput(name, [1], datatype)
        tensor.set_data_from_numpy(value)
        tensors.append(tensor)
    return tensors


REJECT = {"name": "no-old-smokers", "when": "input.smoker && input.age > 60", "action": "reject",
          "message": "outside the signed training range"}
CAP = {"name": "cap", "when": "prediction.price > 100.0", "action": "clamp", "max": 100.0}


def test_policies_apply_to_both_protocols_and_a_reject_maps_to_422_and_failed_precondition(
    pricing_dir: Callable[..., Path], start_server: Callable[..., ServerProcess]
) -> None:
    server = start_server(pricing_dir(signed_policies=[REJECT]), config={"policies": [CAP]}, grpc=True)
    with pytest.raises(InferenceServerException) as rest:
        http_client(server).infer("pricing", pricing_inputs(triton_http, 70, True, 100.0))
    assert (rest.value.status(), rest.value.message()) == ("422", REJECT["message"])
    with pytest.raises(InferenceServerException) as rpc:
        grpc_client(server).infer("pricing", pricing_inputs(triton_grpc, 70, True, 100.0))
    assert (rpc.value.status(), rpc.value.message()) == ("StatusCode.FAILED_PRECONDITION", REJECT["message"])
    clamped = grpc_client(server).infer("pricing", pricing_inputs(triton_grpc, 20, False, 1000.0))
    assert clamped.as_numpy("price").tolist() == [100.0]
    applied = json.loads(clamped.get_response().parameters["policies"].string_param)
    assert [(p["policy"], p["original"], p["value"], p["index"]) for p in applied] == [("cap", 1460.0, 100.0, 0)]
    assert http_client(server).infer("pricing", pricing_inputs(triton_http, 20, False, 1000.0)).as_numpy(
        "price"
    ).tolist() == [100.0]
    metrics = httpx.get(server.url + "/metrics").text
    assert ('modeldeploy_policy_hits_total{action="reject",model="pricing",policy="no-old-smokers",'
            'source="signed"} 2.0') in metrics


def test_grpc_requests_are_counted_in_the_request_metrics(iris: ServerProcess) -> None:
    def count(endpoint: str, model: str, status: str) -> float:
        pattern = (rf'^modeldeploy_requests_total\{{endpoint="{re.escape(endpoint)}",model="{model}",'
                   rf'status="{status}"\}} (\S+)$')
        found = re.search(pattern, httpx.get(iris.url + "/metrics").text, re.M)
        return float(found.group(1)) if found else 0.0

    infer = "/inference.GRPCInferenceService/ModelInfer"
    before = count(infer, "iris", "OK"), count(infer, "_unknown", "NOT_FOUND")
    client = grpc_client(iris)
    client.infer("iris", [matrix_input(triton_grpc, rows(SETOSA), "FP64")])
    with pytest.raises(InferenceServerException):
        client.infer("tulip", [matrix_input(triton_grpc, rows(SETOSA), "FP64")])
    assert (count(infer, "iris", "OK"), count(infer, "_unknown", "NOT_FOUND")) == (before[0] + 1, before[1] + 1)


# -- KServe's own clients, from the benchmark's KServe venv ---------------------------------------


def test_kserve_clients_speak_to_the_server(iris: ServerProcess) -> None:
    from bench.bench_server import BASELINES, ensure_venv

    venv = ensure_venv("kserve", BASELINES["kserve"])  # KServe's pins conflict with ours: its own venv
    script = Path(__file__).with_name("kserve_client.py")
    result = subprocess.run(
        [str(venv / "bin" / "python"), str(script), iris.url, iris.grpc_address],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    both = ["setosa", "virginica"]
    assert json.loads(result.stdout.splitlines()[-1]) == {
        "rest_live": True, "rest_ready": True, "rest_json": both, "rest_binary": both,
        "grpc_live": True, "grpc_ready": True, "grpc": both,
    }


def test_sigterm_drains_grpc_with_uvicorn(iris_dir: Path, start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(iris_dir, config={"drainSeconds": 1.5}, grpc=True)
    client = grpc_client(server)
    server.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 1.0
    while health_status(server.grpc_address, "iris") != health_pb2.HealthCheckResponse.NOT_SERVING:
        assert time.monotonic() < deadline, "gRPC health kept SERVING after SIGTERM"
        time.sleep(0.02)
    assert not client.is_server_ready()
    served = client.infer("iris", [matrix_input(triton_grpc, rows(SETOSA), "FP64")])  # still served while draining
    assert served.as_numpy("species").tolist() == [b"setosa"]
    assert server.process.wait(timeout=30) == 0
    with pytest.raises(grpc.RpcError) as gone:
        health_status(server.grpc_address, "")
    assert gone.value.code() == grpc.StatusCode.UNAVAILABLE


def test_server_reflection_lists_and_describes_the_services(iris: ServerProcess) -> None:
    from google.protobuf import descriptor_pb2
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(iris.grpc_address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="inference.GRPCInferenceService"),
        ]
        listed, described = list(stub.ServerReflectionInfo(iter(requests), timeout=5))
    services = {s.name for s in listed.list_services_response.service}
    assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= services
    proto = descriptor_pb2.FileDescriptorProto.FromString(described.file_descriptor_response.file_descriptor_proto[0])
    assert "ModelInfer" in [m.name for m in proto.service[0].method]
