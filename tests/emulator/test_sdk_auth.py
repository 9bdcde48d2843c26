"""Authentication: signatures, unknown clients and one-time token binding, through the stock SDK."""

import json

import pytest
from keeper_secrets_manager_core import SecretsManager
from keeper_secrets_manager_core.configkeys import ConfigKeys
from keeper_secrets_manager_core.exceptions import KeeperError
from keeper_secrets_manager_core.storage import InMemoryKeyValueStorage
from keeper_secrets_manager_core.utils import url_safe_str_to_bytes

from ksm_emulator import crypto

from .conftest import ALICE_UID, APP_TITLE, BOB_UID


def _client_with(emulator, **overrides):
    config = json.loads(emulator.client_config(json_form=True))
    config.update(overrides)
    return SecretsManager(config=InMemoryKeyValueStorage(json.dumps(config)))


def _redeem(emulator, token):
    return SecretsManager(
        token=token,
        hostname=emulator.host,
        server_public_key=emulator.server_public_key,
        config=InMemoryKeyValueStorage(),
    )


def test_client_config_has_the_documented_shape(emulator):
    config = json.loads(emulator.client_config(json_form=True))

    assert set(config) == {
        "hostname",
        "clientId",
        "privateKey",
        "appKey",
        "serverPublicKeyId",
        "serverPublicKey",
        "appOwnerPublicKey",
    }
    assert config["hostname"] == emulator.host
    assert emulator.url == f"https://{emulator.host}"
    assert len(url_safe_str_to_bytes(config["serverPublicKey"])) == 65
    assert config["clientId"] != json.loads(emulator.client_config(json_form=True))["clientId"]


def test_signature_by_another_key_is_access_denied(emulator):
    stranger = crypto.b64(crypto.private_key_der(crypto.new_ec_key()))
    ksm = _client_with(emulator, privateKey=stranger)

    with pytest.raises(KeeperError, match="access_denied, message=Signature is invalid"):
        ksm.get_secrets()


def test_unknown_client_is_access_denied(emulator):
    ksm = _client_with(emulator, clientId=crypto.client_id_for(crypto.new_key()))

    with pytest.raises(KeeperError, match="access_denied, message=Client not found"):
        ksm.get_secrets()


def test_transmission_key_for_another_server_is_access_denied(emulator):
    other_server = crypto.urlsafe_b64(crypto.public_point(crypto.new_ec_key()))
    ksm = _client_with(emulator, serverPublicKey=other_server)

    with pytest.raises(KeeperError, match="access_denied"):
        ksm.get_secrets()


def test_one_time_token_binds_and_then_reads(emulator):
    ksm = _redeem(emulator, emulator.one_time_token())

    response = ksm.get_secrets(full_response=True)

    assert {record.uid for record in response.records} == {ALICE_UID, BOB_UID}
    assert response.appData.title == APP_TITLE
    assert ksm.config.get(ConfigKeys.KEY_APP_KEY) == crypto.b64(emulator.vault.app_key)
    assert ksm.config.get(ConfigKeys.KEY_CLIENT_KEY) is None
    assert ksm.config.get(ConfigKeys.KEY_OWNER_PUBLIC_KEY) == crypto.b64(emulator.vault.owner_public_key)
    # Once bound, the client signs with its own key and no longer sends a public key.
    assert [record.uid for record in ksm.get_secrets([ALICE_UID])] == [ALICE_UID]


def test_bound_config_round_trips_into_a_new_client(emulator):
    first = _redeem(emulator, emulator.one_time_token())
    first.get_secrets()

    again = SecretsManager(config=InMemoryKeyValueStorage(first.config.read_storage()))

    assert {record.uid for record in again.get_secrets()} == {ALICE_UID, BOB_UID}


def test_one_time_token_is_single_use(emulator):
    token = emulator.one_time_token()
    _redeem(emulator, token).get_secrets()

    with pytest.raises(KeeperError, match="access_denied"):
        _redeem(emulator, token).get_secrets()


def test_token_that_was_never_issued_is_access_denied(emulator):
    with pytest.raises(KeeperError, match="access_denied, message=Client not found"):
        _redeem(emulator, crypto.urlsafe_b64(crypto.new_key())).get_secrets()
