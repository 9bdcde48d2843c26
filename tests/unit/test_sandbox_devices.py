"""The sandbox's `--devices N`: N bound KSM client devices of the one application, one config secret each, listed in
the handler's KSM_CONFIG_SECRET_ID; and the Keeper pacing table next to the journal, named in PACING_TABLE_NAME."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from ksm_emulator.throttle import RateLimit
from rotator_sandbox import __main__ as sandbox_cli
from rotator_sandbox.stack import CONFIG_SECRET, PACING_TABLE, KeeperLimits, Sandbox, config_secret_name

RUNNERS = {"demo": "run_demo", "bench": "run_bench", "fleet": "run_fleet", "serve": "run_serve"}


@pytest.fixture
def handed(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for command, runner in RUNNERS.items():

        def record(command: str = command, **kwargs: Any) -> int:
            seen[command] = kwargs["devices"]
            return 0

        monkeypatch.setattr(sandbox_cli, runner, record)
    return seen


@pytest.mark.parametrize("command", RUNNERS)
def test_every_command_that_builds_a_fleet_passes_the_devices(handed, command):
    assert sandbox_cli.main([command, "--devices", "3"]) == 0
    assert handed[command] == 3
    assert sandbox_cli.main([command]) == 0
    assert handed[command] == 1


def test_no_devices_is_refused(handed, capsys):
    with pytest.raises(SystemExit):
        sandbox_cli.main(["fleet", "--devices", "0"])
    assert "--devices must be at least 1" in capsys.readouterr().err


def test_each_device_is_a_bound_client_with_its_own_secret_and_the_handler_gets_them_all():
    with Sandbox(devices=3, limits=KeeperLimits(None, RateLimit(10, 2))) as sb:
        env = sb.handler_env()
        secrets = sb.aws("secretsmanager")
        configs = [
            json.loads(base64.b64decode(secrets.get_secret_value(SecretId=name)["SecretString"]))
            for name in sb.config_secrets
        ]
        bound = [sb.keeper.vault.client(config["clientId"]) for config in configs]
        pacing = sb.aws("dynamodb").describe_table(TableName=PACING_TABLE)["Table"]

    assert sb.config_secrets == [CONFIG_SECRET, f"{CONFIG_SECRET}-2", f"{CONFIG_SECRET}-3"]
    assert config_secret_name(1) == CONFIG_SECRET
    assert env["KSM_CONFIG_SECRET_ID"] == ",".join(sb.config_secrets)
    assert len({config["clientId"] for config in configs}) == 3
    assert all(client is not None and client.public_key for client in bound)
    assert len({config["appKey"] for config in configs}) == 1  # one application: every device sees every record
    assert env["PACING_TABLE_NAME"] == PACING_TABLE
    assert pacing["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert pacing["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert (env["KEEPER_REQUESTS_PER_MINUTE"], env["KEEPER_RATE_WINDOW_SECONDS"]) == ("10", "2")


def test_inherited_pacing_variables_reach_the_handler_only_as_pacing(monkeypatch):
    monkeypatch.setenv("KEEPER_BURST_LIMIT", "40")
    monkeypatch.setenv("PACING_TABLE_NAME", "someone-elses-table")
    monkeypatch.setenv("KEEPER_REGION", "EU")
    with Sandbox() as sb:
        env = sb.handler_env()

    assert env["KEEPER_BURST_LIMIT"] == "40"
    assert env["PACING_TABLE_NAME"] == PACING_TABLE
    assert "KEEPER_REGION" not in env
