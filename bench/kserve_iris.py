"""KServe's Python model server around the iris joblib, for bench_server (runs in its own venv).

Usage: python kserve_iris.py MODEL_DIR HTTP_PORT GRPC_PORT
Serves the v1 protocol (`POST /v1/models/iris:predict` with `{"instances": [[...]]}`) and v2
(REST JSON, REST with the binary data extension, gRPC): a v2 request's first input is the rows,
its one output `predict` the species (BYTES).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import joblib
import kserve
from kserve import InferOutput, InferRequest, InferResponse


class IrisModel(kserve.Model):
    def __init__(self, model_dir: Path) -> None:
        super().__init__("iris")
        self.model_dir = model_dir
        self.estimator: Any = None
        self.load()

    def load(self) -> bool:
        self.estimator = joblib.load(self.model_dir / "model.joblib")
        self.ready = True
        return self.ready

    def predict(
        self, payload: dict[str, Any] | InferRequest, headers: dict[str, str] | None = None
    ) -> dict[str, Any] | InferResponse:
        if not isinstance(payload, InferRequest):
            return {"predictions": self.estimator.predict(payload["instances"]).tolist()}
        species = self.estimator.predict(payload.inputs[0].as_numpy()).tolist()
        output = InferOutput("predict", [len(species)], "BYTES", species)
        return InferResponse(payload.id or "", self.name, [output], from_grpc=payload.from_grpc)


if __name__ == "__main__":
    model_dir, http_port, grpc_port = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    kserve.ModelServer(http_port=http_port, grpc_port=grpc_port, workers=1).start([IrisModel(model_dir)])
