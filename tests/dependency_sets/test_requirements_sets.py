"""The dependency sets the images install (`scripts/requirements.py`): what is in each, and that it suffices.

Resolved against this venv (`.[dev]` installs every set), so what a set pulls in transitively counts too.
"""

from __future__ import annotations

import importlib.metadata as metadata
import subprocess
import sys

import pytest
from packaging.utils import canonicalize_name

from modeldeploy.cli import COMMANDS
from tests.dependency_sets.resolve import (
    GUARDRAILS_LIBRARIES,
    KUBERNETES_LIBRARIES,
    ROOT,
    SERVING_LIBRARIES,
    closure,
    dependency_set,
    names,
    third_party_imports,
)

# What an image runs: the operator `modeldeploy operator`; the server `serve` and (its init container) `fetch`.
IMAGE_CODE = {
    "operator": ["model_operator", "modeldeploy.cli"],
    "server": ["model_server", "modeldeploy.params", "modeldeploy.cli"],
}


def _installed_requires(name: str) -> list[str] | None:
    try:
        return metadata.requires(name) or []
    except metadata.PackageNotFoundError:
        return None


def _pulled_in(extra: str) -> set[str]:
    return closure(dependency_set(extra), _installed_requires)


def test_every_command_loads_with_every_set_installed() -> None:
    """`.[dev]` has every set: `modeldeploy --help` imports and lists every command (an undeclared import fails it)."""
    proc = subprocess.run([sys.executable, "-c", "from modeldeploy.cli import main; main()", "--help"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    listed = {line.split()[0] for line in proc.stdout.partition("Commands:")[2].splitlines() if line.strip()}
    assert listed == set(COMMANDS)


def test_script_runs_on_a_bare_python_as_in_the_image_build() -> None:
    """The Dockerfile's requirements stage runs it on the base image's python: stdlib only (-S: no site-packages)."""
    for extra in ("operator", "server"):
        proc = subprocess.run([sys.executable, "-I", "-S", "scripts/requirements.py", extra],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines() == dependency_set(extra)


def test_script_refuses_an_unknown_set() -> None:
    proc = subprocess.run([sys.executable, "scripts/requirements.py", "servr"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "no dependency set 'servr'" in proc.stderr and "server" in proc.stderr


def test_self_references_expand_to_each_requirement_once_after_the_base() -> None:
    pyproject = {"project": {"name": "p", "dependencies": ["a"], "optional-dependencies": {
        "x": ["b", "c"], "y": ["p[x]", "a", "d"], "z": ["p[y,x]", "e"], "q": ["other[x]"]}}}
    lines = dependency_set("z", pyproject)
    assert lines[0] == "a" and sorted(lines) == ["a", "b", "c", "d", "e"]
    assert dependency_set("q", pyproject) == ["a", "other[x]"]


def test_server_set_includes_fetch() -> None:
    assert set(dependency_set("fetch")) <= set(dependency_set("server"))
    assert {"model-signing", "fastapi", "scikit-learn", "onnxruntime", "cel-expr-python"} <= names(dependency_set("server"))


@pytest.mark.parametrize("extra", ["server", "operator"])
def test_server_and_operator_compile_policies_with_the_guardrails_set(extra: str) -> None:
    assert set(dependency_set("guardrails")) <= set(dependency_set(extra))
    assert names(dependency_set("guardrails")) - {"click", "pydantic", "pyyaml"} == GUARDRAILS_LIBRARIES


def test_server_set_pulls_in_no_kubernetes_client() -> None:
    assert not names(dependency_set("server")) & KUBERNETES_LIBRARIES
    assert not _pulled_in("server") & KUBERNETES_LIBRARIES


def test_operator_set_verifies_signatures_but_pulls_in_no_serving_library() -> None:
    direct = names(dependency_set("operator"))
    assert {"click", "pydantic", "pyyaml", "kopf", "kubernetes", *GUARDRAILS_LIBRARIES} <= direct
    # admission: fetch and verify the signature, compile the policies; and its metrics
    assert "prometheus-client" in direct
    assert direct - {"kopf", "kubernetes", "prometheus-client"} == names(dependency_set("fetch")) | set(GUARDRAILS_LIBRARIES)
    pulled = _pulled_in("operator")
    assert "model-signing" in pulled
    assert not pulled & (SERVING_LIBRARIES | {"httptools", "uvloop"}), pulled


@pytest.mark.parametrize("extra", sorted(IMAGE_CODE))
def test_set_provides_every_import_of_its_image_code(extra: str) -> None:
    """Every third-party module the image's code imports (first-party imports followed) comes from its set."""
    pulled = _pulled_in(extra)
    providers = metadata.packages_distributions()
    imports = third_party_imports(IMAGE_CODE[extra])
    assert {"click", "pydantic"} <= set(imports)
    missing = {
        top: sorted(importers) for top, importers in imports.items()
        if not {canonicalize_name(d) for d in providers.get(top, [])} & pulled
    }
    assert not missing, f"imported but not in .[{extra}]: {missing}"

