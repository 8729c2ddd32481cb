"""The dependency sets as distributions: what `scripts/requirements.py` prints and what that pulls in.

Shared by the fast tests (resolved against this venv's installed metadata) and the image tests
(resolved against the METADATA files inside a built image).
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import ModuleType

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
FIRST_PARTY = ("modeldeploy", "model_operator", "model_server")
# What a ModelDeployment's Pods run (`serve`, `fetch`) and what the operator's does; both compile policies.
SERVING_LIBRARIES = {"fastapi", "starlette", "uvicorn", "numpy", "onnxruntime", "scikit-learn", "scipy", "joblib"}
GUARDRAILS_LIBRARIES = {"cel-expr-python"}
KUBERNETES_LIBRARIES = {"kopf", "kubernetes"}
# The harness's modules (devcluster/) and the suite's: in neither the wheel nor an image.
HARNESS_FILES = {"demo.py", "story.py", "cluster_demo.py", "localrun.py", "pytest_plugin.py", "conftest.py"}

Requires = Callable[[str], list[str] | None]


def requirements_script() -> ModuleType:
    """`scripts/requirements.py`, imported by path (it is not a package)."""
    spec = importlib.util.spec_from_file_location("requirements_script", ROOT / "scripts" / "requirements.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dependency_set(extra: str, pyproject: Mapping[str, object] | None = None) -> list[str]:
    """The requirement lines `requirements.py EXTRA` prints for the checkout's (or the given) pyproject."""
    import tomllib

    data = pyproject if pyproject is not None else tomllib.loads((ROOT / "pyproject.toml").read_text())
    lines: list[str] = requirements_script().requirements(data, extra)
    return lines


def names(requirements: Iterable[str]) -> set[str]:
    """The canonical distribution names of requirement strings."""
    return {canonicalize_name(Requirement(line).name) for line in requirements}


def closure(roots: Iterable[str], requires: Requires, environment: Mapping[str, str] | None = None) -> set[str]:
    """Canonical names of ``roots`` and of everything they require, markers evaluated, extras followed.

    Args:
        roots: requirement strings (no ``extra`` markers: those are what ``requirements.py`` resolved).
        requires: a distribution's ``Requires-Dist`` lines, or None when it is not installed (then it
            is still named, but not followed).
        environment: marker variables overriding this interpreter's (e.g. the image's python_version).
    """
    env = {**default_environment(), **(environment or {})}
    done: dict[str, set[str]] = {}
    pending: list[tuple[str, set[str]]] = []

    def add(line: str, extras: set[str]) -> None:
        requirement = Requirement(line)
        if requirement.marker is None or any(requirement.marker.evaluate({**env, "extra": e}) for e in extras):
            pending.append((canonicalize_name(requirement.name), {canonicalize_name(x) for x in requirement.extras}))

    for line in roots:
        add(line, {""})
    while pending:
        name, extras = pending.pop()
        first = name not in done
        new = extras - done.setdefault(name, set())
        if not first and not new:
            continue
        done[name] |= new
        for line in requires(name) or []:
            add(line, new | ({""} if first else set()))
    return set(done)


def _module_file(module: str) -> Path | None:
    """The source file of a first-party module or package, if it exists in the checkout."""
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported(path: Path, module: str) -> set[str]:
    """Every module ``path`` (module ``module``) imports anywhere (also inside functions), absolute."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            prefix = ".".join(parts[: len(parts) - node.level + 1]) if node.level else ""
            base = ".".join(p for p in (prefix, node.module or "") if p)
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return found


def third_party_imports(start: Iterable[str]) -> dict[str, set[str]]:
    """{top-level third-party module: first-party modules importing it}, following first-party imports.

    Args:
        start: first-party modules or packages (a package means every module in it).
    """
    todo: list[str] = []
    for module in start:
        path = _module_file(module)
        assert path is not None, f"no module {module} in the checkout"
        if path.name == "__init__.py":
            modules = (".".join(p.relative_to(ROOT).with_suffix("").parts) for p in path.parent.rglob("*.py"))
            todo += [m.removesuffix(".__init__") for m in modules]
        else:
            todo.append(module)
    seen: set[str] = set()
    found: dict[str, set[str]] = {}
    while todo:
        module = todo.pop()
        path = _module_file(module)
        if module in seen or path is None:
            continue
        seen.add(module)
        for name in _imported(path, module):
            top = name.partition(".")[0]
            if top in FIRST_PARTY:
                todo.append(name)
            elif top not in sys.stdlib_module_names and top != "__future__":
                found.setdefault(top, set()).add(module)
    return found
