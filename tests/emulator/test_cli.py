"""``python -m ksm_emulator`` as a process: starts, writes config and CA, stops on SIGTERM."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from keeper_secrets_manager_core import SecretsManager
from keeper_secrets_manager_core.storage import InMemoryKeyValueStorage

from ksm_emulator.__main__ import main

from .conftest import ALICE_UID, BOB_UID, SEED

TOOLS = Path(__file__).resolve().parents[2] / "tools"
TIMEOUT = 10


def _run(*args, **kwargs):
    env = {**os.environ, "PYTHONPATH": str(TOOLS)}
    return subprocess.Popen(  # noqa: S603 - fixed argv: this interpreter and the module under test
        [sys.executable, "-m", "ksm_emulator", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **kwargs,
    )


def test_cli_serves_writes_files_and_stops_on_sigterm(tmp_path, monkeypatch):
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps(SEED))
    config_file, ca_file = tmp_path / "ksm-config.b64", tmp_path / "ca.pem"
    process = _run("--seed", str(seed), "--write-config", str(config_file), "--write-ca", str(ca_file))
    try:
        line = process.stdout.readline()
        assert line.startswith("ksm_emulator serving https://127.0.0.1:")
        assert f"config={config_file}" in line
        assert f"ca={ca_file}" in line
        assert config_file.stat().st_mode & 0o077 == 0

        for name in ("KSM_CONFIG", "KSM_TOKEN", "KSM_HOSTNAME", "KSM_SKIP_VERIFY"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca_file))
        ksm = SecretsManager(config=InMemoryKeyValueStorage(config_file.read_text()))
        assert {record.uid for record in ksm.get_secrets()} == {ALICE_UID, BOB_UID}

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=TIMEOUT) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=TIMEOUT)


def test_cli_stops_on_sigint():
    process = _run()
    try:
        assert process.stdout.readline().startswith("ksm_emulator serving")
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=TIMEOUT) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=TIMEOUT)


REFUSED_HOSTS = ["0.0.0.0", "localhost", "::1"]  # noqa: S104 - each must be refused


@pytest.mark.parametrize("host", REFUSED_HOSTS)
def test_cli_refuses_non_loopback_hosts(host, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--host", host])

    assert exited.value.code == 2
    assert "loopback" in capsys.readouterr().err


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--help"])

    assert exited.value.code == 0
    out = capsys.readouterr().out
    for option in ("--host", "--port", "--seed", "--pending-policy", "--throttle", "--rate-limit", "--write-config"):
        assert option in out


@pytest.mark.parametrize(
    "args", [["--throttle", "100/10"], ["--rate-limit", "burst=1,quiet=1"], ["--rate-limit", "0/6"]]
)
def test_cli_refuses_bad_limits(args, capsys):
    with pytest.raises(SystemExit) as exited:
        main(args)

    assert exited.value.code == 2
    assert f"argument {args[0]}" in capsys.readouterr().err


def test_cli_limits_reach_the_server(tmp_path):
    ca_file = tmp_path / "ca.pem"
    process = _run("--throttle", "burst=100,quiet=10", "--rate-limit", "10/6", "--write-ca", str(ca_file))
    try:
        url = process.stdout.readline().split()[2]
        state = requests.get(f"{url}/_emulator/throttle", verify=str(ca_file), timeout=TIMEOUT).json()
        assert state["throttle"] == {"burst": 100, "quiet": 10.0}
        assert state["rate_limit"] == {"requests": 10, "seconds": 6.0}
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=TIMEOUT) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=TIMEOUT)
