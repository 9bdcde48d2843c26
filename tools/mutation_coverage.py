"""pytest plugin for tools/mutation.py: which test executes which line of the mutated modules, and how long each
test takes. sys.monitoring LINE events on those modules' code objects only, each line reported once per test."""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from collections.abc import Iterator
from types import CodeType
from typing import Any

import pytest

TOOL = sys.monitoring.PROFILER_ID
LINES: dict[str, set[str]] = {}
DURATIONS: dict[str, float] = {}
state: dict[str, Any] = {"test": None}


def _codes(code: CodeType) -> Iterator[CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, CodeType):
            yield from _codes(const)


def _functions(module: Any) -> Iterator[Any]:
    for value in vars(module).values():
        yield value
        if isinstance(value, type):
            for member in vars(value).values():
                yield from (member, getattr(member, "fget", None), getattr(member, "__func__", None))


def pytest_configure(config: Any) -> None:
    sys.monitoring.use_tool_id(TOOL, "mutation-coverage")
    sys.monitoring.register_callback(TOOL, sys.monitoring.events.LINE, _line)
    for name in os.environ["MUTATION_MODULES"].split(","):
        module = importlib.import_module(f"keeper_iam_rotator.{name}")
        for function in _functions(module):
            code = getattr(function, "__code__", None)
            if isinstance(code, CodeType) and code.co_filename == module.__file__:
                for nested in _codes(code):
                    sys.monitoring.set_local_events(TOOL, nested, sys.monitoring.events.LINE)


def _line(code: CodeType, line: int) -> Any:
    if state["test"] is not None:
        LINES.setdefault(state["test"], set()).add(f"{os.path.basename(code.co_filename)[:-3]}:{line}")
    return sys.monitoring.DISABLE


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: Any, nextitem: Any) -> Iterator[None]:
    state["test"], started = item.nodeid, time.monotonic()
    sys.monitoring.restart_events()
    yield
    DURATIONS[item.nodeid] = time.monotonic() - started
    state["test"] = None


def pytest_unconfigure(config: Any) -> None:
    with open(os.environ["MUTATION_COVERAGE_FILE"], "w") as out:
        json.dump({"lines": {k: sorted(v) for k, v in LINES.items()}, "durations": DURATIONS}, out)
