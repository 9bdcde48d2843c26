"""Fails when a product function (functions/, cli/) is longer than MAX_LINES lines, docstring included: a function
that long does several things, and the protocol's readability rests on one step per function. (Complexity is
ruff's C901, max 10.) Usage: python tools/check_code_shape.py [--max-lines N]"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("functions/rotator", "cli")
MAX_LINES = 50


def functions(path: Path) -> Iterator[tuple[str, int, int]]:
    """(qualified name, first line, line count) of every function in the file, decorators excluded."""
    tree = ast.parse(path.read_text(), filename=str(path))
    stack: list[tuple[ast.AST, str]] = [(tree, "")]
    while stack:
        node, prefix = stack.pop()
        for child in ast.iter_child_nodes(node):
            name = prefix
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = f"{prefix}{child.name}."
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                yield name[:-1], child.lineno, (child.end_lineno or child.lineno) - child.lineno + 1
            stack.append((child, name))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-lines", type=int, default=MAX_LINES)
    limit = parser.parse_args().max_lines
    too_long = [
        f"{path.relative_to(ROOT)}:{line}: {name} has {count} lines (at most {limit})"
        for folder in PRODUCT
        for path in sorted((ROOT / folder).rglob("*.py"))
        for name, line, count in functions(path)
        if count > limit
    ]
    print("\n".join(too_long) or f"every product function has at most {limit} lines")
    return 1 if too_long else 0


if __name__ == "__main__":
    sys.exit(main())
