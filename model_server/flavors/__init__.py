"""Model flavors: how a verified parameters directory becomes a `Predictor`.

Each flavor module has `load(card, model_dir) -> Predictor`. A predictor maps a batch of
validated input rows to output rows; it is called from a worker thread, never on the
event loop. Loading happens only after `model.py` has re-checked the verified manifest.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Protocol

from model_server.modelcard import ModelCard

Row = dict[str, Any]


class Predictor(Protocol):
    """A loaded model: validated input rows in, output rows (by output name) out."""

    def predict(self, rows: list[Row]) -> list[Row]: ...


def load(card: ModelCard, model_dir: Path) -> Predictor:
    """Load the model of `card` from `model_dir` with its flavor's loader."""
    flavor = importlib.import_module(f"model_server.flavors.{card.flavor}_flavor")
    predictor: Predictor = flavor.load(card, model_dir)
    return predictor


def columns_to_rows(card: ModelCard, columns: list[Any]) -> list[Row]:
    """Output rows from per-output columns (one list per declared output, in order)."""
    names = [f.name for f in card.outputs]
    return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]
