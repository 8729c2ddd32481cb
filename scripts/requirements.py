"""Print the requirements of one dependency set of pyproject.toml, one per line.

    python scripts/requirements.py server      # the base set plus `.[server]` and what it includes

The Dockerfile installs an image's set with it before copying the sources (so a source
change does not reinstall the dependencies), and a test checks the sets' contents.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

SELF = re.compile(r"^(?P<name>[A-Za-z0-9_.-]+)\[(?P<extras>[^\]]+)\]$")


def requirements(pyproject: dict, extra: str) -> list[str]:
    """The base dependencies plus those of `extra`, self-references expanded, in first-seen order."""
    project = pyproject["project"]
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    if extra not in optional:
        raise SystemExit(f"no dependency set {extra!r}; known: {', '.join(sorted(optional))}")
    found: dict[str, None] = dict.fromkeys(project.get("dependencies", []))
    pending, seen = [extra], set()
    while pending:
        name = pending.pop(0)
        if name in seen:
            continue
        seen.add(name)
        for requirement in optional[name]:
            own = SELF.match(requirement)
            if own and own["name"] == project["name"]:
                pending.extend(part.strip() for part in own["extras"].split(","))
            else:
                found.setdefault(requirement)
    return list(found)


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit("usage: requirements.py EXTRA")
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    print("\n".join(requirements(pyproject, argv[0])))


if __name__ == "__main__":
    main(sys.argv[1:])
