"""`make docs`: regenerate what README.md and docs/*.md show of the code, so it cannot go stale unnoticed.

- Transcripts: `serve` is started (a sandbox stack on loopback, its random ids seeded), the session below is run in
  order with the installed console script at 80 columns (a few steps wider), and every block marked
  `<!-- begin generated: transcript ID -->` is replaced by what step ID printed. `demo` output is normalised (ports,
  times and password fingerprints differ per run).
- Environment variables: the tables marked `environment-set-by-template` and `environment-optional` come from
  keeper_iam_rotator.settings.VARIABLES and template.yaml's function environment.

`python tools/generate_docs.py` rewrites the files; `--check` only compares and exits 1 with a diff
(tests/test_docs.py runs the same comparisons in `make test`). Run with PYTHONPATH=tools (the Makefile does).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import queue
import re
import shlex
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rotator_sandbox.paths import ROOT, TOOLS_DIR
from rotator_sandbox.serve import ONE_TIME_ACCESS_COMMAND, SEED

DOCS = (ROOT / "README.md", ROOT / "docs" / "cli.md", ROOT / "docs" / "sandbox.md")
BLOCK = re.compile(
    r"(?P<begin><!-- begin generated: (?P<name>[^>]*?) -->\n)(?P<body>.*?)(?P<end><!-- end generated -->)", re.DOTALL
)
STARTUP_SECONDS = 120
LOOPBACK_PORT = re.compile(r"127\.0\.0\.1:\d+")
# times a transcript shows (the drift view's last change in IAM, a last rotation): replaced by same-length stand-ins
ISO_TIME = re.compile(r"\b\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
UTC_TIME = re.compile(r"\b\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC\b")
FOREIGN_ENV = ("AWS_", "KSM_", "JOURNAL_", "IDEMPOTENCY_", "ROTATION_", "POWERTOOLS_", "REQUESTS_CA_BUNDLE", "COLUMNS")
(_, ALICE, _, FOLDER), (_, BOB, _, _), (_, SVC, _, _) = SEED
STACK = "--stack keeper-iam-rotator"
TOKEN_COMMAND = ONE_TIME_ACCESS_COMMAND  # what serve prints for a new one-time token
NEW_SECRET = "keeper-iam-rotator/ksm-config-v2"  # noqa: S105 - a secret's name
EMULATOR = '--hostname "$KSM_EMULATOR_HOST" --server-public-key "$KSM_EMULATOR_PUBLIC_KEY"'


@dataclass(frozen=True)
class Step:
    """One command of the session, run as typed (bash, in the session's directory, with serve's exports)."""

    id: str
    command: str
    columns: int = 80
    shown: bool = True  # False: a preparation step no document shows (its command is shown elsewhere as code)


K = "keeper-iam-rotator"
SESSION = (
    Step("help", f"{K} --help"),
    Step("token", TOKEN_COMMAND, shown=False),
    Step(
        "init", f"{K} init --secret-name keeper-iam-rotator/ksm-config-v2 {EMULATOR} --token-file token --tag team=iam"
    ),
    Step("init-spent", f"{K} init --secret-name keeper-iam-rotator/ksm-config-v2 {EMULATOR} --token-file token"),
    Step("token-2", TOKEN_COMMAND, shown=False),
    Step(
        "init-no-server-key",
        f'{K} init --secret-name {NEW_SECRET} --hostname "$KSM_EMULATOR_HOST" --token-file token',
        columns=120,
    ),
    Step("init-same-token", f"{K} init --secret-name {NEW_SECRET} {EMULATOR} --token-file token"),
    Step("init-unknown-region", f"{K} init --secret-name x --token XX:0Zx3-not-shown-here-Q"),
    Step("init-not-a-token", f"{K} init --secret-name x --token US:bogus-token-value"),
    Step("init-host-port", f"{K} init --secret-name x --token 127.0.0.1:8443:TOKEN"),
    Step("init-no-terminal", f"{K} init --secret-name x < /dev/null"),
    Step("check", f"{K} check {STACK}"),
    Step("check-record", f"{K} check {STACK} --record {ALICE}"),
    Step("check-folder-wide", f"{K} check {STACK} --folder Fq2UWJh7n9eXy8Pp0ZbJ1h", columns=120),
    Step("rotate-dry-run", f"{K} rotate {STACK} --dry-run"),
    Step("rotate-records", f"{K} rotate {STACK} --record {ALICE} --record {SVC}"),
    Step("rotate-json", f"{K} rotate {STACK} --record {BOB} --json"),
    Step("rotate-folder-not-due", f"{K} rotate {STACK} --folder {FOLDER}"),
    Step("rotate-folder-all", f"{K} rotate {STACK} --folder {FOLDER} --all", columns=120),
    Step("rotate-folder-unknown", f"{K} rotate {STACK} --folder Fq2UWJh7n9eXy8Pp0ZbJ1h"),
    Step("rotate-bad-uid", f"{K} rotate {STACK} --record not-a-uid"),
    Step(
        "rotate-no-journal",
        f"env -u JOURNAL_TABLE_NAME {K} rotate --config-secret {NEW_SECRET} --record {ALICE}",
    ),
    Step("invoke-api", f"{K} invoke {STACK} --via api --record {ALICE} --idempotency-key rotate-2026-11-28"),
    Step(
        "invoke-retry",
        f'{K} invoke --api-url "$ROTATOR_API_URL" --record {ALICE} --idempotency-key rotate-2026-11-28 --json',
    ),
    Step("invoke-dry-run", f"{K} invoke {STACK} --record {BOB} --dry-run --json"),
    Step("invoke-records", f"{K} invoke {STACK} --record {BOB} --record {SVC}"),
    Step("invoke-no-region", f"env -u AWS_REGION -u AWS_DEFAULT_REGION {K} invoke {STACK} --record {BOB}"),
)


# -- running the session against serve ------------------------------------------------------------------------------
def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN_ENV)}


@contextmanager
def served(workdir: Path) -> Iterator[dict[str, str]]:
    """`python -m rotator_sandbox serve` until the block ends; yields the environment its exports give a shell."""
    env = _clean_env() | {"PYTHONPATH": str(TOOLS_DIR)}
    env_file = workdir / "sandbox.env"
    process = subprocess.Popen(
        [sys.executable, "-m", "rotator_sandbox", "serve", "--env-file", str(env_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=str(ROOT),
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout or ()], daemon=True).start()
    try:
        while not lines.get(timeout=STARTUP_SECONDS).startswith("# ready"):
            pass
        exports = dict(
            shlex.split(line.removeprefix("export "))[0].split("=", 1)
            for line in env_file.read_text().splitlines()
            if line.startswith("export ")
        )
        bin_dir = str(Path(sys.executable).parent)  # the venv's keeper-iam-rotator
        yield _clean_env() | exports | {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONPATH": ""}
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_step(step: Step, env: dict[str, str], workdir: Path) -> str:
    """The step as a transcript: `$ command`, everything it printed (stdout and stderr, in order), `[exit N]`."""
    done = subprocess.run(
        ["bash", "-c", step.command],
        env=env | {"COLUMNS": str(step.columns)},
        cwd=str(workdir),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
        check=False,
    )
    output = "\n".join(line.rstrip() for line in stable(done.stdout).splitlines())
    return f"$ {step.command}\n{output}\n[exit {done.returncode}]".replace("\n\n[exit", "\n[exit")


def stable(text: str) -> str:
    """What differs from run to run (ports, times) replaced by stand-ins of the same width, so wrapping stays."""
    text = LOOPBACK_PORT.sub("127.0.0.1:PORT", text)
    text = ISO_TIME.sub("YYYY-MM-DDTHH:MM:SSZ", text)
    return UTC_TIME.sub("YYYY-MM-DD HH:MM UTC", text)


def session_transcripts() -> dict[str, str]:
    """Every shown step's transcript, by id: the whole session, in order, against a fresh serve."""
    with tempfile.TemporaryDirectory(prefix="docs-session-") as tmp, served(Path(tmp)) as env:
        transcripts = {step.id: run_step(step, env, Path(tmp)) for step in SESSION}
    return {step.id: transcripts[step.id] for step in SESSION if step.shown}


def demo_transcript() -> str:
    """`make demo` with two users, normalised: ports, times and password fingerprints differ per run."""
    command = 'make demo DEMO_ARGS="--users 2 --plain"'
    done = subprocess.run(
        [sys.executable, "-m", "rotator_sandbox", "demo", "--users", "2", "--plain"],
        env=_clean_env() | {"PYTHONPATH": str(TOOLS_DIR)},
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    fingerprints: dict[str, str] = {}

    def label(match: re.Match[str]) -> str:
        return fingerprints.setdefault(match.group(0), f"fp{len(fingerprints) + 1:06d}")

    text = LOOPBACK_PORT.sub("127.0.0.1:PORT", done.stdout)
    text = re.sub(r"\b\d+\.\ds\b", "N.Ns", text)
    text = re.sub(r"(?<![\w-])[0-9a-f]{8}(?![\w-])", label, text)
    body = "\n".join(line.rstrip() for line in text.splitlines())
    return f"$ {command}\n{body}\n[exit {done.returncode}]"


# -- environment variables ----------------------------------------------------------------------------------------
def template_environment() -> dict[str, Any]:
    """template.yaml's RotatorFunction environment, with intrinsics as the SAM translator parses them."""
    from samtranslator.yaml_helper import yaml_parse  # noqa: PLC0415 - a dev dependency, needed only here

    template = yaml_parse((ROOT / "template.yaml").read_text())
    return dict(template["Resources"]["RotatorFunction"]["Properties"]["Environment"]["Variables"])


def _template_value(value: Any, parameters: set[str]) -> str:
    if isinstance(value, dict) and "Ref" in value:
        name = value["Ref"]
        return f"parameter `{name}`" if name in parameters else f"the stack's `{name}`"
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        resource, attribute = value["Fn::GetAtt"]
        return f"the stack's `{resource}` ({attribute})"
    if isinstance(value, dict) and "Fn::If" in value:
        condition, then, otherwise = value["Fn::If"]
        return f"{_template_value(then, parameters)} when `{condition}`, else {_template_value(otherwise, parameters)}"
    return f"`{value}`"


def _default(variable: Any) -> str:
    from keeper_iam_rotator.settings import Settings  # noqa: PLC0415

    if variable.field is None or variable.default:
        value: Any = variable.default
    else:
        value = {f.name: f.default for f in dataclasses.fields(Settings)}[variable.field]
    if isinstance(value, bool):
        value = str(value).lower()
    return f"`{value}`" if value not in ("", ()) else "empty"


def environment_tables() -> dict[str, str]:
    """The README's two tables: what the template sets (and to what), and what it leaves to you."""
    from samtranslator.yaml_helper import yaml_parse  # noqa: PLC0415

    from keeper_iam_rotator.settings import VARIABLES  # noqa: PLC0415

    environment = template_environment()
    parameters = set(yaml_parse((ROOT / "template.yaml").read_text())["Parameters"])
    unknown = sorted(set(environment) - {variable.name for variable in VARIABLES})
    if unknown:
        raise SystemExit(f"template.yaml sets {', '.join(unknown)}, which settings.VARIABLES does not document")
    set_rows = ["| Variable | Set by the template to | Default without it | Meaning |", "| --- | --- | --- | --- |"]
    optional = ["| Variable | Default | Meaning |", "| --- | --- | --- |"]
    for variable in VARIABLES:
        if variable.name in environment:
            value = _template_value(environment[variable.name], parameters)
            set_rows.append(f"| `{variable.name}` | {value} | {_default(variable)} | {variable.meaning} |")
        else:
            optional.append(f"| `{variable.name}` | {_default(variable)} | {variable.meaning} |")
    return {"environment-set-by-template": "\n".join(set_rows), "environment-optional": "\n".join(optional)}


# -- documents ----------------------------------------------------------------------------------------------------
def render(text: str, blocks: Callable[[str], str | None]) -> str:
    """`text` with every generated block replaced by `blocks(name)` (None: left as it is)."""

    def replace(match: re.Match[str]) -> str:
        new = blocks(match.group("name"))
        if new is None:
            return match.group(0)
        fenced = new if new.startswith(("|", "```")) else f"```text\n{new}\n```"
        return f"{match.group('begin')}{fenced}\n{match.group('end')}"

    return BLOCK.sub(replace, text)


def block_names(text: str) -> list[str]:
    return [match.group("name") for match in BLOCK.finditer(text)]


def generated(include_transcripts: bool = True) -> dict[str, str]:
    """Every generated block's content by name; transcripts need serve and the demo (a minute or two)."""
    blocks = environment_tables()
    blocks |= {f"command {step.id}": f"```bash\n{step.command}\n```" for step in SESSION if not step.shown}
    if include_transcripts:
        blocks |= {f"transcript {step}": text for step, text in session_transcripts().items()}
        blocks["transcript demo"] = demo_transcript()
    return blocks


def regenerate(blocks: dict[str, str], docs: tuple[Path, ...] = DOCS) -> dict[Path, tuple[str, str]]:
    """(current text, regenerated text) per document; refuses a marker that names no block it can make."""
    result = {}
    for doc in docs:
        text = doc.read_text()
        names = block_names(text)
        unknown = [name for name in names if name not in blocks and _is_known_kind(name, blocks)]
        if unknown:
            raise SystemExit(f"{doc.relative_to(ROOT)} marks unknown generated blocks: {', '.join(unknown)}")
        result[doc] = (text, render(text, blocks.get))
    return result


def _is_known_kind(name: str, blocks: dict[str, str]) -> bool:
    """A transcript marker is only checked when transcripts were generated."""
    return not name.startswith("transcript ") or any(key.startswith("transcript ") for key in blocks)


def diff(path: Path, old: str, new: str) -> str:
    name = str(path.relative_to(ROOT))
    return "".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True), name, f"{name} (generated)"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 with a diff if anything is stale")
    parser.add_argument("--no-transcripts", action="store_true", help="only the tables (no serve, no demo)")
    args = parser.parse_args(argv)
    changes = regenerate(generated(include_transcripts=not args.no_transcripts))
    stale = {path: pair for path, pair in changes.items() if pair[0] != pair[1]}
    if args.check:
        for path, (old, new) in stale.items():
            sys.stdout.write(diff(path, old, new))
        if stale:
            print("the documents are stale: run `make docs` and commit the result", file=sys.stderr)
        return 1 if stale else 0
    for path, (_, new) in stale.items():
        path.write_text(new)
        print(f"regenerated {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
