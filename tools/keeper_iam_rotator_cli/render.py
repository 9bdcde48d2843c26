"""Output shared by every command: rotation results (rotate, invoke), preflight checks (check), exit codes.

Results are the Lambda's own `{"results": [...]}` documents, so a local run and a deployed run print the same.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .errors import EXIT_FAILED, EXIT_OK

SUCCESS_STATUSES = frozenset({"rotated", "planned"})
STATUS_STYLE = {"rotated": "green", "planned": "cyan", "skipped": "yellow", "failed": "bold red"}
CHECK_STYLE = {"PASS": "green", "WARN": "yellow", "SKIP": "dim", "FAIL": "bold red"}


def console(stderr: bool = False) -> Console:
    """A console bound to the current stdout/stderr (click's test runner swaps them per invocation)."""
    width = int(os.environ["COLUMNS"]) if os.environ.get("COLUMNS", "").isdigit() else None
    return Console(stderr=stderr, width=width, highlight=False, emoji=False)


def results_exit_code(results: Sequence[dict[str, Any]]) -> int:
    """0 only when every record was rotated (or planned, in a dry run)."""
    return EXIT_OK if all(r.get("status") in SUCCESS_STATUSES for r in results) else EXIT_FAILED


def show_results(results: Sequence[dict[str, Any]], as_json: bool, title: str = "Rotation results") -> int:
    """Print the results (table or the Lambda's JSON) and return the exit code."""
    if as_json:
        click.echo(json.dumps({"results": list(results)}, indent=2))
        return results_exit_code(results)
    out = console()
    if not results:
        out.print("No pamUser records in scope: nothing to rotate.")
        return EXIT_OK
    table = Table(title=title, title_justify="left")
    for column in ("record", "user", "status", "code"):
        table.add_column(column, no_wrap=True)
    table.add_column("message", overflow="fold")
    for r in results:
        error = r.get("error") or {}
        status = str(r.get("status", "?"))
        note = " (recovered)" if r.get("recovered") else ""
        table.add_row(
            escape(str(r.get("recordUid", ""))),
            escape(str(r.get("userName", ""))),
            f"[{STATUS_STYLE.get(status, 'white')}]{escape(status)}[/]{note}",
            escape(str(error.get("code", ""))),
            escape(str(error.get("message", ""))),
        )
    out.print(table)
    counts: dict[str, int] = {}
    for r in results:
        counts[str(r.get("status"))] = counts.get(str(r.get("status")), 0) + 1
    out.print(", ".join(f"{n} {status}" for status, n in sorted(counts.items())), markup=False)
    return results_exit_code(results)


def show_checks(checks: Sequence[dict[str, str]], as_json: bool) -> int:
    """Print one line per check and the verdict; exit 0 iff nothing FAILed."""
    failed = [c for c in checks if c["result"] == "FAIL"]
    verdict = "NOT READY" if failed else "READY"
    counts = {name: sum(1 for c in checks if c["result"] == name) for name in CHECK_STYLE}
    summary = ", ".join(f"{n} {name.lower()}" for name, n in counts.items() if n)
    if as_json:
        click.echo(json.dumps({"verdict": verdict, "checks": list(checks)}, indent=2))
    else:
        out = console()
        table = Table(title="Preflight checks (nothing is changed)", title_justify="left")
        table.add_column("check", no_wrap=True)
        table.add_column("result", no_wrap=True)
        table.add_column("detail", overflow="fold")
        for c in checks:
            table.add_row(escape(c["check"]), f"[{CHECK_STYLE[c['result']]}]{c['result']}[/]", escape(c["detail"]))
        out.print(table)
        style = "bold red" if failed else "bold green"
        out.print(f"[{style}]{verdict}[/]: {summary}")
    return EXIT_FAILED if failed else EXIT_OK
