"""The README's layout table matches the tree: every path it lists exists, every package is listed."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[1]


def listed_paths() -> set[str]:
    section = ROOT.joinpath("README.md").read_text().split("## Layout", 1)[1].split("\n## ", 1)[0]
    first_cells = re.findall(r"^\| ([^|]+) \|", section, flags=re.M)
    return {path.rstrip("/") for cell in first_cells for path in re.findall(r"`([^`]+)`", cell)}


def test_every_listed_path_exists() -> None:
    missing = sorted(path for path in listed_paths() if not (ROOT / path).exists())
    assert not missing, f"the README lists paths that do not exist: {missing}"


def test_every_package_and_top_level_directory_is_listed() -> None:
    packages = {
        str(init.parent.relative_to(ROOT))
        for top in ("modeldeploy", "model_operator", "model_server", "devcluster")
        for init in (ROOT / top).glob("*/__init__.py")
    } | {"modeldeploy/cli.py", "model_operator", "model_server", "devcluster"}
    top_level = {p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))}
    top_level -= {"build", "modeldeploy", "node_modules"} | {p for p in top_level if p.endswith(".egg-info")}
    listed = listed_paths()
    covered = {path for path in packages if path in listed or any(path.startswith(f"{p}/") for p in listed)}
    subpackages_of_listed = {"model_server/flavors", "model_server/routes", "devcluster/node"}
    assert packages - covered - subpackages_of_listed == set()
    unlisted = {d for d in top_level if not any(path == d or path.startswith(f"{d}/") for path in listed)}
    assert not unlisted, f"top-level directories missing from the README: {unlisted}"
