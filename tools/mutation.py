"""`make mutation`: mutation testing of the rotator's core (rotation.py, binding.py, due.py, journal.py).

Each mutant is one small change to one module (a comparison flipped, `and`/`or` swapped, a `not` dropped, a
condition negated, a constant changed, a call or a `raise` removed); the tests that execute its line must fail.
A mutant no test notices ("survived") marks a behaviour nothing checks.

How it stays fast enough for 2 shared cores: the in-process suite (no e2e, no fuzzing) runs once under
sys.monitoring to learn which test executes which line of the four modules and how long each takes; then each
mutant runs only the tests that execute its line (at most --max-tests of them: one of each test file first, then
the ones that killed the most mutants so far, then the fastest; a survivor runs again against three times as many),
in a scratch copy of the repository, with `-x`. Logging calls and docstrings are
not mutated (nothing can observe them but the log). Results: a table per module and every survivor, on stdout and
in --json.

    PYTHONPATH=tools python tools/mutation.py [--modules rotation,due] [--workers 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rotator_sandbox.paths import ROOT

PACKAGE = Path("functions/rotator/keeper_iam_rotator")
MODULES = ("rotation", "binding", "due", "journal")
TEST_SELECTION = ["tests", "-m", "not e2e", "--ignore=tests/test_hostile_input.py", "--ignore=tests/emulator"]
COPIED = (
    *("functions", "cli", "tools", "tests", "events", "docs", "template.yaml", "member-account.yaml"),
    *("pyproject.toml", "samconfig.toml", "README.md", "Makefile"),
)
LOGGERS = frozenset({"log", "logger", "logging"})
SWAPS: dict[type, type] = {
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Lt: ast.GtE,
    ast.GtE: ast.Lt,
    ast.Gt: ast.LtE,
    ast.LtE: ast.Gt,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.And: ast.Or,
    ast.Or: ast.And,
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
}


@dataclass
class Mutant:
    module: str
    number: int
    line: int
    change: str
    source: str = field(repr=False, default="")
    outcome: str = ""  # killed, survived, timeout, not covered
    tests_run: int = 0
    top_level: bool = False  # module-level code (a constant): every test of the module may observe it


# -- making mutants -------------------------------------------------------------------------------------------------
def _is_docstring(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    parent = parents.get(node)
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
        and isinstance(parent, ast.Module | ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef)
    )


def _is_logging(node: ast.AST) -> bool:
    """A call on a logger (log.warning(...)): only the log could tell it apart."""
    call = node.value if isinstance(node, ast.Expr) else node
    func = getattr(call, "func", None)
    return isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id in LOGGERS


def _inside_logging_or_decorator(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """Inside a logger's call (only the log could tell), or a decorator (`@dataclass(frozen=True)` configures the
    class; no behaviour depends on it)."""
    while node in parents:
        child, node = node, parents[node]
        if isinstance(node, ast.Call) and _is_logging(node):
            return True
        decorators = getattr(node, "decorator_list", [])
        if child in decorators:
            return True
    return False


def candidates(tree: ast.Module) -> Iterator[tuple[ast.AST, str, str]]:
    """(node, kind, description) for every mutation point, in source order."""
    parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
    for node in ast.walk(tree):
        if _inside_logging_or_decorator(node, parents) or _is_docstring(node, parents):
            continue
        yield from _points(node)


def _points(node: ast.AST) -> Iterator[tuple[ast.AST, str, str]]:
    if isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            if type(op) in SWAPS:
                yield node, f"compare:{i}", f"{type(op).__name__} -> {SWAPS[type(op)].__name__}"
    elif isinstance(node, ast.BoolOp | ast.BinOp) and type(node.op) in SWAPS:
        yield node, "op", f"{type(node.op).__name__} -> {SWAPS[type(node.op)].__name__}"
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        yield node, "drop-not", "not x -> x"
    elif isinstance(node, ast.If | ast.While | ast.IfExp) and not isinstance(node.test, ast.Compare | ast.UnaryOp):
        yield node, "negate", "condition -> not condition"
    elif isinstance(node, ast.Constant) and isinstance(node.value, bool):
        yield node, "constant", f"{node.value} -> {not node.value}"
    elif isinstance(node, ast.Constant) and type(node.value) in (int, float):
        yield node, "constant", f"{node.value!r} -> {node.value + 1!r}"
    elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and not _is_logging(node):
        yield node, "drop-call", f"drop the call to {ast.unparse(node.value.func)}"
    elif isinstance(node, ast.Raise):
        yield node, "drop-raise", "drop the raise"


def _apply(node: ast.AST, kind: str) -> ast.AST:
    """The mutated replacement for `node` (a copy)."""
    new = copy.deepcopy(node)
    if kind.startswith("compare:"):
        i = int(kind.split(":")[1])
        new.ops[i] = SWAPS[type(new.ops[i])]()  # type: ignore[attr-defined]
    elif kind == "op":
        new.op = SWAPS[type(new.op)]()  # type: ignore[attr-defined]
    elif kind == "drop-not":
        return new.operand  # type: ignore[attr-defined, no-any-return]
    elif kind == "negate":
        new.test = ast.UnaryOp(op=ast.Not(), operand=new.test)  # type: ignore[attr-defined]
    elif kind == "constant":
        value = new.value  # type: ignore[attr-defined]
        new.value = (not value) if isinstance(value, bool) else value + 1  # type: ignore[attr-defined]
    elif kind in ("drop-call", "drop-raise"):
        return ast.Pass()
    return new


class _Replace(ast.NodeTransformer):
    def __init__(self, target: ast.AST, replacement: ast.AST) -> None:
        self.target, self.replacement = target, replacement

    def generic_visit(self, node: ast.AST) -> ast.AST:
        if node is self.target:
            return self.replacement
        return super().generic_visit(node)


def mutants_of(module: str, root: Path = ROOT) -> list[Mutant]:
    source = (root / PACKAGE / f"{module}.py").read_text()
    functions = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    # a body runs when called; a signature's defaults run at import, like module-level code
    inside = {line for f in functions for line in range(f.body[0].lineno, (f.end_lineno or f.lineno) + 1)}
    found = []
    for number, (node, kind, change) in enumerate(candidates(ast.parse(source)), start=1):
        tree = ast.parse(source)  # a fresh tree: find the same node in it by position in the walk order
        twin = [n for n, _, _ in candidates(tree)][number - 1]
        mutated = ast.fix_missing_locations(_Replace(twin, _apply(twin, kind)).visit(tree))
        line = getattr(node, "lineno", 0)
        found.append(Mutant(module, number, line, change, ast.unparse(mutated), top_level=line not in inside))
    return found


# -- which test runs which line -------------------------------------------------------------------------------------


def scratch_copy(into: Path) -> Path:
    """The repository's code and tests, where mutants are written (the checkout is never touched)."""
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, into / name, ignore=shutil.ignore_patterns("__pycache__", ".aws-sam", "*.pyc"))
        else:
            shutil.copy2(src, into / name)
    return into


def test_env(copy_root: Path) -> dict[str, str]:
    paths = [copy_root / "functions" / "rotator", copy_root / "cli", copy_root / "tools", copy_root / "tests"]
    return os.environ | {"PYTHONPATH": os.pathsep.join(map(str, paths)), "PYTHONDONTWRITEBYTECODE": "1"}


def learn_coverage(copy_root: Path, modules: tuple[str, ...]) -> tuple[dict[str, list[str]], dict[str, float]]:
    """line ("rotation:123") -> the tests that execute it; test -> seconds."""
    out = copy_root / "coverage.json"
    env = test_env(copy_root) | {"MUTATION_COVERAGE_FILE": str(out), "MUTATION_MODULES": ",".join(modules)}
    done = subprocess.run(  # this interpreter, the project's own tests
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider", "-p", "mutation_coverage",
         *TEST_SELECTION],
        cwd=copy_root, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"the unmutated tests must pass first:\n{done.stdout[-3000:]}")
    data = json.loads(out.read_text())
    by_line: dict[str, list[str]] = {}
    for test, lines in data["lines"].items():
        for line in lines:
            by_line.setdefault(line, []).append(test)
    return by_line, data["durations"]


# -- running mutants --------------------------------------------------------------------------------------------------
class Runner:
    def __init__(
        self, copies: list[Path], by_line: dict[str, list[str]], durations: dict[str, float], max_tests: int
    ) -> None:
        self.max_tests = max_tests
        self.free = list(copies)
        self.lock = threading.Lock()
        self.by_line, self.durations = by_line, durations
        self.kills: Counter[str] = Counter()

    def tests_for(self, mutant: Mutant) -> list[str]:
        """The tests that execute the mutant's line (for module-level code: the module), the likeliest killers first,
        at most max_tests of them."""
        if mutant.top_level:
            prefix = f"{mutant.module}:"
            tests = sorted({t for line, ts in self.by_line.items() if line.startswith(prefix) for t in ts})
        else:
            tests = self.by_line.get(f"{mutant.module}:{mutant.line}", [])
        with self.lock:  # module-level code: the fastest (the module's unit tests) first, else the likeliest killers
            ordered = sorted(
                tests,
                key=lambda t: (0 if mutant.top_level else -self.kills[t], self.durations.get(t, 60.0)),
            )
        first_of_each_file = list({test.split("::")[0]: test for test in reversed(ordered)}.values())[::-1]
        return list(dict.fromkeys([*first_of_each_file, *ordered]))[: self.max_tests]

    def run(self, mutant: Mutant) -> Mutant:
        tests = self.tests_for(mutant)
        if not tests:
            mutant.outcome = "not covered"
            return mutant
        with self.lock:
            root = self.free.pop()
        try:
            mutant.outcome = self._run_in(root, mutant, tests)
        finally:
            with self.lock:
                self.free.append(root)
        return mutant

    def _run_in(self, root: Path, mutant: Mutant, tests: list[str]) -> str:
        target = root / PACKAGE / f"{mutant.module}.py"
        original = target.read_text()
        target.write_text(mutant.source)
        budget = 30 + 2 * sum(self.durations.get(t, 10.0) for t in tests)  # a mutant that hangs is killed
        try:
            done = subprocess.run(  # this interpreter, the project's own tests
                [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:randomly", "-p", "no:cacheprovider", *tests],
                cwd=root, env=test_env(root), capture_output=True, text=True, timeout=budget, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return "timeout"
        finally:
            target.write_text(original)
        mutant.tests_run = done.stdout.count("PASSED") or len(tests)
        if done.returncode == 0:
            return "survived"
        failed = [line.removeprefix("FAILED ").split(" - ")[0] for line in done.stdout.splitlines()]
        killer = next((line for line in failed if line in self.durations), None)
        if killer:
            with self.lock:
                self.kills[killer] += 1
        return "killed"


def report(mutants: list[Mutant], seconds: float) -> str:
    lines = [
        "module       mutants  killed  survived  timeout  not covered  score",
    ]
    for module in sorted({m.module for m in mutants}, key=MODULES.index):
        mine = [m for m in mutants if m.module == module]
        counts = Counter(m.outcome for m in mine)
        killed = counts["killed"] + counts["timeout"]
        lines.append(
            f"{module + '.py':<12} {len(mine):>7}  {counts['killed']:>6}  {counts['survived']:>8}  "
            f"{counts['timeout']:>7}  {counts['not covered']:>11}  {100 * killed / len(mine):>4.0f}%"
        )
    total = Counter(m.outcome for m in mutants)
    score = 100 * (total["killed"] + total["timeout"]) / max(len(mutants), 1)
    lines.append(f"{'all':<12} {len(mutants):>7}  {total['killed']:>6}  {total['survived']:>8}  "
                 f"{total['timeout']:>7}  {total['not covered']:>11}  {score:>4.0f}%")  # fmt: skip
    lines.append(f"({seconds / 60:.1f} min)")
    lines += ["", "surviving and uncovered mutants:"]
    lines += [
        f"  {m.module}.py:{m.line}  {m.change}  ({m.outcome})"
        for m in mutants
        if m.outcome in ("survived", "not covered")
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--modules", default=",".join(MODULES), help="comma-separated, of " + ", ".join(MODULES))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write every mutant's outcome here")
    parser.add_argument("--max-tests", type=int, default=40, help="tests run per mutant at most (default 40)")
    parser.add_argument("--coverage", type=Path, help="reuse (or save) which test runs which line, in this file")
    args = parser.parse_args(argv)
    modules = tuple(name for name in args.modules.split(",") if name)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mutation-") as tmp:
        copies = [scratch_copy(Path(tmp) / f"copy{i}") for i in range(max(args.workers, 1))]
        if args.coverage and args.coverage.exists():
            by_line, durations = json.loads(args.coverage.read_text())
        else:
            by_line, durations = learn_coverage(copies[0], modules)
            if args.coverage:
                args.coverage.write_text(json.dumps([by_line, durations]))
        mutants = [mutant for module in modules for mutant in mutants_of(module)]
        print(f"{len(mutants)} mutants; {len(durations)} tests; coverage learnt", flush=True)
        runner = Runner(copies, by_line, durations, args.max_tests)
        with ThreadPoolExecutor(max_workers=len(copies)) as pool:
            for done, _ in enumerate(pool.map(runner.run, mutants), start=1):
                if done % 25 == 0:
                    print(f"  {done}/{len(mutants)}", flush=True)
            survivors = [m for m in mutants if m.outcome == "survived"]
            print(f"second pass: {len(survivors)} survivors against up to {3 * args.max_tests} tests", flush=True)
            runner.max_tests = 3 * args.max_tests  # what the first pass learnt about killers now orders the tests
            list(pool.map(runner.run, survivors))
    text = report(mutants, time.monotonic() - started)
    print(text)
    if args.json:
        args.json.write_text(json.dumps([asdict(m) | {"source": None} for m in mutants], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
