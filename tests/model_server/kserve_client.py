"""Run by the KServe venv's python (not by pytest): KServe's own v2 clients against our server.

Usage: python kserve_client.py REST_URL GRPC_ADDRESS; prints one JSON object of what each client saw.
"""

import asyncio
import json
import sys

import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig

ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [7.7, 3.0, 6.1, 2.3]])


def request(binary: bool) -> InferRequest:
    tensor = InferInput("input-0", list(ROWS.shape), "FP64")
    tensor.set_data_from_numpy(ROWS, binary_data=binary)
    return InferRequest(model_name="iris", infer_inputs=[tensor])


def species(response) -> list:
    return [v.decode() if isinstance(v, bytes) else v for v in response.outputs[0].as_numpy().tolist()]


async def main(rest_url: str, grpc_address: str) -> dict:
    rest = InferenceRESTClient(RESTConfig(protocol="v2", retries=1, timeout=10))
    seen = {
        "rest_live": await rest.is_server_live(rest_url),
        "rest_ready": await rest.is_model_ready(rest_url, "iris"),
        "rest_json": species(await rest.infer(rest_url, request(binary=False), model_name="iris")),
        "rest_binary": species(await rest.infer(rest_url, request(binary=True), model_name="iris")),
    }
    await rest.close()
    client = InferenceGRPCClient(grpc_address, timeout=10, retries=2)
    seen["grpc_live"] = await client.is_server_live()
    seen["grpc_ready"] = await client.is_model_ready("iris")
    seen["grpc"] = species(await client.infer(request(binary=False)))
    await client.close()
    return seen


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2]))))
