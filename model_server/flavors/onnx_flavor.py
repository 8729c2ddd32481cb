"""The `onnx` flavor: an ONNX graph run by onnxruntime.

The graph takes one 2-D tensor [batch, features] (the card's inputs, in order), as
skl2onnx and most converters produce. Outputs map by name when the graph's output names
match the card's, otherwise the graph's first outputs fill the card's outputs in order.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from model_server.flavors import Row, columns_to_rows
from model_server.modelcard import ModelCard
from modeldeploy.params.signing import VerifiedTree

_NUMPY_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(string)": object,
}


class OnnxPredictor:
    """Rows -> one input tensor -> the session's outputs -> output rows."""

    def __init__(self, card: ModelCard, session: ort.InferenceSession) -> None:
        self.card = card
        self.session = session
        graph_input = session.get_inputs()[0]
        self.input_name = graph_input.name
        self.dtype = _NUMPY_TYPES.get(graph_input.type, np.float32)
        self.features = [f.name for f in card.inputs]
        graph_outputs = [o.name for o in session.get_outputs()]
        wanted = [f.name for f in card.outputs]
        if set(wanted) <= set(graph_outputs):
            self.output_names = wanted
        elif len(graph_outputs) >= len(wanted):
            self.output_names = graph_outputs[: len(wanted)]
        else:
            raise ValueError(f"graph has outputs {graph_outputs}, the card declares {wanted}")

    def predict(self, rows: list[Row]) -> list[Row]:
        features = self.features
        x = np.array([[row[name] for name in features] for row in rows], dtype=self.dtype)
        results = self.session.run(self.output_names, {self.input_name: x})
        return columns_to_rows(self.card, [np.asarray(r).reshape(len(rows), -1)[:, 0].tolist() for r in results])


def load(card: ModelCard, tree: VerifiedTree) -> OnnxPredictor:
    """The graph from the artifact's verified bytes (a graph with external data files does not load)."""
    assert card.artifact is not None
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(tree.read(card.artifact), options, providers=["CPUExecutionProvider"])
    if len(session.get_inputs()) != 1:
        raise ValueError(f"{card.artifact}: expected one input tensor, found {len(session.get_inputs())}")
    return OnnxPredictor(card, session)
