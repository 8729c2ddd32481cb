"""The `sklearn` flavor: a joblib/pickle estimator with `predict(X)`.

Unpickling runs code, so the estimator is unpickled from the verified bytes of the
artifact (`VerifiedTree.read`), never from a path.
"""

from __future__ import annotations

import io
from typing import Any

import joblib
import numpy as np

from model_server.flavors import Row, columns_to_rows
from model_server.modelcard import ModelCard
from modeldeploy.params.signing import VerifiedTree


class SklearnPredictor:
    """Rows -> a 2-D feature array in the card's input order -> `estimator.predict`."""

    def __init__(self, card: ModelCard, estimator: Any) -> None:
        self.card = card
        self.estimator = estimator
        self.features = [f.name for f in card.inputs]
        self.dtype = object if any(f.type == "string" for f in card.inputs) else np.float64

    def predict(self, rows: list[Row]) -> list[Row]:
        features = self.features
        x = np.array([[row[name] for name in features] for row in rows], dtype=self.dtype)
        y = np.asarray(self.estimator.predict(x))
        columns = [y.tolist()] if y.ndim == 1 else y.T.tolist()
        return columns_to_rows(self.card, columns)


def load(card: ModelCard, tree: VerifiedTree) -> SklearnPredictor:
    assert card.artifact is not None
    estimator = joblib.load(io.BytesIO(tree.read(card.artifact)))
    if not hasattr(estimator, "predict"):
        raise TypeError(f"{card.artifact} holds a {type(estimator).__name__}, which has no predict()")
    return SklearnPredictor(card, estimator)
