"""The vault and the protocol function without sockets."""

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from ksm_emulator import EmulatorServer, Vault, crypto
from ksm_emulator.protocol import KSM_PREFIX, KsmProtocol

from .conftest import ALICE_UID, BOB_UID, SEED


def test_seed_from_file_and_reset(tmp_path):
    seed_file = tmp_path / "seed.json"
    seed_file.write_text(json.dumps(SEED))
    vault = Vault(seed=str(seed_file))
    extra = vault.add_record(title="extra")
    vault.set_latency(1.0)
    vault.inject_fault("*")
    vault.pending_policy = "refuse"

    vault.reset()

    assert vault.committed(extra) is None
    assert vault.committed(ALICE_UID)["title"] == "alice"
    assert vault.latency == 0.0
    assert vault.take_fault("get_secret") is None
    assert vault.pending_policy == "replace"

    vault.reset({})
    assert vault.dump()["records"] == []


def test_reset_keeps_clients_and_keys():
    vault = Vault(SEED)
    client_id, _ = vault.new_client()
    app_key = vault.app_key

    vault.reset({})

    assert vault.client(client_id) is not None
    assert vault.app_key == app_key


def test_dump_is_json_safe_and_complete():
    vault = Vault(SEED, pending_policy="refuse")

    dump = json.loads(json.dumps(vault.dump()))

    assert dump["app"] == {"title": "Rotation App"}
    assert dump["pending_policy"] == "refuse"
    assert {record["uid"] for record in dump["records"]} == {ALICE_UID, BOB_UID}


def test_folders_are_created_on_demand_and_renamed():
    vault = Vault()
    uid = vault.add_record(title="r", folder="NewFolderUid0000000000")
    assert vault.dump()["folders"] == [{"uid": "NewFolderUid0000000000", "name": ""}]

    vault.add_folder(uid="NewFolderUid0000000000", name="Named")

    assert vault.dump()["folders"] == [{"uid": "NewFolderUid0000000000", "name": "Named"}]
    assert vault.dump()["records"][0]["folder"] == "NewFolderUid0000000000"
    assert vault.revision(uid) == 1
    assert vault.staged(uid) is None
    assert vault.committed("missing") is None


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError, match="pending_policy"):
        Vault(pending_policy="ignore")
    with pytest.raises(ValueError, match="loopback"):
        EmulatorServer(host="0.0.0.0")  # noqa: S104 - must be refused


def test_fault_times_count_down():
    vault = Vault()
    vault.inject_fault("update_secret", kind="drop", times=2)

    assert vault.take_fault("get_secret") is None
    assert vault.take_fault("update_secret").kind == "drop"
    assert vault.take_fault("update_secret").kind == "drop"
    assert vault.take_fault("update_secret") is None


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"TransmissionKey": "not base64!", "Authorization": "Signature AAAA"},
        {"TransmissionKey": crypto.b64(b"\x04" + bytes(124)), "Authorization": "Signature AAAA"},
    ],
)
def test_unreadable_requests_are_access_denied(headers):
    protocol = KsmProtocol(Vault(SEED), crypto.new_ec_key())

    response = protocol.handle(KSM_PREFIX + "get_secret", headers, b"\x00" * 40)

    assert response.status == 403
    assert json.loads(response.body) == {
        "path": KSM_PREFIX + "get_secret",
        "additional_info": "",
        "location": "default exception manager - api validation exception",
        "error": "access_denied",
        "message": "Signature is invalid",
    }


def test_concurrent_clients(make_client):
    clients = [make_client() for _ in range(6)]

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda ksm: {r.uid for r in ksm.get_secrets([BOB_UID])}, clients))

    assert results == [{BOB_UID}] * 6
