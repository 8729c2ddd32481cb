"""The `python` flavor: a user class named by `entrypoint: module:Class` in model.yaml.

The module is imported from the model directory (whose files the verified manifest
covers). The class is built with no arguments, then `load(model_dir)` is called once;
`predict(inputs)` takes a list of input rows and returns one output row per input.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

from model_server.flavors import Row
from model_server.modelcard import ModelCard


class PythonPredictor:
    """Checks that the user's predict returns one row per input with the declared outputs."""

    def __init__(self, card: ModelCard, instance: Any) -> None:
        self.instance = instance
        self.outputs = {f.name for f in card.outputs}

    def predict(self, rows: list[Row]) -> list[Row]:
        results = list(self.instance.predict(rows))
        if len(results) != len(rows):
            raise ValueError(f"predict returned {len(results)} rows for {len(rows)} inputs")
        for result in results:
            if not isinstance(result, dict) or set(result) != self.outputs:
                raise ValueError(f"predict returned {result!r}, expected a dict with keys {sorted(self.outputs)}")
        return results


def load(card: ModelCard, model_dir: Path) -> PythonPredictor:
    assert card.entrypoint is not None
    module_name, class_name = card.entrypoint.split(":")
    root = str(model_dir.resolve())
    if root not in sys.path:
        sys.path.insert(0, root)
    cls = getattr(importlib.import_module(module_name), class_name)
    instance = cls()
    instance.load(model_dir)
    return PythonPredictor(card, instance)
