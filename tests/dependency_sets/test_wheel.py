"""The wheel, built for real from a copy of the checkout: the product packages only, the dependency sets as extras."""

from __future__ import annotations

import email.parser
import shutil
import subprocess
import sys
import zipfile
from email.message import Message
from pathlib import Path, PurePosixPath

import pytest
from packaging.requirements import Requirement

from tests.dependency_sets.resolve import FIRST_PARTY, HARNESS_FILES, ROOT, dependency_set

pytestmark = pytest.mark.timeout(300)

EXTRAS = {"fetch", "guardrails", "server", "operator", "loadtest", "dev"}
# Not the project's: state, caches and earlier builds a checkout may hold.
_NOT_COPIED = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis", ".schemathesis",
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel `python -m build` makes of the checkout as it is (untracked files too; tests/ and devcluster/ kept)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "src"
    shutil.copytree(ROOT, source, ignore=_NOT_COPIED, symlinks=True)
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp / "dist"), str(source)],
        capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (built,) = (tmp / "dist").glob("*.whl")
    return built


def _names(wheel: Path) -> list[PurePosixPath]:
    with zipfile.ZipFile(wheel) as archive:
        return [PurePosixPath(name) for name in archive.namelist()]


def _metadata(wheel: Path) -> Message:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return email.parser.Parser().parsestr(archive.read(name).decode())


def test_wheel_holds_only_the_product_packages(wheel: Path) -> None:
    tops = {path.parts[0] for path in _names(wheel)}
    assert tops == {*FIRST_PARTY, "modeldeploy-0.1.0.dist-info"}
    with zipfile.ZipFile(wheel) as archive:
        assert archive.read("modeldeploy-0.1.0.dist-info/top_level.txt").decode().split() == sorted(FIRST_PARTY)


def test_wheel_holds_no_harness_and_no_tests(wheel: Path) -> None:
    paths = _names(wheel)
    assert not [p for p in paths if "devcluster" in p.parts or "tests" in p.parts or "testdata" in p.parts]
    assert not [p for p in paths if p.name in HARNESS_FILES or p.name.startswith("test_")]


def test_wheel_holds_every_module_of_the_product_packages(wheel: Path) -> None:
    """Nothing of the products is left out (a subpackage without __init__.py would be), package data included."""
    in_tree = {
        PurePosixPath(p.relative_to(ROOT).as_posix())
        for package in FIRST_PARTY for p in (ROOT / package).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert in_tree <= set(_names(wheel)), sorted(in_tree - set(_names(wheel)))
    assert {PurePosixPath(f"{package}/py.typed") for package in FIRST_PARTY} <= in_tree


def test_metadata_names_the_dependency_sets_as_extras(wheel: Path) -> None:
    assert set(_metadata(wheel).get_all("Provides-Extra") or []) == EXTRAS


@pytest.mark.parametrize("extra", sorted(EXTRAS))
def test_requirements_script_resolves_a_set_as_pip_reads_the_metadata(wheel: Path, extra: str) -> None:
    """`requirements.py EXTRA` lists what `pip install modeldeploy[EXTRA]` would (self-references expanded)."""
    lines = _metadata(wheel).get_all("Requires-Dist") or []
    by_extra: dict[str, list[Requirement]] = {}
    for line in lines:
        requirement = Requirement(line)
        marker = str(requirement.marker) if requirement.marker else ""
        key = marker.removeprefix('extra == "').removesuffix('"') if marker.startswith("extra ==") else ""
        requirement.marker = None
        by_extra.setdefault(key, []).append(requirement)
    wanted: set[str] = set()
    pending, seen = ["", extra], set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        for requirement in by_extra[name]:
            if requirement.name == "modeldeploy":
                pending += sorted(requirement.extras)
            else:
                wanted.add(str(requirement))
    assert {str(Requirement(line)) for line in dependency_set(extra)} == wanted
