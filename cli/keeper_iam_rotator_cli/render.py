"""Output shared by every command: rotation results (rotate, invoke), preflight checks (check), exit codes.

Results are the Lambda's own `{"results": [...]}` documents, so a local run and a deployed run print the same.
"""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from .errors import EXIT_FAILED, EXIT_OK
from .verdicts import Check, Verdict

MIN_TEXT_WIDTH = 40  # narrower, a message column wraps a few words (or an ARN's pieces) per line
NOTE_INDENT = 4
SUCCESS_STATUSES = frozenset({"rotated", "planned"})
STATUS_STYLE = {"rotated": "green", "planned": "cyan", "skipped": "yellow", "failed": "bold red"}
CHECK_STYLE = {Verdict.PASS: "green", Verdict.WARN: "yellow", Verdict.SKIP: "dim", Verdict.FAIL: "bold red"}


def console(stderr: bool = False) -> Console:
    """A console bound to the current stdout/stderr (click's test runner swaps them per invocation)."""
    width = int(os.environ["COLUMNS"]) if os.environ.get("COLUMNS", "").isdigit() else None
    return Console(stderr=stderr, width=width, highlight=False, emoji=False)


def print_table(
    out: Console,
    title: str,
    headers: list[str],
    text_header: str,
    rows: list[tuple[list[str], str]],
    styles: Mapping[int, Callable[[str], str | None]],
    note_cells: int = 0,
) -> None:
    """A table of short cells plus one free-text column, as a bordered table when the terminal leaves the text at
    least MIN_TEXT_WIDTH columns. On a narrower terminal (80 columns) it is stacked instead of wrapped a word per
    line: one line per row, and the text on an indented line below it, led by the last `note_cells` cells.
    `styles` colours a column by its cell's value."""
    widths = [max(len(header), *(len(cells[i]) for cells, _ in rows)) for i, header in enumerate(headers)]
    room = out.width - sum(widths) - 3 * (len(headers) + 1) - 1  # each column's border and padding
    if room >= MIN_TEXT_WIDTH or not any(text for _, text in rows):
        table = Table(title=title, title_justify="left")
        for header in (*headers, text_header):
            table.add_column(header, overflow="fold")
        for cells, text in rows:
            table.add_row(*(_styled(cell, styles.get(i)) for i, cell in enumerate(cells)), escape(text))
        out.print(table)
        return
    shown = len(headers) - note_cells
    out.print(title)
    out.print("  ".join(h.ljust(w) for h, w in zip(headers[:shown], widths, strict=False)).rstrip(), style="bold")
    for cells, text in rows:
        line = Text("  ").join(
            Text(cell.ljust(widths[i]), style=(styles[i](cell) or "") if i in styles else "")
            for i, cell in enumerate(cells[:shown])
        )
        line.rstrip()
        out.print(line, overflow="fold")
        note = ": ".join(part for part in (*cells[shown:], text) if part)
        if note:
            indent = " " * NOTE_INDENT
            wrapped = textwrap.fill(
                note, max(out.width, 40), initial_indent=indent, subsequent_indent=indent, break_on_hyphens=False
            )
            out.print(wrapped, markup=False, soft_wrap=True)


def _styled(cell: str, style_of: Callable[[str], str | None] | None) -> str:
    style = style_of(cell) if style_of else None
    return f"[{style}]{escape(cell)}[/]" if style else escape(cell)


def results_exit_code(results: Sequence[dict[str, Any]]) -> int:
    """0 only when every record was rotated (or planned, in a dry run)."""
    return EXIT_OK if all(r.get("status") in SUCCESS_STATUSES for r in results) else EXIT_FAILED


def not_due_note(not_due: int, listed: int) -> str | None:
    """What a run without --record left alone, and how to have it rotated anyway."""
    if not not_due:
        return None if listed else "No pamUser records in scope: nothing to rotate."
    records = "record in scope is" if not_due == 1 else "records in scope are"
    lead = "Nothing is due: " if not listed else ""
    return (
        f"{lead}{not_due} pamUser {records} not due (rotated within their rotation period) and were left alone; "
        "--all rotates them too, --record UID one of them."
    )


def show_results(document: Mapping[str, Any], as_json: bool, title: str = "Rotation results") -> int:
    """Print the Lambda's answer (`--json`: exactly as the function returns it; else a table, the counts, and the
    records left alone because they are not due) and return the exit code."""
    results: list[dict[str, Any]] = list(document.get("results") or [])
    if as_json:
        click.echo(json.dumps(document, indent=2))
        return results_exit_code(results)
    out = console()
    if results:
        _results_table(out, results, title)
        out.print(_counts(document, results), markup=False)
    note = not_due_note(int((document.get("summary") or {}).get("notDue", 0)), len(results))
    if note:
        out.print(textwrap.fill(note, max(out.width, 40), break_on_hyphens=False), markup=False, soft_wrap=True)
    if document.get("resultsOmitted"):
        out.print(f"{document['resultsOmitted']} more results omitted (the function's log has each record).")
    return results_exit_code(results)


def _results_table(out: Console, results: list[dict[str, Any]], title: str) -> None:
    rows = []
    for r in results:
        error = r.get("error") or {}
        status = str(r.get("status", "?"))
        note = " (recovered)" if r.get("recovered") else ""
        cells = [str(r.get("recordUid", "")), str(r.get("userName", "")), status + note, str(error.get("code", ""))]
        rows.append((cells, str(error.get("message", ""))))
    styles = {2: lambda cell: STATUS_STYLE.get(cell.split(" ")[0], "white")}
    print_table(out, title, ["record", "user", "status", "code"], "message", rows, styles, note_cells=1)


def _counts(document: Mapping[str, Any], results: list[dict[str, Any]]) -> str:
    """`2 rotated, 1 skipped`: the function's summary (it counts omitted results too), else the results'."""
    summary = document.get("summary")
    if isinstance(summary, dict):
        counts = {status: int(n) for status, n in summary.items() if status != "notDue" and n}
    else:
        counts = {}
        for r in results:
            counts[str(r.get("status"))] = counts.get(str(r.get("status")), 0) + 1
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))


def show_checks(checks: Sequence[Check], as_json: bool) -> int:
    """Print one line per check and the verdict; exit 0 iff nothing FAILed."""
    failed = [c for c in checks if c.result is Verdict.FAIL]
    verdict = "NOT READY" if failed else "READY"
    counts = {name: sum(1 for c in checks if c.result is name) for name in Verdict}
    summary = ", ".join(f"{n} {name.lower()}" for name, n in counts.items() if n)
    if as_json:
        click.echo(json.dumps({"verdict": verdict, "checks": [c.to_dict() for c in checks]}, indent=2))
    else:
        out = console()
        rows = [([c.check, str(c.result)], c.detail) for c in checks]
        styles = {1: lambda cell: CHECK_STYLE.get(Verdict(cell))}
        print_table(out, "Preflight checks (nothing is changed)", ["check", "result"], "detail", rows, styles)
        style = "bold red" if failed else "bold green"
        out.print(f"[{style}]{verdict}[/]: {summary}")
    return EXIT_FAILED if failed else EXIT_OK
