"""`python -m rotator_sandbox serve` in its own process, driven as a person would: source the exports it prints, run
the installed `keeper-iam-rotator` console script, and read the truth back from moto server and the KSM emulator."""

from __future__ import annotations

import json
import os
import queue
import shlex
import signal
import ssl
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rotator_sandbox.paths import ROOT, TOOLS_DIR
from rotator_sandbox.serve import SEED, STACK_NAME

pytestmark = pytest.mark.e2e

CONSOLE_SCRIPT = Path(sys.executable).parent / "keeper-iam-rotator"
STARTUP_SECONDS = 120
ALICE, BOB, SVC = (uid for _, uid, _, _ in SEED)
# Whatever the developer's shell points at must not leak into the session: it gets only what `serve` exports.
_FOREIGN_ENV = (
    *("AWS_", "KSM_", "JOURNAL_", "IDEMPOTENCY_", "ROTATION_", "POWERTOOLS_", "REQUESTS_CA_BUNDLE", "SANDBOX_"),
)


class Served:
    def __init__(self, exports: dict[str, str]) -> None:
        self.exports = exports
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN_ENV)} | exports
        self.env.update(COLUMNS="80", PYTHONPATH="")
        self.outputs: list[str] = []

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The installed console script, as a person runs it after sourcing the exports."""
        done = subprocess.run(  # noqa: S603 - this venv's console script
            [str(CONSOLE_SCRIPT), *args], env=self.env, capture_output=True, text=True, timeout=180, check=False
        )
        self.outputs += [done.stdout, done.stderr]
        return done

    def iam_passwords(self) -> dict[str, str | None]:
        """moto server's stored console passwords, by user name."""
        with _loopback().open(f"{self.exports['AWS_ENDPOINT_URL']}/moto-api/data.json", timeout=30) as answer:
            users = json.load(answer)["iam"]["User"]
        return {user["name"]: user.get("password") for user in users}

    def keeper_passwords(self) -> dict[str, str | None]:
        """The KSM emulator's committed password per record uid (nothing staged may remain)."""
        context = ssl.create_default_context(cafile=self.exports["REQUESTS_CA_BUNDLE"])
        url = f"https://{self.exports['KSM_EMULATOR_HOST']}/_emulator/state"
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
        )
        with opener.open(url, timeout=30) as answer:
            records = json.load(answer)["records"]
        assert [r["uid"] for r in records if r["staged"]] == []
        return {r["uid"]: _field(r["committed"], "password") for r in records}


def _field(record: dict[str, Any], field_type: str) -> str | None:
    return next((f["value"][0] for f in record["fields"] if f["type"] == field_type and f["value"]), None)


def _loopback() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN_ENV)}
    env["PYTHONPATH"] = str(TOOLS_DIR)
    with (tmp_path / "serve.err").open("w") as errors:
        process = subprocess.Popen(  # noqa: S603 - this interpreter and the module under test
            [sys.executable, "-m", "rotator_sandbox", "serve", "--env-file", str(tmp_path / "env.sh")],
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            env=env,
            cwd=str(ROOT),
        )
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
        printed = []
        try:
            while not printed or not printed[-1].startswith("# ready"):
                printed.append(lines.get(timeout=STARTUP_SECONDS))
            exports = dict(
                shlex.split(line.removeprefix("export "))[0].split("=", 1)
                for line in printed
                if line.startswith("export ")
            )
            assert (tmp_path / "env.sh").read_text().splitlines() == [
                line.rstrip("\n") for line in printed if not line.startswith("#")
            ]
            yield Served(exports)
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=60) == 0
            assert lines.get(timeout=10).startswith("# stopped")
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def test_the_installed_cli_against_serve(served):
    assert CONSOLE_SCRIPT.exists(), "keeper-iam-rotator is not installed in this venv (make .venv/.installed)"
    exports = served.exports
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_LAMBDA", "ROTATOR_API_URL"):
        assert exports[name].startswith("http://127.0.0.1:"), name
    assert exports["KSM_EMULATOR_HOST"].startswith("127.0.0.1:")
    before_iam, before_keeper = served.iam_passwords(), served.keeper_passwords()
    assert before_iam["svc"] is None and before_iam["alice"] == before_keeper[ALICE]

    check = served.cli("check", "--stack", STACK_NAME, "--json")
    assert check.returncode == 1, check.stderr  # svc has no console password
    checks = {c["check"]: c for c in json.loads(check.stdout)["checks"]}
    assert checks[f"record {ALICE}"]["result"] == checks[f"record {BOB}"]["result"] == "PASS"
    assert checks[f"record {SVC}"]["detail"].startswith("no_login_profile")
    for name in ("ksm-config", "keeper-records", "journal-table", "journal-key", "idempotency-table"):
        assert checks[name]["result"] == "PASS", checks[name]

    rotate = served.cli("rotate", "--stack", STACK_NAME, "--record", ALICE, "--record", SVC)
    assert rotate.returncode == 1, rotate.stderr
    assert max(len(line) for line in rotate.stdout.splitlines()) <= 80
    iam, keeper = served.iam_passwords(), served.keeper_passwords()
    assert iam["alice"] == keeper[ALICE] != before_iam["alice"]
    assert iam["svc"] is None and iam["bob"] == before_iam["bob"]

    by_api = served.cli("invoke", "--stack", STACK_NAME, "--via", "api", "--record", BOB, "--idempotency-key", "k1")
    assert by_api.returncode == 0, by_api.stderr
    iam, keeper = served.iam_passwords(), served.keeper_passwords()
    assert iam["bob"] == keeper[BOB] != before_iam["bob"]
    rotated_bob = iam["bob"]

    retried = served.cli("invoke", "--api-url", exports["ROTATOR_API_URL"], "--record", BOB, "--idempotency-key", "k1")
    assert retried.returncode == 0 and "rotated" in retried.stdout
    assert served.iam_passwords()["bob"] == served.keeper_passwords()[BOB] == rotated_bob  # answered, not rotated

    by_lambda = served.cli("invoke", "--stack", STACK_NAME, "--record", ALICE, "--json")
    assert by_lambda.returncode == 0, by_lambda.stderr
    assert json.loads(by_lambda.stdout)["results"][0]["status"] == "rotated"
    iam, keeper = served.iam_passwords(), served.keeper_passwords()
    assert iam["alice"] == keeper[ALICE] not in (before_iam["alice"], None)

    typo = served.cli("rotate", "--stack", STACK_NAME, "--folder", "NotAFolderUid000000000")
    assert typo.returncode == 2 and "is not shared with the KSM application" in typo.stderr

    printed = "\n".join(served.outputs)
    every_password = {p for p in [*before_iam.values(), *iam.values(), *keeper.values(), rotated_bob] if p}
    assert [p for p in every_password if p in printed] == []
