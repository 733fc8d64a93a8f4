"""Check that every workspace package carries the same version, that each ``__version__`` agrees,
and that every dependency on a sibling package admits that version.

Run: uv run python tools/check_versions.py   (exit 1 with one line per problem)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import tomllib
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def problems(root: Path = ROOT) -> list[str]:
    found: list[str] = []
    projects = {}
    for pyproject in sorted((root / "packages").glob("*/pyproject.toml")):
        project = tomllib.loads(pyproject.read_text())["project"]
        projects[project["name"]] = (pyproject.parent, project)
    versions = {name: project["version"] for name, (_, project) in projects.items()}
    if len(set(versions.values())) > 1:
        found.append(f"package versions differ: {versions}")
    for name, (folder, project) in projects.items():
        init = folder / "src" / name.replace("-", "_") / "__init__.py"
        match = (
            re.search(r'^__version__ = "([^"]+)"', init.read_text(), re.M)
            if init.exists()
            else None
        )
        if not match:
            found.append(f"{init.relative_to(root)}: no __version__")
        elif match.group(1) != project["version"]:
            found.append(f"{name}: __version__ {match.group(1)} != pyproject {project['version']}")
        for dep in project.get("dependencies", []):
            req = Requirement(dep)
            if req.name in versions and not req.specifier.contains(versions[req.name]):
                found.append(f"{name}: '{dep}' excludes {req.name} {versions[req.name]}")
    return found


def main() -> int:
    found = problems()
    for line in found:
        print(line, file=sys.stderr)
    if not found:
        print("all package versions agree")
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
