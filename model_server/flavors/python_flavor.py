"""The `python` flavor: a user class named by `entrypoint: module:Class` in model.yaml.

The entrypoint module, and every module the model directory provides, is imported from
the verified bytes of a file of the signed manifest (`module.py` or `module/__init__.py`)
by an import hook of our own: never from a path outside the tree, and no `__pycache__`
is written into the verified directory. The class is built with no arguments, then
`load(model_dir)` is called once; `predict(inputs)` takes a list of input rows and
returns one output row per input. Files the class opens itself in `load` were verified
with the whole tree at load time, but are read by user code, not by us.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType
from typing import Any

from model_server.flavors import Row
from model_server.modelcard import ModelCard
from modeldeploy.contract.reasons import FILE_NOT_SIGNED
from modeldeploy.params.errors import VerificationError
from modeldeploy.params.signing import VerifiedTree


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


def module_files(names: list[str]) -> dict[str, str]:
    """Dotted module name -> signed file, for the `.py` files of a manifest."""
    modules: dict[str, str] = {}
    for name in names:
        if not name.endswith(".py"):
            continue
        parts = name[: -len(".py")].split("/")
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts and all(part.isidentifier() for part in parts):
            modules[".".join(parts)] = name
    return modules


class VerifiedImporter(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the model directory's modules and executes them from verified bytes."""

    def __init__(self, tree: VerifiedTree) -> None:
        self.tree = tree
        self.modules = module_files(tree.names)

    def find_spec(self, fullname: str, path: Any = None, target: ModuleType | None = None) -> Any:
        name = self.modules.get(fullname)
        if name is None:
            return None
        package = name.endswith("__init__.py")
        spec = importlib.machinery.ModuleSpec(fullname, self, origin=str(self.tree.root / name), is_package=package)
        spec.has_location = True
        if package:
            spec.submodule_search_locations = []
        return spec

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        name = self.modules[module.__name__]
        code = compile(self.tree.read(name), str(self.tree.root / name), "exec", dont_inherit=True)
        exec(code, module.__dict__)


def load(card: ModelCard, tree: VerifiedTree) -> PythonPredictor:
    assert card.entrypoint is not None
    module_name, class_name = card.entrypoint.split(":")
    importer = VerifiedImporter(tree)
    if module_name not in importer.modules:
        raise VerificationError(
            FILE_NOT_SIGNED,
            f"entrypoint module {module_name!r} is not a file of the signed manifest "
            f"({module_name.replace('.', '/')}.py)",
            [f"{module_name.replace('.', '/')}.py"],
        )
    for name in importer.modules:  # modules of an earlier load are imported afresh
        loaded = sys.modules.get(name)
        if loaded is None:
            continue
        if not isinstance(getattr(loaded.__spec__, "loader", None), VerifiedImporter):
            raise VerificationError(
                FILE_NOT_SIGNED, f"module {name!r} of the model is already imported from outside the tree", []
            )
        del sys.modules[name]
    sys.meta_path.insert(0, importer)
    cls = getattr(importlib.import_module(module_name), class_name)
    instance = cls()
    instance.load(tree.root)
    return PythonPredictor(card, instance)
