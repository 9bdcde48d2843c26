"""Every third-party module the product imports is declared, and the Lambda artifact's requirements come from one
place: pyproject.toml.

- Every distribution the function (functions/rotator) or the CLI (cli/) imports directly is in [project]
  dependencies: a `pip install .` that works only through some other package's dependency breaks when that
  package changes its own.
- functions/rotator/requirements.in is generated from pyproject.toml: the dependencies the function imports, with
  the `tracing` extra applied (the artifact bundles the X-Ray SDK so TraceCalls can be switched on without a
  rebuild; the CLI does not need it). `--write` regenerates it; `make lock` then re-locks requirements.txt.
- requirements.txt (the hashed lock) pins every distribution requirements.in names.

Usage: python tools/check_dependencies.py [--write]
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FUNCTION = ROOT / "functions" / "rotator"
REQUIREMENTS_IN = FUNCTION / "requirements.in"
LOCK = FUNCTION / "requirements.txt"
OWN_MODULES = {"keeper_iam_rotator", "keeper_iam_rotator_cli", "app"}
HEADER = (
    "# Generated from pyproject.toml by tools/check_dependencies.py --write: do not edit. The Lambda artifact's\n"
    "# direct dependencies (what functions/rotator imports, X-Ray SDK included); `make lock` turns them into\n"
    "# requirements.txt (uv pip compile --generate-hashes for python3.13 on manylinux aarch64).\n"
)


def name_of(requirement: str) -> str:
    return re.split(r"[\[<>=!~ ;]", requirement, maxsplit=1)[0].strip().lower().replace("_", "-")


def imported_distributions(folder: Path) -> set[str]:
    """Distributions of the third-party top-level modules imported anywhere under `folder`."""
    modules: set[str] = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    owners = packages_distributions()
    third_party = {m for m in modules if m in owners and m not in OWN_MODULES and m not in sys.stdlib_module_names}
    return {name_of(owners[m][0]) for m in third_party}


def expected_requirements_in(project: dict[str, object]) -> str:
    declared = {name_of(r): r for r in project["dependencies"]}  # type: ignore[attr-defined]
    tracing = {name_of(r): r for r in project["optional-dependencies"]["tracing"]}  # type: ignore[index]
    wanted = sorted(imported_distributions(FUNCTION) & declared.keys())
    return HEADER + "".join(f"{tracing.get(name, declared[name])}\n" for name in wanted)


def problems(project: dict[str, object]) -> list[str]:
    declared = {name_of(r) for r in project["dependencies"]}  # type: ignore[attr-defined]
    found = []
    for folder in (FUNCTION, ROOT / "cli"):
        missing = sorted(imported_distributions(folder) - declared)
        found += [f"{folder.relative_to(ROOT)} imports {name}, which pyproject.toml does not list" for name in missing]
    expected = expected_requirements_in(project)
    if REQUIREMENTS_IN.read_text() != expected:
        found.append(f"{REQUIREMENTS_IN.relative_to(ROOT)} is stale: run tools/check_dependencies.py --write")
    locked = {name_of(line) for line in LOCK.read_text().splitlines() if line and line[0].isalpha()}
    for line in expected.splitlines():
        if not line.startswith("#") and name_of(line) not in locked:
            found.append(f"{LOCK.relative_to(ROOT)} does not pin {name_of(line)}: run make lock")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="regenerate requirements.in from pyproject.toml")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    if parser.parse_args().write:  # `make lock` re-locks next
        REQUIREMENTS_IN.write_text(expected_requirements_in(project))
        return 0
    found = problems(project)
    print("\n".join(found) or "dependencies: every import is declared; requirements.in matches pyproject.toml")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
