"""The KSM config is pinned to Keeper's own hosts and server keys (trust.py), whatever form the config takes."""

from __future__ import annotations

import base64
import json

import pytest
from keeper_secrets_manager_core.keeper_globals import keeper_public_keys, keeper_servers

from keeper_iam_rotator.errors import KsmConfigUnavailableError, KsmConfigUntrustedError
from keeper_iam_rotator.trust import require_trusted, sandbox_host

KEEPER_KEY = keeper_public_keys["10"]
FOREIGN_KEY = "BHuoLzMg0Hd6TVhhVVj1yY7C3fCMdNVEzdl4vc2jxkyMtl-nYLnOB8bk3TgmAF-0rOHHQBmGqIr4sVE3CZmTzHY"
NOWHERE = {}  # no environment variables at all


def config(as_base64: bool = True, **fields: str) -> str:
    text = json.dumps({"clientId": "c", "privateKey": "p", "appKey": "a", **fields})
    return base64.b64encode(text.encode()).decode() if as_base64 else text


@pytest.mark.parametrize(
    "hostname",
    ["keepersecurity.com", "US", "KeeperSecurity.com", "keepersecurity.com:443", "https://keepersecurity.com/"],
)
def test_keepers_host_for_the_region_in_any_spelling_is_trusted(hostname):
    assert require_trusted(config(hostname=hostname), "US", NOWHERE) == "keepersecurity.com"
    assert require_trusted(config(False, hostname=hostname, serverPublicKey=KEEPER_KEY), "US", NOWHERE)


def test_a_config_without_a_hostname_means_us_and_the_sdks_keys():
    assert require_trusted(config(), "US", NOWHERE) == "keepersecurity.com"
    with pytest.raises(KsmConfigUntrustedError, match=r"keepersecurity\.com"):
        require_trusted(config(), "EU", NOWHERE)


@pytest.mark.parametrize(
    "hostname",
    [
        "127.0.0.1:8443",
        "keepersecurity.com.attacker.example",
        "attacker.example/keepersecurity.com",
        "keepersecurity.com@attacker.example",
        "keepersecurity.com:8443",
        "http://keepersecurity.eu",
        "EU",
    ],
)
def test_any_other_host_is_refused(hostname):
    with pytest.raises(KsmConfigUntrustedError, match=r"not Keeper's US host keepersecurity\.com"):
        require_trusted(config(hostname=hostname), "US", NOWHERE)


def test_a_server_key_that_is_not_keepers_is_refused_even_on_keepers_host():
    with pytest.raises(KsmConfigUntrustedError, match="server public key"):
        require_trusted(config(hostname="keepersecurity.com", serverPublicKey=FOREIGN_KEY), "US", NOWHERE)


def test_ksm_hostname_in_the_environment_is_what_the_sdk_uses_so_it_is_checked():
    with pytest.raises(KsmConfigUntrustedError, match="attacker"):
        require_trusted(config(hostname="keepersecurity.com"), "US", {"KSM_HOSTNAME": "attacker.example"})


def test_without_a_region_any_keeper_region_is_trusted_and_a_bad_region_is_refused():
    for region, host in keeper_servers.items():
        assert require_trusted(config(hostname=region), None, NOWHERE) == host
    with pytest.raises(KsmConfigUntrustedError, match="not a Keeper region"):
        require_trusted(config(), "MARS", NOWHERE)


def test_the_sandbox_host_counts_only_on_loopback_and_outside_a_real_lambda():
    emulator = config(hostname="127.0.0.1:8443", serverPublicKey=FOREIGN_KEY)
    assert require_trusted(emulator, "US", {"SANDBOX_KEEPER_HOST": "127.0.0.1:8443"}) == "127.0.0.1:8443"
    lambda_env = {"SANDBOX_KEEPER_HOST": "127.0.0.1:8443", "AWS_LAMBDA_FUNCTION_NAME": "keeper-iam-rotator"}
    with pytest.raises(KsmConfigUntrustedError):
        require_trusted(emulator, "US", lambda_env)
    assert require_trusted(emulator, "US", lambda_env | {"AWS_SAM_LOCAL": "true"}) == "127.0.0.1:8443"
    assert sandbox_host({"SANDBOX_KEEPER_HOST": "localhost:9"}) == "localhost:9"
    assert sandbox_host({"SANDBOX_KEEPER_HOST": "[::1]:9"}) == "[::1]:9"
    for remote in ("10.0.0.5:443", "attacker.example:443", "keepersecurity.com"):
        assert sandbox_host({"SANDBOX_KEEPER_HOST": remote}) is None


@pytest.mark.parametrize("text", ["", "not base64!", base64.b64encode(b"[1, 2]").decode(), "{not json"])
def test_a_config_that_is_not_a_json_object_is_unreadable_not_untrusted(text):
    with pytest.raises(KsmConfigUnavailableError):
        require_trusted(text, "US", NOWHERE)
