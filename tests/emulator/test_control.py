"""The /_emulator/ control endpoint, driven with plain requests as an out-of-process test would."""

import http.client
import json
import ssl

import pytest
import requests
from keeper_secrets_manager_core import SecretsManager
from keeper_secrets_manager_core.exceptions import KeeperError
from keeper_secrets_manager_core.storage import InMemoryKeyValueStorage

from .conftest import ALICE_UID, BOB_UID, FOLDER_UID


@pytest.fixture
def control(emulator):
    session = requests.Session()
    session.verify = emulator.ca_file

    def call(method, name, body=None):
        return session.request(method, f"{emulator.url}/_emulator/{name}", json=body, timeout=5)

    yield call
    session.close()


def test_state_dumps_folders_and_records(control):
    state = control("GET", "state").json()

    assert state["folders"] == [{"uid": FOLDER_UID, "name": "IAM users"}]
    records = {record["uid"]: record for record in state["records"]}
    assert records[BOB_UID]["folder"] == FOLDER_UID
    assert records[ALICE_UID]["revision"] == 1
    assert records[ALICE_UID]["staged"] is None
    assert records[ALICE_UID]["committed"]["title"] == "alice"


def test_records_clients_and_reset(emulator, control):
    carol = {"title": "carol", "fields": [{"type": "login", "value": ["carol"]}]}
    uid = control("POST", "records", carol).json()["uid"]
    config = control("POST", "clients").json()["config"]
    ksm = SecretsManager(config=InMemoryKeyValueStorage(config))

    assert {record.uid for record in ksm.get_secrets()} == {ALICE_UID, BOB_UID, uid}

    assert control("POST", "reset").json() == {"ok": True}
    assert emulator.vault.committed(uid) is None
    assert {record.uid for record in ksm.get_secrets()} == {ALICE_UID, BOB_UID}


def test_tokens_can_be_redeemed(emulator, control):
    token = control("POST", "tokens").json()["token"]
    ksm = SecretsManager(
        token=token,
        hostname=emulator.host,
        server_public_key=emulator.server_public_key,
        config=InMemoryKeyValueStorage(),
    )

    assert len(ksm.get_secrets()) == 2


def test_faults_latency_policy_and_calls(emulator, control, ksm):
    assert control("POST", "faults", {"path": "get_secret", "status": 500}).status_code == 200
    with pytest.raises(KeeperError, match="internal_server_error"):
        ksm.get_secrets()

    assert control("POST", "latency", {"seconds": 0.01}).status_code == 200
    assert emulator.vault.latency == 0.01
    assert control("POST", "pending-policy", {"policy": "refuse"}).status_code == 200
    assert emulator.vault.pending_policy == "refuse"
    assert control("GET", "calls").json() == {"get_secret": 1}


@pytest.mark.parametrize(
    ("method", "name", "body", "status"),
    [
        ("POST", "faults", {"path": "get_secret", "kind": "explode"}, 400),
        ("POST", "faults", {"colour": "red"}, 400),
        ("POST", "pending-policy", {"policy": "maybe"}, 400),
        ("POST", "latency", {}, 400),
        ("POST", "records", ["not", "an", "object"], 400),
        ("GET", "faults", None, 405),
        ("GET", "nothing-here", None, 404),
    ],
)
def test_bad_control_calls(control, method, name, body, status):
    response = control(method, name, body)

    assert response.status_code == status
    assert response.json()["error"]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/api/rest/sm/v1/get_secret", 405), ("POST", "/api/rest/sm/v1/get_folders", 404), ("GET", "/x", 404)],
)
def test_ksm_path_rejects_get_and_unknown_routes(emulator, method, path, status):
    response = requests.request(method, emulator.url + path, verify=emulator.ca_file, timeout=5)

    assert response.status_code == status
    assert response.json()["error"]


def test_connection_is_kept_alive(emulator):
    context = ssl.create_default_context(cafile=emulator.ca_file)
    host, port = emulator.host.split(":")
    connection = http.client.HTTPSConnection(host, int(port), context=context, timeout=5)
    try:
        connection.request("GET", "/_emulator/calls")
        first = connection.getresponse()
        assert json.loads(first.read()) == {}
        sock = connection.sock
        connection.request("GET", "/_emulator/state")
        assert connection.getresponse().status == 200
        assert connection.sock is sock
    finally:
        connection.close()
