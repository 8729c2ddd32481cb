"""Model flavors: how a verified parameters directory becomes a `Predictor`.

Each flavor module has `load(card, tree) -> Predictor`, where `tree` is the
`signing.VerifiedTree` of the parameters: a flavor reads what it loads only through
`tree.read(name)`, which returns a signed file's bytes after hashing them (never a path
outside the signed manifest, never through a symlink). A predictor maps a batch of
validated input rows to output rows; it is called from a worker thread, never on the
event loop.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol

from model_server.modelcard import ModelCard
from modeldeploy.params.signing import VerifiedTree

Row = dict[str, Any]


class Predictor(Protocol):
    """A loaded model: validated input rows in, output rows (by output name) out."""

    def predict(self, rows: list[Row]) -> list[Row]: ...


def load(card: ModelCard, tree: VerifiedTree) -> Predictor:
    """Load the model of `card` from the verified `tree` with its flavor's loader."""
    flavor = importlib.import_module(f"model_server.flavors.{card.flavor}_flavor")
    predictor: Predictor = flavor.load(card, tree)
    return predictor


def columns_to_rows(card: ModelCard, columns: list[Any]) -> list[Row]:
    """Output rows from per-output columns (one list per declared output, in order)."""
    names = [f.name for f in card.outputs]
    return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]
